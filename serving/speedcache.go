package serving

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
)

// speedCacheShare is the part of serve.cache_bytes given to the rollups of
// closed speed chunks (the bucket cache takes bucketCacheShare, the batch
// row cache the rest). A quarter: a
// day of the example view per hour by country, 10 M events in 4
// partitions, takes ~35 MiB of node rollups (mostly dense distinct
// sketches), more than the eighth it once had, and a shape that does not
// fit reads its uncached part from ClickHouse on every query.
func speedCacheShare(cacheBytes int64) int64 { return cacheBytes / 4 }

// maxClosedChunks bounds the closed chunks per partition one query looks up
// in the cache (the newest ones); older closed chunks are read from
// ClickHouse like open ones. It keeps the per-query bookkeeping small when
// nothing has been absorbed for a long time.
const maxClosedChunks = 4096

// chunkCache keeps, per query shape, the rollups of closed speed chunks:
// one Group per (bucket, group), every asked measure merged. A chunk is
// closed when its partition's speed progress (the highest version written)
// has passed its last offset: by the speed layer's invariant (speed/doc.go)
// every row of it was then written at its final version, and the chunk
// never changes again (a replay writes the same content).
//
// Rollups are kept per node of a tree over each partition's chunks: a node
// of level L covers the fanout^L consecutive chunks [i·fanout^L,
// (i+1)·fanout^L), so a node's rollup holds (buckets × groups) of its whole
// stretch, not (chunks × buckets × groups), and a query merges a few large
// nodes and a ragged rest instead of every chunk. A node is used (cached
// or built) only when every chunk of it is closed and not absorbed
// (≥ K_p of the query's snapshot, so no absorbed row is ever counted)
// and its whole window span lies in the query's range, so its rollup
// holds every row of its chunks and is right for any later query of the
// same shape whose range holds the span too. Spans of closed chunks are
// cached as well; both live in one LRU bounded by bytes.
type chunkCache struct {
	chunkSize int64
	fanout    int64 // chunks per node of level 1; ≥ 2
	levels    int   // node levels: 0 (a chunk) to levels-1
	lru       *lru
}

// The tree's shape: nodes of 1, 4, 16, 64, 256 and 1024 chunks. A query
// whose range holds a partition's closed chunks whole merges at most
// fanout-1 nodes per level and partition; a finer fan-out rebuilds less
// when a node completes, a coarser one merges fewer nodes.
const (
	rollupFanout = 4
	rollupLevels = 6
)

// chunkRollup is one cached node's groups for one query shape. The groups
// are only read afterwards: concurrent queries share them.
type chunkRollup struct {
	groups []*Group
	bytes  int64 // the groups' estimated memory (rollupGroupBytes)
}

// chunkID is a speed chunk: its Kafka partition and chunk number.
type chunkID struct {
	p int32
	c int64
}

// node is a node of a partition's chunk tree: level, index and the chunks
// [start, end) it covers.
type node struct {
	p          int32
	level      int
	idx        int64
	start, end int64
}

func (a node) less(b node) bool { return a.p < b.p || a.p == b.p && a.start < b.start }

// building is a node whose rollup a query builds: seeds (cached rollups of
// its descendants, merged first) and the rows ClickHouse sends for its
// other chunks go into m, a Merger of the query's shape without its range
// or bounds (the node must hold every row of its chunks).
type building struct {
	n     node
	seeds []*chunkRollup
	m     *Merger
	bytes int64 // estimated memory of m's groups so far
}

// nodeAdmission builds the rollups of the first nodes (in key order) of a
// sorted candidate list whose rollups fit in budget bytes together. Rows
// arrive in no chunk order, so a node's size is known only at the scan's
// end: while the built rollups exceed the budget, the last admitted node
// is dropped — the groups it merged so far are handed to the query at
// once, its later rows go to the query directly — and no longer built.
// What is held stays within the budget, and the admitted nodes are always
// a prefix of the candidates.
type nodeAdmission struct {
	cand   []*building
	limit  int // cand[:limit] may still be admitted
	budget int64
	used   int64
	emit   func(*Group) error
}

// find returns the candidate covering chunk c of partition p, or nil.
func (a *nodeAdmission) find(p int32, c int64) *building {
	i := sort.Search(len(a.cand), func(i int) bool {
		n := a.cand[i].n
		return n.p > p || n.p == p && n.end > c
	})
	if i < len(a.cand) && a.cand[i].n.p == p && a.cand[i].n.start <= c {
		return a.cand[i]
	}
	return nil
}

