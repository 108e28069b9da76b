package schemas

import (
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func ddBinsOf(st interface {
	ForEach(func(int, float64) bool)
}) map[int]float64 {
	out := map[int]float64{}
	st.ForEach(func(i int, c float64) bool { out[i] = c; return false })
	return out
}

// TestDDUnionEqualsMerge: over random sets of quantile states (empty,
// one value, wide and narrow ranges, negative values and zeros, read back
// from stored cells), in random orders, a union's sketch is the library's
// merge of the same states: the same bins and zero count, hence the same
// quantiles, also once stored and read back.
func TestDDUnionEqualsMerge(t *testing.T) {
	m := &Measure{Name: "latency", Type: MeasureQuantiles, Field: "latency_ms"}
	rng := rand.New(rand.NewPCG(31, 32))
	for round := 0; round < 300; round++ {
		var states []State
		for i, n := 0, 1+rng.IntN(30); i < n; i++ {
			var st State
			scale := math.Pow(10, float64(rng.IntN(8)-2))
			for j, k := 0, rng.IntN(1+rng.IntN(400)); j < k; j++ {
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
				st.N++
			}
			if st.DD != nil && rng.IntN(2) == 0 { // as read back from a stored cell
				var err error
				st, err = m.StateFromCell(m.Cell(&st))
				require.NoError(t, err)
			}
			states = append(states, st)
		}
		var lib State
		for i := range states {
			m.Merge(&lib, &states[i])
		}
		var u DDUnion
		for _, i := range rng.Perm(len(states)) {
			u.Add(states[i].DD)
		}
		got := State{N: lib.N, DD: u.Sketch()}
		// The same states as serving decodes them: flat, from their cells.
		var uf DDUnion
		for _, i := range rng.Perm(len(states)) {
			if states[i].DD == nil {
				continue
			}
			f, err := DecodeDDFlat(m.Cell(&states[i]).([]byte))
			require.NoError(t, err)
			uf.AddFlat(f)
		}
		// Unions of parts (as speed rollups keep them), merged union into
		// union in any order: the parts are only read, so merging them
		// twice gives the same bins twice over.
		var parts []*DDUnion
		for i := 0; i < len(states); {
			k := min(len(states)-i, 1+rng.IntN(5))
			p := &DDUnion{}
			for _, st := range states[i : i+k] {
				p.Add(st.DD)
			}
			parts = append(parts, p)
			i += k
		}
		var um, twice DDUnion
		for _, i := range rng.Perm(len(parts)) {
			um.Merge(parts[i])
			twice.Merge(parts[i])
		}
		for _, p := range parts {
			twice.Merge(p)
		}
		if lib.DD != nil {
			merged := um.Sketch()
			require.NotNil(t, merged)
			require.Equal(t, ddBinsOf(lib.DD.GetPositiveValueStore()), ddBinsOf(merged.GetPositiveValueStore()), "round %d: merged unions", round)
			require.Equal(t, ddBinsOf(lib.DD.GetNegativeValueStore()), ddBinsOf(merged.GetNegativeValueStore()), "round %d: merged unions", round)
			require.Equal(t, lib.DD.GetZeroCount(), merged.GetZeroCount())
			require.Equal(t, m.Result(&lib), m.Result(&State{N: lib.N, DD: merged}), "round %d: merged unions", round)
			double := twice.Sketch()
			require.Equal(t, 2*lib.DD.GetCount(), double.GetCount(), "round %d: parts merged twice", round)
		}
		if lib.DD != nil {
			flat := uf.Sketch()
			require.NotNil(t, flat)
			require.Equal(t, ddBinsOf(lib.DD.GetPositiveValueStore()), ddBinsOf(flat.GetPositiveValueStore()), "round %d: flat", round)
			require.Equal(t, ddBinsOf(lib.DD.GetNegativeValueStore()), ddBinsOf(flat.GetNegativeValueStore()), "round %d: flat", round)
			require.Equal(t, lib.DD.GetZeroCount(), flat.GetZeroCount())
			require.Equal(t, m.Result(&lib), m.Result(&State{N: lib.N, DD: flat}), "round %d: flat", round)
		}
		require.Equal(t, lib.DD == nil, got.DD == nil, "round %d", round)
		if lib.DD != nil {
			// The library's stores encode the same bins differently by
			// how they were filled, so compare what they hold.
			require.Equal(t, ddBinsOf(lib.DD.GetPositiveValueStore()), ddBinsOf(got.DD.GetPositiveValueStore()), "round %d", round)
			require.Equal(t, ddBinsOf(lib.DD.GetNegativeValueStore()), ddBinsOf(got.DD.GetNegativeValueStore()), "round %d", round)
			require.Equal(t, lib.DD.GetZeroCount(), got.DD.GetZeroCount())
			back, err := m.StateFromCell(m.Cell(&got))
			require.NoError(t, err)
			require.Equal(t, m.Result(&lib), m.Result(&back), "round %d: stored and read back", round)
		}
		require.Equal(t, m.Result(&lib), m.Result(&got), "round %d", round)
		// Quantiles, from the bins alone, answers what the library's
		// sketch does: for unions of sketches, of flat counts and of
		// merged parts, sparse or in count arrays (a second call reads
		// the arrays the first made).
		// Trimmed (as serving's bucket cache keeps a union), and a copy
		// merged from the trimmed one: the same bins.
		var ut, uc DDUnion
		for _, p := range parts {
			ut.Merge(p)
		}
		ut.Trim()
		uc.Merge(&ut)
		for _, x := range []*DDUnion{&u, &uf, &um, &um, &uc, &ut} {
			require.Equal(t, m.Result(&lib), any(x.Quantiles()), "round %d: Quantiles", round)
		}
		if lib.DD != nil && !lib.DD.IsEmpty() {
			qs := []float64{0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1}
			want, err := lib.DD.GetValuesAtQuantiles(qs)
			require.NoError(t, err)
			have, err := got.DD.GetValuesAtQuantiles(qs)
			require.NoError(t, err)
			require.Equal(t, want, have, "round %d", round)
			require.Equal(t, lib.DD.GetCount(), got.DD.GetCount())
		}
	}
	var u DDUnion
	require.Nil(t, u.Sketch(), "the union of nothing")
	u.Add(nil)
	require.Nil(t, u.Sketch())
}

// TestDecodeDDFlatRefusesWhatIsNotOurs: bytes that are not one of our
// cells fail with an error (never a panic or a huge allocation), and
// whatever decodes holds what the library decodes from the same bytes.
func TestDecodeDDFlatRefusesWhatIsNotOurs(t *testing.T) {
	m := &Measure{Name: "latency", Type: MeasureQuantiles, Field: "latency_ms"}
	st := State{DD: newDD()}
	for _, x := range []float64{0, 1, 2.5, 300, -4, 1e9} {
		require.NoError(t, st.DD.Add(x))
		st.N++
	}
	cell := m.Cell(&st).([]byte)
	other, err := ddsketch.NewDefaultDDSketch(0.05)
	require.NoError(t, err)
	require.NoError(t, other.Add(3))
	var ob []byte
	other.Encode(&ob, false)
	_, err = DecodeDDFlat(ob)
	require.ErrorContains(t, err, "another index mapping")
	var noMap []byte
	st.DD.Encode(&noMap, true)
	_, err = DecodeDDFlat(noMap)
	require.ErrorContains(t, err, "no index mapping")
	f, err := DecodeDDFlat(nil)
	require.Error(t, err)
	require.Nil(t, f)

	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		b := append([]byte(nil), cell...)
		for k := 0; k < 1+rng.IntN(3); k++ {
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		}
		if rng.IntN(4) == 0 {
			b = b[:rng.IntN(len(b))]
		}
		f, err := DecodeDDFlat(b)
		if err != nil {
			continue
		}
		lib, lerr := m.StateFromCell(b)
		if lerr != nil || f == nil {
			continue // stricter or looser on the edges; never wrong below
		}
		var u DDUnion
		u.AddFlat(f)
		require.Equal(t, ddBinsOf(lib.DD.GetPositiveValueStore()), ddBinsOf(u.Sketch().GetPositiveValueStore()), "%x", b)
	}
}
