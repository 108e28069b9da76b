package speed

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/schemas"
)

// ClickHouseSink is the Sink over a ClickHouse connection: speed rows go to
// `<view>_speed`, raw events to `<stream>_events`, both created by the
// ClickHouse adapter's Migrate. It uses only the native protocol with
// column-named batch inserts, and SQL that runs on ClickHouse 18.16 and on
// current releases.
type ClickHouseSink struct {
	conn      driver.Conn
	db        string
	chunkSize int64
}

var _ Sink = (*ClickHouseSink)(nil)

// NewClickHouseSink returns a Sink writing to database db over conn (for
// example clickhouse.DB.Conn() and DB.Database()); chunkSize is the
// configured chunk_size.
func NewClickHouseSink(conn driver.Conn, db string, chunkSize int64) *ClickHouseSink {
	return &ClickHouseSink{conn: conn, db: db, chunkSize: chunkSize}
}

func quoteIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "") + "`" }

func (s *ClickHouseSink) table(name string) string { return quoteIdent(s.db) + "." + quoteIdent(name) }

// speedTable and rawTable follow internal/clickhouse's naming (SpeedTable,
// RawTable); the speed layer does not import the adapter so that it only
// needs a connection.
func speedTable(view string) string { return view + "_speed" }
func rawTable(stream string) string { return stream + "_events" }

// speedColumns are the columns of `<view>_speed` in insert order.
func speedColumns(v *schemas.View) []string {
	var cols []string
	for _, c := range v.RowColumns() {
		cols = append(cols, c.Name)
	}
	return append(cols, schemas.ColKafkaPartition, schemas.ColChunk, schemas.ColVersion)
}

func quoteAll(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quoteIdent(c)
	}
	return strings.Join(q, ", ")
}

// UpsertSQL is the batch insert of a view's speed rows.
func (s *ClickHouseSink) UpsertSQL(v *schemas.View) string {
	return fmt.Sprintf("INSERT INTO %s (%s)", s.table(speedTable(v.Name)), quoteAll(speedColumns(v)))
}

// ProgressSQL reads, for one partition (the ? parameter), how many speed
// rows a view has and the highest version among them.
func (s *ClickHouseSink) ProgressSQL(v *schemas.View) string {
	return fmt.Sprintf("SELECT count(), max(%s) FROM %s WHERE %s = ?", quoteIdent(schemas.ColVersion), s.table(speedTable(v.Name)), quoteIdent(schemas.ColKafkaPartition))
}

// AbsorbedSQL reads, for one view and partition (the ? parameters), how many
// chunks the batch layer has absorbed, over every published run (runs only
// ever absorb more).
func (s *ClickHouseSink) AbsorbedSQL() string {
	return fmt.Sprintf("SELECT count(), max(chunks) FROM %s WHERE view = ? AND kafka_partition = ?", s.table("absorbed"))
}

// RawSQL is the batch insert of a stream's raw events.
func (s *ClickHouseSink) RawSQL(st *schemas.Stream) string {
	var cols []string
	for _, c := range st.RawColumns() {
		cols = append(cols, c.Name)
	}
	return fmt.Sprintf("INSERT INTO %s (%s)", s.table(rawTable(st.Name)), quoteAll(cols))
}

// Progress implements Sink. Per view: the highest stored version when the
// view has speed rows for the partition; otherwise, when the batch layer
// absorbed K > 0 chunks of it, K*chunkSize-1 (its speed rows were deleted
// after absorption, so nothing below needs rebuilding); otherwise -1. The
// result is the minimum over the views.
//
// The absorbed fallback applies only when a view has no speed rows at all
// for the partition: speed rows are deleted only after every serving
// replica switched to the run that absorbed them, so skipping those chunks
// cannot leave a replica on an older run without rows.
func (s *ClickHouseSink) Progress(ctx context.Context, st *schemas.Stream, views []*schemas.View, partition int32) (int64, error) {
	if len(views) == 0 {
		return -1, nil
	}
	min := int64(-1)
	for i, v := range views {
		var n, version uint64
		if err := s.conn.QueryRow(ctx, s.ProgressSQL(v), uint32(partition)).Scan(&n, &version); err != nil {
			return 0, fmt.Errorf("speed: reading progress of %s partition %d: %w", speedTable(v.Name), partition, err)
		}
		o := int64(version)
		if n == 0 {
			o = -1
			var runs, chunks uint64
			if err := s.conn.QueryRow(ctx, s.AbsorbedSQL(), v.Name, uint32(partition)).Scan(&runs, &chunks); err != nil {
				return 0, fmt.Errorf("speed: reading absorbed chunks of view %s partition %d: %w", v.Name, partition, err)
			}
			if runs > 0 && chunks > 0 {
				o = int64(chunks)*s.chunkSize - 1
			}
		}
		if i == 0 || o < min {
			min = o
		}
	}
	return min, nil
}

