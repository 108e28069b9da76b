package clickhouse

import (
	"fmt"

	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
	"github.com/tandem-analytics/tandem/schemas"
)

// SQL states of the sketch measures. Every distinct and quantiles measure
// has, beside tandem's own sketch column, the ClickHouse aggregate-function
// state of the same values (schemas.State.UniqHLL12 and .TDigest), so that
// the merged views can offer it to analysts as an AggregateFunction column
// they finalize with uniqHLL12Merge / quantilesTDigestWeightedMerge.
//
// The speed and batch tables store a state as the arrays that rebuild it
// (chstate's arrays.go says why: 18.16 reads no state a client sends):
//
//	distinct m    m__uniq_keys   Array(UInt64)   arrayReduce('uniqHLL12State', keys): the same bytes
//	quantiles m   m__td_means    Array(Float32)  arrayReduce('quantilesTDigestWeightedState(…)',
//	              m__td_counts   Array(UInt64)       means, counts): the centroids as weighted values
//
// The counts are empty when every centroid's count is 1 (unitCounts),
// and rowState reads an empty counts array as that many ones. A digest
// glues centroids only once it holds a few hundred values, so nearly
// every speed row, a chunk's events of one window and group, has unit
// counts, and without this they were 8 of the 20 bytes each value costs
// in the arrays, sent, written and merged again at every flush of the row
// (docs/performance.md). Rows written before, with their ones spelled
// out, read the same.
//
// They are written in the same row, by the same insert, as the other
// columns: the speed layer's versioned upsert and the batch run's
// idempotent load cover them as they cover every other column.

// quantileLevels are the levels in the type of a quantiles state column;
// an analyst may finalize with any levels.
const quantileLevels = "0.5, 0.9, 0.99"

// stateCols are the columns holding measure m's state in the speed and
// batch tables (none for the exact measure types).
func stateCols(m *schemas.Measure) []col {
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		return []col{{m.Name + "__uniq_keys", chstate.UniqHLL12KeysType}}
	case schemas.SQLStateTDigest:
		return []col{{m.Name + "__td_means", chstate.QuantilesMeansType}, {m.Name + "__td_counts", chstate.QuantilesCountsType}}
	}
	return nil
}

// viewStateCols are stateCols of every measure, in measure order.
func viewStateCols(view *schemas.View) []col {
	var out []col
	for i := range view.Measures {
		out = append(out, stateCols(&view.Measures[i])...)
	}
	return out
}

// StateType is the AggregateFunction type under which the merged views
// show a distinct or quantiles measure ("" for the other types).
func StateType(m *schemas.Measure) string {
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		return "AggregateFunction(uniqHLL12, UInt64)"
	case schemas.SQLStateTDigest:
		return "AggregateFunction(quantilesTDigestWeighted(" + quantileLevels + "), Float32, UInt64)"
	}
	return ""
}

// rowState is the SQL expression rebuilding one stored row's state of m
// from its state columns (of type StateType).
func rowState(m *schemas.Measure) string {
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		return fmt.Sprintf("arrayReduce('uniqHLL12State', %s)", ident(m.Name+"__uniq_keys"))
	case schemas.SQLStateTDigest:
		means := ident(m.Name + "__td_means")
		return fmt.Sprintf("arrayReduce('quantilesTDigestWeightedState(%s)', %s, %s)", quantileLevels, means, stateCounts(m))
	}
	return ""
}

// stateCounts is the SQL expression of m's centroid counts, one per mean:
// the stored counts, or ones where unitCounts left them out.
func stateCounts(m *schemas.Measure) string {
	return fmt.Sprintf("arrayResize(%s, length(%s), toUInt64(1))", ident(m.Name+"__td_counts"), ident(m.Name+"__td_means"))
}

// unitCounts drops counts that are all 1 (rowState reads the empty array
// back as ones): counts[:0] then, else counts unchanged.
func unitCounts(counts []uint64) []uint64 {
	for _, c := range counts {
		if c != 1 {
			return counts
		}
	}
	return counts[:0]
}

