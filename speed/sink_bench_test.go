package speed

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// BenchmarkSinkWrite is the insert path of one flush through the
// ClickHouse sink against a real server: Upsert of one view's rows and
// InsertRaw of the raw events, for a second's worth of one partition's
// messages (3,000) and for a catch-up flush (50,000). Each iteration also
// sends the same data as a bare clickhouse-go batch whose columns were
// built beforehand (the driver's floor). Reported: rows/s and events/s of
// the sink, cpu-ns per row and per raw event of this process (steadier
// than wall time on a shared machine), and sink/bare wall-time ratios.
func BenchmarkSinkWrite(b *testing.B) {
	cfg := parseExample(b)
	cfg.Streams[0].RawEvents = true
	srv := testenv.ClickHouse(b)
	cfg.ClickHouse.Addr, cfg.ClickHouse.Username, cfg.ClickHouse.Password = srv.Addr, srv.Username, srv.Password
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(b, err)
	sink := benchSink(db, cfg)
	st := cfg.Streams[0]
	v := cfg.ViewsOf(st.Name)[0]

	for _, tc := range []struct {
		name string
		msgs int
	}{{"flush3k", 3_000}, {"catchup50k", 50_000}} {
		b.Run(tc.name, func(b *testing.B) {
			msgs := messages(tc.msgs, 3, time.Now().UTC())
			p := newPartState(st, cfg.ViewsOf(st.Name), schemas.NewDecoder(st, time.Hour), 0, cfg.ChunkSize, planResume(-1, cfg.ChunkSize))
			for i := range msgs {
				p.process(&msgs[i])
			}
			rows, raw := p.rows(0), p.raw
			rowsSQL, rowCols := bareSpeedColumns(v, rows)
			rawSQL, rawCols := bareRawColumns(st, raw)
			bare := func(sql string, cols []any) {
				batch, err := db.Conn().PrepareBatch(ctx, sql)
				require.NoError(b, err)
				for i, c := range cols {
					require.NoError(b, batch.Column(i).Append(c))
				}
				require.NoError(b, batch.Send())
			}
			var upsertWall, rawWall, bareUpsert, bareRaw time.Duration
			var upsertCPU, rawCPU int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c0, t0 := cpuTime(), time.Now()
				enc, err := sink.Encode(v, rows)
				require.NoError(b, err)
				require.NoError(b, sink.Upsert(ctx, enc))
				sink.Release(enc)
				c1, t1 := cpuTime(), time.Now()
				require.NoError(b, sink.InsertRaw(ctx, st, raw))
				c2, t2 := cpuTime(), time.Now()
				upsertWall += t1.Sub(t0)
				rawWall += t2.Sub(t1)
				upsertCPU += c1 - c0
				rawCPU += c2 - c1

				t0 = time.Now()
				bare(rowsSQL, rowCols)
				t1 = time.Now()
				bare(rawSQL, rawCols)
				bareUpsert += t1.Sub(t0)
				bareRaw += time.Since(t1)
			}
			n := float64(b.N)
			b.ReportMetric(float64(len(rows))*n/upsertWall.Seconds(), "rows/s")
			b.ReportMetric(float64(len(raw))*n/rawWall.Seconds(), "raw_events/s")
			b.ReportMetric(float64(upsertCPU)/(n*float64(len(rows))), "cpu-ns/row")
			b.ReportMetric(float64(rawCPU)/(n*float64(len(raw))), "cpu-ns/raw_event")
			b.ReportMetric(upsertWall.Seconds()/bareUpsert.Seconds(), "upsert/bare")
			b.ReportMetric(rawWall.Seconds()/bareRaw.Seconds(), "raw/bare")
			b.ReportMetric(float64(len(rows)), "rows/flush")
		})
	}
}

