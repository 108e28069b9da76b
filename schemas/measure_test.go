package schemas

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The property tests below generate JSON events, decode them with the real
// Decoder, aggregate them with View.Add/Merge, and compare the results with
// truths computed here in plain Go (maps, sort, sums) from the generated
// values, never with the code under test.

// msTime marks a generated timestamp value (epoch milliseconds).
type msTime int64

// genRec is one generated event: the Go value of every field it sets (absent
// when the event lacks the field or sends null) and its JSON.
type genRec struct {
	vals map[string]any
	raw  []byte
}

// stringPool has duplicates by construction, empty values, separators and
// digits, so dimension keys and distinct counts meet the awkward cases.
var stringPool = []string{"", "0", "US", "DE", "a:b", "1:x", "3:", ":", "ünï", "00", "e\u0000z", "true"}

func genValue(r *rand.Rand, f Field, s *Stream, seq int) any {
	switch {
	case f.Name == s.IDField:
		return fmt.Sprintf("e%d", seq)
	case f.Name == s.TimeField:
		return msTime(t0.UnixMilli() + r.Int64N((3 * time.Hour).Milliseconds()))
	}
	switch f.Type {
	case TypeString:
		return stringPool[r.IntN(len(stringPool))]
	case TypeInt64:
		switch r.IntN(6) {
		case 0:
			return int64(0)
		case 1:
			return r.Int64N(2e12) - 1e12 // large, both signs
		default:
			return r.Int64N(41) - 20 // small, many repeats
		}
	case TypeFloat64:
		switch r.IntN(8) {
		case 0:
			return 0.0
		case 1:
			return math.Copysign(0, -1)
		case 2:
			return math.Round(r.NormFloat64()*1e6) / 100 // negatives too
		case 3:
			return math.Exp(r.Float64()*40 - 20) // tiny to huge
		default:
			return float64(r.IntN(30)) / 4 // repeats
		}
	case TypeBool:
		return r.IntN(2) == 0
	case TypeTimestamp:
		return msTime(MinEventTime.UnixMilli() + r.Int64N(MaxEventTime.UnixMilli()-MinEventTime.UnixMilli()))
	}
	panic(f.Type)
}

// genEvents makes n events of s; optional fields are missing or null in
// about a quarter of them.
func genEvents(tb testing.TB, r *rand.Rand, s *Stream, n int) ([]genRec, []Event) {
	tb.Helper()
	dec := NewDecoder(s, 0)
	recs := make([]genRec, n)
	evs := make([]Event, n)
	for k := range n {
		vals := map[string]any{}
		obj := map[string]any{}
		for _, f := range s.Fields {
			if !f.Required {
				switch r.IntN(8) {
				case 0:
					continue
				case 1:
					obj[f.Name] = nil
					continue
				}
			}
			v := genValue(r, f, s, k)
			vals[f.Name] = v
			if ms, ok := v.(msTime); ok {
				if r.IntN(2) == 0 {
					obj[f.Name] = int64(ms)
				} else {
					zone := time.FixedZone("z", (r.IntN(25)-12)*3600)
					obj[f.Name] = time.UnixMilli(int64(ms)).In(zone).Format(time.RFC3339Nano)
				}
				continue
			}
			obj[f.Name] = v
		}
		if r.IntN(4) == 0 {
			obj["undeclared"] = map[string]any{"x": []any{1, "two", nil}}
		}
		raw, err := json.Marshal(obj)
		require.NoError(tb, err)
		ev, err := dec.Decode(raw, time.Time{})
		require.NoError(tb, err, string(raw))
		recs[k] = genRec{vals: vals, raw: raw}
		evs[k] = ev
	}
	return recs, evs
}

// truthKey is a row key computed without View.Key: the window start by
// arithmetic and the dimension values joined by a byte no pool value holds.
type truthKey struct {
	win  int64
	dims string
}

const truthSep = "\x1f"

