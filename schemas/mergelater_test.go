package schemas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/axiomhq/hyperloglog"
	"github.com/stretchr/testify/require"
)

// randomHLLPart is a union of 1 to 4 random sketches (sparse of a few to
// thousands of keys from a pool of pool users, or dense), compacted as a
// cached rollup's (Dense) or not, and sometimes itself the MergeLater of
// sub-parts (a group merged from parts, then merged on). It returns the
// sketches too.
func randomHLLPart(rng *rand.Rand, pool int) (*HLLUnion, []*hyperloglog.Sketch) {
	if rng.IntN(6) == 0 {
		p := &HLLUnion{}
		var sks []*hyperloglog.Sketch
		for i, n := 0, 1+rng.IntN(3); i < n; i++ {
			sub, s := randomHLLPart(rng, pool)
			sub.Dense()
			p.MergeLater(sub)
			sks = append(sks, s...)
		}
		return p, sks
	}
	p := &HLLUnion{}
	var sks []*hyperloglog.Sketch
	for i, n := 0, 1+rng.IntN(4); i < n; i++ {
		sk := newHLL()
		if rng.IntN(12) == 0 {
			sk = hyperloglog.NewNoSparse()
		}
		for j, m := 0, rng.IntN(1+rng.IntN(1500)); j < m; j++ {
			sk.Insert([]byte(fmt.Sprintf("u%d", rng.IntN(pool))))
		}
		p.Add(sk)
		sks = append(sks, sk)
	}
	if rng.IntN(4) > 0 {
		p.Dense()
	}
	return p, sks
}

// TestHLLUnionMergeLaterEqualsMerge: a union that takes its parts with
// MergeLater (their key lists merged in one k-way pass or counted in a
// hash set when read) ends as one that merges each part at once with
// Merge: the same encoded sketch (the same sparse keys, or the same
// registers), the same dense rule and estimate, equal to the library's
// merge of every sketch. Parts are random (sparse, dense, compacted or
// not, themselves noted lazily), reads are interleaved at random, and
// key pools from a few hundred users (many repeats across parts) to
// tens of thousands (past the sparse limit).
func TestHLLUnionMergeLaterEqualsMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for round := 0; round < 300; round++ {
		pool := []int{300, 3000, 30000}[rng.IntN(3)]
		var parts []*HLLUnion
		var sks []*hyperloglog.Sketch
		for i, n := 0, 1+rng.IntN(12); i < n; i++ {
			p, s := randomHLLPart(rng, pool)
			parts = append(parts, p)
			sks = append(sks, s...)
		}
		var lazy, eager HLLUnion
		for _, p := range parts {
			eager.Merge(p)
			lazy.MergeLater(p)
			switch rng.IntN(8) {
			case 0: // a read in between merges what was noted so far
				require.Equal(t, eager.Estimate(), lazy.Estimate(), "round %d", round)
			case 1:
				require.Equal(t, eager.AtLeast(2000), lazy.AtLeast(2000), "round %d", round)
			case 2: // a sketch added as bytes while lists are noted
				sk := newHLL()
				for j, m := 0, rng.IntN(200); j < m; j++ {
					sk.Insert([]byte(fmt.Sprintf("u%d", rng.IntN(pool))))
				}
				eager.Add(sk)
				lazy.Add(sk)
				sks = append(sks, sk)
			}
			if k := lazy.SparseKeys(); k >= 0 {
				require.LessOrEqual(t, k, int(eager.Sketch().Estimate())+1, "round %d: SparseKeys is a lower bound", round)
			}
		}
		lib := newHLL()
		for _, sk := range sks {
			require.NoError(t, lib.Merge(sk))
		}
		want := lib.Estimate()
		require.Equal(t, want, eager.Estimate(), "round %d: eager", round)
		require.Equal(t, want, lazy.Estimate(), "round %d: lazy", round)
		require.Equal(t, eager.Dense(), lazy.Dense(), "round %d", round)
		eb, err := eager.Sketch().MarshalBinary()
		require.NoError(t, err)
		lb, err := lazy.Sketch().MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, eb, lb, "round %d: the same sketch", round)
	}
}

// TestMergeSortedLists: the k-way merge equals merging the lists two at a
// time, for random sorted lists with shared keys, empty lists and one list.
func TestMergeSortedLists(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	for round := 0; round < 500; round++ {
		var lists [][]uint32
		for i, n := 0, 1+rng.IntN(10); i < n; i++ {
			set := map[uint32]bool{}
			for j, m := 0, rng.IntN(1+rng.IntN(300)); j < m; j++ {
				set[uint32(rng.IntN(1+rng.IntN(2000)))] = true
			}
			var l []uint32
			for k := range set {
				l = append(l, k)
			}
			slicesSortUint32(l)
			lists = append(lists, l)
		}
		var want []uint32
		for _, l := range lists {
			want = mergeSortedInto(nil, want, l)
		}
		in := append([][]uint32(nil), lists...)
		got := mergeSortedLists(nil, in)
		require.Equal(t, len(want), len(got), "round %d", round)
		if len(want) > 0 {
			require.Equal(t, want, got, "round %d", round)
		}
	}
}

func slicesSortUint32(l []uint32) {
	tmp := make([]uint32, len(l))
	if len(l) > 0 {
		radixSortUint32(l, tmp)
	}
}