// mergeState is the aggregate merging states of m (expr, of StateType)
// into one state of the same type.
func mergeState(m *schemas.Measure, expr string) string {
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		return "uniqHLL12MergeState(" + expr + ")"
	case schemas.SQLStateTDigest:
		return "quantilesTDigestWeightedMergeState(" + quantileLevels + ")(" + expr + ")"
	}
	return ""
}

// stateValues holds one block's state columns of one measure: each row's
// arrays are slices of one arena per column, so a block allocates only
// when it grows.
type stateValues struct {
	keys      [][]uint64
	means     [][]float32
	counts    [][]uint64
	keyArena  []uint64
	meanArena []float32
	cntArena  []uint64
}

func (s *stateValues) reset() {
	clear(s.keys)
	clear(s.means)
	clear(s.counts)
	s.keys, s.means, s.counts = s.keys[:0], s.means[:0], s.counts[:0]
	s.keyArena, s.meanArena, s.cntArena = s.keyArena[:0], s.meanArena[:0], s.cntArena[:0]
}

// appendState adds one row's state of m: st's SQL state, or the empty
// state when st has none.
func (s *stateValues) appendState(m *schemas.Measure, st *schemas.State) {
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		start := len(s.keyArena)
		if st != nil && st.UniqHLL12 != nil {
			s.keyArena = st.UniqHLL12.AppendKeys(s.keyArena)
		}
		s.keys = append(s.keys, arenaTail(s.keyArena, start))
	case schemas.SQLStateTDigest:
		ms, cs := len(s.meanArena), len(s.cntArena)
		if st != nil && st.TDigest != nil {
			s.meanArena, s.cntArena = st.TDigest.AppendCentroids(s.meanArena, s.cntArena)
			s.cntArena = s.cntArena[:cs+len(unitCounts(s.cntArena[cs:]))]
		}
		s.means = append(s.means, arenaTail(s.meanArena, ms))
		s.counts = append(s.counts, arenaTail(s.cntArena, cs))
	}
}

// arenaTail is the arena's values from start on, capped so a later append
// cannot write into them; an empty state is always nil, so a block's
// columns do not depend on whether the arena had been used before.
func arenaTail[T any](arena []T, start int) []T {
	if start == len(arena) {
		return nil
	}
	return arena[start:len(arena):len(arena)]
}

// columns appends the block columns of m's state, in stateCols order.
func (s *stateValues) columns(m *schemas.Measure, cols []any) []any {
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		cols = append(cols, s.keys)
	case schemas.SQLStateTDigest:
		cols = append(cols, s.means, s.counts)
	}
	return cols
}

// decodeState reads a serialized SQL state of m (schemas.Measure.
// SQLStateCell's bytes; empty is no state) into a State carrying it.
func decodeState(m *schemas.Measure, b []byte) (*schemas.State, error) {
	if len(b) == 0 {
		return nil, nil
	}
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		d := new(chstate.Distinct)
		if err := d.UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("measure %s: %w", m.Name, err)
		}
		return &schemas.State{UniqHLL12: d}, nil
	case schemas.SQLStateTDigest:
		q := new(chstate.Quantiles)
		if err := q.UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("measure %s: %w", m.Name, err)
		}
		return &schemas.State{TDigest: q}, nil
	}
	return nil, fmt.Errorf("measure %s (%s) has no SQL state", m.Name, m.Type)
}

// stateArgs appends the row-insert arguments of m's state from its
// serialized bytes (nil: the empty state).
func stateArgs(args []any, m *schemas.Measure, b []byte) ([]any, error) {
	st, err := decodeState(m, b)
	if err != nil {
		return nil, err
	}
	switch m.Kind().SQLState {
	case schemas.SQLStateUniqHLL12:
		keys := []uint64{}
		if st != nil {
			keys = st.UniqHLL12.AppendKeys(keys)
		}
		return append(args, keys), nil
	case schemas.SQLStateTDigest:
		means, counts := []float32{}, []uint64{}
		if st != nil {
			means, counts = st.TDigest.AppendCentroids(means, counts)
			counts = unitCounts(counts)
		}
		return append(args, means, counts), nil
	}
	return args, nil
}