func truthKeyOf(v *View, rec genRec) truthKey {
	size := v.Granularity.D().Milliseconds()
	ms := int64(rec.vals[v.StreamDef().TimeField].(msTime))
	dims := make([]string, len(v.Dimensions))
	for i, d := range v.Dimensions {
		if s, ok := rec.vals[d].(string); ok {
			dims[i] = s
		}
	}
	return truthKey{win: ms - ms%size, dims: strings.Join(dims, truthSep)}
}

func toTruthKey(tb testing.TB, k RowKey) truthKey {
	vals, err := SplitDims(k.Dims)
	require.NoError(tb, err)
	return truthKey{win: k.WindowMs, dims: strings.Join(vals, truthSep)}
}

// numeric returns a measure's field values as float64, in event order.
func numeric(recs []genRec, field string) []float64 {
	var out []float64
	for _, r := range recs {
		switch v := r.vals[field].(type) {
		case int64:
			out = append(out, float64(v))
		case float64:
			out = append(out, v)
		}
	}
	return out
}

// trueDistinct counts distinct values with a Go map: -0 and 0 are one key,
// as they are one number.
func trueDistinct(recs []genRec, field string) int {
	set := map[any]bool{}
	for _, r := range recs {
		if v, ok := r.vals[field]; ok {
			set[v] = true
		}
	}
	return len(set)
}

// valueAtRank is the sorted value at rank q*(n-1), DDSketch's definition of
// the q-quantile; a fractional rank lies between the floor and ceil values.
func valueAtRank(sorted []float64, q float64) (lo, hi float64) {
	rank := q * float64(len(sorted)-1)
	return sorted[int(math.Floor(rank))], sorted[int(math.Ceil(rank))]
}

// requireQuantile checks est against the true value at rank q within the
// stated relative accuracy (plus float slack).
func requireQuantile(tb testing.TB, sorted []float64, q, est float64, msg string) {
	tb.Helper()
	lo, hi := valueAtRank(sorted, q)
	within := func(truth float64) bool {
		return math.Abs(est-truth) <= QuantileRelativeAccuracy*math.Abs(truth)*(1+1e-9)+1e-300
	}
	require.True(tb, within(lo) || within(hi), "%s: p%g = %g, true value at rank is %g..%g (n=%d)", msg, q*100, est, lo, hi, len(sorted))
}

// requireTruth checks one row's results against the truth of its events.
func requireTruth(tb testing.TB, v *View, a Aggregate, recs []genRec, msg string) {
	tb.Helper()
	for i := range v.Measures {
		m := &v.Measures[i]
		got := m.Result(&a[i])
		vals := numeric(recs, m.Field)
		switch m.Type {
		case MeasureCount:
			require.Equal(tb, int64(len(recs)), got, "%s: %s", msg, m.Name)
		case MeasureSum:
			sum, abs := 0.0, 0.0
			for _, x := range vals {
				sum += x
				abs += math.Abs(x)
			}
			require.InDelta(tb, sum, got.(float64), abs*1e-12, "%s: %s", msg, m.Name)
		case MeasureMin, MeasureMax:
			p := got.(*float64)
			if len(vals) == 0 {
				require.Nil(tb, p, "%s: %s", msg, m.Name)
				continue
			}
			sorted := slices.Clone(vals)
			sort.Float64s(sorted)
			want := sorted[0]
			if m.Type == MeasureMax {
				want = sorted[len(sorted)-1]
			}
			require.NotNil(tb, p, "%s: %s", msg, m.Name)
			require.Equal(tb, want, *p, "%s: %s", msg, m.Name)
		case MeasureDistinct:
			n := trueDistinct(recs, m.Field)
			est := float64(got.(uint64))
			require.InDelta(tb, float64(n), est, DistinctRelativeError*float64(n), "%s: %s", msg, m.Name)
		case MeasureQuantiles:
			qs := got.(*Quantiles)
			if len(vals) == 0 {
				require.Nil(tb, qs, "%s: %s", msg, m.Name)
				continue
			}
			require.NotNil(tb, qs, "%s: %s", msg, m.Name)
			sort.Float64s(vals)
			requireQuantile(tb, vals, 0.5, qs.P50, msg+": "+m.Name)
			requireQuantile(tb, vals, 0.9, qs.P90, msg+": "+m.Name)
			requireQuantile(tb, vals, 0.99, qs.P99, msg+": "+m.Name)
		}
	}
}

