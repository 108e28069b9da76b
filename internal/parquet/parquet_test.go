package parquet_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"

	tpq "github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

const testConfig = `
streams:
  - name: clicks
    partitions: 3
    id_field: event_id
    time_field: ts
    fields:
      - { name: event_id, type: string }
      - { name: ts,       type: timestamp }
      - { name: country,  type: string }
      - { name: n,        type: int64 }
      - { name: amount,   type: float64 }
      - { name: ok,       type: bool }
      - { name: seen,     type: timestamp }
views:
  - name: clicks_by_country
    stream: clicks
    granularity: 1m
    dimensions: [country]
    measures:
      - { name: views,   type: count }
      - { name: revenue, type: sum,       field: amount }
      - { name: lo,      type: min,       field: amount }
      - { name: hi,      type: max,       field: amount }
      - { name: users,   type: distinct,  field: event_id }
      - { name: lat,     type: quantiles, field: amount }
`

func loadConfig(t testing.TB) *schemas.Config {
	t.Helper()
	cfg, err := schemas.Parse("test.yaml", []byte(testConfig), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

var countries = []string{"US", "DE", "FR", "JP", "", "BR"}

// makeRecords builds n records: mostly valid events with random optional
// fields, some invalid messages (Event nil), decoded with the real Decoder.
func makeRecords(t testing.TB, s *schemas.Stream, n int, seed uint64) []tpq.RawRecord {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	dec := schemas.NewDecoder(s, time.Hour)
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	out := make([]tpq.RawRecord, 0, n)
	offset := int64(1000)
	for i := range n {
		kafkaTS := base.Add(time.Duration(i) * time.Second)
		var raw string
		switch {
		case i%17 == 5:
			raw = fmt.Sprintf(`{"event_id":"e%d","ts":"not a time"}`, i)
		case i%29 == 3:
			raw = `{"broken json`
		default:
			raw = fmt.Sprintf(`{"event_id":"e%d","ts":%d`, i, kafkaTS.Add(-time.Duration(rng.IntN(600))*time.Second).UnixMilli())
			if rng.IntN(4) > 0 {
				raw += fmt.Sprintf(`,"country":%q`, countries[rng.IntN(len(countries))])
			}
			if rng.IntN(3) > 0 {
				raw += fmt.Sprintf(`,"n":%d`, rng.Int64N(1<<40)-1<<39)
			}
			if rng.IntN(3) > 0 {
				raw += fmt.Sprintf(`,"amount":%g`, rng.Float64()*1000)
			}
			if rng.IntN(2) > 0 {
				raw += fmt.Sprintf(`,"ok":%t`, rng.IntN(2) == 0)
			}
			if rng.IntN(2) > 0 {
				raw += fmt.Sprintf(`,"seen":"%s"`, kafkaTS.Add(-time.Minute).Format(time.RFC3339Nano))
			}
			raw += fmt.Sprintf(`,"extra":{"pad":%q}}`, string(bytes.Repeat([]byte{'x'}, rng.IntN(200))))
		}
		rec := tpq.RawRecord{Raw: []byte(raw), Partition: 2, Offset: offset, KafkaTime: kafkaTS}
		if ev, err := dec.Decode(rec.Raw, kafkaTS); err == nil {
			rec.Event = &ev
		}
		out = append(out, rec)
		offset += 1 + int64(rng.IntN(3)) // compacted or transactional topics leave gaps
	}
	return out
}

func writeRaw(t testing.TB, s *schemas.Stream, recs []tpq.RawRecord, rowGroupBytes int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tpq.NewRawWriter(&buf, s, tpq.RawWriterOptions{RowGroupBytes: rowGroupBytes, Partition: 2})
	for _, r := range recs {
		require.NoError(t, w.Write(r))
	}
	require.NoError(t, w.Close())
	require.Equal(t, int64(buf.Len()), w.Written())
	return buf.Bytes()
}

func TestRawRoundTrip(t *testing.T) {
	cfg := loadConfig(t)
	s := cfg.Stream("clicks")
	recs := makeRecords(t, s, 5000, 7)
	invalid := 0
	for _, r := range recs {
		if r.Event == nil {
			invalid++
		}
	}
	require.Greater(t, invalid, 100, "the data set has invalid messages")
	data := writeRaw(t, s, recs, 64<<10)

	t.Run("all columns", func(t *testing.T) {
		r, err := tpq.NewRawReader(s, bytes.NewReader(data), int64(len(data)), tpq.RawReadOptions{})
		require.NoError(t, err)
		require.Equal(t, int64(len(recs)), r.NumRows())
		first, _ := r.Metadata(tpq.MetaFirstOffset)
		last, _ := r.Metadata(tpq.MetaLastOffset)
		require.Equal(t, fmt.Sprint(recs[0].Offset), first)
		require.Equal(t, fmt.Sprint(recs[len(recs)-1].Offset), last)
		i := 0
		for got, err := range r.All() {
			require.NoError(t, err)
			want := recs[i]
			require.Equal(t, want.Offset, got.Offset)
			require.Equal(t, want.Partition, got.Partition)
			require.Equal(t, string(want.Raw), string(got.Raw))
			require.True(t, want.KafkaTime.Equal(got.KafkaTime))
			if want.Event == nil {
				require.Nil(t, got.Event, "offset %d", want.Offset)
			} else {
				require.NotNil(t, got.Event, "offset %d", want.Offset)
				require.Equal(t, want.Event.ID, got.Event.ID)
				require.True(t, want.Event.Time.Equal(got.Event.Time))
				for j := range s.Fields {
					w, g := want.Event.Values[j], got.Event.Values[j]
					require.Equal(t, w.Set, g.Set, "field %s at offset %d", s.Fields[j].Name, want.Offset)
					require.Equal(t, w.Str, g.Str)
					require.Equal(t, w.Int, g.Int)
					require.Equal(t, w.Float, g.Float)
					require.Equal(t, w.Bool, g.Bool)
					require.True(t, w.Time.Equal(g.Time))
				}
			}
			i++
		}
		require.Equal(t, len(recs), i)
		_, err = r.Next()
		require.ErrorIs(t, err, io.EOF)
	})

	t.Run("only _raw", func(t *testing.T) {
		r, err := tpq.NewRawReader(s, bytes.NewReader(data), int64(len(data)), tpq.RawReadOptions{Columns: []string{schemas.ColRaw}})
		require.NoError(t, err)
		i := 0
		for got, err := range r.All() {
			require.NoError(t, err)
			require.Nil(t, got.Event)
			require.Equal(t, recs[i].Offset, got.Offset)
			require.Equal(t, string(recs[i].Raw), string(got.Raw))
			i++
		}
		require.Equal(t, len(recs), i)
	})

	t.Run("unknown column", func(t *testing.T) {
		_, err := tpq.NewRawReader(s, bytes.NewReader(data), int64(len(data)), tpq.RawReadOptions{Columns: []string{"nope"}})
		require.ErrorContains(t, err, "nope")
	})

	t.Run("offsets must increase", func(t *testing.T) {
		w := tpq.NewRawWriter(io.Discard, s, tpq.RawWriterOptions{})
		require.NoError(t, w.Write(recs[1]))
		require.Error(t, w.Write(recs[0]))
		require.Error(t, w.Write(recs[1]))
	})
}

// TestRawReadByArrow reads a raw file with Apache Arrow for Go, an
// independent Parquet implementation, and compares it row for row.
func TestRawReadByArrow(t *testing.T) {
	cfg := loadConfig(t)
	s := cfg.Stream("clicks")
	recs := makeRecords(t, s, 3000, 11)
	data := writeRaw(t, s, recs, 32<<10)

	pf, err := file.NewParquetReader(bytes.NewReader(data))
	require.NoError(t, err)
	defer pf.Close()
	require.Greater(t, pf.NumRowGroups(), 1, "several row groups")
	// What the file promises to other engines: zstd everywhere, dictionary
	// encoding for low-cardinality strings, statistics per row group.
	for i := range pf.NumRowGroups() {
		rg := pf.MetaData().RowGroup(i)
		for c := range rg.NumColumns() {
			cc, err := rg.ColumnChunk(c)
			require.NoError(t, err)
			require.Equal(t, compress.Codecs.Zstd, cc.Compression(), "column %d", c)
			set, err := cc.StatsSet()
			require.NoError(t, err)
			require.True(t, set, "column %d of row group %d has statistics", c, i)
		}
		cc, err := rg.ColumnChunk(2) // country
		require.NoError(t, err)
		require.Contains(t, cc.Encodings(), parquet.Encodings.RLEDict)
	}
	pir, err := pf.GetPageIndexReader().RowGroup(0)
	require.NoError(t, err)
	ci, err := pir.GetColumnIndex(1) // ts
	require.NoError(t, err)
	require.NotNil(t, ci, "the file has a column index (page index)")
	oi, err := pir.GetOffsetIndex(1)
	require.NoError(t, err)
	require.NotNil(t, oi, "the file has an offset index (page index)")
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 700}, memory.DefaultAllocator)
	require.NoError(t, err)
	sch, err := fr.Schema()
	require.NoError(t, err)
	want := tpq.ArrowSchemaRaw(s)
	require.Equal(t, want.NumFields(), sch.NumFields())
	for i, f := range want.Fields() {
		require.Equal(t, f.Name, sch.Field(i).Name)
		require.True(t, arrow.TypeEqual(f.Type, sch.Field(i).Type), "column %s: Arrow reads %s, ArrowSchemaRaw says %s", f.Name, sch.Field(i).Type, f.Type)
		require.Equal(t, f.Nullable, sch.Field(i).Nullable, f.Name)
	}

	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	require.NoError(t, err)
	defer rr.Release()
	row := 0
	col := func(rec arrow.RecordBatch, name string) arrow.Array {
		idx := rec.Schema().FieldIndices(name)
		require.Len(t, idx, 1, name)
		return rec.Column(idx[0])
	}
	for rr.Next() {
		rec := rr.RecordBatch()
		raw := col(rec, schemas.ColRaw).(*array.String)
		off := col(rec, schemas.ColOffset).(*array.Int64)
		part := col(rec, schemas.ColPartition).(*array.Int32)
		kts := col(rec, schemas.ColKafkaTS).(*array.Timestamp)
		id := col(rec, "event_id").(*array.String)
		ts := col(rec, "ts").(*array.Timestamp)
		country := col(rec, "country").(*array.String)
		n := col(rec, "n").(*array.Int64)
		amount := col(rec, "amount").(*array.Float64)
		ok := col(rec, "ok").(*array.Boolean)
		for i := 0; i < int(rec.NumRows()); i++ {
			w := recs[row]
			require.Equal(t, string(w.Raw), raw.Value(i))
			require.Equal(t, w.Offset, off.Value(i))
			require.Equal(t, w.Partition, part.Value(i))
			require.Equal(t, w.KafkaTime.UnixMilli(), int64(kts.Value(i)))
			if w.Event == nil {
				require.True(t, id.IsNull(i) && ts.IsNull(i) && country.IsNull(i) && n.IsNull(i) && amount.IsNull(i) && ok.IsNull(i))
			} else {
				v := w.Event.Values
				require.Equal(t, w.Event.ID, id.Value(i))
				require.Equal(t, w.Event.Time.UnixMilli(), int64(ts.Value(i)))
				require.Equal(t, !v[2].Set, country.IsNull(i))
				if v[2].Set {
					require.Equal(t, v[2].Str, country.Value(i))
				}
				require.Equal(t, !v[3].Set, n.IsNull(i))
				if v[3].Set {
					require.Equal(t, v[3].Int, n.Value(i))
				}
				require.Equal(t, !v[4].Set, amount.IsNull(i))
				if v[4].Set {
					require.Equal(t, v[4].Float, amount.Value(i))
				}
				require.Equal(t, !v[5].Set, ok.IsNull(i))
				if v[5].Set {
					require.Equal(t, v[5].Bool, ok.Value(i))
				}
			}
			row++
		}
	}
	require.NoError(t, rr.Err())
	require.Equal(t, len(recs), row)
}

