package serving

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
)

// A top N (limit=) whose order key and thresholds are exact measures is
// computed in ClickHouse when ClickHouse holds the snapshot's run: the
// run's base and level rows (<view>_batch, <view>_levels, loaded by the
// batch job) and the speed rows of the chunks it did not absorb are
// rolled up, cut by having, ordered and cut to N per bucket there, so
// serving receives N rows per bucket instead of merging every group
// (docs/architecture.md, "Top N in ClickHouse"). The sketches asked beside
// (distinct, quantiles) are merged in serving for the chosen groups only.
// Anything else — no ClickHouse, a run ClickHouse does not hold
// completely, a sketch as the order key — is answered by the merge, as
// before.

// usePushdown, when false, answers every top N by the merge; tests
// compare both paths with it.
var usePushdown = true

// TopNStore is what the push-down needs from ClickHouse; *clickhouse.DB
// implements it. A SpeedStore that does not (a test's) is never asked.
type TopNStore interface {
	// ScanTopN calls fn for each answer row of a top-N query, in order.
	ScanTopN(ctx context.Context, q clickhouse.TopNQuery, fn func(*clickhouse.SpeedRollupRow) error) error
	// ScanGroups calls fn for every (bucket, group) of a query over both
	// halves, sorted by bucket and group-by values, sketches as lists.
	ScanGroups(ctx context.Context, q clickhouse.TopNQuery, fn func(*clickhouse.SpeedRollupRow) error) error
	// RunRowCounts counts a run's rows in ClickHouse: base rows and, per
	// level in seconds, level rows.
	RunRowCounts(ctx context.Context, v *schemas.View, runID string) (base int64, levels map[int64]int64, err error)
}

var _ TopNStore = (*clickhouse.DB)(nil)

// topNSource is a SpeedSource that can compute top N in ClickHouse:
// ClickHouseSpeed over a *clickhouse.DB, and LazyClickHouseSpeed.
type topNSource interface {
	topNStore(ctx context.Context) (TopNStore, error)
}

// errNoTopN: the speed store cannot compute top N (a test's store).
var errNoTopN = errors.New("the speed store computes no top N")

func (c *ClickHouseSpeed) topNStore(context.Context) (TopNStore, error) {
	if ts, ok := c.store.(TopNStore); ok {
		return ts, nil
	}
	return nil, errNoTopN
}

func (l *LazyClickHouseSpeed) topNStore(ctx context.Context) (TopNStore, error) {
	src, err := l.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to ClickHouse: %w", err)
	}
	return src.topNStore(ctx)
}

// pushable reports whether ClickHouse can choose q's groups: q has a
// limit, its order key and thresholds are exact measures (ClickHouse
// cannot read tandem's sketches), the view has an exact measure to read,
// and the speed source is ClickHouse.
func pushable(q *Query, sp SpeedSource) bool {
	if _, ok := sp.(topNSource); !ok || !usePushdown || q.Limit == 0 {
		return false
	}
	exact := func(j int) bool { return q.View.Measures[q.Measures[j]].Type.Exact() }
	if q.OrderBy != nil && !exact(q.OrderBy.Measure) {
		return false
	}
	for _, h := range q.Having {
		if !exact(h.Measure) {
			return false
		}
	}
	for i := range q.View.Measures {
		if q.View.Measures[i].Type.Exact() {
			return true
		}
	}
	return false
}

// topNPath is how ClickHouse helps answer q: pushTopN (it computes the
// top N), streamTopN (it streams the groups for serving to rank) or nil
// (the merge answers alone). Either may still hand q to the merge.
func (s *Service) topNPath(q *Query) func(context.Context, *Query, *Snapshot, *Result) (bool, error) {
	switch {
	case pushable(q, s.deps.Speed):
		return s.pushTopN
	case streamable(q, s.deps.Speed):
		return s.streamTopN
	}
	return nil
}

