package serving

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/axiomhq/hyperloglog"

	"github.com/tandem-analytics/tandem/schemas"
)

// Row is one stored view row, decoded: a window of the view's granularity,
// every dimension value and the state of every measure. The batch half
// (Parquet) and the speed half (ClickHouse) both produce Rows, through
// DecodeRow, and both feed them to the same Merger.
type Row struct {
	WindowMs int64    // window start, Unix milliseconds
	Dims     []string // one value per view dimension, in the view's order
	Key      string   // schemas.JoinDims(Dims)
	// States holds one state per view measure. A reader that was asked for
	// only some measures leaves the others zero.
	States schemas.Aggregate
	// Flat holds, when the view has a quantiles measure, one entry per view
	// measure: a quantiles measure's sketch as flat counts (its state then
	// has N but no DD), which the Merger adds without sketch objects.
	Flat []*schemas.DDFlat
	// HLL holds, when the view has a distinct measure, one entry per view
	// measure: a distinct measure's stored sketch bytes, checked once when
	// decoded (schemas.ValidHLLBytes; its state then has N but no HLL),
	// which the Merger's union reads in place (schemas.HLLUnion.AddBytes):
	// no sketch object per row, in the cache or per query.
	HLL [][]byte
}

// decodeCell is StateFromCell, except that a quantile sketch is decoded
// into flat counts (schemas.DecodeDDFlat) and a distinct sketch is checked
// and kept as its bytes (a copy, schemas.ValidHLLBytes) rather than
// decoded into a sketch object.
func decodeCell(m *schemas.Measure, cell any) (schemas.State, *schemas.DDFlat, []byte, error) {
	switch m.Kind().Sketch {
	case schemas.SketchDD:
	case schemas.SketchHLL:
		b, err := m.SketchBytes(cell)
		if err != nil {
			return schemas.State{}, nil, nil, err
		}
		hb, err := schemas.ValidHLLBytes(m, b)
		if err != nil || hb == nil {
			return schemas.State{}, nil, nil, err
		}
		return schemas.State{N: 1}, nil, bytes.Clone(hb), nil
	default:
		st, err := m.StateFromCell(cell)
		return st, nil, nil, err
	}
	b, err := m.SketchBytes(cell)
	if err != nil {
		return schemas.State{}, nil, nil, err
	}
	if len(b) == 0 {
		return schemas.State{}, nil, nil, nil
	}
	f, err := schemas.DecodeDDFlat(b)
	if err != nil {
		return schemas.State{}, nil, nil, fmt.Errorf("%w: %s: %v", schemas.ErrBadCell, m.Name, err)
	}
	if f == nil {
		return schemas.State{}, nil, nil, nil
	}
	return schemas.State{N: int64(f.Count())}, f, nil, nil
}

// hasSketch reports whether v has a measure of sketch family f.
func hasSketch(v *schemas.View, f schemas.SketchFamily) bool {
	for i := range v.Measures {
		if v.Measures[i].Kind().Sketch == f {
			return true
		}
	}
	return false
}

// DecodeRow builds a Row from stored cells, one per view measure (as
// Measure.Cell wrote them), decoding only the measures whose need flag is
// set (all when need is nil). It is the one place where stored values
// become states (decodeCell).
func DecodeRow(v *schemas.View, windowMs int64, dims []string, cells []any, need []bool) (Row, error) {
	if len(dims) != len(v.Dimensions) || len(cells) != len(v.Measures) {
		return Row{}, fmt.Errorf("view %s: row has %d dimensions and %d measures; the view has %d and %d",
			v.Name, len(dims), len(cells), len(v.Dimensions), len(v.Measures))
	}
	r := Row{WindowMs: windowMs, Dims: dims, Key: schemas.JoinDims(dims), States: v.NewAggregate()}
	if hasSketch(v, schemas.SketchDD) {
		r.Flat = make([]*schemas.DDFlat, len(v.Measures))
	}
	if hasSketch(v, schemas.SketchHLL) {
		r.HLL = make([][]byte, len(v.Measures))
	}
	for i := range v.Measures {
		if need != nil && !need[i] {
			continue
		}
		st, f, hb, err := decodeCell(&v.Measures[i], cells[i])
		if err != nil {
			return Row{}, fmt.Errorf("view %s, window %d: %w", v.Name, windowMs, err)
		}
		r.States[i] = st
		if f != nil {
			r.Flat[i] = f
		}
		if hb != nil {
			r.HLL[i] = hb
		}
	}
	return r, nil
}