// results returns the Results of a with pointers dereferenced, so two
// aggregates compare by value.
func results(v *View, a Aggregate) []any {
	out := make([]any, len(v.Measures))
	for i := range v.Measures {
		switch r := v.Measures[i].Result(&a[i]).(type) {
		case *float64:
			if r != nil {
				out[i] = *r
			}
		case *Quantiles:
			if r != nil {
				out[i] = *r
			}
		default:
			out[i] = r
		}
	}
	return out
}

// requireSameResults compares two aggregates: exactly for count, min, max
// and distinct (HLL merge is a register max, so the order cannot matter),
// within float rounding for sum and quantiles. It compares with plain Go
// and calls the test framework only on a difference: it runs in hot loops.
func requireSameResults(tb testing.TB, v *View, want, got Aggregate, msg string) {
	w, g := results(v, want), results(v, got)
	close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(a)) }
	for i, m := range v.Measures {
		same := true
		switch m.Type {
		case MeasureSum:
			same = close(w[i].(float64), g[i].(float64))
		case MeasureQuantiles:
			wq, wok := w[i].(Quantiles)
			gq, gok := g[i].(Quantiles)
			same = wok == gok && (!wok || close(wq.P50, gq.P50) && close(wq.P90, gq.P90) && close(wq.P99, gq.P99))
		default:
			same = w[i] == g[i]
		}
		if !same {
			tb.Helper()
			tb.Fatalf("%s: measure %s: want %v, got %v", msg, m.Name, w[i], g[i])
		}
	}
}

// aggregate folds events into rows keyed by View.Key.
func aggregate(v *View, evs []Event) map[RowKey]Aggregate {
	rows := map[RowKey]Aggregate{}
	for i := range evs {
		k := v.Key(&evs[i])
		a, ok := rows[k]
		if !ok {
			a = v.NewAggregate()
			rows[k] = a
		}
		v.Add(a, &evs[i])
	}
	return rows
}

// mergeRows folds src's rows into dst.
func mergeRows(v *View, dst, src map[RowKey]Aggregate) {
	for k, a := range src {
		d, ok := dst[k]
		if !ok {
			d = v.NewAggregate()
			dst[k] = d
		}
		v.Merge(d, a)
	}
}

// split deals events into k random parts (some possibly empty).
func split[T any](r *rand.Rand, xs []T, k int) [][]T {
	parts := make([][]T, k)
	for _, x := range xs {
		p := r.IntN(k)
		parts[p] = append(parts[p], x)
	}
	return parts
}

// storedRows round-trips every row through Cell and StateFromCell, as the
// speed, batch and serving layers do through ClickHouse and Parquet. Cells
// are passed in the Go types those readers produce.
func storedRows(tb testing.TB, r *rand.Rand, v *View, rows map[RowKey]Aggregate) map[RowKey]Aggregate {
	tb.Helper()
	out := map[RowKey]Aggregate{}
	for k, a := range rows {
		b := v.NewAggregate()
		for i := range v.Measures {
			m := &v.Measures[i]
			cell := m.Cell(&a[i])
			if !cellTypeOK(m, cell) {
				tb.Fatalf("measure %s: cell of type %T", m.Name, cell)
			}
			if r.IntN(2) == 0 {
				cell = asReaderType(cell)
			}
			st, err := m.StateFromCell(cell)
			if err != nil {
				tb.Fatalf("measure %s: %v", m.Name, err)
			}
			b[i] = st
		}
		out[k] = b
	}
	return out
}

func cellTypeOK(m *Measure, cell any) bool {
	switch m.Type {
	case MeasureCount:
		_, ok := cell.(int64)
		return ok
	case MeasureSum:
		_, ok := cell.(float64)
		return ok
	case MeasureMin, MeasureMax:
		_, ok := cell.(*float64)
		return ok
	}
	_, ok := cell.([]byte)
	return ok
}

