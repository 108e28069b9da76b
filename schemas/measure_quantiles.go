package schemas

import "github.com/tandem-analytics/tandem/internal/clickhouse/chstate"

// quantiles: the approximate p50, p90 and p99 of a numeric field, within
// QuantileRelativeAccuracy. Its cell is a DDSketch; beside it, the rows
// that ClickHouse stores keep the same values' t-digest for SQL
// (State.TDigest).
var quantilesKind = MeasureKind{
	Type:      MeasureQuantiles,
	Field:     FieldNumeric,
	Exact:     false,
	Cell:      CellSketch,
	Result:    ResultQuantiles,
	ResultDoc: "{p50, p90, p99} or null (approximate)",
	Sketch:    SketchDD,
	SQLState:  SQLStateTDigest,
	Add: func(st *State, val *Value) {
		if st.DD == nil {
			st.DD = newDD()
			st.TDigest = new(chstate.Quantiles)
		}
		// Add fails only for values outside the mapping's range (beyond
		// ±1e308-ish); the decoder already refuses non-finite numbers.
		_ = st.DD.Add(val.Float)
		st.TDigest.Add(val.Float)
		st.N++
	},
	Merge: func(dst, src *State) {
		if src.DD != nil {
			if dst.DD == nil {
				dst.DD = src.DD.Copy()
			} else {
				_ = dst.DD.MergeWith(src.DD) // same mapping by construction
			}
		}
		if src.TDigest != nil {
			if dst.TDigest == nil {
				dst.TDigest = new(chstate.Quantiles)
			}
			dst.TDigest.Merge(src.TDigest)
		}
	},
	Encode: func(st *State) []byte {
		if st.DD == nil {
			return []byte{}
		}
		var b []byte
		st.DD.Encode(&b, false)
		return b
	},
	FromCell: func(cell any) (State, error) {
		b, err := SketchCell(cell)
		if err != nil || len(b) == 0 {
			return State{}, err
		}
		dd, err := decodeDD(b)
		if err != nil {
			return State{}, err
		}
		if dd.IsEmpty() {
			return State{}, nil
		}
		return State{N: int64(dd.GetCount()), DD: dd}, nil
	},
	Answer: func(st *State) any {
		if st.DD == nil || st.DD.IsEmpty() {
			return (*Quantiles)(nil)
		}
		qs, err := st.DD.GetValuesAtQuantiles([]float64{0.5, 0.9, 0.99})
		if err != nil {
			return (*Quantiles)(nil)
		}
		return &Quantiles{P50: qs[0], P90: qs[1], P99: qs[2]}
	},
}