// errNotHeld: ClickHouse does not hold the snapshot's run completely.
var errNotHeld = errors.New("ClickHouse does not hold the run completely")

// heldLevels checks that ClickHouse holds every base row of snap's run
// (as many as its manifest lists) and returns the run's levels it holds
// completely, coarsest first as the manifest lists them; errNotHeld when
// the base rows are not all there. A run the batch job has not loaded
// yet, is loading, or has dropped (it keeps only the current run) is not
// held. No run: nothing to hold.
func heldLevels(ctx context.Context, store TopNStore, snap *Snapshot) ([]schemas.Granularity, error) {
	m := snap.Manifest
	if m == nil {
		return nil, nil
	}
	var wantBase int64
	want := map[int64]int64{}
	for _, f := range m.Files {
		if f.Level == 0 {
			wantBase += f.Rows
		} else {
			want[int64(f.Level.D()/time.Second)] += f.Rows
		}
	}
	base, levels, err := store.RunRowCounts(ctx, snap.View, m.RunID)
	if err != nil {
		return nil, err
	}
	if base != wantBase {
		return nil, errNotHeld
	}
	var out []schemas.Granularity
	for _, l := range m.Levels {
		if n := int64(l.D() / time.Second); levels[n] == want[n] {
			out = append(out, l)
		}
	}
	return out, nil
}

// topNQuery is q as the adapter's top-N query over snap: the run's rows
// read from levels (planSegments, as the merge would read them), one row
// more per bucket than the limit, to tell a cut bucket.
func topNQuery(q *Query, snap *Snapshot, levels []schemas.Granularity) clickhouse.TopNQuery {
	v := q.View
	sq, _ := speedQuery(q, snap.AbsorbedChunks)
	sq.Measures = nil
	for _, mi := range q.Measures {
		if v.Measures[mi].Type.Exact() {
			sq.Measures = append(sq.Measures, v.Measures[mi].Name)
		}
	}
	if len(sq.Measures) == 0 { // an empty list reads every measure: name one to read
		for i := range v.Measures {
			if v.Measures[i].Type.Exact() {
				sq.Measures = []string{v.Measures[i].Name}
				break
			}
		}
	}
	tq := clickhouse.TopNQuery{SpeedQuery: sq, Granularity: q.Granularity.D(), Local: q.Local, Limit: q.Limit + 1}
	for _, di := range q.GroupBy {
		tq.GroupBy = append(tq.GroupBy, v.Dimensions[di])
	}
	if snap.Manifest != nil {
		tq.RunID = snap.Manifest.RunID
		for _, sg := range planSegments(q, levels) {
			tq.Segments = append(tq.Segments, clickhouse.TopNSegment{Level: sg.level, From: time.UnixMilli(sg.lo), To: time.UnixMilli(sg.hi)})
		}
	}
	if ob := q.OrderBy; ob != nil {
		tq.OrderBy, tq.Desc = v.Measures[q.Measures[ob.Measure]].Name, ob.Desc
	}
	for _, h := range q.Having {
		tq.Having = append(tq.Having, clickhouse.TopNHaving{Measure: v.Measures[q.Measures[h.Measure]].Name, Op: h.Op, Number: h.Number})
	}
	return tq
}

