package serving

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
)

// speedCacheShare is the part of serve.cache_bytes given to the rollups of
// closed speed chunks; the batch row cache gets the rest.
func speedCacheShare(cacheBytes int64) int64 { return cacheBytes / 8 }

// maxClosedChunks bounds the closed chunks per partition one query looks up
// in the cache (the newest ones); older closed chunks are read from
// ClickHouse like open ones. It keeps the per-query bookkeeping small when
// nothing has been absorbed for a long time.
const maxClosedChunks = 4096

// chunkCache keeps, per query shape, the rollup of each closed speed chunk:
// one Group per (bucket, group), every asked measure merged. A chunk is
// closed when its partition's speed progress (the highest version written)
// has passed its last offset: by the speed layer's invariant (speed/doc.go)
// every row of it was then written at its final version, and the chunk
// never changes again (a replay writes the same content). A rollup is
// cached only for a chunk whose whole window span lies in the query that
// built it, so it holds every row of the chunk and is right for any later
// query of the same shape whose range holds the span too. Spans of closed
// chunks are cached as well; both live in one LRU bounded by bytes.
type chunkCache struct {
	chunkSize int64
	lru       *lru
}

// chunkRollup is one closed chunk's groups for one query shape.
type chunkRollup struct {
	groups []*Group
	bytes  int64 // the groups' estimated memory (groupBytes)
}

// chunkID is a speed chunk: its Kafka partition and chunk number.
type chunkID struct {
	p int32
	c int64
}

func (a chunkID) less(b chunkID) bool { return a.p < b.p || a.p == b.p && a.c < b.c }

// chunkAdmission builds the rollups of the first chunks (in key order) of a
// sorted candidate list whose rollups fit in budget bytes together. Rows
// arrive in no chunk order, so a chunk's size is known only at the scan's
// end: while the built rollups exceed the budget, the last admitted chunk
// is dropped and no longer built. What is held stays within the budget,
// and the admitted chunks are always a prefix of the candidates.
type chunkAdmission struct {
	cand   []chunkID
	rank   map[chunkID]int
	limit  int // cand[:limit] may still be admitted
	budget int64
	used   int64
	build  map[chunkID]*chunkRollup
}

func newChunkAdmission(cand []chunkID, budget int64) *chunkAdmission {
	a := &chunkAdmission{cand: cand, rank: make(map[chunkID]int, len(cand)), limit: len(cand), budget: budget, build: map[chunkID]*chunkRollup{}}
	for i, id := range cand {
		a.rank[id] = i
	}
	if budget <= 0 {
		a.limit = 0
	}
	return a
}

// rollup returns the rollup being built for id, or nil when id is not
// (or no longer) admitted.
func (a *chunkAdmission) rollup(id chunkID) *chunkRollup {
	i, ok := a.rank[id]
	if !ok || i >= a.limit {
		return nil
	}
	cr := a.build[id]
	if cr == nil {
		cr = &chunkRollup{}
		a.build[id] = cr
	}
	return cr
}

// add appends g (of n bytes) to cr and drops the last admitted chunks
// while the total is over the budget.
func (a *chunkAdmission) add(cr *chunkRollup, g *Group, n int64) {
	cr.groups = append(cr.groups, g)
	cr.bytes += n
	a.used += n
	for a.used > a.budget && a.limit > 0 {
		a.limit--
		id := a.cand[a.limit]
		if dropped := a.build[id]; dropped != nil {
			a.used -= dropped.bytes
			delete(a.build, id)
		}
	}
}