// Group is one answer row: a bucket of the query granularity, the values of
// the group-by dimensions, and the merged state of each asked measure (in
// Query.Measures order).
type Group struct {
	WindowMs int64
	Dims     []string
	States   []schemas.State
	// unions hold the distinct states while merging (flat, see
	// schemas.HLLUnion), by position in States; Groups moves them into
	// States[j].HLL.
	unions []*schemas.HLLUnion
	// ddUnions do the same for quantile states (schemas.DDUnion, into
	// States[j].DD).
	ddUnions []*schemas.DDUnion
	// estimated marks the distinct states finished from a union
	// (finishHLL), estimates holds their estimates.
	estimated []bool
	estimates []uint64
	// quantiles holds, by position in States, the answers of quantile
	// states finished from a union without their sketch (finishDD).
	quantiles []*schemas.Quantiles
	// cached marks a group a cache keeps and no one changes (a speed
	// node's rollup, a batch bucket's): a Merger notes its unions
	// (MergeLater) instead of merging them at once, which would only pay
	// off for unions that live on anyway.
	cached bool
}

// A group's distinct sketch switches to the dense representation when it
// has taken in many rows and holds many values. A sparse HyperLogLog
// re-sorts its whole list every ~160 new entries, so a large group merging
// hundreds of sketches spends most of its time there; a dense one (16 KiB)
// takes a merge in time proportional to the merged sketch. Small sketches
// stay sparse: the sparse encoding is the precise one at small counts
// (dense estimates are off by a value or two below a few hundred), and it
// is 16 KiB smaller. The budget bounds the memory per Merger.
const (
	denseMinValues = 2000 // estimated distinct values before densifying
	maxDense       = 2048 // dense sketches per Merger (32 MiB)
)

// maybeDensify densifies g's large distinct unions, after every merge. It
// counts the keys already in a union's sorted list (no estimate needed, no
// sort: SparseKeys is a field), a lower bound of its values: a union it
// makes dense also ends at denseMinValues or more, where finishDistinct
// would make it dense anyway, so the answer does not depend on when it
// did. Checking from the first merge matters for groups of few large
// parts (a speed query's cached chunk rollups, ~14 per group): waiting for
// 32 merges, as it once did, kept them sparse to the end, each merge a
// pass over thousands of keys.
func (m *Merger) maybeDensify(g *Group) {
	if !m.hasDistinct || m.dense >= maxDense {
		return
	}
	for _, u := range g.unions {
		if u != nil && u.SparseKeys() >= denseMinValues && m.dense < maxDense {
			u.Densify()
			m.dense++
		}
	}
}

// merge folds src into the state of asked measure j of g: distinct states
// into g's union for that measure (mergeDistinct), the others with
// Measure.Merge. Like Merge, an empty src changes nothing.
func (m *Merger) merge(g *Group, j int, src *schemas.State) {
	mi := m.q.Measures[j]
	switch m.q.View.Measures[mi].Kind().Sketch {
	case schemas.SketchHLL:
		m.mergeDistinct(g, j, src, nil)
	case schemas.SketchDD:
		m.mergeQuantiles(g, j, src, nil)
	default:
		m.q.View.Measures[mi].Merge(&g.States[j], src)
	}
}

