package batch

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIDTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		size int // initial size hint
	}{
		{"empty", 0, 0},
		{"small, grows", 5000, 0},
		{"presized", 20000, 20000},
		{"mapped outside the heap", 100000, 0},     // grows past allocEntries's mapping size
		{"hashes sharing their top bits", 3000, 0}, // a hostile producer cannot make probe runs long
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.n), 7))
			tbl := newIDTable(tc.size)
			truth := map[idHash]int64{}
			var hs []idHash
			for i := 0; i < tc.n; i++ {
				var h idHash
				for j := range h {
					h[j] = byte(rng.Uint32())
				}
				if tc.name == "hashes sharing their top bits" {
					h[0], h[1] = 0xff, 0xff
				}
				if i == 7 {
					h = idHash{} // the empty marker's value is an id hash too
				}
				if i%10 == 3 && len(hs) > 0 {
					h = hs[rng.IntN(len(hs))] // a duplicate: the first offset stays
				}
				hs = append(hs, h)
				_, seen := truth[h]
				if !seen {
					truth[h] = int64(i)
				}
				h0, h1 := splitHash(h)
				require.Equal(t, !seen, tbl.insert(h0, h1, int64(i)))
			}
			require.Equal(t, len(truth), tbl.len())
			for h, off := range truth {
				h0, h1 := splitHash(h)
				got, ok := tbl.get(h0, h1)
				require.True(t, ok)
				require.Equal(t, off, got)
			}
			var miss idHash
			miss[3] = 1
			if _, ok := truth[miss]; !ok {
				_, ok := tbl.get(splitHash(miss))
				require.False(t, ok)
			}

			// The index file holds every entry once and reads back whole.
			var buf bytes.Buffer
			_, err := writeIndex(&buf, tbl.entries(), 0, math.MaxInt64)
			require.NoError(t, err)
			tbl.free()
			require.Equal(t, indexEntryBytes*len(truth), buf.Len())
			data := buf.Bytes()
			seen := map[idHash]bool{}
			for i := 0; i < len(data); i += indexEntryBytes {
				var h idHash
				copy(h[:], data[i:i+16])
				_, ok := truth[h]
				require.True(t, ok)
				require.False(t, seen[h])
				seen[h] = true
			}
			back, err := readIndex(bytes.NewReader(data), int64(len(data)), 10)
			require.NoError(t, err)
			require.Equal(t, len(truth), back.len())
			defer back.free()
			for h, off := range truth {
				got, ok := back.get(splitHash(h))
				require.True(t, ok)
				require.Equal(t, off, got)
			}
		})
	}
}
