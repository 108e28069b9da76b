package serving_test

import (
	"fmt"

	"github.com/tandem-analytics/tandem/schemas"
)

// present is a measure type that exists only in this test binary: the
// number of events that carry the field. It is all that adding a measure
// type of existing shapes takes — this file, and the one registration line
// in init — and TestEveryMeasureKind runs it through every path beside the
// real types.
var presentKind = schemas.MeasureKind{
	Type:      "present",
	Field:     schemas.FieldAny,
	Exact:     true,
	Cell:      schemas.CellInt64,
	Result:    schemas.ResultInt64,
	ResultDoc: "int64",
	SQLMerge:  "sum",
	Add:       func(st *schemas.State, _ *schemas.Value) { st.N++ },
	Merge:     func(*schemas.State, *schemas.State) {}, // Measure.Merge adds N
	Int:       func(st *schemas.State) int64 { return st.N },
	FromCell: func(cell any) (schemas.State, error) {
		n, ok := schemas.IntCell(cell)
		if !ok || n < 0 {
			return schemas.State{}, fmt.Errorf("present %v", cell)
		}
		return schemas.State{N: n}, nil
	},
	Answer: func(st *schemas.State) any { return st.N },
}

func init() { schemas.RegisterMeasureKind(&presentKind) }