// mergeDistinct folds src (with its stored bytes raw, when it has them)
// into g's union for asked distinct measure j (schemas.HLLUnion): from the
// first row on, so that no row costs a sketch object or the library's
// sparse merge (which re-sorts and re-encodes its list). The union's
// sketch is the library's merge of the same sketches (HLLUnion).
func (m *Merger) mergeDistinct(g *Group, j int, src *schemas.State, raw []byte) {
	if src.N == 0 {
		return
	}
	if g.unions == nil {
		g.unions = make([]*schemas.HLLUnion, len(g.States))
	}
	u := g.unions[j]
	if u == nil {
		u = &schemas.HLLUnion{}
		u.Add(g.States[j].HLL) // the group's own sketch so far, if any
		g.States[j].HLL = nil
		g.unions[j] = u
	}
	if raw != nil {
		// A sketch whose own key list reaches denseMinValues makes the
		// union dense now rather than at the next maybeDensify, which
		// would first append, sort and scatter its thousands of keys:
		// the rule is maybeDensify's (the distinct keys known), so the
		// answer is the same.
		if m.dense < maxDense && u.SparseKeys() >= 0 && schemas.HLLListKeys(raw) >= denseMinValues {
			u.Densify()
			m.dense++
		}
		u.AddBytes(raw)
	} else {
		u.Add(src.HLL)
	}
	g.States[j].N += src.N
}

// mergeUnion folds o, the union of n distinct states, into g's union for
// asked distinct measure j. With later (o is a cached group's: kept and
// never changed), o's sorted keys are merged when the union is next read
// (HLLUnion.MergeLater: one k-way merge or count of all a group's parts
// rather than one merge and one slice per part); other unions are merged
// now, so that the union does not keep them alive.
func (m *Merger) mergeUnion(g *Group, j int, o *schemas.HLLUnion, n int64, later bool) {
	if n == 0 {
		return
	}
	m.mergeDistinct(g, j, &schemas.State{N: n}, nil)
	if later {
		g.unions[j].MergeLater(o)
		return
	}
	g.unions[j].Merge(o)
}

// mergeQuantiles folds src (with its flat counts, when it has them) into
// the state of asked quantiles measure j of g. Flat counts go into g's
// union (schemas.DDUnion: array additions); a sketch object merges with
// Measure.Merge until the group has a union, then into it. Like Merge, an
// empty src changes nothing.
func (m *Merger) mergeQuantiles(g *Group, j int, src *schemas.State, flat *schemas.DDFlat) {
	if flat == nil && (g.ddUnions == nil || g.ddUnions[j] == nil) {
		m.q.View.Measures[m.q.Measures[j]].Merge(&g.States[j], src)
		return
	}
	u := groupDDUnion(g, j)
	if flat != nil {
		u.AddFlat(flat)
	} else {
		u.Add(src.DD)
	}
	g.States[j].N += src.N
}

// groupDDUnion is g's union for asked quantiles measure j, started with
// the group's own sketch so far the first time it is asked for.
func groupDDUnion(g *Group, j int) *schemas.DDUnion {
	if g.ddUnions == nil {
		g.ddUnions = make([]*schemas.DDUnion, len(g.States))
	}
	u := g.ddUnions[j]
	if u == nil {
		u = &schemas.DDUnion{}
		u.Add(g.States[j].DD)
		g.States[j].DD = nil
		g.ddUnions[j] = u
	}
	return u
}

// mergeDDUnion folds o, the union of n values' quantile sketches (a
// speed rollup's, only read), into g's union for asked quantiles measure j.
// With later (as for mergeUnion), its bins are added when the union is
// next read (DDUnion.MergeLater: the counts of all a group's parts into
// arrays sized once).
func (m *Merger) mergeDDUnion(g *Group, j int, o *schemas.DDUnion, n int64, later bool) {
	if n == 0 {
		return
	}
	u := groupDDUnion(g, j)
	if later {
		u.MergeLater(o)
	} else {
		u.Merge(o)
	}
	g.States[j].N += n
}

// finishUnions moves g's unions into its states.
func finishUnions(g *Group) {
	finishDD(g, true)
	finishHLL(g, true)
}

