package serving

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestDistinctDoesNotDependOnMergeCount: the same events reach a group
// as 64 rows or as one row already merged (a level row); the answers are
// equal. The Merger densifies large sketches while merging, after enough
// merges; whether the final sketch is dense must not depend on that.
func TestDistinctDoesNotDependOnMergeCount(t *testing.T) {
	cfg, err := schemas.Parse("t.yaml", []byte(`
chunk_size: 100
kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { database: tandem }
s3: { bucket: b }
streams:
  - { name: s, partitions: 1, id_field: id, time_field: ts, fields: [{name: id, type: string}, {name: ts, type: timestamp}, {name: u, type: string}] }
views:
  - { name: v, stream: s, granularity: 1m, measures: [{name: users, type: distinct, field: u}] }
`), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	v := cfg.View("v")
	from := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	q := &Query{View: v, From: from, To: from.Add(24 * time.Hour), Measures: []int{0}}
	ev := schemas.Event{Values: make([]schemas.Value, 3)}
	var rows []Row
	whole := v.NewAggregate()
	for r := 0; r < 64; r++ {
		a := v.NewAggregate()
		for i := 0; i < 50; i++ {
			ev.Values[2] = schemas.Value{Set: true, Str: fmt.Sprintf("u%d-%d", r, i)}
			v.Add(a, &ev)
		}
		v.Merge(whole, a)
		rows = append(rows, Row{WindowMs: from.Add(time.Duration(r) * time.Minute).UnixMilli(), Dims: []string{}, States: a})
	}
	many, one := NewMerger(q), NewMerger(q)
	for i := range rows {
		many.Add(&rows[i])
	}
	one.Add(&Row{WindowMs: from.UnixMilli(), Dims: []string{}, States: whole})
	got := func(m *Merger) uint64 {
		gs := m.Groups()
		require.Len(t, gs, 1)
		return gs[0].Result(q, 0).(uint64)
	}
	a, b := got(many), got(one)
	require.Equal(t, a, b)
	require.InDelta(t, 3200, float64(a), schemas.DistinctBound(3200))
}

// BenchmarkMergeDistinct merges rows of distinct users into groups (4,096
// rows of 100 users into 16 groups; 8,100 rows of 150 into 1,680): through the Merger (flat unions) and, as the baseline in
// the same run, with Measure.Merge on the library's sketches and the same
// densifying (the Merger's way before HLLUnion). It reports both per row.
func BenchmarkMergeDistinct(b *testing.B) {
	b.Run("many_rows_per_group", func(b *testing.B) { benchMergeDistinct(b, 4096, 16, 100) })
	// A level query's shape: a handful of 1h rows per (bucket, group).
	b.Run("few_rows_per_group", func(b *testing.B) { benchMergeDistinct(b, 8100, 1680, 150) })
}

func benchMergeDistinct(b *testing.B, nRows, nGroups, keys int) {
	cfg, err := schemas.Parse("t.yaml", []byte(`
chunk_size: 100
kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { database: tandem }
s3: { bucket: b }
streams:
  - { name: s, partitions: 1, id_field: id, time_field: ts, fields: [{name: id, type: string}, {name: ts, type: timestamp}, {name: u, type: string}, {name: g, type: string}] }
views:
  - { name: v, stream: s, granularity: 1m, dimensions: [g], measures: [{name: users, type: distinct, field: u}] }
`), func(string) (string, bool) { return "", false })
	require.NoError(b, err)
	v := cfg.View("v")
	from := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	q := &Query{View: v, From: from, To: from.Add(24 * time.Hour), Measures: []int{0}, GroupBy: []int{0}, Filters: make([]*DimFilter, 1)}
	ev := schemas.Event{Values: make([]schemas.Value, 4)}
	var rows []Row
	for r := 0; r < nRows; r++ {
		a := v.NewAggregate()
		for i := 0; i < keys; i++ {
			ev.Values[2] = schemas.Value{Set: true, Str: fmt.Sprintf("u%d", (r*7919+i*104729)%20000)}
			v.Add(a, &ev)
		}
		// As the cache holds them: decoded from the stored cell.
		st, err := v.Measures[0].StateFromCell(v.Measures[0].Cell(&a[0]))
		require.NoError(b, err)
		dims := []string{fmt.Sprint(r % nGroups)}
		rows = append(rows, Row{WindowMs: from.Add(time.Duration(r%1440) * time.Minute).UnixMilli(), Dims: dims, Key: schemas.JoinDims(dims), States: schemas.Aggregate{st}})
	}
	var flat, lib time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m := NewMerger(q)
		for j := range rows {
			m.Add(&rows[j])
		}
		for _, g := range m.Groups() {
			_ = g.Result(q, 0)
		}
		flat += time.Since(t0)
		t0 = time.Now()
		states := make([]schemas.State, nGroups)
		merges := make([]int, nGroups)
		for j := range rows {
			st := &states[j%nGroups]
			v.Measures[0].Merge(st, &rows[j].States[0])
			// The Merger's former densifying: at 32, 64, 128, … merges.
			const denseCheckFrom = 32
			if n := merges[j%nGroups] + 1; n >= denseCheckFrom && n&(n-1) == 0 && st.HLL.Estimate() >= denseMinValues {
				d := hyperloglog.NewNoSparse()
				require.NoError(b, d.Merge(st.HLL))
				st.HLL = d
			}
			merges[j%nGroups]++
		}
		for j := range states {
			_ = v.Measures[0].Result(&states[j])
		}
		lib += time.Since(t0)
	}
	b.ReportMetric(float64(flat.Nanoseconds())/float64(b.N*len(rows)), "union_ns/row")
	b.ReportMetric(float64(lib.Nanoseconds())/float64(b.N*len(rows)), "library_merge_ns/row")
}

