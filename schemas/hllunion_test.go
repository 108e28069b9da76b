package schemas

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
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

		// The same from the stored bytes, read in place.
		m := &Measure{Name: "users", Type: MeasureDistinct}
		var ub HLLUnion
		for _, i := range rng.Perm(len(sks)) {
			raw, err := sks[i].MarshalBinary()
			require.NoError(t, err)
			hb, err := ValidHLLBytes(m, raw)
			require.NoError(t, err)
			ub.AddBytes(hb)
		}
		require.Equal(t, merged.Estimate(), ub.Sketch().Estimate(), "round %d: %d sketches as bytes", round, n)

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

// TestHLLUnionEstimate: a union's own Estimate equals its Sketch's (the
// library's) for sparse and dense unions, including registers near the
// extremes (all zero, many high ranks).
func TestHLLUnionEstimate(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for round := 0; round < 300; round++ {
		var u, v HLLUnion
		n := rng.IntN(1 + rng.IntN(200000))
		pool := 1 + rng.IntN(1<<30)
		sk := newHLL()
		for i := 0; i < n; i++ {
			sk.Insert([]byte(fmt.Sprintf("v%d", rng.IntN(pool))))
		}
		u.Add(sk)
		v.Add(sk)
		if rng.IntN(3) == 0 {
			u.Densify()
			v.Densify()
		}
		if rng.IntN(4) == 0 && v.regs != nil { // ranks a real sketch rarely has
			top := []int{hllExactRank + 1, 52}[rng.IntN(2)] // the histogram's path, or the library's order
			for i := range v.regs {
				if rng.IntN(3) == 0 {
					v.regs[i] = uint8(rng.IntN(top))
				}
			}
			u.regs = append(u.regs[:0], v.regs...)
			v.histOK = false // written behind the union's back
		}
		require.Equal(t, u.Sketch().Estimate(), v.Estimate(), "round %d: %d values", round, n)
		if v.histOK {
			require.Equal(t, hllDenseEstimate(v.regs), v.Estimate(), "round %d: the kept histogram", round)
		}
		v.Release() // its registers come back zeroed for a later round's union
	}
	var empty HLLUnion
	require.Zero(t, empty.Estimate())
}

// TestValidHLLBytesRefuses: bytes that are not a sketch of ours are
// refused as StateFromCell refuses them, before AddBytes reads them.
func TestValidHLLBytesRefuses(t *testing.T) {
	m := &Measure{Name: "users", Type: MeasureDistinct}
	sk := newHLL()
	sk.Insert([]byte("a"))
	good, err := sk.MarshalBinary()
	require.NoError(t, err)
	for _, bad := range [][]byte{{2}, {2, 12, 0, 1, 0, 0, 0, 0}, append(append([]byte{}, good[:len(good)-1]...), 0xff)} {
		_, err := ValidHLLBytes(m, bad)
		require.ErrorIs(t, err, ErrBadCell, "%x", bad)
	}
	hb, err := ValidHLLBytes(m, good)
	require.NoError(t, err)
	require.Equal(t, good, hb)
	hb, err = ValidHLLBytes(m, nil)
	require.NoError(t, err)
	require.Nil(t, hb)
}

// TestHLLUnionAtLeast: AtLeast(n) is whether the union is dense or its
// estimate reaches n, at the counts serving asks about.
func TestHLLUnionAtLeast(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	for round := 0; round < 200; round++ {
		var u HLLUnion
		keys := 1 + rng.IntN(4000)
		for s := 0; s < 1+rng.IntN(6); s++ {
			sk := newHLL()
			for i := 0; i < keys; i++ {
				sk.Insert([]byte(fmt.Sprintf("v%d", rng.IntN(3*keys))))
			}
			u.Add(sk)
		}
		n := []int{1, 100, 2000, 2000, 2000, 5000}[rng.IntN(6)]
		got := u.AtLeast(n)
		dense := u.Dense()
		require.Equal(t, dense || u.Estimate() >= uint64(n), got, "round %d: n %d, estimate %d", round, n, u.Estimate())
	}
}