// finishDD moves g's quantile unions into its states. Without sketch, a
// state keeps only N and its answer is computed from the union's bins
// (schemas.DDUnion.Quantiles, equal to the sketch's) for Group.Result: an
// answer that reads nothing but Result (no order_by or having) needs no
// library sketch.
func finishDD(g *Group, sketch bool) {
	for j, u := range g.ddUnions {
		if u == nil {
			continue
		}
		if !sketch {
			if d := g.States[j].DD; d != nil { // merged in after a finish
				u.Add(d)
				g.States[j].DD = nil
			}
			if g.quantiles == nil {
				g.quantiles = make([]*schemas.Quantiles, len(g.States))
			}
			g.quantiles[j] = u.Quantiles() // nil when empty: Result answers the state
			continue
		}
		if sk := u.Sketch(); sk != nil {
			if d := g.States[j].DD; d != nil { // merged in after a finish
				_ = sk.MergeWith(d)
			}
			g.States[j].DD = sk
		}
	}
	g.ddUnions = nil
}

// finishHLL moves g's distinct unions into its states, dense when they
// estimate denseMinValues or more (the rule finishDistinct states), and
// keeps each one's estimate for the answer (Group.Result): the union
// computes it from its registers or keys far faster than the library's
// Estimate, and equal to it. Without sketch, the states keep only N: an
// answer that reads nothing but Result (no order_by or having) needs no
// library sketch, which would cost sorting and encoding every key.
func finishHLL(g *Group, sketch bool) {
	for j, u := range g.unions {
		if u == nil {
			continue
		}
		if h := g.States[j].HLL; h != nil { // merged in after a finish
			u.Add(h)
		}
		// A sparse union estimates as many values as it has keys (at
		// these counts; HLLUnion.AtLeast): it is made dense exactly when
		// its estimate reaches denseMinValues, without sorting its keys.
		if u.AtLeast(denseMinValues) {
			u.Densify()
		}
		if g.estimated == nil {
			g.estimated = make([]bool, len(g.States))
			g.estimates = make([]uint64, len(g.States))
		}
		g.estimated[j], g.estimates[j] = true, u.Estimate()
		g.States[j].HLL = nil
		if sketch {
			g.States[j].HLL = u.Sketch()
		}
		u.Release() // a group's own union: its registers serve the next group's
	}
	g.unions = nil
}

// Result is the reported value of asked measure j of g (Measure.Result of
// its state), a distinct estimate taken from the union that built it when
// there was one. Answer rows are read through it: their distinct states
// may hold no sketch (finishHLL).
func (g *Group) Result(q *Query, j int) any {
	if g.estimated != nil && g.estimated[j] {
		return g.estimates[j]
	}
	if g.quantiles != nil && g.quantiles[j] != nil {
		return g.quantiles[j]
	}
	return q.View.Measures[q.Measures[j]].Result(&g.States[j])
}

// finishDistinct makes g's distinct sketches dense when they estimate
// denseMinValues or more, as maybeDensify would have at its next check.
// Whether a sketch is dense changes its estimate by a value or two, and
// maybeDensify sees only a lower bound of the values (the sorted keys) and
// stops at the Merger's budget: without this, the same
// values merged from a few level rows or from many base rows could be
// answered one apart. A sparse estimate only grows as values are merged
// in, so every sketch maybeDensify made dense also ends at or above the
// threshold: whether a group ends dense now depends only on its values.
// States finished from a union (finishHLL) follow the rule already.
func (m *Merger) finishDistinct(g *Group) {
	if !m.hasDistinct {
		return
	}
	for j, mi := range m.q.Measures {
		h := g.States[j].HLL
		if m.q.View.Measures[mi].Kind().Sketch != schemas.SketchHLL || h == nil || (g.estimated != nil && g.estimated[j]) || h.Estimate() < denseMinValues {
			continue
		}
		dense := hyperloglog.NewNoSparse()
		if err := dense.Merge(h); err == nil {
			g.States[j].HLL = dense
		}
	}
}

type groupKey struct {
	window int64
	dims   string
}

// projection is what a Merger remembers per distinct combination of
// dimension values: whether it passes the filters and the group it maps to.
type projection struct {
	pass bool
	key  string
	dims []string
}

