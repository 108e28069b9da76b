package chstate

import (
	"math"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPreimagesLandInTheirRegister checks every (bucket, rank) preimage and
// a few variants against intHash32.
func TestPreimagesLandInTheirRegister(t *testing.T) {
	for b := uint32(0); b < hllBuckets; b++ {
		for r := uint8(1); r <= maxRank; r++ {
			k := preimage(b, r, 0)
			h := intHash32(k)
			require.Equal(t, b, h&(hllBuckets-1), "bucket of preimage(%d, %d)", b, r)
			require.Equal(t, r, rankOf(h), "rank of preimage(%d, %d)", b, r)
			if b%512 == 0 {
				require.NotEqual(t, k, preimage(b, r, 1), "variants differ")
			}
		}
	}
}

// TestKeysRebuildTheState: inserting AppendKeys's keys as hashes gives the
// same bytes, for small states, large ones and large ones with collided
// registers (fewer than 17 set).
func TestKeysRebuildTheState(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	check := func(d *Distinct) {
		t.Helper()
		want, _ := d.MarshalBinary()
		var r Distinct
		keys := d.AppendKeys(nil)
		for _, k := range keys {
			r.insert(k)
		}
		got, _ := r.MarshalBinary()
		require.Equal(t, want, got, "%d keys", len(keys))
		require.LessOrEqual(t, len(keys), hllBuckets)
	}
	for _, n := range []int{0, 1, 16, 17, 100, 5000, 100000} {
		var d Distinct
		for range n {
			d.insert(rng.Uint64())
		}
		check(&d)
	}
	// 17 keys in one register: large, one register set.
	var d Distinct
	for v := uint32(0); v < 17; v++ {
		d.insert(preimage(5, 1, v))
	}
	require.False(t, d.Exact())
	check(&d)
}

// TestSparseEqualsDense: a large state held sparse serializes, estimates
// and merges as the dense registers of the same keys, across the switch
// from sparse to dense (sparseMax set registers), merged in every pairing
// of forms and into itself.
func TestSparseEqualsDense(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	reference := func(keys []uint64) []byte {
		seen := map[uint64]bool{}
		var small []uint64
		for _, k := range keys {
			if !seen[k] {
				seen[k] = true
				small = append(small, k)
			}
		}
		if len(small) <= smallSetSize {
			return (&Distinct{small: small}).AppendBinary(nil)
		}
		regs := new(registers)
		for k := range seen {
			b, r := position(k)
			regs[b] = max(regs[b], r)
		}
		return (&Distinct{large: regs}).AppendBinary(nil)
	}
	keysOf := func(n int) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = rng.Uint64()
		}
		return out
	}
	for _, n := range []int{17, 100, sparseMax - 1, sparseMax, sparseMax + 1, 700, 5000} {
		keys := keysOf(n)
		var d Distinct
		for _, k := range keys {
			d.insert(k)
		}
		want := reference(keys)
		require.Equal(t, want, d.AppendBinary(nil), "%d keys", n)
		var back Distinct
		require.NoError(t, back.UnmarshalBinary(want))
		require.Equal(t, back.Estimate(), d.Estimate(), "%d keys", n)
	}
	sizes := []int{5, 40, 300, 600, 3000}
	for _, a := range sizes {
		for _, b := range sizes {
			ka, kb := keysOf(a), keysOf(b)
			var x, y Distinct
			for _, k := range ka {
				x.insert(k)
			}
			for _, k := range kb {
				y.insert(k)
			}
			x.Merge(&y)
			require.Equal(t, reference(append(ka, kb...)), x.AppendBinary(nil), "%d + %d keys", a, b)
		}
		ka := keysOf(a)
		var x Distinct
		for _, k := range ka {
			x.insert(k)
		}
		x.Merge(&x)
		require.Equal(t, reference(ka), x.AppendBinary(nil), "%d keys merged into themselves", a)
	}
}

// TestCentroidsReadBetweenAdds: a digest read by AppendCentroids after
// every few values (as the speed layer reads a row at each flush) gives,
// at each read, the centroids of a compressed copy of the same values
// added in the same order, and the same state at the end as a digest never
// read: reads sort in place and glue into the output only. Values repeat,
// include -0 and +0, and pass 2048 centroids between reads, so each of
// AppendCentroids's paths (copy, unchanged since compress, sort and glue)
// is taken.
func TestCentroidsReadBetweenAdds(t *testing.T) {
	rng := rand.New(rand.NewSource(21))
	gens := []func() float64{
		func() float64 { return rng.ExpFloat64() * 100 },
		func() float64 { return float64(rng.Intn(7)) },
		func() float64 { return []float64{0, negZero, 1, -1}[rng.Intn(4)] },
		func() float64 { return 1000 + float64(rng.Intn(300))/64 },
	}
	for gi, gen := range gens {
		for _, step := range []int{1, 3, 50, 700, 3000} {
			var read, never Quantiles
			for n := 0; n < 12000; n += step {
				for range step {
					v := gen()
					read.Add(v)
					never.Add(v)
				}
				ref := Quantiles{centroids: append([]centroid(nil), never.centroids...), count: never.count, unmerged: never.unmerged}
				ref.compress()
				var wantM, gotM []float32
				var wantC, gotC []uint64
				for _, c := range ref.centroids {
					wantM, wantC = append(wantM, c.mean), append(wantC, uint64(c.count))
				}
				gotM, gotC = read.AppendCentroids(nil, nil)
				require.Equal(t, wantM, gotM, "values %d, read every %d, at %d", gi, step, n)
				require.Equal(t, wantC, gotC, "values %d, read every %d, at %d", gi, step, n)
			}
			a, _ := read.MarshalBinary()
			b, _ := never.MarshalBinary()
			require.Equal(t, b, a, "values %d, read every %d", gi, step)
		}
	}
}

var negZero = math.Copysign(0, -1)
