package schemas

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/axiomhq/hyperloglog"
	"github.com/stretchr/testify/require"
)

// TestHLLUnionEqualsMerge: over random sets of sketches (empty, small,
// around the library's sparse-to-dense threshold, dense, from cells read
// back), in random orders, a union's estimate equals the library's merge
// of the same sketches; a union made dense part-way equals the library's
// merge made dense.
func TestHLLUnionEqualsMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for round := 0; round < 200; round++ {
		n := 1 + rng.IntN(40)
		pool := 1 + rng.IntN(60000)
		var sks []*hyperloglog.Sketch
		for i := 0; i < n; i++ {
			var sk *hyperloglog.Sketch
			if rng.IntN(8) == 0 {
				sk = hyperloglog.NewNoSparse()
			} else {
				sk = newHLL()
			}
			for j, m := 0, rng.IntN(1+rng.IntN(3000)); j < m; j++ {
				sk.Insert([]byte(fmt.Sprintf("u%d", rng.IntN(pool))))
			}
			if rng.IntN(2) == 0 { // as read back from a stored cell
				b, err := sk.MarshalBinary()
				require.NoError(t, err)
				sk = newHLL()
				require.NoError(t, sk.UnmarshalBinary(b))
			}
			sks = append(sks, sk)
		}
		var merged *hyperloglog.Sketch
		for _, sk := range sks {
			if merged == nil {
				merged = sk.Clone()
			} else {
				require.NoError(t, merged.Merge(sk))
			}
		}
		var u HLLUnion
		for _, i := range rng.Perm(len(sks)) {
			u.Add(sks[i])
		}
		require.Equal(t, merged.Estimate(), u.Sketch().Estimate(), "round %d: %d sketches", round, n)

		var d HLLUnion
		for k, i := range rng.Perm(len(sks)) {
			d.Add(sks[i])
			if k == len(sks)/2 {
				d.Densify()
			}
		}
		dense := hyperloglog.NewNoSparse()
		require.NoError(t, dense.Merge(merged))
		require.Equal(t, dense.Estimate(), d.Sketch().Estimate(), "round %d, densified", round)
	}
	var empty HLLUnion
	require.Nil(t, empty.Sketch())
	empty.Add(nil)
	require.Nil(t, empty.Sketch())
}