// randomDDPart is a union of 1 to 5 random flat sketches (positive,
// negative and zero values, narrow or wide, a few or many bins: pairs or
// count arrays), sometimes itself the MergeLater of sub-parts.
func randomDDPart(t *testing.T, rng *rand.Rand, m *Measure) *DDUnion {
	p := &DDUnion{}
	if rng.IntN(6) == 0 {
		for i, n := 0, 1+rng.IntN(3); i < n; i++ {
			p.MergeLater(randomDDPart(t, rng, m))
		}
		return p
	}
	for i, n := 0, 1+rng.IntN(5); i < n; i++ {
		var st State
		scale := math.Pow(10, float64(rng.IntN(6)-1))
		for j, k := 0, rng.IntN(1+rng.IntN(600)); j < k; j++ {
			x := rng.ExpFloat64() * scale
			switch rng.IntN(10) {
			case 0:
				x = 0
			case 1:
				x = -x
			}
			if st.DD == nil {
				st.DD = newDD()
			}
			require.NoError(t, st.DD.Add(x))
		}
		if st.DD == nil {
			continue
		}
		f, err := DecodeDDFlat(m.Cell(&st).([]byte))
		require.NoError(t, err)
		p.AddFlat(f)
	}
	return p
}

// TestDDUnionMergeLaterEqualsMerge: a union that takes its parts with
// MergeLater (their bins added when it is read, into stores sized once)
// has the bins, zero count and quantiles of one that merges each part at
// once, with reads and flat sketches interleaved at random; so do both
// when parts were compacted (Compact, as the speed cache keeps them)
// after a third union merged them as they were.
func TestDDUnionMergeLaterEqualsMerge(t *testing.T) {
	m := &Measure{Name: "latency", Type: MeasureQuantiles, Field: "latency_ms"}
	rng := rand.New(rand.NewPCG(45, 46))
	for round := 0; round < 300; round++ {
		var lazy, eager, ref DDUnion
		for i, n := 0, 1+rng.IntN(12); i < n; i++ {
			p := randomDDPart(t, rng, m)
			ref.Merge(p)
			if rng.IntN(2) == 0 {
				p.Compact()
			}
			eager.Merge(p)
			lazy.MergeLater(p)
			switch rng.IntN(6) {
			case 0:
				require.Equal(t, eager.Quantiles(), lazy.Quantiles(), "round %d", round)
			case 1:
				q := randomDDPart(t, rng, m)
				if len(q.later) == 0 {
					f := &DDFlat{Zero: q.zero, Pos: FlatBins{Index: q.pos.idx, Count: q.pos.cnt, Lo: int32(q.pos.lo), Hi: int32(q.pos.hi)},
						Neg: FlatBins{Index: q.neg.idx, Count: q.neg.cnt, Lo: int32(q.neg.lo), Hi: int32(q.neg.hi)}}
					if q.pos.bins == nil && q.neg.bins == nil {
						eager.AddFlat(f)
						lazy.AddFlat(f)
						ref.AddFlat(f)
					}
				}
			}
		}
		require.Equal(t, eager.Quantiles(), lazy.Quantiles(), "round %d", round)
		require.Equal(t, ref.Quantiles(), lazy.Quantiles(), "round %d", round)
		es, ls, rs := eager.Sketch(), lazy.Sketch(), ref.Sketch()
		if es == nil {
			require.Nil(t, ls, "round %d", round)
			require.Nil(t, rs, "round %d", round)
			continue
		}
		require.Equal(t, rs.GetZeroCount(), ls.GetZeroCount(), "round %d", round)
		require.Equal(t, ddBinsOf(rs.GetPositiveValueStore()), ddBinsOf(ls.GetPositiveValueStore()), "round %d", round)
		require.Equal(t, ddBinsOf(rs.GetNegativeValueStore()), ddBinsOf(ls.GetNegativeValueStore()), "round %d", round)
		require.Equal(t, es.GetZeroCount(), ls.GetZeroCount(), "round %d", round)
		require.Equal(t, ddBinsOf(es.GetPositiveValueStore()), ddBinsOf(ls.GetPositiveValueStore()), "round %d", round)
		require.Equal(t, ddBinsOf(es.GetNegativeValueStore()), ddBinsOf(ls.GetNegativeValueStore()), "round %d", round)
	}
}

// TestMergeLaterOnlyReadsParts: unions shared by concurrent readers (a
// cached rollup's, compacted as it is cached) are only read by MergeLater
// and the reads that follow it: under -race, goroutines merging the same
// parts lazily and reading their own unions race with nothing, and all
// get the answer of an eager merge.
func TestMergeLaterOnlyReadsParts(t *testing.T) {
	m := &Measure{Name: "latency", Type: MeasureQuantiles, Field: "latency_ms"}
	rng := rand.New(rand.NewPCG(47, 48))
	var hparts []*HLLUnion
	var dparts []*DDUnion
	var hwant HLLUnion
	var dwant DDUnion
	for i := 0; i < 20; i++ {
		h, _ := randomHLLPart(rng, 5000)
		h.Dense()
		d := randomDDPart(t, rng, m)
		d.Trim()
		hparts, dparts = append(hparts, h), append(dparts, d)
		hwant.Merge(h)
		dwant.Merge(d)
	}
	he, dq := hwant.Estimate(), dwant.Quantiles()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rep := 0; rep < 5; rep++ {
				var h HLLUnion
				var d DDUnion
				for i := range hparts {
					h.MergeLater(hparts[i])
					d.MergeLater(dparts[i])
				}
				if h.Estimate() != he || fmt.Sprint(d.Quantiles()) != fmt.Sprint(dq) {
					t.Errorf("a concurrent lazy merge answered differently")
				}
			}
		}()
	}
	wg.Wait()
}