// asReaderType converts a cell to another type a store reader may return:
// ClickHouse's UInt64 counts, plain or nil float64 for Nullable columns,
// string for binary columns.
func asReaderType(cell any) any {
	switch c := cell.(type) {
	case int64:
		return uint64(c)
	case *float64:
		if c == nil {
			return nil
		}
		return *c
	case []byte:
		return string(c)
	}
	return cell
}

func propertyViews(t *testing.T) []*View {
	return []*View{exampleConfig(t).View("pageviews_by_country"), allTypesConfig(t).View("every")}
}

// TestMergeAssociativeCommutative: for three sets of events, every grouping
// and order of merges gives the same results, and merging leaves its source
// unchanged.
func TestMergeAssociativeCommutative(t *testing.T) {
	for _, v := range propertyViews(t) {
		t.Run(v.Name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			for round := range 20 {
				_, evs := genEvents(t, r, v.StreamDef(), 1+r.IntN(400))
				parts := split(r, evs, 3)
				agg := make([]Aggregate, 3)
				for i, p := range parts {
					agg[i] = v.NewAggregate()
					for j := range p {
						v.Add(agg[i], &p[j])
					}
				}
				before := make([][]any, 3)
				for i := range agg {
					before[i] = results(v, agg[i])
				}
				merge := func(as ...Aggregate) Aggregate {
					acc := v.NewAggregate()
					for _, a := range as {
						v.Merge(acc, a)
					}
					return acc
				}
				a, b, c := agg[0], agg[1], agg[2]
				want := merge(a, b, c) // (a⊕b)⊕c
				orders := map[string]Aggregate{
					"a(bc)": merge(a, merge(b, c)),
					"cba":   merge(c, b, a),
					"b(ca)": merge(b, merge(c, a)),
					"(ac)b": merge(merge(a, c), b),
					"(cb)a": merge(merge(c, b), a),
				}
				for name, got := range orders {
					requireSameResults(t, v, want, got, fmt.Sprintf("round %d order %s", round, name))
				}
				whole := v.NewAggregate()
				for i := range evs {
					v.Add(whole, &evs[i])
				}
				requireSameResults(t, v, whole, want, fmt.Sprintf("round %d merged vs whole", round))
				for i := range agg {
					require.Equal(t, before[i], results(v, agg[i]), "merge changed its source")
				}
			}
		})
	}
}

// TestSplitMergeEqualsWhole: rows aggregated from k random parts of the
// events and merged equal the rows of the whole (in memory and through
// stored cells), and every row equals the truth computed from its events.
func TestSplitMergeEqualsWhole(t *testing.T) {
	for _, v := range propertyViews(t) {
		t.Run(v.Name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			for round := range 5 {
				recs, evs := genEvents(t, r, v.StreamDef(), 100+r.IntN(1500))
				whole := aggregate(v, evs)

				// The truth: group the generated values by a key computed
				// independently of View.Key.
				truth := map[truthKey][]genRec{}
				for _, rec := range recs {
					k := truthKeyOf(v, rec)
					truth[k] = append(truth[k], rec)
				}
				require.Len(t, whole, len(truth))
				for k, a := range whole {
					tk := toTruthKey(t, k)
					rows, ok := truth[tk]
					if !ok {
						t.Fatalf("row %v has no events in the truth", tk)
					}
					requireTruth(t, v, a, rows, fmt.Sprintf("round %d row %v", round, tk))
				}

				for _, k := range []int{2, 3, 7} {
					idx := make([]int, len(evs))
					for i := range idx {
						idx[i] = i
					}
					parts := split(r, idx, k)
					merged := map[RowKey]Aggregate{}
					stored := map[RowKey]Aggregate{}
					for _, p := range parts {
						sub := make([]Event, len(p))
						for i, j := range p {
							sub[i] = evs[j]
						}
						rows := aggregate(v, sub)
						mergeRows(v, merged, rows)
						mergeRows(v, stored, storedRows(t, r, v, rows))
					}
					require.Len(t, merged, len(whole))
					require.Len(t, stored, len(whole))
					for key, a := range whole {
						requireSameResults(t, v, a, merged[key], fmt.Sprintf("round %d k=%d states", round, k))
						requireSameResults(t, v, a, stored[key], fmt.Sprintf("round %d k=%d stored cells", round, k))
					}
					// Stored rows merged again through storage (a batch
					// view read back and merged with speed rows) still agree.
					twice := map[RowKey]Aggregate{}
					mergeRows(v, twice, storedRows(t, r, v, stored))
					for key, a := range whole {
						requireSameResults(t, v, a, twice[key], fmt.Sprintf("round %d k=%d stored twice", round, k))
					}
				}
			}
		})
	}
}

