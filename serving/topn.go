package serving

import (
	"container/heap"
	"math"
	"sort"
	"strings"

	"github.com/tandem-analytics/tandem/schemas"
)

// sortKey is the value a group is ordered by: an exact integer for count
// (int64 compares exactly past 2^53), a float for the others; null (no
// value: min, max or quantiles of no events, a sum that is not finite)
// sorts last in both directions.
type sortKey struct {
	null bool
	i    int64
	f    float64
}

// orderKey is g's value of the OrderBy measure, as the answer reports it
// (distinct and quantiles: the estimate).
func orderKey(q *Query, g *Group) sortKey {
	ob := q.OrderBy
	return measureKey(&q.View.Measures[q.Measures[ob.Measure]], &g.States[ob.Measure], ob.Part)
}

// measureKey is one measure's reported value (part picks a quantile).
func measureKey(m *schemas.Measure, st *schemas.State, part int) sortKey {
	switch v := m.Result(st).(type) {
	case int64:
		return sortKey{i: v, f: float64(v)}
	case uint64:
		return sortKey{i: int64(min(v, math.MaxInt64)), f: float64(v)}
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return sortKey{null: true}
		}
		return sortKey{f: v}
	case *float64:
		if v == nil || math.IsNaN(*v) {
			return sortKey{null: true}
		}
		return sortKey{f: *v}
	case *schemas.Quantiles:
		if v == nil {
			return sortKey{null: true}
		}
		f := quantilePart(v, part)
		if math.IsNaN(f) {
			return sortKey{null: true}
		}
		return sortKey{f: f}
	}
	return sortKey{null: true}
}

// cmpKey compares two keys of the same measure: -1, 0 or 1, nulls last
// whatever desc says.
func cmpKey(a, b sortKey, integer, desc bool) int {
	switch {
	case a.null && b.null:
		return 0
	case a.null:
		return 1
	case b.null:
		return -1
	}
	c := 0
	if integer {
		c = cmpOrdered(a.i, b.i)
	} else {
		c = cmpOrdered(a.f, b.f)
	}
	if desc {
		c = -c
	}
	return c
}

func cmpOrdered[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpDims(a, b []string) int {
	for k := range a {
		if c := strings.Compare(a[k], b[k]); c != 0 {
			return c
		}
	}
	return 0
}

// ranked is a group with its order key, computed once.
type ranked struct {
	g   *Group
	key sortKey
}

// ranker orders the groups of one bucket: by the OrderBy measure when
// there is one, then by the group-by values (byte order, dimension by
// dimension), which are unique within a bucket: the order is total, so
// ties are broken the same way on every replica and every run.
type ranker struct {
	q       *Query
	integer bool // the key compares as an integer (count)
}

func newRanker(q *Query) ranker {
	r := ranker{q: q}
	if q.OrderBy != nil {
		res := q.View.Measures[q.Measures[q.OrderBy.Measure]].Kind().Result
		r.integer = res == schemas.ResultInt64 || res == schemas.ResultUint64
	}
	return r
}

func (r ranker) rank(g *Group) ranked {
	if r.q.OrderBy == nil {
		return ranked{g: g}
	}
	return ranked{g: g, key: orderKey(r.q, g)}
}

// less reports whether a comes before b in the answer.
func (r ranker) less(a, b ranked) bool {
	if r.q.OrderBy != nil {
		if c := cmpKey(a.key, b.key, r.integer, r.q.OrderBy.Desc); c != 0 {
			return c < 0
		}
	}
	return cmpDims(a.g.Dims, b.g.Dims) < 0
}

// worstFirst is a heap of one bucket's best groups so far with the worst
// on top, so a better group replaces it in O(log limit).
type worstFirst struct {
	r     ranker
	items []ranked
}

func (h *worstFirst) Len() int           { return len(h.items) }
func (h *worstFirst) Less(i, j int) bool { return h.r.less(h.items[j], h.items[i]) }
func (h *worstFirst) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *worstFirst) Push(x any)         { h.items = append(h.items, x.(ranked)) }
func (h *worstFirst) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

// Answer returns the answer rows of q: the groups passing q.Having,
// sorted by bucket, within a bucket
// by q.OrderBy (then the group-by values), at most q.Limit per bucket.
// truncated reports whether a bucket had more groups than the limit.
// With a limit, each bucket keeps only a heap of its best q.Limit groups
// while the merged groups are walked: the answer is sorted, never the
// whole merge.
func (m *Merger) Answer() (groups []*Group, truncated bool) {
	q := m.q
	if q.OrderBy == nil && q.Limit == 0 && len(q.Having) == 0 {
		return m.Groups(), false
	}
	r := newRanker(q)
	buckets := map[int64]*worstFirst{}
groups:
	for _, g := range m.groups {
		finishUnions(g)
		m.finishDistinct(g)
		for i := range q.Having {
			h := &q.Having[i]
			if !h.pass(measureKey(&q.View.Measures[q.Measures[h.Measure]], &g.States[h.Measure], h.Part)) {
				continue groups
			}
		}
		x := r.rank(g)
		h := buckets[g.WindowMs]
		if h == nil {
			h = &worstFirst{r: r}
			buckets[g.WindowMs] = h
		}
		switch {
		case q.Limit == 0 || h.Len() < q.Limit:
			heap.Push(h, x)
		case r.less(x, h.items[0]):
			h.items[0] = x
			heap.Fix(h, 0)
			truncated = true
		default:
			truncated = true
		}
	}
	starts := make([]int64, 0, len(buckets))
	n := 0
	for w, h := range buckets {
		starts = append(starts, w)
		n += h.Len()
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	groups = make([]*Group, 0, n)
	for _, w := range starts {
		items := buckets[w].items
		sort.Slice(items, func(i, j int) bool { return r.less(items[i], items[j]) })
		for _, x := range items {
			groups = append(groups, x.g)
		}
	}
	return groups, truncated
}