// Merger rolls view rows up to a query's buckets and groups, merging states
// with schemas.Measure.Merge. It is the single merge of serving: the batch
// half and the speed half each fill one, and MergeFrom combines them.
// A Merger is not safe for concurrent use.
type Merger struct {
	q      *Query
	fromMs int64
	toMs   int64
	gran   int64 // bucket size in ms; 0 for "all"
	groups map[groupKey]*Group
	memo   map[string]projection
	rows   int64
	// dense counts groups whose distinct sketches were densified.
	dense       int
	hasDistinct bool
	// overflow is set when a row would have opened group mergeBound+1; such
	// rows are dropped, so the Merger's memory stays bounded, and the
	// answer must be refused (Overflow).
	overflow bool
}

// Overflow reports whether the answer would hold more than q.MaxRows rows,
// in which case Groups is incomplete and must not be served.
func (m *Merger) Overflow() bool { return m.overflow }

// NewMerger returns an empty Merger for q.
func NewMerger(q *Query) *Merger {
	m := &Merger{q: q, fromMs: q.FromMs(), toMs: q.ToMs(), gran: q.Granularity.D().Milliseconds(),
		groups: map[groupKey]*Group{}, memo: map[string]projection{}}
	for _, mi := range q.Measures {
		m.hasDistinct = m.hasDistinct || q.View.Measures[mi].Kind().Sketch == schemas.SketchHLL
	}
	return m
}

// Rows is how many view rows were added (after the time and filter checks).
func (m *Merger) Rows() int64 { return m.rows }

// InRange reports whether a window start is inside the query.
func (m *Merger) InRange(windowMs int64) bool { return windowMs >= m.fromMs && windowMs < m.toMs }

// Add folds one view row in. Rows outside [From, To) or failing the filters
// are ignored. Add reads r but never keeps or changes its states, so rows
// may be shared (the batch cache hands out the same rows to every query).
func (m *Merger) Add(r *Row) {
	if !m.InRange(r.WindowMs) {
		return
	}
	p, ok := m.memo[r.Key]
	if !ok {
		p = m.project(r.Dims)
		m.memo[r.Key] = p
	}
	if !p.pass {
		return
	}
	m.rows++
	g := m.group(m.bucket(r.WindowMs), p.key, p.dims)
	if g == nil {
		return
	}
	for j, mi := range m.q.Measures {
		if r.Flat != nil && r.Flat[mi] != nil {
			m.mergeQuantiles(g, j, &r.States[mi], r.Flat[mi])
			continue
		}
		if r.HLL != nil && r.HLL[mi] != nil {
			m.mergeDistinct(g, j, &r.States[mi], r.HLL[mi])
			continue
		}
		m.merge(g, j, &r.States[mi])
	}
	m.maybeDensify(g)
}

func (m *Merger) project(dims []string) projection {
	for i, f := range m.q.Filters {
		if f != nil && !f.Accept(dims[i]) {
			return projection{}
		}
	}
	vals := make([]string, len(m.q.GroupBy))
	for j, di := range m.q.GroupBy {
		vals[j] = dims[di]
	}
	return projection{pass: true, key: schemas.JoinDims(vals), dims: vals}
}

func (m *Merger) bucket(windowMs int64) int64 {
	if m.gran == 0 {
		return m.fromMs
	}
	if lb := m.q.Local; lb != nil { // windows start on whole seconds
		return lb.Bucket(windowMs/1000) * 1000
	}
	b := windowMs - windowMs%m.gran
	if windowMs < 0 && windowMs%m.gran != 0 {
		b -= m.gran
	}
	return b
}

// group returns the group of (window, key), opening it when new; nil when
// opening it would pass q.MaxRows (the overflow is recorded).
func (m *Merger) group(window int64, key string, dims []string) *Group {
	k := groupKey{window, key}
	g := m.groups[k]
	if g == nil {
		if m.q.only != nil && !m.q.only[k] {
			return nil
		}
		if b := m.q.mergeBound(); b > 0 && len(m.groups) >= b {
			m.overflow = true
			return nil
		}
		g = &Group{WindowMs: window, Dims: dims, States: make([]schemas.State, len(m.q.Measures))}
		m.groups[k] = g
	}
	return g
}

