package schemas

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/stretchr/testify/require"
)

// TestFoldMatchesAdd: a Fold of any events gives the aggregate that
// NewAggregate and View.Add give (what the speed layer computes): the same
// Cell bytes for every measure, sketches included, for rows from one event
// to ones whose distinct sketches go dense, with few and many repeats and
// missing values.
func TestFoldMatchesAdd(t *testing.T) {
	v := allTypesConfig(t).View("every")
	s := v.StreamDef()
	cases := []struct {
		events, card int // events; distinct values per field
		missing      int // percent of values unset
	}{
		{0, 1, 0}, {1, 1, 0}, {5, 3, 50}, {200, 20, 10}, {1000, 1000, 0},
		{3000, 100_000, 5}, {6000, 100_000, 0}, {8000, 7000, 0}, {20_000, 100_000, 30},
		{40_000, 100_000, 0}, {50_000, 3000, 0}, {100_000, 2500, 0}, {120_000, 6000, 1},
		{30_000, 1 << 30, 0},
	}
	for seed, c := range cases {
		t.Run(fmt.Sprintf("%d events of %d values, %d%% missing", c.events, c.card, c.missing), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(seed), 7))
			ev := Event{Values: make([]Value, len(s.Fields))}
			add, fold := v.NewAggregate(), v.NewFold()
			for range c.events {
				for i, f := range s.Fields {
					val := &ev.Values[i]
					*val = Value{}
					if r.IntN(100) < c.missing && f.Name != "kind" {
						continue
					}
					n := r.Int64N(int64(c.card))
					val.Set = true
					switch f.Type {
					case TypeString:
						val.Str = fmt.Sprintf("u%d", n)
					case TypeInt64:
						val.Int, val.Float = n, float64(n)
					case TypeFloat64:
						val.Float = float64(n) / 8
					case TypeBool:
						val.Bool = n%2 == 1
					case TypeTimestamp:
						val.Time = time.UnixMilli(1.7e12 + n).UTC()
					}
				}
				ev.ID, ev.Time = ev.Values[0].Str, ev.Values[1].Time
				v.Add(add, &ev)
				fold.Add(&ev)
			}
			got := fold.Aggregate()
			for m := range v.Measures {
				require.Equal(t, v.Measures[m].Cell(&add[m]), v.Measures[m].Cell(&got[m]), "measure %s", v.Measures[m].Name)
				require.Equal(t, add[m].N, got[m].N, "measure %s", v.Measures[m].Name)
			}
		})
	}
}

// TestHLLFoldMatchesLibrary: hllFold gives the library's sketch bytes for
// hash sequences that exercise each of its paths: random hashes (the list
// goes dense), hashes whose sparse keys carry a rank (bits 25..14 from the
// top zero, rare in random hashes), small key spaces repeated past the
// replay bound, and every length around the merge and dense thresholds.
func TestHLLFoldMatchesLibrary(t *testing.T) {
	ranked := func(r *rand.Rand) uint64 { // a hash with the 11 bits below the top 14 zero
		x := r.Uint64() &^ (uint64(1<<11-1) << 39)
		const low = 1<<39 - 1 // the tail whose rank the key carries
		return x&^low | (x&low)>>uint(r.IntN(40))
	}
	gens := map[string]func(r *rand.Rand, pool []uint64) uint64{
		"random": func(r *rand.Rand, _ []uint64) uint64 { return r.Uint64() },
		"ranked": func(r *rand.Rand, _ []uint64) uint64 { return ranked(r) },
		"mixed": func(r *rand.Rand, _ []uint64) uint64 {
			if r.IntN(3) == 0 {
				return ranked(r) >> uint(r.IntN(3)) // also low ranks and empty tails
			}
			return r.Uint64()
		},
		"pool": func(r *rand.Rand, pool []uint64) uint64 { return pool[r.IntN(len(pool))] },
	}
	lengths := []int{1, 163, 164, 165, 328, 1000, 5000, 5400, 5600, 6000, 7000, 20_000, 120_000}
	for name, gen := range gens {
		for _, n := range lengths {
			for _, poolSize := range []int{1, 50, 2000, 5000} {
				if name != "pool" && poolSize > 1 {
					continue
				}
				r := rand.New(rand.NewPCG(uint64(n), uint64(poolSize)))
				pool := make([]uint64, poolSize)
				for i := range pool {
					pool[i] = gens["mixed"](r, nil)
				}
				lib, h := hyperloglog.New14(), &hllFold{}
				for range n {
					x := gen(r, pool)
					lib.InsertHash(x)
					h.insert(x)
					if h.regs == nil && h.sk == nil && h.tmpN == 0 { // just merged
						require.Equal(t, listBytes(h.list), h.listBytes)
						require.True(t, slices.IsSorted(h.list))
					}
				}
				want, err := lib.MarshalBinary()
				require.NoError(t, err)
				got, err := h.sketch().MarshalBinary()
				require.NoError(t, err)
				require.Equal(t, want, got, "%s: %d hashes from a pool of %d", name, n, poolSize)
			}
		}
	}
}

