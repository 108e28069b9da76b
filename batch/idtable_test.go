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
			_, err := writeIndexTo(&buf, tbl.entries(), 0, math.MaxInt64)
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

// TestIDTableWindow: under a dedup window, admit decides as the rule says
// (a map keeping each id's counted clock), the table stays near the
// window's ids however many it has seen, and the index file keeps exactly
// the ids still inside the window and reads back to the same decisions.
func TestIDTableWindow(t *testing.T) {
	const window = 1000 // ms
	rng := rand.New(rand.NewPCG(5, 6))
	tbl := newIDTable(0)
	defer func() { tbl.free() }()
	counted := map[idHash]int64{}
	var clock int64
	hashOf := func(i int) idHash {
		var h idHash
		h[0], h[1], h[2], h[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		h[15] = 1 // never the all-zero hash
		return h
	}
	for i := 0; i < 200_000; i++ {
		clock += int64(rng.IntN(3)) // about 1,000 messages a window
		id := i
		if i > 0 && rng.IntN(10) < 3 {
			id = max(0, i-rng.IntN(3000)) // a repeat inside or after the window
		}
		h := hashOf(id)
		at, ok := counted[h]
		want := !ok || clock-at >= window
		h0, h1 := splitHash(h)
		require.Equal(t, want, tbl.admit(h0, h1, int64(i), clock, window), "message %d", i)
		if want {
			counted[h] = clock
		}
	}
	require.LessOrEqual(t, len(tbl.ents), 4096, "the table holds the window's ids, not the 140,000 counted")

	var buf bytes.Buffer
	n, err := writeIndexTo(&buf, tbl.entries(), clock, window)
	require.NoError(t, err)
	live := 0
	for _, at := range counted {
		if clock-at < window {
			live++
		}
	}
	require.Equal(t, live, n)
	back, err := readIndex(bytes.NewReader(buf.Bytes()), int64(buf.Len()), 0)
	require.NoError(t, err)
	defer back.free()
	require.Equal(t, live, back.len())
	for h, at := range counted {
		h0, h1 := splitHash(h)
		_, ok := back.get(h0, h1)
		require.Equal(t, clock-at < window, ok)
	}
}