// Upsert implements Sink: one column-oriented batch, sent as one block, so
// the rows land in one part atomically.
func (s *ClickHouseSink) Upsert(ctx context.Context, v *schemas.View, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, s.UpsertSQL(v))
	if err != nil {
		return fmt.Errorf("speed: preparing insert into %s: %w", speedTable(v.Name), err)
	}
	defer b.Abort()
	n := len(rows)
	windows := make([]time.Time, n)
	parts := make([]uint32, n)
	chunks := make([]uint64, n)
	versions := make([]uint64, n)
	for i := range rows {
		windows[i] = rows[i].Window
		parts[i] = uint32(rows[i].Partition)
		chunks[i] = uint64(rows[i].Chunk)
		versions[i] = uint64(rows[i].Version)
	}
	col := 0
	appendCol := func(data any) error {
		if err := b.Column(col).Append(data); err != nil {
			return fmt.Errorf("speed: insert into %s: column %d: %w", speedTable(v.Name), col, err)
		}
		col++
		return nil
	}
	if err := appendCol(windows); err != nil {
		return err
	}
	for d := range v.Dimensions {
		vals := make([]string, n)
		for i := range rows {
			vals[i] = rows[i].Dims[d]
		}
		if err := appendCol(vals); err != nil {
			return err
		}
	}
	for mi := range v.Measures {
		m := &v.Measures[mi]
		var data any
		switch m.Type {
		case schemas.MeasureCount:
			vals := make([]int64, n)
			for i := range rows {
				vals[i] = m.Cell(&rows[i].Agg[mi]).(int64)
			}
			data = vals
		case schemas.MeasureSum:
			vals := make([]float64, n)
			for i := range rows {
				vals[i] = m.Cell(&rows[i].Agg[mi]).(float64)
			}
			data = vals
		case schemas.MeasureMin, schemas.MeasureMax:
			vals := make([]*float64, n)
			for i := range rows {
				vals[i] = m.Cell(&rows[i].Agg[mi]).(*float64)
			}
			data = vals
		default:
			vals := make([][]byte, n)
			for i := range rows {
				vals[i] = m.Cell(&rows[i].Agg[mi]).([]byte)
			}
			data = vals
		}
		if err := appendCol(data); err != nil {
			return err
		}
	}
	for _, data := range []any{parts, chunks, versions} {
		if err := appendCol(data); err != nil {
			return err
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("speed: insert of %d rows into %s: %w", n, speedTable(v.Name), err)
	}
	return nil
}

// InsertRaw implements Sink. Declared fields are Nullable columns; bool is
// UInt8. The table is a ReplacingMergeTree by (_partition, _offset), so a
// replayed event replaces itself.
func (s *ClickHouseSink) InsertRaw(ctx context.Context, st *schemas.Stream, events []RawEvent) error {
	if len(events) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, s.RawSQL(st))
	if err != nil {
		return fmt.Errorf("speed: preparing insert into %s: %w", rawTable(st.Name), err)
	}
	defer b.Abort()
	n := len(events)
	col := 0
	appendCol := func(data any) error {
		if err := b.Column(col).Append(data); err != nil {
			return fmt.Errorf("speed: insert into %s: column %d: %w", rawTable(st.Name), col, err)
		}
		col++
		return nil
	}
	for fi, f := range st.Fields {
		var data any
		switch f.Type {
		case schemas.TypeString:
			vals := make([]*string, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Str
				}
			}
			data = vals
		case schemas.TypeInt64:
			vals := make([]*int64, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Int
				}
			}
			data = vals
		case schemas.TypeFloat64:
			vals := make([]*float64, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Float
				}
			}
			data = vals
		case schemas.TypeBool:
			vals := make([]*uint8, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					var u uint8
					if v.Bool {
						u = 1
					}
					vals[i] = &u
				}
			}
			data = vals
		case schemas.TypeTimestamp:
			vals := make([]*time.Time, n)
			for i := range events {
				if v := &events[i].Event.Values[fi]; v.Set {
					vals[i] = &v.Time
				}
			}
			data = vals
		default:
			return fmt.Errorf("speed: stream %s: field %s has unknown type %q", st.Name, f.Name, f.Type)
		}
		if err := appendCol(data); err != nil {
			return err
		}
	}
	raws := make([]string, n)
	parts := make([]int32, n)
	offsets := make([]int64, n)
	times := make([]time.Time, n)
	for i := range events {
		raws[i] = string(events[i].Raw)
		parts[i] = events[i].Partition
		offsets[i] = events[i].Offset
		times[i] = events[i].KafkaTime.UTC()
	}
	for _, data := range []any{raws, parts, offsets, times} {
		if err := appendCol(data); err != nil {
			return err
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("speed: insert of %d events into %s: %w", n, rawTable(st.Name), err)
	}
	return nil
}

// SQLForCheck returns every statement the speed layer runs against
// ClickHouse for cfg, made runnable without data: parameters bound to
// partition 0, and each batch insert as INSERT … SELECT of zero rows, so a
// test can check them on another ClickHouse release (chdb) after Migrate.
func SQLForCheck(cfg *schemas.Config) []string {
	s := NewClickHouseSink(nil, cfg.ClickHouse.Database, cfg.ChunkSize)
	var out []string
	zero := func(q string) string { return strings.Replace(q, "?", "0", 1) }
	for _, v := range cfg.Views {
		cols := quoteAll(speedColumns(v))
		out = append(out,
			zero(s.ProgressSQL(v)),
			fmt.Sprintf("%s SELECT %s FROM %s WHERE 0", s.UpsertSQL(v), cols, s.table(speedTable(v.Name))))
		out = append(out, zero(strings.Replace(s.AbsorbedSQL(), "?", "'"+v.Name+"'", 1)))
	}
	for _, st := range cfg.Streams {
		if st.RawEvents {
			var cols []string
			for _, c := range st.RawColumns() {
				cols = append(cols, c.Name)
			}
			out = append(out, fmt.Sprintf("%s SELECT %s FROM %s WHERE 0", s.RawSQL(st), quoteAll(cols), s.table(rawTable(st.Name))))
		}
	}
	return out
}