// pushTopN answers q with ClickHouse choosing the groups (see above) and
// reports whether it did; false (and no error) sends q to the merge. The
// run must be held before and after the top-N query: the batch job drops
// a run only whole and never loads a dropped one again, so a run held at
// both ends was held throughout.
func (s *Service) pushTopN(ctx context.Context, q *Query, snap *Snapshot, res *Result) (bool, error) {
	t, cancel := s.newTopNRun(ctx, q, snap)
	defer cancel()
	store, levels, ok, err := t.open()
	if !ok {
		return false, err
	}
	sctx := t.sctx
	v := q.View
	var groups []*Group
	var truncated, tooMany bool
	lastBucket, inBucket := int64(0), 0
	err = store.ScanTopN(sctx, topNQuery(q, snap, levels), func(r *clickhouse.SpeedRollupRow) error {
		w := q.FromMs() // granularity "all": one bucket, at from (as the merge)
		if !q.All() {
			w = r.Bucket.UnixMilli()
		}
		if len(groups) == 0 || w != lastBucket {
			lastBucket, inBucket = w, 0
		}
		if inBucket++; inBucket > q.Limit { // the row past the limit
			truncated = true
			return nil
		}
		if q.MaxRows > 0 && len(groups) >= q.MaxRows {
			tooMany = true
			return errStopScan
		}
		g := &Group{WindowMs: w, Dims: append([]string(nil), r.Dims...), States: make([]schemas.State, len(q.Measures))}
		for j, mi := range q.Measures {
			if m := &v.Measures[mi]; m.Type.Exact() {
				st, err := m.StateFromCell(r.Cells[mi])
				if err != nil {
					return err
				}
				g.States[j] = st
			}
		}
		groups = append(groups, g)
		return nil
	})
	if tooMany {
		return false, &TooManyRowsError{Limit: q.MaxRows}
	}
	if ok, err := t.finish(store, res, err, "the top N"); !ok {
		return false, err
	}
	merged := 0
	if len(groups) > 0 && hasSketches(q) {
		sketch := func(m *schemas.Measure) bool { return !m.Type.Exact() }
		if merged, err = s.measuresOf(ctx, q, snap, res, groups, sketch); err != nil {
			return false, err
		}
	}
	res.Groups, res.Truncated = groups, truncated
	s.m.answered(q, "clickhouse", merged)
	return true, nil
}

// topNRun is one top N answered from ClickHouse: every step may give the
// query back to the merge (fallback), unless the request itself ended.
type topNRun struct {
	s    *Service
	q    *Query
	snap *Snapshot
	ctx  context.Context // the request's
	sctx context.Context // the request's, bounded by speedTimeout
}

func (s *Service) newTopNRun(ctx context.Context, q *Query, snap *Snapshot) (*topNRun, context.CancelFunc) {
	sctx, cancel := context.WithTimeout(ctx, speedTimeout)
	return &topNRun{s: s, q: q, snap: snap, ctx: ctx, sctx: sctx}, cancel
}

// fallback gives the query back to the merge: (false, nil), or the
// request's error when it ended.
func (t *topNRun) fallback(why string, err error) (bool, error) {
	if t.ctx.Err() != nil {
		return false, t.ctx.Err()
	}
	t.s.log.Debug("top N merged in serving", "view", t.q.View.Name, "run", t.snap.RunID(), "why", why, "err", err)
	return false, nil
}

// open returns the store and the run's levels ClickHouse holds whole;
// ok is false when the caller must return (false, err).
func (t *topNRun) open() (store TopNStore, levels []schemas.Granularity, ok bool, err error) {
	if store, err = t.s.deps.Speed.(topNSource).topNStore(t.sctx); err != nil {
		_, err = t.fallback("the top N store", err)
		return nil, nil, false, err
	}
	if levels, err = heldLevels(t.sctx, store, t.snap); err != nil {
		_, err = t.fallback("the run's rows in ClickHouse", err)
		return nil, nil, false, err
	}
	return store, levels, true, nil
}

// finish settles a scan of what that ended with scanErr: a ClickHouse up
// but too busy gets the speed half's verdict at once (the merge's speed
// half would fail too, after reading the whole batch half); otherwise the
// run's rows must still be whole in ClickHouse, and res gets the speed
// layer's newest window. ok is false when the caller must return
// (false, err).
func (t *topNRun) finish(store TopNStore, res *Result, scanErr error, what string) (ok bool, err error) {
	if scanErr != nil {
		if verdict := t.s.speedVerdict(t.ctx, busy(scanErr), t.sctx.Err() != nil); verdict != nil {
			return false, verdict
		}
		return t.fallback(what+" from ClickHouse", scanErr)
	}
	if _, err := heldLevels(t.sctx, store, t.snap); err != nil {
		return t.fallback("the run's rows in ClickHouse after "+what, err)
	}
	maxWin, err := t.s.deps.Speed.MaxWindow(t.sctx, t.q.View, t.snap.AbsorbedChunks)
	if err != nil {
		return t.fallback("the speed layer's newest window", err)
	}
	if !maxWin.IsZero() {
		res.Freshness.SpeedMaxEventTime = maxWin
	}
	return true, nil
}