// BenchmarkMergeQuantiles merges rows of latency quantile sketches into
// groups (4,096 rows of 50 values into 16 groups; 8,100 rows of 20 into
// 1,680, a level query's shape) through the Merger, with the rows decoded
// as serving decodes them now (flat counts, schemas.DDFlat, added by
// schemas.DDUnion) and, as the baseline in the same run, decoded into the
// library's sketches and merged with Measure.Merge (serving's way
// before). It reports both per row and their ratio, and the decoding of
// the cells both ways; TestDDUnionEqualsMerge and TestQuantileUnionAnswers
// hold the answers equal.
func BenchmarkMergeQuantiles(b *testing.B) {
	b.Run("many_rows_per_group", func(b *testing.B) { benchMergeQuantiles(b, 4096, 16, 50) })
	b.Run("few_rows_per_group", func(b *testing.B) { benchMergeQuantiles(b, 8100, 1680, 20) })
}

// quantileRows returns rows of a one-quantiles-measure view, decoded from
// their stored cells twice: flat (DecodeRow) and as the library's sketches
// (StateFromCell), with the cells.
func quantileRows(t testing.TB, nRows, nGroups, values int) (*schemas.View, *Query, []Row, []Row, [][]any) {
	cfg, err := schemas.Parse("t.yaml", []byte(`
chunk_size: 100
kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { database: tandem }
s3: { bucket: b }
streams:
  - { name: s, partitions: 1, id_field: id, time_field: ts, fields: [{name: id, type: string}, {name: ts, type: timestamp}, {name: l, type: float64}, {name: g, type: string}] }
views:
  - { name: v, stream: s, granularity: 1m, dimensions: [g], measures: [{name: latency, type: quantiles, field: l}] }
`), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	v := cfg.View("v")
	from := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	q := &Query{View: v, From: from, To: from.Add(24 * time.Hour), Measures: []int{0}, GroupBy: []int{0}, Filters: make([]*DimFilter, 1)}
	ev := schemas.Event{Values: make([]schemas.Value, 4)}
	rng := rand.New(rand.NewPCG(7, 8))
	var flat, lib []Row
	var cells [][]any
	for r := 0; r < nRows; r++ {
		a := v.NewAggregate()
		for i := 0; i < values; i++ {
			x := rng.ExpFloat64() * float64(20+r%200)
			if i%17 == 3 {
				x = 0
			}
			ev.Values[2] = schemas.Value{Set: true, Float: x}
			v.Add(a, &ev)
		}
		c := []any{v.Measures[0].Cell(&a[0])}
		dims := []string{fmt.Sprint(r % nGroups)}
		ms := from.Add(time.Duration(r%1440) * time.Minute).UnixMilli()
		fr, err := DecodeRow(v, ms, dims, c, nil)
		require.NoError(t, err)
		st, err := v.Measures[0].StateFromCell(c[0])
		require.NoError(t, err)
		flat = append(flat, fr)
		lib = append(lib, Row{WindowMs: ms, Dims: dims, Key: fr.Key, States: schemas.Aggregate{st}})
		cells = append(cells, c)
	}
	return v, q, flat, lib, cells
}

func mergeAll(q *Query, rows []Row) []*Group {
	m := NewMerger(q)
	for j := range rows {
		m.Add(&rows[j])
	}
	gs := m.Groups()
	for _, g := range gs {
		_ = g.Result(q, 0)
	}
	return gs
}

func benchMergeQuantiles(b *testing.B, nRows, nGroups, values int) {
	v, q, flatRows, libRows, cells := quantileRows(b, nRows, nGroups, values)
	var flat, lib, decFlat, decLib time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		mergeAll(q, flatRows)
		flat += time.Since(t0)
		t0 = time.Now()
		mergeAll(q, libRows)
		lib += time.Since(t0)
		t0 = time.Now()
		for _, c := range cells {
			_, _, _, _ = decodeCell(&v.Measures[0], c[0])
		}
		decFlat += time.Since(t0)
		t0 = time.Now()
		for _, c := range cells {
			_, _ = v.Measures[0].StateFromCell(c[0])
		}
		decLib += time.Since(t0)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*len(flatRows)) }
	b.ReportMetric(per(flat), "flat_merge_ns/row")
	b.ReportMetric(per(lib), "library_merge_ns/row")
	b.ReportMetric(float64(lib)/float64(flat), "library/flat")
	b.ReportMetric(per(decFlat), "flat_decode_ns/row")
	b.ReportMetric(per(decLib), "library_decode_ns/row")
}

