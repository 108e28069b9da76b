package schemas

// max: the largest value of a numeric field; min's mirror.
var maxKind = MeasureKind{
	Type:      MeasureMax,
	Field:     FieldNumeric,
	Exact:     true,
	Cell:      CellNullableFloat64,
	Result:    ResultNullableFloat64,
	ResultDoc: "float64 or null",
	SQLMerge:  "max",
	Add: func(st *State, val *Value) {
		if st.N == 0 || val.Float > st.Max {
			st.Max = val.Float
		}
		st.N++
	},
	Merge: func(dst, src *State) {
		if dst.N == 0 || src.Max > dst.Max {
			dst.Max = src.Max
		}
	},
	Float:    func(st *State) (float64, bool) { return st.Max, st.N > 0 },
	FromCell: extremeFromCell,
	Answer:   func(st *State) any { return nullableFloat(st.Max, st.N > 0) },
}
