package schemas

import "fmt"

// min: the smallest value of a numeric field. Its cell is a nullable
// float64 (NULL when no event had the field); SQL merges with min.
var minKind = MeasureKind{
	Type:      MeasureMin,
	Field:     FieldNumeric,
	Exact:     true,
	Cell:      CellNullableFloat64,
	Result:    ResultNullableFloat64,
	ResultDoc: "float64 or null",
	SQLMerge:  "min",
	Add: func(st *State, val *Value) {
		if st.N == 0 || val.Float < st.Min {
			st.Min = val.Float
		}
		st.N++
	},
	Merge: func(dst, src *State) {
		if dst.N == 0 || src.Min < dst.Min {
			dst.Min = src.Min
		}
	},
	Float:    func(st *State) (float64, bool) { return st.Min, st.N > 0 },
	FromCell: extremeFromCell,
	Answer:   func(st *State) any { return nullableFloat(st.Min, st.N > 0) },
}

// extremeFromCell reads a min or max cell: a state of one value (N 1,
// Min and Max both the value) or none.
func extremeFromCell(cell any) (State, error) {
	f, null, ok := NullableFloatCell(cell)
	switch {
	case !ok:
		return State{}, fmt.Errorf("%v", cell)
	case null:
		return State{}, nil
	}
	return State{N: 1, Min: f, Max: f}, nil
}

// nullableFloat is f as a *float64 answer or cell, nil when !ok.
func nullableFloat(f float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	return &f
}
