package serving

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/tandem-analytics/tandem/schemas"
)

// The bucket cache holds the batch half of answers, per bucket
// (docs/architecture.md, "Levels: where each answer comes from"). A
// published run never changes, so the batch rows of one bucket of one
// query shape always merge to the same groups: a query takes the buckets
// it shares with earlier queries from here and merges level rows only for
// the others (a dashboard's sliding range: the edges). Each cached group
// keeps its unmerged unions, which the speed half's groups of the same
// bucket merge into (copies of them; the cached ones are only read), and,
// computed once, its finished values (distinct estimate, quantiles), which
// answer every group the speed half does not touch. The speed half is
// never cached: it is read on every request.

// bucketCacheShare is the part of serve.cache_bytes given to the bucket
// cache; the batch row cache gets the rest after the speed share.
func bucketCacheShare(cacheBytes int64) int64 { return cacheBytes / 4 }

// bucketUnitMin is the smallest unit the cache keeps: the buckets of a
// finer granularity that divides it (1m, 5m) are kept an hour of them to
// an entry, so an entry is not paid per few rows; a finer granularity that
// does not divide an hour is answered without the cache.
const bucketUnitMin = int64(time.Hour / time.Millisecond)

// maxCachedUnits bounds the buckets of one query the cache looks up; a
// query with more is answered without it.
const maxCachedUnits = 5000

// dayMs is the unit of a granularity=all query: its answer is the union
// of whole UTC days (and the ragged parts of the first and last), cached
// per day, so a sliding range hits every interior day.
const dayMs = int64(24 * time.Hour / time.Millisecond)

// useBucketCache, when false, answers every query without the bucket
// cache; tests compare both paths with it.
var useBucketCache = true

// bucketCache maps (run, query shape, bucket, the bucket's part covered)
// to a cachedBucket, in a byte-bounded LRU.
type bucketCache struct {
	lru *lru
}

func newBucketCache(bytes int64, m *metrics) *bucketCache {
	c := newLRU(bytes)
	c.onEvict = func(int64) { m.cacheEvictions.Inc() }
	return &bucketCache{lru: c}
}

// cachedBucket is the batch half of one bucket: its groups, never written
// after they are cached, and their finished values, computed once.
type cachedBucket struct {
	groups []*Group
	keys   []string // schemas.JoinDims of each group's Dims
	once   sync.Once
	fin    []*Group
}

// finished returns b's groups finished (Merger.Groups' finish), computed
// from copies on the first call; callers copy a Group before keeping it.
func (b *cachedBucket) finished(q *Query) []*Group {
	b.once.Do(func() {
		m := NewMerger(q)
		b.fin = make([]*Group, len(b.groups))
		for i, g := range b.groups {
			c := &Group{WindowMs: g.WindowMs, Dims: g.Dims, States: make([]schemas.State, len(g.States))}
			m.mergeGroupInto(c, g)
			finishDD(c, false)
			finishHLL(c, false)
			m.finishDistinct(c)
			b.fin[i] = c
		}
	})
	return b.fin
}

// cacheUnit is the unit (ms) the cache keeps q's batch half in — its
// bucket, or for buckets finer than bucketUnitMin the hour holding them —
// or false when q is answered without the cache: local-time buckets,
// answers cut or ordered (ranked over merged groups), the second pass of
// a top-N push-down, and buckets finer than bucketUnitMin that do not
// divide it (a unit must start on a bucket boundary).
func cacheUnit(q *Query) (int64, bool) {
	if !useBucketCache || !useLevels || q.Local != nil || q.Cut() || q.OrderBy != nil || q.only != nil {
		return 0, false
	}
	g := q.Granularity.D().Milliseconds()
	if g == 0 {
		g = dayMs
	}
	if g < bucketUnitMin {
		if g <= 0 || bucketUnitMin%g != 0 {
			return 0, false
		}
		return bucketUnitMin, true
	}
	return g, true
}

// unit is one bucket of a query's range: its start and the part [lo, hi)
// of it the range covers.
type unit struct{ start, lo, hi int64 }

// units splits [from, to) into buckets of u ms.
func units(from, to, u int64) []unit {
	var out []unit
	for s := floorMs(from, u); s < to; s += u {
		out = append(out, unit{s, max(s, from), min(s+u, to)})
	}
	return out
}

// runPrefix starts every key of a view's run: entries of another run
// (or another version of the view) are never found.
func runPrefix(snap *Snapshot) string {
	return "b\x00" + snap.View.Name + "\x00" + snap.RunID() + "\x00" + strconv.FormatInt(snap.Manifest.CreatedAt.UnixNano(), 10) + "\x00"
}

// dropRun forgets the entries of view's run (one no longer served).
func (c *bucketCache) dropRun(view, run string) {
	c.lru.removePrefix("b\x00" + view + "\x00" + run + "\x00")
}

// errOverBound is batchHalf's: the days of a granularity=all query hold
// more groups than its answer may (serve.max_result_rows), or the query
// has more than maxCachedUnits buckets, so it is answered without the
// cache.
var errOverBound = errors.New("bucket cache: over the merge bound")

