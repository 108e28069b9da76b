package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// TopNQuery asks ClickHouse for the first Limit groups of each bucket of
// a query over both halves of the exactness contract (docs/architecture.md,
// "Top N in ClickHouse"): a run's batch rows (base rows of <view>_batch
// and level rows of <view>_levels, as Segments say) and the speed rows
// SpeedQuery selects (newest version, chunks not absorbed), rolled up to
// the buckets and groups, cut by Having, ordered and cut to Limit per
// bucket — so Limit rows per bucket come back, not every group.
//
// Only exact measures (count, sum, min, max) can be read: OrderBy, Having
// and SpeedQuery.Measures must name exact measures. Identifiers come from
// View; run id, window bounds and filter values are bound as '?'.
type TopNQuery struct {
	SpeedQuery
	// Granularity, Local and GroupBy are as in SpeedRollupQuery.
	Granularity time.Duration
	Local       *schemas.LocalBuckets
	GroupBy     []string
	// RunID names the batch run whose rows are read; "" reads none (no
	// run published). The caller checks that ClickHouse holds the run
	// completely (RunRowCounts) before and after.
	RunID string
	// Segments say where the run's rows of each part of [From, To) come
	// from; they must cover it without overlap.
	Segments []TopNSegment
	// OrderBy names the measure each bucket's groups are sorted by (nulls
	// last: a min or max without value, a sum that is not finite), then by
	// the group-by values (byte order); "" sorts by the group-by values.
	OrderBy string
	Desc    bool
	// Having keeps only the groups passing every threshold (ANDed).
	Having []TopNHaving
	// Limit is the most rows per bucket; ≥ 1.
	Limit int
}

// TopNSegment is a window range [From, To) read from one level of the run
// (Level 0: the base rows of <view>_batch).
type TopNSegment struct {
	Level    schemas.Granularity
	From, To time.Time
}

// TopNHaving is one threshold: measure Op Number, Op one of > >= < <= = !=.
// A group without a value passes none, as in serving.
type TopNHaving struct {
	Measure string
	Op      string
	Number  float64
}

var topNOps = []string{">", ">=", "<", "<=", "=", "!="}

// topNSQL builds the query of a TopNQuery; need marks the view's measures
// whose cells come back (SpeedQuery.Measures, which must be exact).
func topNSQL(database string, q *TopNQuery) (sql string, args []any, need []bool, err error) {
	v := q.View
	if v == nil {
		return "", nil, nil, fmt.Errorf("clickhouse: a top-N query needs a view")
	}
	if q.Limit < 1 {
		return "", nil, nil, fmt.Errorf("clickhouse: view %s: a top-N query needs a limit of 1 or more, not %d", v.Name, q.Limit)
	}
	if need, err = q.need(); err != nil {
		return "", nil, nil, err
	}
	// The measures read: those returned, the order key and the thresholds.
	read := slices.Clone(need)
	exact := func(name, what string) (int, error) {
		i := v.MeasureIndex(name)
		if i < 0 {
			return 0, fmt.Errorf("clickhouse: view %s has no measure %q to %s", v.Name, name, what)
		}
		if !v.Measures[i].Type.Exact() {
			return 0, fmt.Errorf("clickhouse: view %s: measure %s is a %s; a top-N query reads exact measures only", v.Name, name, v.Measures[i].Type)
		}
		read[i] = true
		return i, nil
	}
	for i, n := range need {
		if n {
			if _, err := exact(v.Measures[i].Name, "return"); err != nil {
				return "", nil, nil, err
			}
		}
	}
	order := -1
	if q.OrderBy != "" {
		if order, err = exact(q.OrderBy, "order by"); err != nil {
			return "", nil, nil, err
		}
	}
	having := make([]int, len(q.Having))
	for k, h := range q.Having {
		if having[k], err = exact(h.Measure, "compare"); err != nil {
			return "", nil, nil, err
		}
		if !slices.Contains(topNOps, h.Op) {
			return "", nil, nil, fmt.Errorf("clickhouse: having operator %q is not one of %v", h.Op, topNOps)
		}
	}
	bucket, err := bucketSQL(v, q.Granularity, q.Local)
	if err != nil {
		return "", nil, nil, err
	}
	dims := make([]string, len(q.GroupBy))
	for k, d := range q.GroupBy {
		if v.DimensionIndex(d) < 0 {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s has no dimension %q to group by", v.Name, d)
		}
		dims[k] = ident(d)
	}
	cols := append([]string{ident(schemas.ColWindowStart)}, dims...)
	var aggs []string
	alias := func(i int) string { return fmt.Sprintf("_m%d", i) }
	for i, m := range v.Measures {
		if !read[i] {
			continue
		}
		if !identPattern.MatchString(m.Name) {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s: column name %q is not a plain identifier", v.Name, m.Name)
		}
		cols = append(cols, ident(m.Name))
		aggs = append(aggs, fmt.Sprintf("%s(%s) AS %s", m.Kind().SQLMerge, ident(m.Name), alias(i)))
	}
	union, args, err := bothHalvesSQL(database, q, cols)
	if err != nil {
		return "", nil, nil, err
	}

	// A key without a value sorts last either way (serving's sortKey):
	// min and max of no value are NULL; a sum that is not finite (inf
	// - inf and NaN - NaN are NaN) is none either.
	null := func(i int) string {
		switch v.Measures[i].Kind().Cell {
		case schemas.CellNullableFloat64:
			return fmt.Sprintf("ifNull(isNaN(%s), 1)", alias(i))
		case schemas.CellFloat64:
			return fmt.Sprintf("isNaN(%s - %s)", alias(i), alias(i))
		}
		return "" // an integer (a count) always has a value
	}
	sel := append([]string{bucket + " AS " + rollupBucketAlias}, dims...)
	sel = append(sel, aggs...)
	group := append([]string{rollupBucketAlias}, dims...)
	// HAVING count() > 0: see speedRollupSQL.
	hv := []string{"count() > 0"}
	for k, h := range q.Having {
		cmp := fmt.Sprintf("toFloat64(%s) %s ?", alias(having[k]), h.Op)
		if n := null(having[k]); n != "" {
			cmp = fmt.Sprintf("(%s = 0 AND %s)", n, cmp)
		}
		hv = append(hv, cmp)
		args = append(args, h.Number)
	}
	orderBy := []string{rollupBucketAlias}
	if order >= 0 {
		dir := "ASC"
		if q.Desc {
			dir = "DESC"
		}
		// Not a constant: current ClickHouse reads ORDER BY 0 as a
		// position.
		if n := null(order); n != "" {
			orderBy = append(orderBy, n)
		}
		orderBy = append(orderBy, alias(order)+" "+dir)
	}
	orderBy = append(orderBy, dims...)
	// The returned cells: the asked measures, in the view's order.
	out := append([]string{rollupBucketAlias}, dims...)
	for i := range v.Measures {
		if need[i] {
			out = append(out, alias(i))
		}
	}
	sql = fmt.Sprintf("SELECT %s FROM (SELECT %s FROM (%s) GROUP BY %s HAVING %s) ORDER BY %s LIMIT %d BY %s",
		strings.Join(out, ", "), strings.Join(sel, ", "), union,
		strings.Join(group, ", "), strings.Join(hv, " AND "), strings.Join(orderBy, ", "), q.Limit, rollupBucketAlias)
	return sql, args, need, nil
}

