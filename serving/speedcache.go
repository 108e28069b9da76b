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
	type pc struct {
		p int32
		c int64
	}
	build := map[pc]*chunkRollup{}
	buildBytes := map[pc]int64{}
	for p, ks := range closed {
		for _, k := range ks {
			sp := spans[[2]int64{int64(p), k}]
			switch {
			case sp.none:
				exclude[p] = append(exclude[p], k) // nothing there, ever
			case sp.minMs >= fromMs && sp.maxMs < toMs:
				if r, ok := c.cache.lru.get(rollupKey(shape, p, k)); ok {
					hits = append(hits, r.(*chunkRollup))
					exclude[p] = append(exclude[p], k)
				} else {
					build[pc{p, k}] = &chunkRollup{}
				}
			}
		}
	}

	sq, _ := speedQuery(q, absorbed)
	sq.Exclude = exclude
	rq := clickhouse.SpeedRollupQuery{SpeedQuery: sq, Granularity: q.Granularity.D(), Local: q.Local, ByChunk: true}
	for _, di := range q.GroupBy {
		rq.GroupBy = append(rq.GroupBy, v.Dimensions[di])
	}
	// What is being built is held until the scan ends; past the cache's
	// capacity it could not all be kept anyway, so building stops there
	// and the query's memory stays bounded by the cache size.
	var building int64
	err = c.store.ScanSpeedRollup(ctx, rq, func(r *clickhouse.SpeedRollupRow) error {
		key := pc{r.Partition, r.Chunk}
		cr := build[key]
		g := &Group{WindowMs: r.Bucket.UnixMilli(), Dims: r.Dims, States: make([]schemas.State, len(q.Measures))}
		sketchBytes, err := rollupStates(q, r, g)
		if err != nil {
			return err
		}
		if cr != nil {
			g.Dims = append([]string(nil), r.Dims...)
			cr.groups = append(cr.groups, g)
			b := groupBytes(g, sketchBytes)
			buildBytes[key] += b
			if building += b; building > c.cache.lru.capacity {
				clear(build)
			}
		}
		return fn(g)
	})
	if err != nil {
		return err
	}
	for key, cr := range build {
		c.cache.lru.put(rollupKey(shape, key.p, key.c), cr, 64+buildBytes[key])
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
