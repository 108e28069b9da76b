package schemas

import "fmt"

// sum: the sum of a numeric field. Its cell is a float64 (0 for no value);
// SQL merges stored sums by summing them.
var sumKind = MeasureKind{
	Type:      MeasureSum,
	Field:     FieldNumeric,
	Exact:     true,
	Cell:      CellFloat64,
	Result:    ResultFloat64,
	ResultDoc: "float64",
	SQLMerge:  "sum",
	Add:       func(st *State, val *Value) { st.Sum += val.Float; st.N++ },
	Merge:     func(dst, src *State) { dst.Sum += src.Sum },
	Float:     func(st *State) (float64, bool) { return st.Sum, true },
	// The row count is not stored: N is 1 when the stored sum is non-zero.
	FromCell: func(cell any) (State, error) {
		f, ok := toFloat(cell)
		if !ok {
			return State{}, fmt.Errorf("sum %v", cell)
		}
		st := State{Sum: f}
		if f != 0 {
			st.N = 1
		}
		return st, nil
	},
	Answer: func(st *State) any { return st.Sum },
}
