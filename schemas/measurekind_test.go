package schemas

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMeasureKindsTable: every measure type has its kind in the one table,
// every kind is complete for its shapes, and the validation error for an
// unknown type lists the table.
func TestMeasureKindsTable(t *testing.T) {
	for _, mt := range []MeasureType{MeasureCount, MeasureSum, MeasureMin, MeasureMax, MeasureDistinct, MeasureQuantiles} {
		k := KindOf(mt)
		require.NotNil(t, k, mt)
		require.Equal(t, mt, k.Type)
	}
	for _, k := range MeasureKinds() {
		require.NoError(t, k.check(), k.Type)
		require.Equal(t, k.Exact, k.Type.Exact(), k.Type)
		require.Equal(t, k.Exact, k.Sketch == SketchNone, "%s: exact kinds and only they have no sketch", k.Type)
		require.Equal(t, k.Exact, k.SQLState == SQLStateNone, "%s: sketch kinds and only they keep a SQL state", k.Type)
	}
	require.Nil(t, KindOf("avg"))
	require.Equal(t, "count, sum, min, max, distinct or quantiles", measureTypeList())
}

// TestRegisterMeasureKindRefuses: a duplicate type or a kind lacking what
// its shapes need is refused when it is registered, not when an event
// first reaches the missing function.
func TestRegisterMeasureKindRefuses(t *testing.T) {
	before := len(measureKinds)
	dup := countKind
	require.PanicsWithValue(t, `schemas: measure type "count" registered twice`, func() { RegisterMeasureKind(&dup) })
	noFloat := sumKind
	noFloat.Type, noFloat.Float = "sum2", nil
	require.Panics(t, func() { RegisterMeasureKind(&noFloat) })
	mixed := sumKind
	mixed.Type, mixed.Cell, mixed.Encode = "sum3", CellSketch, func(*State) []byte { return nil }
	require.Panics(t, func() { RegisterMeasureKind(&mixed) })
	require.Len(t, measureKinds, before)
	for _, k := range measureKinds {
		require.False(t, strings.HasPrefix(string(k.Type), "sum") && k.Type != MeasureSum)
	}
}

// TestExactAddMergeAllocateNothing: adding an event to and merging a state
// of an exact measure goes through its kind (a call) without allocating,
// as the switch it replaced did; the speed and batch layers do both per
// event and per row.
func TestExactAddMergeAllocateNothing(t *testing.T) {
	v := allTypesConfig(t).View("every")
	_, evs := genEvents(t, rand.New(rand.NewPCG(5, 6)), v.StreamDef(), 200)
	exact := 0
	for i := range v.Measures {
		m := &v.Measures[i]
		if !m.Kind().Exact {
			continue
		}
		exact++
		var st, acc State
		j := 0
		require.Zero(t, testing.AllocsPerRun(500, func() {
			m.Add(&st, &evs[j%len(evs)])
			m.Merge(&acc, &st)
			j++
		}), m.Name)
		require.Positive(t, acc.N, m.Name)
	}
	require.Positive(t, exact)
}