// TestMeasuresIgnoreMissingFields: count counts events that lack every
// optional field; the others see no value at all.
func TestMeasuresIgnoreMissingFields(t *testing.T) {
	v := allTypesConfig(t).View("every")
	dec := NewDecoder(v.StreamDef(), 0)
	a := v.NewAggregate()
	for i, extra := range []string{``, `"s":null,"i":null,"f":null,"b":null,"at":null`, `"other":5`} {
		ev, err := dec.Decode([]byte(fmt.Sprintf(`{"id":"e%d","ts":"2026-11-25T10:00:00Z","kind":"view"%s}`, i, strings.TrimSuffix(","+extra, ","))), t0)
		require.NoError(t, err)
		v.Add(a, &ev)
	}
	want := map[string]any{
		"n": int64(3), "sum_i": 0.0, "sum_f": 0.0,
		"min_i": (*float64)(nil), "max_i": (*float64)(nil), "min_f": (*float64)(nil), "max_f": (*float64)(nil),
		"d_s": uint64(0), "d_i": uint64(0), "d_f": uint64(0), "d_b": uint64(0), "d_at": uint64(0),
		"q_i": (*Quantiles)(nil), "q_f": (*Quantiles)(nil),
	}
	for i := range v.Measures {
		m := &v.Measures[i]
		require.Equal(t, want[m.Name], m.Result(&a[i]), m.Name)
		// What is stored for "no value" reads back as no value.
		st, err := m.StateFromCell(m.Cell(&a[i]))
		require.NoError(t, err)
		require.Equal(t, want[m.Name], m.Result(&st), m.Name)
	}
	// The empty aggregate answers the same, except count.
	empty := v.NewAggregate()
	for i := range v.Measures {
		m := &v.Measures[i]
		if m.Type == MeasureCount {
			require.Equal(t, int64(0), m.Result(&empty[i]))
			continue
		}
		require.Equal(t, want[m.Name], m.Result(&empty[i]), m.Name)
	}

	// One event with values: sum ignores the events without, min/max/
	// quantiles answer from the one value.
	ev, err := dec.Decode([]byte(`{"id":"x","ts":"2026-11-25T10:00:00Z","kind":"view","i":-4,"f":-0.5}`), t0)
	require.NoError(t, err)
	v.Add(a, &ev)
	res := results(v, a)
	byName := func(n string) any { return res[v.MeasureIndex(n)] }
	require.Equal(t, int64(4), byName("n"))
	require.Equal(t, -4.0, byName("sum_i"))
	require.Equal(t, -0.5, byName("min_f"))
	require.Equal(t, -0.5, byName("max_f"))
	require.Equal(t, -4.0, byName("max_i"))
	require.Equal(t, uint64(1), byName("d_i"))
	q := byName("q_f").(Quantiles)
	require.InDelta(t, -0.5, q.P50, 0.5*QuantileRelativeAccuracy)
}

// TestDistinctZeroValues: each of "", "0", "false", "-0" is its own string,
// and -0 and 0 are one number.
func TestDistinctZeroValues(t *testing.T) {
	v := allTypesConfig(t).View("every")
	dec := NewDecoder(v.StreamDef(), 0)
	a := v.NewAggregate()
	for i, extra := range []string{`"s":"","f":0,"i":0,"b":false`, `"s":"0","f":-0,"i":-0,"b":true`, `"s":"false","f":-0.0`, `"s":"-0","f":0.0`, `"s":"0.0","f":0e5`} {
		ev, err := dec.Decode([]byte(fmt.Sprintf(`{"id":"e%d","ts":"2026-11-25T10:00:00Z","kind":"view",%s}`, i, extra)), t0)
		require.NoError(t, err)
		v.Add(a, &ev)
	}
	res := results(v, a)
	require.Equal(t, uint64(5), res[v.MeasureIndex("d_s")])
	require.Equal(t, uint64(1), res[v.MeasureIndex("d_f")])
	require.Equal(t, uint64(1), res[v.MeasureIndex("d_i")])
	require.Equal(t, uint64(2), res[v.MeasureIndex("d_b")])
}

