package batch

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestSpillRecords: records read back whole and equal whatever the block
// size (records split across blocks, records larger than a block), and a
// truncated file is an error.
func TestSpillRecords(t *testing.T) {
	cfg := testConfig(t, 100, 1, nil)
	s := cfg.Stream("pv")
	dec := schemas.NewDecoder(s, time.Hour)
	rng := rand.New(rand.NewPCG(5, 6))
	var want []Record
	var file []byte
	for i := 0; i < 500; i++ {
		raw := fmt.Sprintf(`{"event_id":"e%d","ts":%d,"country":"%s","user_id":"u%d","amount":%d.5}`,
			i, genBase.UnixMilli()+int64(i), []string{"US", "", "DE"}[i%3], rng.IntN(1000), i)
		if i%50 == 0 {
			raw = fmt.Sprintf(`{"event_id":"big%d","ts":%d,"country":"%s"}`, i, genBase.UnixMilli(), bytes.Repeat([]byte("x"), 3000))
		}
		ev, err := dec.Decode([]byte(raw), time.Time{})
		require.NoError(t, err)
		r := Record{Offset: int64(i), KafkaMs: int64(i) * 7, Event: ev}
		want = append(want, r)
		file = encodeRecord(file, s, &r)
	}
	for _, size := range []int{5, 64, 1000, 4096, spillBlock} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var got []Record
			var rec Record
			err := readRecords(bytes.NewReader(file), make([]byte, size), s, 0, func() *Record { return &rec }, func(r *Record) error {
				c := *r
				c.Event.Values = append([]schemas.Value(nil), r.Event.Values...)
				got = append(got, c)
				return nil
			})
			require.NoError(t, err)
			require.Equal(t, len(want), len(got))
			for i := range want {
				require.Equal(t, want[i].Offset, got[i].Offset)
				require.Equal(t, want[i].KafkaMs, got[i].KafkaMs)
				require.Equal(t, want[i].Event.ID, got[i].Event.ID)
				require.True(t, want[i].Event.Time.Equal(got[i].Event.Time))
				for j := range want[i].Event.Values {
					w, g := want[i].Event.Values[j], got[i].Event.Values[j]
					require.True(t, w.Time.Equal(g.Time))
					w.Time, g.Time = time.Time{}, time.Time{}
					require.Equal(t, w, g, "record %d field %d", i, j)
				}
			}
			err = readRecords(bytes.NewReader(file[:len(file)-3]), make([]byte, size), s, 0, func() *Record { return &rec }, func(*Record) error { return nil })
			require.ErrorIs(t, err, errCorruptSpill)
		})
	}
}

