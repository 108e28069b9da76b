package batch

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
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

// TestReadDayAhead: reading a day ahead on another goroutine yields the
// records of readDay, in its order, and an error from fn stops it.
func TestReadDayAhead(t *testing.T) {
	cfg := testConfig(t, 100, 3, nil)
	s := cfg.Stream("pv")
	dec := schemas.NewDecoder(s, time.Hour)
	sp := &spillDir{dir: t.TempDir(), stream: s}
	day := dayOf(genBase)
	for p := int32(0); p < 3; p++ {
		for phase := 0; phase < 2; phase++ {
			if p == 1 && phase == 0 {
				continue // a missing bucket
			}
			w := sp.writer(p, phase)
			for i := 0; i < 1000+int(p)*317; i++ {
				raw := fmt.Sprintf(`{"event_id":"p%d-%d-%d","ts":%d,"country":"c%d","latency":%d}`, p, phase, i, genBase.UnixMilli()+int64(i), i%7, i)
				ev, err := dec.Decode([]byte(raw), time.Time{})
				require.NoError(t, err)
				r := Record{Offset: int64(phase*100_000 + i), KafkaMs: int64(i), Event: ev}
				require.NoError(t, w.addEncoded(day, encodeRecord(nil, s, &r)))
			}
			require.NoError(t, w.flush())
		}
	}
	collect := func(read func(int64, int, func(*Record) error) error) []string {
		var out []string
		require.NoError(t, read(day, 3, func(r *Record) error {
			out = append(out, fmt.Sprintf("%d %d %d %s %d %v", r.Partition, r.Offset, r.KafkaMs, r.Event.ID, r.Event.Time.UnixMilli(), r.Event.Values))
			return nil
		}))
		return out
	}
	want := collect(sp.readDay)
	require.Len(t, want, 2*1000+1*1317+2*1634)
	require.Equal(t, want, collect(sp.readDayAhead))

	stop := errors.New("enough")
	n := 0
	err := sp.readDayAhead(day, 3, func(*Record) error {
		if n++; n == 1500 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1500, n)
}