// listBytes is the length of the library's encoding of a sorted key list,
// computed from scratch.
func listBytes(list []uint32) int {
	n, last := 0, uint32(0)
	for _, k := range list {
		n += len(binary.AppendUvarint(nil, uint64(k-last)))
		last = k
	}
	return n
}

// TestHLLFoldHashes: the fold's copies of the library's hash arithmetic
// agree with the library's observable behaviour: one hash in a fresh sketch
// encodes as its sparse key, a key's hash has that key, and a dense sketch
// holds each hash's register and rank.
func TestHLLFoldHashes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 20_000 {
		x := r.Uint64()
		if i%2 == 1 { // the ranked keys
			x &^= uint64(1<<11-1) << 39
			x >>= uint(r.IntN(40))
			x |= uint64(r.IntN(1<<14)) << 50
		}
		sk := hyperloglog.New14()
		sk.InsertHash(x)
		b, err := sk.MarshalBinary()
		require.NoError(t, err)
		k := hllEncode(x)
		require.Equal(t, []byte{0, 0, 0, 1, byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}, b[4:12], "sparse key of %#x", x)
		require.Equal(t, k, hllEncode(hllKeyHash(k)), "hash of key %#x", k)

		dense := hyperloglog.NewNoSparse()
		dense.InsertHash(x)
		b, err = dense.MarshalBinary()
		require.NoError(t, err)
		reg, rank := hllPosVal(x)
		require.Equal(t, rank, b[8+reg], "register of %#x", x)
		dreg, drank := hllDecode(k)
		require.Equal(t, [2]uint32{reg, uint32(rank)}, [2]uint32{dreg, uint32(drank)}, "key %#x of %#x", k, x)
	}
}

// BenchmarkFoldDistinct: one row of 31k events over 100k users (the batch
// benchmark's hourly rows), folded with View.Add and with a Fold.
func BenchmarkFoldDistinct(b *testing.B) {
	v := allTypesConfig(b).View("every")
	s := v.StreamDef()
	r := rand.New(rand.NewPCG(1, 2))
	users := make([]string, 31_000)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", r.IntN(100_000))
	}
	ev := Event{Values: make([]Value, len(s.Fields))}
	user := &ev.Values[s.FieldIndex("s")]
	user.Set = true
	b.Run("Add", func(b *testing.B) {
		for range b.N {
			a := v.NewAggregate()
			for _, u := range users {
				user.Str = u
				v.Add(a, &ev)
			}
		}
	})
	b.Run("Fold", func(b *testing.B) {
		for range b.N {
			f := v.NewFold()
			for _, u := range users {
				user.Str = u
				f.Add(&ev)
			}
			f.Aggregate()
		}
	})
}