// bothHalvesSQL is the UNION ALL of the rows q reads, each as cols: the
// run's rows (per level of the segments: <view>_batch for the base rows,
// <view>_levels for a level) and the speed rows FINAL of the chunks not
// absorbed, q's filters in every branch.
func bothHalvesSQL(database string, q *TopNQuery, cols []string) (string, []any, error) {
	v := q.View
	inner := strings.Join(cols, ", ")
	filters, fargs, err := filterWhere(&q.SpeedQuery)
	if err != nil {
		return "", nil, err
	}
	// The run's rows, one branch per table read: ranges of one level ORed.
	var branches []string
	var args []any
	if q.RunID != "" {
		byLevel := map[schemas.Granularity][]string{}
		rangeArgs := map[schemas.Granularity][]any{}
		var levels []schemas.Granularity
		for _, sg := range q.Segments {
			lo, hi := windowBounds(sg.From, sg.To)
			if lo >= hi {
				continue
			}
			if _, ok := byLevel[sg.Level]; !ok {
				levels = append(levels, sg.Level)
			}
			byLevel[sg.Level] = append(byLevel[sg.Level], "(window_start >= toDateTime(?) AND window_start < toDateTime(?))")
			rangeArgs[sg.Level] = append(rangeArgs[sg.Level], lo, hi)
		}
		for _, l := range levels {
			table, where := qualified(database, BatchTable(v.Name)), []string{"run_id = ?"}
			if l != 0 {
				if levelSeconds(l) <= 0 {
					return "", nil, fmt.Errorf("clickhouse: view %s: level %s is not whole seconds", v.Name, l)
				}
				table = qualified(database, LevelsTable(v.Name))
				where = append(where, fmt.Sprintf("level = %d", levelSeconds(l)))
			}
			where = append(where, "("+strings.Join(byLevel[l], " OR ")+")")
			where = append(where, filters...)
			branches = append(branches, fmt.Sprintf("SELECT %s FROM %s WHERE %s", inner, table, strings.Join(where, " AND ")))
			args = append(append(append(args, q.RunID), rangeArgs[l]...), fargs...)
		}
	}
	swhere, sargs, err := speedWhere(&q.SpeedQuery)
	if err != nil {
		return "", nil, err
	}
	branches = append(branches, fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s", inner, qualified(database, SpeedTable(v.Name)), strings.Join(swhere, " AND ")))
	return strings.Join(branches, " UNION ALL "), append(args, sargs...), nil
}

// groupsSQL is the query of ScanGroups: every (bucket, group) of q's rows
// in (bucket, group-by values) order, the measures SpeedQuery.Measures
// names as the speed rollup returns them (exact ones aggregated, sketches
// as the list of stored sketches). OrderBy, Having and Limit are not
// used. A sketch is read from base rows only: <view>_levels holds no
// tandem sketches, so every segment must be Level 0 then.
func groupsSQL(database string, q *TopNQuery) (sql string, args []any, need []bool, err error) {
	v := q.View
	if v == nil {
		return "", nil, nil, fmt.Errorf("clickhouse: a group scan needs a view")
	}
	if need, err = q.need(); err != nil {
		return "", nil, nil, err
	}
	bucket, err := bucketSQL(v, q.Granularity, q.Local)
	if err != nil {
		return "", nil, nil, err
	}
	dims := make([]string, len(q.GroupBy))
	for k, d := range q.GroupBy {
		if v.DimensionIndex(d) < 0 {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s has no dimension %q to group by", v.Name, d)
		}
		dims[k] = ident(d)
	}
	cols := append([]string{ident(schemas.ColWindowStart)}, dims...)
	sel := append([]string{bucket + " AS " + rollupBucketAlias}, dims...)
	sketch := false
	for i, m := range v.Measures {
		if !need[i] {
			continue
		}
		if !identPattern.MatchString(m.Name) {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s: column name %q is not a plain identifier", v.Name, m.Name)
		}
		c := ident(m.Name)
		cols = append(cols, c)
		if m.Type.Exact() {
			sel = append(sel, fmt.Sprintf("%s(%s)", m.Kind().SQLMerge, c))
		} else {
			sketch = true
			sel = append(sel, fmt.Sprintf("groupArrayIf(%s, %s != '')", c, c))
		}
	}
	if sketch {
		for _, sg := range q.Segments {
			if sg.Level != 0 {
				return "", nil, nil, fmt.Errorf("clickhouse: view %s: sketches are read from base rows only, not level %s", v.Name, sg.Level)
			}
		}
	}
	union, args, err := bothHalvesSQL(database, q, cols)
	if err != nil {
		return "", nil, nil, err
	}
	group := append([]string{rollupBucketAlias}, dims...)
	// HAVING count() > 0: see speedRollupSQL.
	sql = fmt.Sprintf("SELECT %s FROM (%s) GROUP BY %s HAVING count() > 0 ORDER BY %s",
		strings.Join(sel, ", "), union, strings.Join(group, ", "), strings.Join(group, ", "))
	return sql, args, need, nil
}

// ScanGroups calls fn for every (bucket, group) of q's rows (groupsSQL),
// in bucket order and within a bucket in byte order of the group-by
// values, so a reader can keep the best groups in a bounded heap while
// they stream by. Cells are as ScanSpeedRollup's; the row is reused.
func (db *DB) ScanGroups(ctx context.Context, q TopNQuery, fn func(*SpeedRollupRow) error) error {
	sql, args, need, err := groupsSQL(db.db, &q)
	if err != nil {
		return err
	}
	return db.scanRollup(ctx, "the groups of "+q.View.Name, q.View, sql, args, need, len(q.GroupBy), false, fn)
}

// ScanTopN calls fn, in answer order (by bucket, then the order), for each
// row of q: at most q.Limit per bucket. Cells hold the asked measures as
// ScanSpeedRollup's do (count int64, sum float64, min and max *float64);
// the row is reused after fn returns.
func (db *DB) ScanTopN(ctx context.Context, q TopNQuery, fn func(*SpeedRollupRow) error) error {
	sql, args, need, err := topNSQL(db.db, &q)
	if err != nil {
		return err
	}
	return db.scanRollup(ctx, fmt.Sprintf("top %d of %s", q.Limit, q.View.Name), q.View, sql, args, need, len(q.GroupBy), false, fn)
}

// RunRowCounts returns how many rows of a run ClickHouse holds: its base
// rows in <view>_batch and, per level (in seconds), its rows in
// <view>_levels (nil for a view without levels). A reader compares them
// with the run's manifest to know whether ClickHouse can answer for it.
func (db *DB) RunRowCounts(ctx context.Context, v *schemas.View, runID string) (base int64, levels map[int64]int64, err error) {
	if base, err = db.BatchRunRows(ctx, v, runID); err != nil {
		return 0, nil, err
	}
	if len(v.Levels()) == 0 {
		return base, nil, nil
	}
	levels, err = db.levelRows(ctx, v, runID)
	return base, levels, err
}