func TestViewRoundTrip(t *testing.T) {
	cfg := loadConfig(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	recs := makeRecords(t, s, 4000, 3)

	// Aggregate the valid events into rows, keyed as the layers key them.
	aggs := map[schemas.RowKey]schemas.Aggregate{}
	var keys []schemas.RowKey
	for _, r := range recs {
		if r.Event == nil {
			continue
		}
		k := v.Key(r.Event)
		a, ok := aggs[k]
		if !ok {
			a = v.NewAggregate()
			aggs[k] = a
			keys = append(keys, k)
		}
		v.Add(a, r.Event)
	}
	// Sorted by window, as batch writes them.
	sortKeys(keys)
	rowOf := func(k schemas.RowKey) tpq.ViewRow {
		dims, err := schemas.SplitDims(k.Dims)
		require.NoError(t, err)
		row := tpq.ViewRow{WindowStart: k.Window(), Dims: dims}
		for i := range v.Measures {
			row.Cells = append(row.Cells, v.Measures[i].Cell(&aggs[k][i]))
		}
		return row
	}
	var buf bytes.Buffer
	w := tpq.NewViewWriter(&buf, v, tpq.ViewWriterOptions{RowGroupRows: 50})
	for _, k := range keys {
		require.NoError(t, w.Write(rowOf(k)))
	}
	require.NoError(t, w.Close())
	require.Greater(t, len(keys), 200)

	r, err := tpq.NewViewReader(v, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	require.Equal(t, int64(len(keys)), r.NumRows())
	groups := r.RowGroups()
	require.Len(t, groups, (len(keys)+49)/50)

	// Every row reads back into the same states, group by group, and each
	// group's statistics bound its windows.
	i := 0
	for _, g := range groups {
		rows, err := r.ReadRowGroup(g.Index)
		require.NoError(t, err)
		require.Len(t, rows, int(g.Rows))
		for _, got := range rows {
			k := keys[i]
			require.True(t, k.Window().Equal(got.WindowStart))
			require.False(t, got.WindowStart.Before(g.MinTime) || got.WindowStart.After(g.MaxTime))
			want := rowOf(k)
			require.Equal(t, want.Dims, got.Dims)
			for j := range v.Measures {
				m := &v.Measures[j]
				st, err := m.StateFromCell(got.Cells[j])
				require.NoError(t, err, m.Name)
				wantSt := aggs[k][j]
				require.Equal(t, m.Result(&wantSt), m.Result(&st), "measure %s of %v", m.Name, k)
			}
			i++
		}
	}
	require.Equal(t, len(keys), i)

	// Some columns only: the asked measures read back as in the whole rows,
	// the others and (without keys) the window and dimensions stay empty.
	for _, g := range groups {
		all, err := r.ReadRowGroup(g.Index)
		require.NoError(t, err)
		for mask := 0; mask < 1<<len(v.Measures); mask += 5 {
			need := make([]bool, len(v.Measures))
			for j := range need {
				need[j] = mask&(1<<j) != 0
			}
			for _, keysToo := range []bool{false, true} {
				part, err := r.ReadRowGroupColumns(g.Index, keysToo, need)
				require.NoError(t, err)
				require.Len(t, part, len(all))
				for k := range part {
					if keysToo {
						require.Equal(t, all[k].WindowStart, part[k].WindowStart)
						require.Equal(t, all[k].Dims, part[k].Dims)
					} else {
						require.True(t, part[k].WindowStart.IsZero())
						require.Nil(t, part[k].Dims)
					}
					for j := range need {
						if need[j] {
							require.Equal(t, all[k].Cells[j], part[k].Cells[j], "measure %d", j)
						} else {
							require.Nil(t, part[k].Cells[j], "measure %d was not asked", j)
						}
					}
				}
			}
		}
	}
	_, err = r.ReadRowGroupColumns(0, true, []bool{true})
	require.Error(t, err, "flags for another number of measures")

	// Time pruning: a range in the middle returns exactly its rows.
	from, to := keys[len(keys)/3].Window(), keys[2*len(keys)/3].Window()
	want := 0
	for _, k := range keys {
		if !k.Window().Before(from) && k.Window().Before(to) {
			want++
		}
	}
	got := 0
	for row, err := range r.Rows(from, to) {
		require.NoError(t, err)
		require.False(t, row.WindowStart.Before(from) || !row.WindowStart.Before(to))
		got++
	}
	require.Equal(t, want, got)
	require.Positive(t, got)

	t.Run("SQL states", func(t *testing.T) {
		// The states ride along in their columns: read back by the
		// ClickHouse load's reader, not by serving's.
		var buf bytes.Buffer
		w := tpq.NewViewWriter(&buf, v, tpq.ViewWriterOptions{})
		var want [][][]byte
		for _, k := range keys {
			row := rowOf(k)
			row.States = make([][]byte, len(v.Measures))
			for i := range v.Measures {
				row.States[i] = v.Measures[i].SQLStateCell(&aggs[k][i])
			}
			want = append(want, row.States)
			require.NoError(t, w.Write(row))
		}
		require.NoError(t, w.Close())
		r, err := tpq.NewViewReaderWithStates(v, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		require.NoError(t, err)
		i, withState := 0, 0
		for row, err := range r.Rows(time.Time{}, time.Time{}) {
			require.NoError(t, err)
			require.Equal(t, want[i], row.States, "row %d", i)
			for _, st := range row.States {
				if st != nil {
					withState++
				}
			}
			i++
		}
		require.Equal(t, len(keys), i)
		require.Positive(t, withState)
		r, err = tpq.NewViewReader(v, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		require.NoError(t, err)
		for row, err := range r.Rows(time.Time{}, time.Time{}) {
			require.NoError(t, err)
			require.Nil(t, row.States)
		}
	})

	t.Run("bad cell", func(t *testing.T) {
		w := tpq.NewViewWriter(io.Discard, v, tpq.ViewWriterOptions{})
		row := rowOf(keys[0])
		row.Cells[0] = 1.5 // count must be int64
		require.Error(t, w.Write(row))
	})
}

func sortKeys(keys []schemas.RowKey) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j].WindowMs < keys[j-1].WindowMs; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}
