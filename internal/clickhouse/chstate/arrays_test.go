package chstate

import (
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