// admitted reports whether b is still being built.
func (a *nodeAdmission) admitted(b *building) bool {
	return b != nil && b.m != nil
}

// add merges g into b (admitted) and drops the last admitted nodes while
// the total is over the budget.
func (a *nodeAdmission) add(b *building, g *Group) error {
	var before int64
	w := g.WindowMs
	if b.m.gran == 0 {
		w = b.m.fromMs // as addGroup keys it
	}
	dst := b.m.groups[groupKey{w, schemas.JoinDims(g.Dims)}]
	if dst != nil {
		before = rollupGroupBytes(dst)
	}
	if dst = b.m.addGroup(g); dst != nil {
		d := rollupGroupBytes(dst) - before
		b.bytes += d
		a.used += d
	}
	return a.shed()
}

// shed drops the last admitted nodes while the built ones exceed the
// budget, handing what they merged so far to the query.
func (a *nodeAdmission) shed() error {
	for a.used > a.budget && a.limit > 0 {
		a.limit--
		b := a.cand[a.limit]
		if b.m == nil {
			continue
		}
		a.used -= b.bytes
		m := b.m
		b.m, b.bytes = nil, 0
		for _, g := range m.groups {
			if err := a.emit(g); err != nil {
				return err
			}
		}
	}
	return nil
}

// chunkSpan is a closed chunk's window span in Unix ms; none marks a chunk
// without speed rows.
type chunkSpan struct {
	minMs, maxMs int64
	none         bool
}

// shapeKey identifies what a rollup depends on besides the chunk: the view,
// bucket size, group-by, filters and measures — not the range.
func shapeKey(q *Query) string {
	var b strings.Builder
	b.WriteString(q.View.Name)
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(int64(q.Granularity.D()), 10))
	if q.Local != nil { // the same function of the window start everywhere
		b.WriteString("|tz")
		b.WriteString(q.Local.Zone)
	}
	b.WriteString("|g")
	for _, di := range q.GroupBy {
		b.WriteString(strconv.Itoa(di))
		b.WriteByte(',')
	}
	b.WriteString("|m")
	for _, mi := range q.Measures {
		b.WriteString(strconv.Itoa(mi))
		b.WriteByte(',')
	}
	for di, f := range q.Filters {
		if f == nil {
			continue
		}
		b.WriteString("|f")
		b.WriteString(strconv.Itoa(di))
		for _, part := range [][]string{setValues(f.Is), sortedCopy(f.Prefixes), setValues(f.Not), sortedCopy(f.NotPrefixes)} {
			b.WriteByte('=')
			b.WriteString(strconv.Itoa(len(part))) // the count keeps the parts apart
			b.WriteByte(':')
			b.WriteString(schemas.JoinDims(part))
		}
	}
	return b.String()
}

func sortedCopy(vals []string) []string {
	out := append([]string(nil), vals...)
	sort.Strings(out)
	return out
}

func rollupKey(shape string, n node) string {
	return fmt.Sprintf("r|%d|%d|%d|%s", n.p, n.level, n.idx, shape)
}

func spanKey(view string, p int32, c int64) string {
	return fmt.Sprintf("s|%s|%d|%d", view, p, c)
}

// groupBytes estimates a cached group's memory: the struct, its dimension
// strings, its states and their sketches (sketchBytes, the stored bytes
// merged into it, bounds a merged sketch's size).
func groupBytes(g *Group, sketchBytes int64) int64 {
	n := int64(96+48*len(g.States)) + sketchBytes
	for _, d := range g.Dims {
		n += 16 + int64(len(d))
	}
	return n
}

// rollupGroupBytes estimates a node rollup's group: groupBytes with the
// memory its unions hold (a sketch merged without a union, rare, counts as
// a wide one).
func rollupGroupBytes(g *Group) int64 {
	var sk int64
	for _, u := range g.unions {
		if u != nil {
			sk += u.Bytes()
		}
	}
	for _, u := range g.ddUnions {
		if u != nil {
			sk += u.Bytes()
		}
	}
	for j := range g.States {
		if g.States[j].HLL != nil || g.States[j].DD != nil {
			sk += 20 << 10
		}
	}
	return groupBytes(g, sk)
}