// TestAggregateDayShards: a day folded over any number of shards gives
// the rows, byte for byte, of a plain fold of readDay's records on one
// goroutine (float sums and sketches depend on the order each row sees its
// events in), and a corrupt spill is an error whatever the shards.
func TestAggregateDayShards(t *testing.T) {
	cfg := testConfig(t, 100, 3, nil)
	s := cfg.Stream("pv")
	views := cfg.ViewsOf("pv")
	dec := schemas.NewDecoder(s, time.Hour)
	sp := &spillDir{dir: t.TempDir(), stream: s}
	day := dayOf(genBase)
	rng := rand.New(rand.NewPCG(7, 7))
	countries := []string{"US", "DE", "FR", "GB", "JP", "BR", "IN", "c\"7"}
	for p := int32(0); p < 3; p++ {
		for phase := 0; phase < 2; phase++ {
			if p == 1 && phase == 0 {
				continue // a missing bucket
			}
			w := sp.writer(p, phase)
			for i := 0; i < 2000+int(p)*317; i++ {
				raw := fmt.Sprintf(`{"event_id":"p%d-%d-%d","ts":%d,"user_id":"u%d","amount":%g,"latency":%d`,
					p, phase, i, genBase.UnixMilli()+rng.Int64N(86_400_000), rng.IntN(300), float64(rng.IntN(100_000))/1000, rng.IntN(5000))
				if c := rng.IntN(len(countries) + 1); c < len(countries) {
					raw += fmt.Sprintf(`,"country":%q`, countries[c])
				}
				ev, err := dec.Decode([]byte(raw+"}"), time.Time{})
				require.NoError(t, err)
				r := Record{Offset: int64(phase*100_000 + i), KafkaMs: int64(i), Event: ev}
				require.NoError(t, w.addEncoded(day, encodeRecord(nil, s, &r)))
			}
			require.NoError(t, w.flush())
		}
	}

	// The truth: one map per view, folded in readDay's order.
	cells := func(v *schemas.View, keys []schemas.RowKey, aggs []schemas.Aggregate) []string {
		var out []string
		for j, k := range keys {
			row := fmt.Sprintf("%d %q", k.WindowMs, k.Dims)
			for m := range v.Measures {
				c := v.Measures[m].Cell(&aggs[j][m])
				if f, ok := c.(*float64); ok && f != nil {
					c = *f
				}
				row += fmt.Sprintf(" %v", c)
			}
			out = append(out, row)
		}
		return out
	}
	want := make([][]string, len(views))
	for i, v := range views {
		m := map[schemas.RowKey]schemas.Aggregate{}
		require.NoError(t, sp.readDay(day, 3, func(r *Record) error {
			k := v.Key(&r.Event)
			if m[k] == nil {
				m[k] = v.NewAggregate()
			}
			v.Add(m[k], &r.Event)
			return nil
		}))
		keys := make([]schemas.RowKey, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(a, b int) bool {
			return keys[a].WindowMs < keys[b].WindowMs || keys[a].WindowMs == keys[b].WindowMs && keys[a].Dims < keys[b].Dims
		})
		aggs := make([]schemas.Aggregate, len(keys))
		for j, k := range keys {
			aggs[j] = m[k]
		}
		want[i] = cells(v, keys, aggs)
	}
	require.Greater(t, len(want[0]), 100) // rows enough for every shard
	require.Len(t, want[1], 1)

	for _, shards := range []int{1, 2, 3, 7} {
		rows, err := aggregateDay(sp, day, 3, views, shards)
		require.NoError(t, err)
		for i, v := range views {
			require.Equal(t, want[i], cells(v, rows[i].keys, rows[i].aggs), "%d shards, view %s", shards, v.Name)
		}
	}

	path := sp.path(day, 2, 1)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data[:len(data)-3], 0o644))
	for _, shards := range []int{1, 2, 3} {
		_, err := aggregateDay(sp, day, 3, views, shards)
		require.ErrorIs(t, err, errCorruptSpill, "%d shards", shards)
	}
}

// TestSpillWriterMemoryBoundedByLimit: a writer fed a partition whose events
// move through many days (history in Kafka-time order) holds buffers of about
// its limit, not a limit's worth for every day it has seen; and every record
// still reaches its day's bucket.
func TestSpillWriterMemoryBoundedByLimit(t *testing.T) {
	sp := &spillDir{dir: t.TempDir()}
	w := sp.writer(0, 1)
	w.limit = 64 << 10
	rec := bytes.Repeat([]byte("r"), 100)
	const days, perDay = 200, 2000 // 200 KB a day, three limits' worth
	for d := int64(0); d < days; d++ {
		for i := 0; i < perDay; i++ {
			day := d
			if i%100 == 0 && d > 0 {
				day = d - 1 // a few late events of the day before
			}
			require.NoError(t, w.addEncoded(day, rec))
		}
		held := w.freeCap
		for _, b := range w.bufs {
			held += cap(b)
		}
		require.LessOrEqual(t, held, 5*w.limit, "day %d: buffers hold %d bytes for a %d-byte limit", d, held, w.limit)
	}
	require.NoError(t, w.flush())
	for d := int64(0); d < days; d++ {
		info, err := os.Stat(sp.path(d, 0, 1))
		require.NoError(t, err)
		want := int64(perDay) * int64(len(rec))
		if d > 0 {
			want -= int64(perDay/100) * int64(len(rec))
		}
		if d < days-1 {
			want += int64(perDay/100) * int64(len(rec))
		}
		require.Equal(t, want, info.Size(), "day %d", d)
	}
}