// bareSpeedColumns builds, outside the timed part, the columns of a view's
// speed rows as clickhouse-go takes them, and the insert statement.
func bareSpeedColumns(v *schemas.View, rows []Row) (string, []any) {
	names := []string{schemas.ColWindowStart}
	names = append(names, v.Dimensions...)
	for _, m := range v.Measures {
		names = append(names, m.Name)
	}
	names = append(names, schemas.ColKafkaPartition, schemas.ColChunk, schemas.ColVersion)
	n := len(rows)
	windows := make([]time.Time, n)
	parts := make([]uint32, n)
	chunks := make([]uint64, n)
	versions := make([]uint64, n)
	for i, r := range rows {
		windows[i], parts[i], chunks[i], versions[i] = r.Window, uint32(r.Partition), uint64(r.Chunk), uint64(r.Version)
	}
	cols := []any{windows}
	for d := range v.Dimensions {
		vals := make([]string, n)
		for i := range rows {
			vals[i] = rows[i].Dims[d]
		}
		cols = append(cols, vals)
	}
	for mi := range v.Measures {
		m := &v.Measures[mi]
		switch m.Type {
		case schemas.MeasureCount:
			vals := make([]int64, n)
			for i := range rows {
				vals[i] = rows[i].Agg[mi].N
			}
			cols = append(cols, vals)
		case schemas.MeasureSum:
			vals := make([]float64, n)
			for i := range rows {
				vals[i] = rows[i].Agg[mi].Sum
			}
			cols = append(cols, vals)
		case schemas.MeasureMin, schemas.MeasureMax:
			vals := make([]*float64, n)
			for i := range rows {
				vals[i] = m.Cell(&rows[i].Agg[mi]).(*float64)
			}
			cols = append(cols, vals)
		default:
			vals := make([][]byte, n)
			for i := range rows {
				vals[i] = m.Cell(&rows[i].Agg[mi]).([]byte)
			}
			cols = append(cols, vals)
		}
	}
	cols = append(cols, parts, chunks, versions)
	return "INSERT INTO tandem." + v.Name + "_speed (" + strings.Join(names, ", ") + ")", cols
}

// bareRawColumns is bareSpeedColumns for a stream's raw events.
func bareRawColumns(st *schemas.Stream, events []RawEvent) (string, []any) {
	var names []string
	for _, c := range st.RawColumns() {
		names = append(names, c.Name)
	}
	n := len(events)
	var cols []any
	for fi, f := range st.Fields {
		switch f.Type {
		case schemas.TypeFloat64:
			vals := make([]*float64, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Float
				}
			}
			cols = append(cols, vals)
		case schemas.TypeTimestamp:
			vals := make([]*time.Time, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Time
				}
			}
			cols = append(cols, vals)
		default: // the example stream has strings, floats and a timestamp
			vals := make([]*string, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Str
				}
			}
			cols = append(cols, vals)
		}
	}
	raws := make([]string, n)
	parts := make([]int32, n)
	offsets := make([]int64, n)
	times := make([]time.Time, n)
	for i := range events {
		raws[i], parts[i], offsets[i], times[i] = string(events[i].Raw), events[i].Partition, events[i].Offset, events[i].KafkaTime.UTC()
	}
	cols = append(cols, raws, parts, offsets, times)
	return "INSERT INTO tandem." + st.Name + "_events (" + strings.Join(names, ", ") + ")", cols
}

// benchSink is the sink the speed command wires.
func benchSink(db *clickhouse.DB, cfg *schemas.Config) Sink {
	return NewClickHouseSink(db, cfg.ChunkSize)
}

// BenchmarkSinkBlock is the CPU the sink spends on one flush's rows before
// the driver: one view's rows after 3,000 messages appended to a pooled
// clickhouse.SpeedBlock (what Upsert does), then the block reset; ns/op
// is per flush. BenchmarkFlushRows is the part before (rows and cells).
func BenchmarkSinkBlock(b *testing.B) {
	cfg := parseExample(b)
	st := cfg.Streams[0]
	v := cfg.ViewsOf(st.Name)[0]
	msgs := messages(3_000, 2, time.Now().UTC())
	p := newPartState(st, cfg.ViewsOf(st.Name), schemas.NewDecoder(st, time.Hour), 0, cfg.ChunkSize, planResume(-1, cfg.ChunkSize))
	for i := range msgs {
		p.process(&msgs[i])
	}
	rows := p.rows(0)
	block := clickhouse.NewSpeedBlock(v, 0)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for j := range rows {
			r := &rows[j]
			if err := block.Append(r.Window, r.Dims, r.Agg, r.Partition, r.Chunk, r.Version); err != nil {
				b.Fatal(err)
			}
		}
		block.Reset()
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(rows)), "rows/flush")
}