// rollupCached is RollupSpeed with the closed-chunk cache: the closed
// chunks of each partition are covered by the largest tree nodes (see
// chunkCache) that are whole, not absorbed and inside q's range; a cached
// node is answered from memory and left out of the ClickHouse query, an
// uncached one is built (from its cached descendants and ClickHouse's rows
// of its other chunks) and cached, and the rest (open chunks, ragged
// edges, nodes over the budget) is read from ClickHouse grouped by chunk.
func (c *ClickHouseSpeed) rollupCached(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Group) error) error {
	v := q.View
	progress, err := c.speedProgress(ctx, v)
	if err != nil {
		return err
	}
	// Closed chunks not absorbed, per partition: [K_p, (M_p+1)/C).
	type bounds struct{ lo, hi int64 }
	closed := map[int32]bounds{}
	var unknown map[int32][]int64
	spans := map[chunkID]chunkSpan{}
	for p, m := range progress {
		hi := (m + 1) / c.cache.chunkSize
		lo := max(absorbed[p], hi-maxClosedChunks, 0)
		if lo >= hi {
			continue
		}
		closed[p] = bounds{lo, hi}
		for k := lo; k < hi; k++ {
			if sp, ok := c.cache.lru.get(spanKey(v.Name, p, k)); ok {
				spans[chunkID{p, k}] = sp.(chunkSpan)
				continue
			}
			if unknown == nil {
				unknown = map[int32][]int64{}
			}
			unknown[p] = append(unknown[p], k)
		}
	}
	if len(unknown) > 0 {
		got, err := c.store.SpeedChunkSpans(ctx, v, unknown)
		if err != nil {
			return err
		}
		for p, ks := range unknown {
			for _, k := range ks {
				sp := chunkSpan{none: true}
				if s, ok := got[p][k]; ok {
					sp = chunkSpan{minMs: s.Min.UnixMilli(), maxMs: s.Max.UnixMilli()}
				}
				spans[chunkID{p, k}] = sp
				c.cache.lru.put(spanKey(v.Name, p, k), sp, 64)
			}
		}
	}
	nodeSpan := func(p int32, start, end int64) chunkSpan {
		out := chunkSpan{none: true}
		for k := start; k < end; k++ {
			sp := spans[chunkID{p, k}]
			switch {
			case sp.none:
			case out.none:
				out = sp
			default:
				out.minMs, out.maxMs = min(out.minMs, sp.minMs), max(out.maxMs, sp.maxMs)
			}
		}
		return out
	}

	shape := shapeKey(q)
	fromMs, toMs := q.FromMs(), q.ToMs()
	exclude := map[int32][]int64{}
	excludeRange := func(p int32, start, end int64) {
		for k := start; k < end; k++ {
			exclude[p] = append(exclude[p], k)
		}
	}
	var hits []*chunkRollup
	var hitBytes int64
	var cand []*building
	// seed collects, for a node being built, the cached rollups of its
	// descendants (their chunks are then not read); empty chunks are
	// left out; the other chunks are read and routed to the node.
	var seed func(b *building, n node)
	seed = func(b *building, n node) {
		if n != b.n {
			if r, ok := c.cache.lru.get(rollupKey(shape, n)); ok {
				cr := r.(*chunkRollup)
				b.seeds = append(b.seeds, cr)
				hitBytes += cr.bytes
				excludeRange(n.p, n.start, n.end)
				return
			}
		}
		if n.level == 0 {
			if spans[chunkID{n.p, n.start}].none {
				exclude[n.p] = append(exclude[n.p], n.start)
			}
			return
		}
		size := (n.end - n.start) / c.cache.fanout
		for i := int64(0); i < c.cache.fanout; i++ {
			seed(b, node{p: n.p, level: n.level - 1, idx: n.idx*c.cache.fanout + i, start: n.start + i*size, end: n.start + (i+1)*size})
		}
	}
	var visit func(n node, bd bounds)
	visit = func(n node, bd bounds) {
		if n.end <= bd.lo || n.start >= bd.hi {
			return
		}
		if n.start >= bd.lo && n.end <= bd.hi {
			sp := nodeSpan(n.p, n.start, n.end)
			if sp.none {
				excludeRange(n.p, n.start, n.end) // nothing there, ever
				return
			}
			if sp.minMs >= fromMs && sp.maxMs < toMs {
				if r, ok := c.cache.lru.get(rollupKey(shape, n)); ok {
					cr := r.(*chunkRollup)
					hits = append(hits, cr)
					hitBytes += cr.bytes
					excludeRange(n.p, n.start, n.end)
					return
				}
				b := &building{n: n}
				seed(b, n)
				cand = append(cand, b)
				return
			}
		}
		if n.level == 0 {
			return // read from ClickHouse, not cached: open, or cut by the range or K_p
		}
		size := (n.end - n.start) / c.cache.fanout
		for i := int64(0); i < c.cache.fanout; i++ {
			visit(node{p: n.p, level: n.level - 1, idx: n.idx*c.cache.fanout + i, start: n.start + i*size, end: n.start + (i+1)*size}, bd)
		}
	}
	top := c.cache.levels - 1
	topSize := int64(1)
	for range top {
		topSize *= c.cache.fanout
	}
	for p, bd := range closed {
		for i := bd.lo / topSize; i*topSize < bd.hi; i++ {
			visit(node{p: p, level: top, idx: i, start: i * topSize, end: (i + 1) * topSize}, bd)
		}
	}
	// What is built is admitted in key order, a prefix of the candidates,
	// up to what the cache's share leaves beside this shape's hits (and
	// seeds) and the spans: a shape larger than the share keeps the same
	// nodes cached from one query to the next (the hits, just touched, are
	// not evicted by its own admissions) and reads only the rest from
	// ClickHouse, instead of each query's rollups evicting the last one's.
	sort.Slice(cand, func(i, j int) bool { return cand[i].n.less(cand[j].n) })
	admit := &nodeAdmission{cand: cand, limit: len(cand), emit: fn,
		budget: c.cache.lru.capacity - hitBytes - 64*int64(len(spans))}
	// A node's Merger: q's shape without its range, top-N restriction or
	// bounds, so that it holds every group of the node's rows (the budget
	// bounds its memory).
	nq := *q
	nq.only, nq.MaxRows, nq.MaxGroups = nil, 0, 0
	for _, b := range cand {
		b.m = NewMerger(&nq)
	}
	// Seeds first; a node dropped on the way hands the groups of its
	// seeds not merged yet to the query directly.
	for _, b := range cand {
		for _, cr := range b.seeds {
			for _, g := range cr.groups {
				if !admit.admitted(b) {
					if err := fn(g); err != nil {
						return err
					}
					continue
				}
				if err := admit.add(b, g); err != nil {
					return err
				}
			}
		}
		b.seeds = nil
	}

	sq, _ := speedQuery(q, absorbed)
	sq.Exclude = exclude
	rq := clickhouse.SpeedRollupQuery{SpeedQuery: sq, Granularity: q.Granularity.D(), Local: q.Local, ByChunk: true}
	for _, di := range q.GroupBy {
		rq.GroupBy = append(rq.GroupBy, v.Dimensions[di])
	}
	g := &Group{States: make([]schemas.State, len(q.Measures))}
	err = c.store.ScanSpeedRollup(ctx, rq, func(r *clickhouse.SpeedRollupRow) error {
		g.WindowMs, g.Dims = r.Bucket.UnixMilli(), r.Dims
		if _, err := rollupStates(q, r, g); err != nil {
			return err
		}
		if b := admit.find(r.Partition, r.Chunk); admit.admitted(b) {
			return admit.add(b, g) // the node's Merger copies what it keeps
		}
		return fn(g)
	})
	if err != nil {
		return err
	}
	for _, b := range cand {
		if !admit.admitted(b) {
			continue
		}
		cr := &chunkRollup{groups: make([]*Group, 0, len(b.m.groups)), bytes: b.bytes}
		for _, g := range b.m.groups {
			for _, u := range g.unions {
				if u != nil {
					u.Dense() // sorted and deduplicated before it is shared
				}
			}
			for _, u := range g.ddUnions {
				if u != nil {
					u.Compact() // one count per index: each query adds fewer
				}
			}
			g.cached = true
			cr.groups = append(cr.groups, g)
		}
		b.m = nil
		c.cache.lru.put(rollupKey(shape, b.n), cr, 64+cr.bytes)
		hits = append(hits, cr)
	}
	for _, cr := range hits {
		for _, g := range cr.groups {
			if err := fn(g); err != nil {
				return err
			}
		}
	}
	return nil
}

