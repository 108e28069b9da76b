package schemas

import (
	"fmt"

	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
)

// distinct: the approximate number of distinct values of a field of any
// type, within DistinctBound. Its cell is a HyperLogLog sketch (2^14
// registers); beside it, the rows that ClickHouse stores keep the same
// values' uniqHLL12 state for SQL (State.UniqHLL12).
var distinctKind = MeasureKind{
	Type:      MeasureDistinct,
	Field:     FieldAny,
	Exact:     false,
	Cell:      CellSketch,
	Result:    ResultUint64,
	ResultDoc: "uint64 (approximate)",
	Sketch:    SketchHLL,
	SQLState:  SQLStateUniqHLL12,
	Add: func(st *State, val *Value) {
		if st.HLL == nil {
			st.HLL = newHLL()
		}
		// The key is built on the stack: Insert only hashes it.
		var buf [64]byte
		key := appendDistinctKey(buf[:0], val)
		st.HLL.Insert(key)
		if st.UniqHLL12 == nil {
			st.UniqHLL12 = new(chstate.Distinct)
		}
		// The same key: SQL counts 1 and "1" alike, as tandem does.
		st.UniqHLL12.AddKey(key)
		st.N++
	},
	Merge: func(dst, src *State) {
		if src.HLL != nil {
			if dst.HLL == nil {
				dst.HLL = src.HLL.Clone()
			} else {
				_ = dst.HLL.Merge(src.HLL) // same precision by construction
			}
		}
		if src.UniqHLL12 != nil {
			if dst.UniqHLL12 == nil {
				dst.UniqHLL12 = new(chstate.Distinct)
			}
			dst.UniqHLL12.Merge(src.UniqHLL12)
		}
	},
	Encode: func(st *State) []byte {
		if st.HLL == nil {
			return []byte{}
		}
		b, _ := st.HLL.MarshalBinary()
		return b
	},
	FromCell: func(cell any) (State, error) {
		b, err := SketchCell(cell)
		if err != nil || len(b) == 0 {
			return State{}, err
		}
		// Byte 1 of the encoding is the precision. The library reads any
		// precision, but merging sketches of two precisions fails (and
		// Merge has no error to report it), so refuse it here.
		if len(b) > 1 && b[1] != hllPrecision {
			return State{}, fmt.Errorf("distinct sketch has precision %d, want %d", b[1], hllPrecision)
		}
		h := newHLL()
		if err := h.UnmarshalBinary(b); err != nil {
			return State{}, err
		}
		return State{N: 1, HLL: h}, nil
	},
	Answer: func(st *State) any {
		if st.HLL == nil {
			return uint64(0)
		}
		return st.HLL.Estimate()
	},
}
