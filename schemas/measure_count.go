package schemas

import "fmt"

// count: the number of events. It reads no field; its cell is an int64
// and SQL merges stored counts by summing them.
var countKind = MeasureKind{
	Type:      MeasureCount,
	Field:     FieldNone,
	Exact:     true,
	Cell:      CellInt64,
	Result:    ResultInt64,
	ResultDoc: "int64",
	SQLMerge:  "sum",
	Add:       func(st *State, _ *Value) { st.N++ },
	Merge:     func(*State, *State) {}, // Measure.Merge adds N
	Int:       func(st *State) int64 { return st.N },
	FromCell: func(cell any) (State, error) {
		n, ok := IntCell(cell)
		if !ok || n < 0 {
			return State{}, fmt.Errorf("count %v", cell)
		}
		return State{N: n}, nil
	},
	Answer: func(st *State) any { return st.N },
}