// errStopScan ends a scan early.
var errStopScan = errors.New("serving: scan stopped")

// hasSketches reports whether q asks for a distinct or quantiles measure.
func hasSketches(q *Query) bool {
	for _, mi := range q.Measures {
		if !q.View.Measures[mi].Type.Exact() {
			return true
		}
	}
	return false
}

// measuresOf fills in the measures which picks of the chosen groups by
// merging both halves for those groups only: each group-by dimension
// filtered to the chosen values (which passed q's filters) and the merge
// restricted to the chosen (bucket, group) pairs, so it holds at most
// len(groups) groups. It returns that number.
func (s *Service) measuresOf(ctx context.Context, q *Query, snap *Snapshot, res *Result, groups []*Group, which func(*schemas.Measure) bool) (int, error) {
	q2 := *q
	q2.OrderBy, q2.Having, q2.Limit = nil, nil, 0
	var sketchJ []int
	q2.Measures = nil
	for j, mi := range q.Measures {
		if which(&q.View.Measures[mi]) {
			sketchJ = append(sketchJ, j)
			q2.Measures = append(q2.Measures, mi)
		}
	}
	q2.Filters = append([]*DimFilter(nil), q.Filters...)
	sets := make([]map[string]bool, len(q.GroupBy))
	q2.only = make(map[groupKey]bool, len(groups))
	for _, g := range groups {
		for k, d := range g.Dims {
			if sets[k] == nil {
				sets[k] = map[string]bool{}
			}
			sets[k][d] = true
		}
		q2.only[groupKey{g.WindowMs, schemas.JoinDims(g.Dims)}] = true
	}
	for k, di := range q.GroupBy {
		q2.Filters[di] = &DimFilter{Is: maps.Clone(sets[k])}
	}
	merged, err := s.mergeHalves(ctx, &q2, snap, res)
	if err != nil {
		return 0, err
	}
	for _, g := range groups {
		mg := merged.groups[groupKey{g.WindowMs, schemas.JoinDims(g.Dims)}]
		if mg == nil {
			continue // no sketch value in either half: the empty states
		}
		finishUnions(mg)
		merged.finishDistinct(mg)
		for k, j := range sketchJ {
			g.States[j] = mg.States[k]
		}
	}
	return len(merged.groups), nil
}

// streamable reports whether a top N that ClickHouse cannot compute (its
// order key or a threshold is a distinct or quantiles measure, whose
// sketches SQL cannot read) can be ranked while ClickHouse streams its
// groups: q has a limit and the speed source is ClickHouse.
func streamable(q *Query, sp SpeedSource) bool {
	_, ok := sp.(topNSource)
	return ok && usePushdown && q.Limit > 0
}