// TestCheckHLLV2MatchesLibrary: on encodings of real sketches, cut,
// extended and with bytes changed, checkHLLV2 refuses exactly what the
// library's UnmarshalBinary refuses (version 2, precision 14).
func TestCheckHLLV2MatchesLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 28))
	var base [][]byte
	for _, n := range []int{0, 1, 3, 40, 200, 1000, 5000, 20000} {
		sk := newHLL()
		for i := 0; i < n; i++ {
			sk.Insert([]byte(fmt.Sprintf("k%d", rng.IntN(1<<30))))
		}
		b, err := sk.MarshalBinary()
		require.NoError(t, err)
		base = append(base, b)
		sk.Estimate() // an empty recent-key set
		b, err = sk.MarshalBinary()
		require.NoError(t, err)
		base = append(base, b)
	}
	checked, refused := 0, 0
	for round := 0; round < 20000; round++ {
		b := append([]byte(nil), base[rng.IntN(len(base))]...)
		switch rng.IntN(5) {
		case 0:
			b = b[:8+rng.IntN(len(b)-7)]
		case 1:
			b = append(b, byte(rng.IntN(256)))
		default:
			for k := 0; k < 1+rng.IntN(3); k++ {
				i := 2 + rng.IntN(len(b)-2) // keep version and precision
				if rng.IntN(3) == 0 && i < 24 {
					b[i] = byte(rng.IntN(4)) // header-ish values hit more branches
				} else {
					b[i] = byte(rng.IntN(256))
				}
			}
		}
		want := newHLL().UnmarshalBinary(b) == nil
		got := checkHLLV2(b) == nil
		require.Equal(t, want, got, "round %d: %x", round, b[:min(len(b), 40)])
		checked++
		if !want {
			refused++
		}
	}
	require.Greater(t, refused, checked/10)
	require.Greater(t, checked-refused, checked/50) // mutations mostly break an encoding; enough survive
}

// TestHLLUnionMergeEqualsMerge: unions of parts of the sketches, some
// compacted (as cached rollups are) and some not, merged into one union in
// any order, give the library's merge of all the sketches — through the
// one-pass merge of sorted keys, the append path and densifying alike.
func TestHLLUnionMergeEqualsMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for round := 0; round < 150; round++ {
		n := 1 + rng.IntN(30)
		pool := 1 + rng.IntN(20000)
		var sks []*hyperloglog.Sketch
		for i := 0; i < n; i++ {
			sk := newHLL()
			if rng.IntN(10) == 0 {
				sk = hyperloglog.NewNoSparse()
			}
			for j, m := 0, rng.IntN(1+rng.IntN(4000)); j < m; j++ {
				sk.Insert([]byte(fmt.Sprintf("u%d", rng.IntN(pool))))
			}
			sks = append(sks, sk)
		}
		merged := sks[0].Clone()
		for _, sk := range sks[1:] {
			require.NoError(t, merged.Merge(sk))
		}
		// Parts of 1 to 4 sketches each.
		var parts []*HLLUnion
		for i := 0; i < n; {
			k := min(n-i, 1+rng.IntN(4))
			p := &HLLUnion{}
			for _, sk := range sks[i : i+k] {
				p.Add(sk)
			}
			if rng.IntN(3) > 0 {
				p.Dense() // compacted, as rollupStates leaves a cached union
			}
			parts = append(parts, p)
			i += k
		}
		var u HLLUnion
		for _, i := range rng.Perm(len(parts)) {
			u.Merge(parts[i])
		}
		require.Equal(t, merged.Estimate(), u.Estimate(), "round %d: %d sketches in %d parts", round, n, len(parts))
		require.Equal(t, merged.Estimate(), u.Sketch().Estimate(), "round %d", round)
	}
}

// TestRadixSortUint32: the radix sort compact uses gives slices.Sort's
// order for random keys, keys sharing bytes (passes skipped), repeats and
// the lengths around hllRadixFrom.
func TestRadixSortUint32(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for _, n := range []int{1, 2, hllRadixFrom - 1, hllRadixFrom, 1000, 70_000} {
		for _, mask := range []uint32{0xffffffff, 0x00ffff00, 0xff0000ff, 0x0000000f, 0} {
			keys := make([]uint32, n)
			for i := range keys {
				keys[i] = rng.Uint32()&mask | 0x10000000
			}
			want := slices.Clone(keys)
			slices.Sort(want)
			radixSortUint32(keys, make([]uint32, n))
			require.Equal(t, want, keys, "n=%d mask=%08x", n, mask)
		}
	}
}

// TestHLLListKeys: the list count is a lower bound of a sparse sketch's
// distinct keys, reached once the library has moved its recent keys into
// the list (as an encoded sketch read back holds them), and -1 for dense.
func TestHLLListKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	sawList := false
	for round := 0; round < 200; round++ {
		sk := newHLL()
		for i, n := 0, rng.IntN(1+rng.IntN(20000)); i < n; i++ {
			sk.Insert([]byte(fmt.Sprintf("v%d", rng.Uint64())))
		}
		b, err := sk.MarshalBinary()
		require.NoError(t, err)
		got := HLLListKeys(b)
		if b[3] == 0 { // the library's dense encoding
			require.Equal(t, -1, got, "round %d", round)
			continue
		}
		// The list's keys, counted from its varints (each increases).
		list := b[8+4*int(binary.BigEndian.Uint32(b[4:8]))+12:]
		n := 0
		for _, c := range list {
			if c&0x80 == 0 {
				n++
			}
		}
		require.Equal(t, n, got, "round %d", round)
		sawList = sawList || got > 0
	}
	require.True(t, sawList)
	require.Equal(t, -1, HLLListKeys([]byte{2, 14, 0, 1}))
}
