package batch

import (
	"bytes"
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
			err := readRecords(bytes.NewReader(file), make([]byte, size), s, &Record{}, func(r *Record) error {
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
			err = readRecords(bytes.NewReader(file[:len(file)-3]), make([]byte, size), s, &Record{}, func(*Record) error { return nil })
			require.ErrorIs(t, err, errCorruptSpill)
		})
	}
}