// speedProgress is the speed progress of v per partition (the store's
// SpeedProgress), read from the chunk of the progress the last query saw
// on: a partition's newest rows are in its newest chunks, so ClickHouse
// reads a few granules instead of the whole speed table on every query.
// The answer does not depend on what was seen (SpeedProgressFrom reads
// everything when a partition has no row there any more).
func (c *ClickHouseSpeed) speedProgress(ctx context.Context, v *schemas.View) (map[int32]int64, error) {
	c.seenMu.Lock()
	from := make(map[int32]int64, len(c.seen[v.Name]))
	for p, m := range c.seen[v.Name] {
		from[p] = m / c.cache.chunkSize
	}
	c.seenMu.Unlock()
	progress, err := c.store.SpeedProgressFrom(ctx, v, from)
	if err != nil {
		return nil, err
	}
	c.seenMu.Lock()
	if c.seen == nil {
		c.seen = map[string]map[int32]int64{}
	}
	c.seen[v.Name] = maps.Clone(progress)
	c.seenMu.Unlock()
	return progress, nil
}

// rollupStates fills g's states (one per q.Measures) from a rollup row's
// cells and returns the memory its sketches hold. A distinct measure's
// sketches are merged into a union kept in g.unions (compacted, and only
// read afterwards: cached rollups are shared by concurrent queries), a
// quantiles measure's into one in g.ddUnions, which Merger.AddGroup merges
// union into union: no library sketch in between.
func rollupStates(q *Query, r *clickhouse.SpeedRollupRow, g *Group) (int64, error) {
	v := q.View
	states := g.States
	g.unions, g.ddUnions = nil, nil
	var sketchBytes int64
	for j, mi := range q.Measures {
		m := &v.Measures[mi]
		states[j] = schemas.State{}
		if r.Cells[mi] == nil {
			continue
		}
		sketches, ok := r.Cells[mi].([][]byte)
		if !ok {
			st, err := m.StateFromCell(r.Cells[mi])
			if err != nil {
				return 0, fmt.Errorf("view %s: speed rollup: %w", v.Name, err)
			}
			states[j] = st
			continue
		}
		var in int64
		if m.Kind().Sketch == schemas.SketchDD {
			// Flat: no sketch object per stored row, and one scratch for
			// every row's counts (DecodeDDFlatInto). The union itself is
			// the group's state (g.ddUnions): the Merger adds its bins to
			// the answer row's union, with no sketch built per group.
			u := &schemas.DDUnion{}
			var scratch schemas.DDFlat
			for _, b := range sketches {
				if len(b) == 0 {
					continue
				}
				f, err := schemas.DecodeDDFlatInto(&scratch, b)
				if err != nil {
					return 0, fmt.Errorf("view %s: speed rollup: %w: %s: %v", v.Name, schemas.ErrBadCell, m.Name, err)
				}
				if f != nil {
					u.AddFlat(f)
					states[j].N += int64(f.Count())
				}
				in += int64(len(b))
			}
			if states[j].N > 0 {
				if g.ddUnions == nil {
					g.ddUnions = make([]*schemas.DDUnion, len(states))
				}
				g.ddUnions[j] = u
				sketchBytes += u.Bytes()
			}
			continue
		}
		if m.Kind().Sketch == schemas.SketchHLL {
			// Flat too: each sketch checked, then read in place by a union.
			u := &schemas.HLLUnion{}
			for _, b := range sketches {
				hb, err := schemas.ValidHLLBytes(m, b)
				if err != nil {
					return 0, fmt.Errorf("view %s: speed rollup: %w", v.Name, err)
				}
				if hb != nil {
					u.AddBytes(hb)
					states[j].N++
				}
			}
			if states[j].N > 0 {
				u.Dense() // sorted and deduplicated: the least memory, before it is shared
				if g.unions == nil {
					g.unions = make([]*schemas.HLLUnion, len(states))
				}
				g.unions[j] = u
				sketchBytes += u.Bytes()
			}
			continue
		}
		for _, b := range sketches {
			st, err := m.StateFromCell(b)
			if err != nil {
				return 0, fmt.Errorf("view %s: speed rollup: %w", v.Name, err)
			}
			m.Merge(&states[j], &st)
			in += int64(len(b))
		}
		// A merged sketch is no larger than its inputs, nor than a dense
		// HyperLogLog (16 KiB) or a wide DDSketch.
		sketchBytes += min(in, 20<<10)
	}
	return sketchBytes, nil
}