// TestDistinctErrorBound: the estimate is within DistinctRelativeError of
// the true count, from one sketch and from merged stored sketches.
func TestDistinctErrorBound(t *testing.T) {
	v := exampleConfig(t).View("pageviews_by_country")
	s := v.StreamDef()
	mi := v.MeasureIndex("users")
	m := &v.Measures[mi]
	ui := s.FieldIndex("user_id")
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{10, 1000, 100000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			whole := State{}
			parts := make([]State, 8)
			truth := map[string]bool{}
			ev := Event{Values: make([]Value, len(s.Fields))}
			for len(truth) < n {
				// Values repeat: about a third of the inserts are repeats.
				id := fmt.Sprintf("user-%d", r.IntN(n*3/2+1))
				truth[id] = true
				ev.Values[ui] = Value{Set: true, Str: id}
				m.Add(&whole, &ev)
				m.Add(&parts[r.IntN(len(parts))], &ev)
			}
			bound := DistinctRelativeError * float64(n)
			require.InDelta(t, float64(n), float64(m.Result(&whole).(uint64)), bound)
			merged := State{}
			for i := range parts {
				st, err := m.StateFromCell(m.Cell(&parts[i]))
				require.NoError(t, err)
				m.Merge(&merged, &st)
			}
			require.InDelta(t, float64(n), float64(m.Result(&merged).(uint64)), bound)
			require.Equal(t, m.Result(&whole), m.Result(&merged), "merging is a register max: same estimate")
		})
	}
}

// TestQuantileErrorBound: p50, p90 and p99 are within
// QuantileRelativeAccuracy of the true value at that rank, for several
// distributions, from one sketch and from merged stored sketches.
func TestQuantileErrorBound(t *testing.T) {
	v := exampleConfig(t).View("pageviews_by_country")
	s := v.StreamDef()
	m := &v.Measures[v.MeasureIndex("latency")]
	li := s.FieldIndex("latency_ms")
	dists := map[string]func(r *rand.Rand) float64{
		"uniform":   func(r *rand.Rand) float64 { return r.Float64() * 1000 },
		"lognormal": func(r *rand.Rand) float64 { return math.Exp(r.NormFloat64() * 3) },
		"integers":  func(r *rand.Rand) float64 { return float64(r.IntN(50)) },
		"mixed signs and zeros": func(r *rand.Rand) float64 {
			if r.IntN(10) == 0 {
				return 0
			}
			return r.NormFloat64() * 100
		},
		"negative": func(r *rand.Rand) float64 { return -math.Exp(r.Float64() * 10) },
	}
	r := rand.New(rand.NewPCG(7, 8))
	for name, gen := range dists {
		for _, n := range []int{10, 1000, 100000} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				vals := make([]float64, n)
				whole := State{}
				parts := make([]State, 5)
				ev := Event{Values: make([]Value, len(s.Fields))}
				for i := range vals {
					vals[i] = gen(r)
					ev.Values[li] = Value{Set: true, Float: vals[i]}
					m.Add(&whole, &ev)
					m.Add(&parts[r.IntN(len(parts))], &ev)
				}
				sort.Float64s(vals)
				merged := State{}
				for i := range parts {
					st, err := m.StateFromCell(m.Cell(&parts[i]))
					require.NoError(t, err)
					m.Merge(&merged, &st)
				}
				for label, st := range map[string]*State{"one sketch": &whole, "merged": &merged} {
					qs := m.Result(st).(*Quantiles)
					require.NotNil(t, qs)
					requireQuantile(t, vals, 0.5, qs.P50, label)
					requireQuantile(t, vals, 0.9, qs.P90, label)
					requireQuantile(t, vals, 0.99, qs.P99, label)
				}
			})
		}
	}
}