// streamTopN answers q by ranking groups as ClickHouse streams them, and
// reports whether it did; false (and no error) sends q to the merge.
// ClickHouse merges both halves per (bucket, group) — the run's base rows
// (levels hold no tandem sketches) and the unabsorbed speed rows, the
// sketches as lists — and sends the groups sorted by bucket and group-by
// values; serving decodes each group's order and threshold measures, and
// keeps per bucket a heap of the best q.Limit groups (worstFirst, the
// merge's own order), so it holds N groups per bucket and one group
// being decoded, not every group. The other measures of the chosen
// groups are then merged for those groups only (sketchesOf).
func (s *Service) streamTopN(ctx context.Context, q *Query, snap *Snapshot, res *Result) (bool, error) {
	t, cancel := s.newTopNRun(ctx, q, snap)
	defer cancel()
	store, _, ok, err := t.open()
	if !ok {
		return false, err
	}
	sctx := t.sctx
	v := q.View
	tq := topNQuery(q, snap, nil) // no levels: base rows only
	tq.OrderBy, tq.Having, tq.Limit = "", nil, 0
	read := make([]bool, len(v.Measures))
	if q.OrderBy != nil {
		read[q.Measures[q.OrderBy.Measure]] = true
	}
	for _, h := range q.Having {
		read[q.Measures[h.Measure]] = true
	}
	tq.Measures = nil
	for i := range v.Measures {
		if read[i] {
			tq.Measures = append(tq.Measures, v.Measures[i].Name)
		}
	}
	if len(tq.Measures) == 0 { // pushable queries never come here; an order by dims would
		return t.fallback("nothing to rank by", nil)
	}
	r := newRanker(q)
	norm := NewMerger(q) // finishDistinct: the merge's dense rule
	buckets := map[int64]*worstFirst{}
	var truncated bool
	held := 0
	err = store.ScanGroups(sctx, tq, func(row *clickhouse.SpeedRollupRow) error {
		w := q.FromMs()
		if !q.All() {
			w = row.Bucket.UnixMilli()
		}
		g := &Group{WindowMs: w, States: make([]schemas.State, len(q.Measures))}
		if _, err := rollupStates(q, row, g); err != nil {
			return err
		}
		finishDD(g, true)  // the quantile sketches, and
		finishHLL(g, true) // the distinct ones: the ranker and having read them
		norm.finishDistinct(g)
		for i := range q.Having {
			h := &q.Having[i]
			if !h.pass(measureKey(&v.Measures[q.Measures[h.Measure]], &g.States[h.Measure], h.Part)) {
				return nil
			}
		}
		g.Dims = row.Dims // for the comparison; copied when kept
		x := r.rank(g)
		h := buckets[w]
		if h == nil {
			h = &worstFirst{r: r}
			buckets[w] = h
		}
		switch {
		case h.Len() < q.Limit:
			// Kept groups only grow the answer: past serve.max_result_rows
			// it is refused, so the heaps hold at most that many.
			if held++; q.MaxRows > 0 && held > q.MaxRows {
				return &TooManyRowsError{Limit: q.MaxRows}
			}
			g.Dims = append([]string(nil), row.Dims...)
			heap.Push(h, x)
		case r.less(x, h.items[0]):
			g.Dims = append([]string(nil), row.Dims...)
			h.items[0] = x
			heap.Fix(h, 0)
			truncated = true
		default:
			truncated = true
		}
		return nil
	})
	var tooMany *TooManyRowsError
	if errors.As(err, &tooMany) {
		return false, err
	}
	if ok, err := t.finish(store, res, err, "the groups"); !ok {
		return false, err
	}
	starts := make([]int64, 0, len(buckets))
	for w := range buckets {
		starts = append(starts, w)
	}
	slices.Sort(starts)
	var groups []*Group
	for _, w := range starts {
		items := buckets[w].items
		sort.Slice(items, func(i, j int) bool { return r.less(items[i], items[j]) })
		for _, x := range items {
			groups = append(groups, x.g)
		}
	}
	if q.MaxRows > 0 && len(groups) > q.MaxRows {
		return false, &TooManyRowsError{Limit: q.MaxRows}
	}
	merged := 0
	if len(groups) > 0 {
		// Every asked measure of the chosen groups, as the merge computes
		// it: the answer shows the values it is ordered by.
		if merged, err = s.measuresOf(ctx, q, snap, res, groups, func(*schemas.Measure) bool { return true }); err != nil {
			return false, err
		}
	}
	res.Groups, res.Truncated = groups, truncated
	s.m.answered(q, "stream", merged)
	return true, nil
}