// TestQuantileUnionAnswers: the Merger's quantile answers over flat rows
// equal folding the same cells decoded as the library's sketches with
// Measure.Merge, group by group, and rows of both kinds mixed (as batch
// rows and speed groups meet) answer the same too.
func TestQuantileUnionAnswers(t *testing.T) {
	for _, shape := range [][3]int{{500, 3, 40}, {900, 300, 5}, {64, 64, 1}} {
		v, q, flatRows, libRows, _ := quantileRows(t, shape[0], shape[1], shape[2])
		want := map[string]*schemas.State{}
		for j := range libRows {
			st := want[libRows[j].Dims[0]]
			if st == nil {
				st = &schemas.State{}
				want[libRows[j].Dims[0]] = st
			}
			v.Measures[0].Merge(st, &libRows[j].States[0])
		}
		mixed := make([]Row, len(flatRows))
		for j := range mixed {
			mixed[j] = flatRows[j]
			if j%3 == 0 {
				mixed[j] = libRows[j]
			}
		}
		for name, rows := range map[string][]Row{"flat": flatRows, "library": libRows, "mixed": mixed} {
			groups := mergeAll(q, rows)
			require.Len(t, groups, len(want))
			for _, g := range groups {
				w := want[g.Dims[0]]
				require.Equal(t, w.N, g.States[0].N, "%s", name)
				require.Equal(t, v.Measures[0].Result(w), g.Result(q, 0), "%s: group %s", name, g.Dims[0])
			}
		}
	}
}