func TestStateFromCellRejects(t *testing.T) {
	v := allTypesConfig(t).View("every")
	m := func(name string) *Measure { return &v.Measures[v.MeasureIndex(name)] }

	// A real sketch of each kind, to corrupt.
	a := v.NewAggregate()
	dec := NewDecoder(v.StreamDef(), 0)
	ev, err := dec.Decode([]byte(withFields(`"s":"x","f":1.5`)), t0)
	require.NoError(t, err)
	v.Add(a, &ev)
	hll := m("d_s").Cell(&a[v.MeasureIndex("d_s")]).([]byte)
	dd := m("q_f").Cell(&a[v.MeasureIndex("q_f")]).([]byte)
	otherPrecision := slices.Clone(hll)
	otherPrecision[1] = 10

	cases := []struct {
		name, measure string
		cell          any
	}{
		{"count string", "n", "5"},
		{"count negative", "n", int64(-1)},
		{"count fraction", "n", 1.5},
		{"count NaN", "n", math.NaN()},
		{"count infinite", "n", math.Inf(1)},
		{"count nil", "n", nil},
		{"sum string", "sum_f", "1.5"},
		{"sum nil", "sum_f", nil},
		{"min string", "min_f", "x"},
		{"max bytes", "max_i", []byte{1}},
		{"distinct number", "d_s", 5},
		{"distinct garbage", "d_s", []byte("not a sketch")},
		{"distinct truncated", "d_s", hll[:len(hll)-1]},
		{"distinct other precision", "d_s", otherPrecision},
		{"quantiles number", "q_f", 1.5},
		{"quantiles garbage", "q_f", []byte{0xff, 0xff, 0xff, 0xff}},
		{"quantiles truncated", "q_f", dd[:len(dd)/2]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m(tc.measure).StateFromCell(tc.cell)
			require.ErrorIs(t, err, ErrBadCell)
			require.Contains(t, err.Error(), tc.measure)
		})
	}
	// Empty cells mean "no value", for every reader type.
	for _, cell := range []any{nil, []byte{}, ""} {
		st, err := m("d_s").StateFromCell(cell)
		require.NoError(t, err)
		require.Equal(t, State{}, st)
		st, err = m("q_f").StateFromCell(cell)
		require.NoError(t, err)
		require.Equal(t, State{}, st)
	}
	st, err := m("min_f").StateFromCell((*float64)(nil))
	require.NoError(t, err)
	require.Equal(t, State{}, st)
	for _, cell := range []any{int64(7), uint64(7), 7, int32(7), uint32(7), 7.0, float32(7)} {
		st, err := m("n").StateFromCell(cell)
		require.NoError(t, err, "%T", cell)
		require.Equal(t, int64(7), st.N)
	}
}

func TestJoinSplitDims(t *testing.T) {
	cases := [][]string{
		nil,
		{""},
		{"", ""},
		{"US", "mobile"},
		{"a:b", "1:", ":", "::1", "12:345"},
		{"0", "00", "10:xx"},
		{"\x00", "é", strings.Repeat("z", 1000)},
	}
	for _, vals := range cases {
		joined := JoinDims(vals)
		got, err := SplitDims(joined)
		require.NoError(t, err, joined)
		require.Equal(t, len(vals), len(got), joined)
		for i := range vals {
			require.Equal(t, vals[i], got[i])
		}
	}
	// Different lists never join alike.
	seen := map[string][]string{}
	for _, vals := range append(cases, []string{"a:b1:x"}, []string{"a", "b"}, []string{"ab"}, []string{"1:a"}) {
		j := JoinDims(vals)
		if prev, ok := seen[j]; ok {
			require.Equal(t, prev, vals, "two value lists joined to %q", j)
		}
		seen[j] = vals
	}
	// Random lists round-trip.
	r := rand.New(rand.NewPCG(9, 10))
	alphabet := []byte("0123456789:ab\x00")
	for range 2000 {
		vals := make([]string, r.IntN(5))
		for i := range vals {
			b := make([]byte, r.IntN(12))
			for j := range b {
				b[j] = alphabet[r.IntN(len(alphabet))]
			}
			vals[i] = string(b)
		}
		got, err := SplitDims(JoinDims(vals))
		require.NoError(t, err)
		require.Equal(t, len(vals), len(got))
		for i := range vals {
			require.Equal(t, vals[i], got[i])
		}
	}
	for _, bad := range []string{"x", "3:ab", "1", ":a", "-1:a", "+1:a", "01:a", "1:a2:b", "99999999999999999999:a", " 1:a"} {
		_, err := SplitDims(bad)
		require.Error(t, err, "%q", bad)
	}
}