// batchHalf returns the cached batch half of each of q's units of u ms
// (a bucket, or an hour of finer buckets), merging the batch rows of the missing ones (adjacent ones in one
// scan) and caching them. scanned is the rows merged.
func (c *bucketCache) batchHalf(ctx context.Context, q *Query, snap *Snapshot, br *batchReader, u int64) (out []*cachedBucket, scanned int64, err error) {
	us := units(q.FromMs(), q.ToMs(), u)
	if len(us) > maxCachedUnits {
		return nil, 0, errOverBound
	}
	out = make([]*cachedBucket, len(us))
	if snap.Manifest == nil {
		for i := range out {
			out[i] = &cachedBucket{}
		}
		return out, 0, nil
	}
	prefix, shape := runPrefix(snap), shapeKey(q)+"|u"+strconv.FormatInt(u, 10) // shapeKey: the speed cache's
	keys := make([]string, len(us))
	for i, x := range us {
		keys[i] = prefix + shape + "\x00" + strconv.FormatInt(x.start, 10) + "," + strconv.FormatInt(x.lo, 10) + "," + strconv.FormatInt(x.hi, 10)
		if v, ok := c.lru.get(keys[i]); ok {
			out[i] = v.(*cachedBucket)
		}
	}
	for i := 0; i < len(us); {
		if out[i] != nil {
			i++
			continue
		}
		j := i
		for j < len(us) && out[j] == nil {
			j++
		}
		// Buckets i..j-1 are missing: one scan of their span.
		sub := *q
		sub.From, sub.To = time.UnixMilli(us[i].lo).UTC(), time.UnixMilli(us[j-1].hi).UTC()
		if q.Granularity == 0 {
			// Its days hold more groups than its answer: past the
			// answer's bound, it is merged without the cache (errOverBound)
			// rather than hold many times the answer in memory.
			sub.Granularity = schemas.Granularity(24 * time.Hour)
		}
		m, err := br.scan(ctx, &sub, snap)
		if err != nil {
			return nil, 0, err
		}
		if m.Overflow() {
			if q.Granularity == 0 {
				return nil, 0, errOverBound
			}
			return nil, 0, &TooManyRowsError{Limit: q.MaxRows}
		}
		scanned += m.Rows()
		byStart := map[int64]*cachedBucket{}
		sizes := map[int64]int64{}
		for k := i; k < j; k++ {
			byStart[us[k].start] = &cachedBucket{}
		}
		for _, g := range m.groups {
			start := floorMs(g.WindowMs, u)
			b := byStart[start]
			freeze(q, g)
			b.groups = append(b.groups, g)
			b.keys = append(b.keys, schemas.JoinDims(g.Dims))
			sizes[start] += cachedGroupBytes(g)
		}
		for k := i; k < j; k++ {
			b := byStart[us[k].start]
			out[k] = b
			c.lru.put(keys[k], b, 256+sizes[us[k].start])
		}
		i = j
	}
	return out, scanned, nil
}

// freeze readies a batch group for the cache, where it is only read: its
// distinct and quantile states are all unions (a state merged as a sketch
// object is moved into one, as the Merger does when a union starts), the
// distinct unions compacted and without scratch space, the quantile
// unions' count arrays without slack.
func freeze(q *Query, g *Group) {
	g.cached = true
	for j, mi := range q.Measures {
		switch q.View.Measures[mi].Kind().Sketch {
		case schemas.SketchHLL:
			if h := g.States[j].HLL; h != nil {
				if g.unions == nil {
					g.unions = make([]*schemas.HLLUnion, len(g.States))
				}
				if g.unions[j] == nil {
					g.unions[j] = &schemas.HLLUnion{}
				}
				g.unions[j].Add(h)
				g.States[j].HLL = nil
			}
			if g.unions != nil && g.unions[j] != nil {
				g.unions[j].Dense() // compacts the keys, drops the scratch slices
			}
		case schemas.SketchDD:
			if g.States[j].DD != nil {
				groupDDUnion(g, j) // takes the sketch in
			}
			if g.ddUnions != nil && g.ddUnions[j] != nil {
				g.ddUnions[j].Trim()
			}
		}
	}
}

// cachedGroupBytes estimates the memory of a cached group: the struct, its
// dimension values, its states, its unions and its finished values.
func cachedGroupBytes(g *Group) int64 {
	n := int64(unsafe.Sizeof(Group{})) + 2*int64(len(g.States))*int64(unsafe.Sizeof(schemas.State{})) + 2*int64(unsafe.Sizeof(Group{}))
	for _, d := range g.Dims {
		n += 16 + int64(len(d))
	}
	for _, u := range g.unions {
		if u != nil {
			n += u.Bytes() + 16 // + its estimate
		}
	}
	for _, u := range g.ddUnions {
		if u != nil {
			n += u.Bytes() + 96 // + its quantiles
		}
	}
	return n
}

// answerCached answers q's groups from the cached batch half of its
// buckets and the speed half sp (nil: none): buckets' groups the speed
// half does not touch are their finished values as cached; the others
// are copies merged with the speed half's groups. With granularity all
// the days' groups are merged into the one bucket.
func answerCached(q *Query, buckets []*cachedBucket, sp *Merger) ([]*Group, error) {
	out := NewMerger(q)
	var fin []*Group
	for _, b := range buckets {
		var done []*Group
		for i, g := range b.groups {
			if q.Granularity != 0 {
				if sp == nil || sp.groups[groupKey{g.WindowMs, b.keys[i]}] == nil {
					if done == nil {
						done = b.finished(q)
					}
					c := *done[i] // untouched by the speed half: as finished
					fin = append(fin, &c)
					continue
				}
			}
			window := g.WindowMs
			if q.Granularity == 0 {
				window = out.fromMs
			}
			// A copy of the cached group, which the speed half's group of
			// the same bucket then merges into.
			dst := out.group(window, b.keys[i], g.Dims)
			if dst == nil {
				continue
			}
			out.mergeGroupInto(dst, g)
			out.maybeDensify(dst)
		}
	}
	if sp != nil {
		out.MergeFrom(sp)
	}
	if out.Overflow() || (q.MaxRows > 0 && len(out.groups)+len(fin) > q.MaxRows) {
		return nil, &TooManyRowsError{Limit: q.MaxRows}
	}
	groups := append(out.Groups(), fin...)
	sortGroups(groups)
	return groups, nil
}