// AddGroup folds in one group rolled up elsewhere (SpeedSource.RollupSpeed):
// g.WindowMs is its bucket start (ignored for granularity "all"), g.Dims
// the group-by values and g.States one state per q.Measures. The range and
// filters were applied where it was computed; a distinct state may come
// as a union in g.unions and a quantile state in g.ddUnions (rollupStates),
// which are only read. AddGroup keeps neither g nor
// its slices.
func (m *Merger) AddGroup(g *Group) { m.addGroup(g) }

// mergeGroupInto merges group src into dst, a group of m: unions into
// dst's unions, states with Measure.Merge. src is only read (the bucket
// cache's groups are shared by concurrent queries).
func (m *Merger) mergeGroupInto(dst, src *Group) {
	for j := range m.q.Measures {
		if src.unions != nil && src.unions[j] != nil {
			m.mergeUnion(dst, j, src.unions[j], src.States[j].N, src.cached)
			continue
		}
		if src.ddUnions != nil && src.ddUnions[j] != nil {
			m.mergeDDUnion(dst, j, src.ddUnions[j], src.States[j].N, src.cached)
			continue
		}
		m.merge(dst, j, &src.States[j])
	}
}

// addGroup is AddGroup returning the group g was merged into (nil when
// the merge dropped it): the speed cache measures what a node rollup
// grows by.
func (m *Merger) addGroup(g *Group) *Group {
	window := g.WindowMs
	if m.gran == 0 {
		window = m.fromMs
	}
	dst := m.group(window, schemas.JoinDims(g.Dims), nil)
	if dst == nil {
		return nil
	}
	if dst.Dims == nil {
		dst.Dims = append(make([]string, 0, len(g.Dims)), g.Dims...)
	}
	m.rows++
	m.mergeGroupInto(dst, g)
	m.maybeDensify(dst)
	return dst
}

// MergeFrom folds every group of o (a Merger of the same query) into m:
// a group m lacks is taken over, one both have merges (distinct unions
// union into union, no sketch in between). o is done with afterwards.
func (m *Merger) MergeFrom(o *Merger) {
	m.overflow = m.overflow || o.overflow
	m.dense += o.dense
	for k, src := range o.groups {
		if _, ok := m.groups[k]; !ok {
			// A group only o has is taken over as it is, unions and all:
			// scan workers read different files, so most groups are.
			if b := m.q.mergeBound(); b > 0 && len(m.groups) >= b {
				m.overflow = true
				continue
			}
			m.groups[k] = src
			continue
		}
		g := m.group(k.window, k.dims, src.Dims)
		if g == nil {
			continue
		}
		finishDD(src, true)
		for j := range m.q.Measures {
			if src.unions != nil && src.unions[j] != nil {
				m.mergeUnion(g, j, src.unions[j], src.States[j].N, false)
				continue
			}
			m.merge(g, j, &src.States[j])
		}
		src.unions = nil
		m.maybeDensify(g)
	}
	m.rows += o.rows
}

// Groups returns the answer rows sorted by bucket, then by the group-by
// values in order. Buckets without rows do not appear. Their distinct
// and quantile states keep no sketch: read the answer with Group.Result. m is done with
// afterwards.
func (m *Merger) Groups() []*Group {
	out := make([]*Group, 0, len(m.groups))
	for _, g := range m.groups {
		finishDD(g, false)
		finishHLL(g, false)
		m.finishDistinct(g)
		out = append(out, g)
	}
	sortGroups(out)
	return out
}

// sortGroups sorts answer rows by bucket, then by the group-by values in
// order.
func sortGroups(out []*Group) {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.WindowMs != b.WindowMs {
			return a.WindowMs < b.WindowMs
		}
		for k := range a.Dims {
			if c := strings.Compare(a.Dims[k], b.Dims[k]); c != 0 {
				return c < 0
			}
		}
		return false
	})
}