// admitted lists the chunks whose rollups were built whole, in key order.
func (a *chunkAdmission) admitted() []chunkID {
	var out []chunkID
	for _, id := range a.cand[:a.limit] {
		if a.build[id] != nil {
			out = append(out, id)
		}
	}
	return out
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

func rollupKey(shape string, p int32, c int64) string {
	return fmt.Sprintf("r|%d|%d|%s", p, c, shape)
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

// rollupCached is RollupSpeed with the closed-chunk cache: closed chunks
// whose rollup of q's shape is cached are answered from it and left out of
// the ClickHouse query; the others are read grouped by chunk, and the
// rollups of closed chunks that q's range holds whole are cached.
func (c *ClickHouseSpeed) rollupCached(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Group) error) error {
	v := q.View
	progress, err := c.store.SpeedProgress(ctx, v)
	if err != nil {
		return err
	}
	// Closed chunks not absorbed, per partition: [K_p, (M_p+1)/C).
	closed := map[int32][]int64{}
	var unknown map[int32][]int64
	spans := map[[2]int64]chunkSpan{}
	for p, m := range progress {
		hi := (m + 1) / c.cache.chunkSize
		lo := max(absorbed[p], hi-maxClosedChunks)
		for k := lo; k < hi; k++ {
			closed[p] = append(closed[p], k)
			if sp, ok := c.cache.lru.get(spanKey(v.Name, p, k)); ok {
				spans[[2]int64{int64(p), k}] = sp.(chunkSpan)
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
				spans[[2]int64{int64(p), k}] = sp
				c.cache.lru.put(spanKey(v.Name, p, k), sp, 64)
			}
		}
	}

	shape := shapeKey(q)
	fromMs, toMs := q.FromMs(), q.ToMs()
	exclude := map[int32][]int64{}
	var hits []*chunkRollup
	var hitBytes int64
	var cand []chunkID // closed chunks held whole by the range, not cached
	for p, ks := range closed {
		for _, k := range ks {
			sp := spans[[2]int64{int64(p), k}]
			switch {
			case sp.none:
				exclude[p] = append(exclude[p], k) // nothing there, ever
			case sp.minMs >= fromMs && sp.maxMs < toMs:
				if r, ok := c.cache.lru.get(rollupKey(shape, p, k)); ok {
					cr := r.(*chunkRollup)
					hits = append(hits, cr)
					hitBytes += cr.bytes
					exclude[p] = append(exclude[p], k)
				} else {
					cand = append(cand, chunkID{p, k})
				}
			}
		}
	}
	// What is built is admitted in key order, a prefix of the candidates,
	// up to what the cache's share leaves beside this shape's hits and the
	// spans: a shape larger than the share keeps the same chunks cached
	// from one query to the next (the hits, just touched, are not evicted
	// by its own admissions) and reads only the rest from ClickHouse,
	// instead of each query's rollups evicting the last one's.
	sort.Slice(cand, func(i, j int) bool { return cand[i].less(cand[j]) })
	budget := c.cache.lru.capacity - hitBytes - 64*int64(len(spans))
	admit := newChunkAdmission(cand, budget)

	sq, _ := speedQuery(q, absorbed)
	sq.Exclude = exclude
	rq := clickhouse.SpeedRollupQuery{SpeedQuery: sq, Granularity: q.Granularity.D(), Local: q.Local, ByChunk: true}
	for _, di := range q.GroupBy {
		rq.GroupBy = append(rq.GroupBy, v.Dimensions[di])
	}
	err = c.store.ScanSpeedRollup(ctx, rq, func(r *clickhouse.SpeedRollupRow) error {
		g := &Group{WindowMs: r.Bucket.UnixMilli(), Dims: r.Dims, States: make([]schemas.State, len(q.Measures))}
		sketchBytes, err := rollupStates(q, r, g)
		if err != nil {
			return err
		}
		if cr := admit.rollup(chunkID{r.Partition, r.Chunk}); cr != nil {
			g.Dims = append([]string(nil), r.Dims...)
			admit.add(cr, g, groupBytes(g, sketchBytes))
		}
		return fn(g)
	})
	if err != nil {
		return err
	}
	for _, id := range admit.admitted() {
		cr := admit.build[id]
		c.cache.lru.put(rollupKey(shape, id.p, id.c), cr, 64+cr.bytes)
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