func TestViewKey(t *testing.T) {
	v := exampleConfig(t).View("pageviews_by_country")
	dec := NewDecoder(v.StreamDef(), 0)
	cases := []struct {
		name, json string
		window     time.Time
		dims       []string
	}{
		{"both dimensions", `{"event_id":"a","ts":"2026-11-25T10:07:59.999Z","country":"US","device":"ios"}`,
			time.Date(2026, 11, 25, 10, 7, 0, 0, time.UTC), []string{"US", "ios"}},
		{"missing dimension groups as empty", `{"event_id":"a","ts":"2026-11-25T10:07:00Z","device":"ios"}`,
			time.Date(2026, 11, 25, 10, 7, 0, 0, time.UTC), []string{"", "ios"}},
		{"null dimension groups as empty", `{"event_id":"a","ts":"2026-11-25T10:07:00Z","country":null}`,
			time.Date(2026, 11, 25, 10, 7, 0, 0, time.UTC), []string{"", ""}},
		{"separator inside a value", `{"event_id":"a","ts":"2026-11-25T10:07:00+05:00","country":"1:x","device":""}`,
			time.Date(2026, 11, 25, 5, 7, 0, 0, time.UTC), []string{"1:x", ""}},
		{"epoch start", `{"event_id":"a","ts":59999}`, MinEventTime, []string{"", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := dec.Decode([]byte(tc.json), time.Time{})
			require.NoError(t, err)
			k := v.Key(&ev)
			require.Equal(t, tc.window, k.Window())
			require.Equal(t, tc.window.UnixMilli(), k.WindowMs)
			require.Equal(t, JoinDims(tc.dims), k.Dims)
			require.Equal(t, "pre"+JoinDims(tc.dims), string(v.AppendDims([]byte("pre"), &ev)))
		})
	}
	// Empty and missing are the same row.
	a, err := dec.Decode([]byte(`{"event_id":"a","ts":0,"country":""}`), time.Time{})
	require.NoError(t, err)
	b, err := dec.Decode([]byte(`{"event_id":"b","ts":1}`), time.Time{})
	require.NoError(t, err)
	require.Equal(t, v.Key(&a), v.Key(&b))
}

func typicalPageview() []byte {
	return []byte(`{"event_id":"7f9c2ba4-e88f-4a3b-9c1d-2f7e0b6a5d43","ts":"2026-11-25T10:07:31.412Z","country":"US","device":"ios","user_id":"u-1842","amount":12.5,"latency_ms":41.2,"path":"/products/42","referrer":"https://example.com/"}`)
}

// BenchmarkDecode decodes one typical pageview (ns/op only; no target).
func BenchmarkDecode(b *testing.B) {
	dec := NewDecoder(exampleConfig(b).Stream("pageviews"), time.Hour)
	raw := typicalPageview()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec.Decode(raw, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewAdd folds one decoded pageview into a row of the example view
// (every measure type; ns/op only; no target).
func BenchmarkViewAdd(b *testing.B) {
	v := exampleConfig(b).View("pageviews_by_country")
	ev, err := NewDecoder(v.StreamDef(), 0).Decode(typicalPageview(), time.Time{})
	require.NoError(b, err)
	a := v.NewAggregate()
	b.ReportAllocs()
	for b.Loop() {
		v.Add(a, &ev)
	}
}
