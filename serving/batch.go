package serving

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// batchReader answers the batch half of queries from the files a manifest
// lists, pruning by time with each file's day and window range and each row
// group's statistics, and caching decoded row groups (and file footers) in a
// byte-bounded LRU.
type batchReader struct {
	files ViewFiles
	cache *lru
	m     *metrics
}

func newBatchReader(files ViewFiles, cacheBytes int64, m *metrics) *batchReader {
	c := newLRU(cacheBytes)
	c.onEvict = func(int64) { m.cacheEvictions.Inc() }
	return &batchReader{files: files, cache: c, m: m}
}

// cachedRowGroup is the decoded content of one row group: its rows sorted
// by window, and rollups of them to coarser windows, built on first use.
type cachedRowGroup struct {
	rows []Row

	mu      sync.Mutex
	rollups map[int64]*rollup // by level (ms)
}

// rollup is a row group's rows merged (with View.Merge) into windows of a
// coarser level L, one row per (L-window, dimension values). A query whose
// buckets are made of whole L-windows reads an L-window that lies entirely
// inside [From, To) from the rollup, and the raw rows of the (at most two)
// L-windows cut by From or To. That turns the 60 one-minute rows of an hour
// into one merge per group, which is what makes week-long queries of sketch
// measures fast.
type rollup struct {
	once  sync.Once
	rows  []Row
	spans []span // one per L-window, in window order
}

// span locates one L-window: its start, its raw rows rows[lo:hi] and its
// rollup rows rollup.rows[rlo:rhi].
type span struct {
	start            int64
	lo, hi, rlo, rhi int
}

// rollupLevels are the levels rollups are built at, coarsest first.
var rollupLevels = []int64{
	24 * 3600 * 1000, // 1d
	6 * 3600 * 1000,  // 6h
	3600 * 1000,      // 1h
}

// rollupLevel picks the coarsest level that helps q: coarser than the
// view's windows and dividing the query granularity (any level divides
// "all"). 0 means read raw rows.
func rollupLevel(q *Query) int64 {
	viewMs := q.View.Granularity.D().Milliseconds()
	g := q.Granularity.D().Milliseconds()
	for _, l := range rollupLevels {
		if l > viewMs && l%viewMs == 0 && (g == 0 || g%l == 0) {
			return l
		}
	}
	return 0
}

// rollupFor returns the rollup of the row group at level l, building it on
// first use; the returned size is the memory it added (0 when it existed).
func (c *cachedRowGroup) rollupFor(v *schemas.View, l int64) (*rollup, int64) {
	c.mu.Lock()
	if c.rollups == nil {
		c.rollups = map[int64]*rollup{}
	}
	r := c.rollups[l]
	if r == nil {
		r = &rollup{}
		c.rollups[l] = r
	}
	c.mu.Unlock()
	var size int64
	r.once.Do(func() { size = r.build(v, c.rows, l) })
	return r, size
}

func floorMs(ms, size int64) int64 {
	b := ms - ms%size
	if ms < 0 && ms%size != 0 {
		b -= size
	}
	return b
}

func (r *rollup) build(v *schemas.View, rows []Row, l int64) int64 {
	var size int64
	for i := 0; i < len(rows); {
		start := floorMs(rows[i].WindowMs, l)
		sp := span{start: start, lo: i, rlo: len(r.rows)}
		idx := map[string]int{}
		for ; i < len(rows) && floorMs(rows[i].WindowMs, l) == start; i++ {
			row := &rows[i]
			j, ok := idx[row.Key]
			if !ok {
				j = len(r.rows)
				idx[row.Key] = j
				r.rows = append(r.rows, Row{WindowMs: start, Dims: row.Dims, Key: row.Key, States: v.NewAggregate()})
			}
			v.Merge(r.rows[j].States, row.States)
		}
		sp.hi, sp.rhi = i, len(r.rows)
		r.spans = append(r.spans, sp)
	}
	for i := range r.rows {
		size += rowOverhead(len(v.Dimensions), len(v.Measures)) + statesBytes(r.rows[i].States)
	}
	return size + int64(len(r.spans))*48
}

// statesBytes estimates the memory of the sketches of a row's states: a
// fixed cost per sketch object plus twice its encoded size (calibrated by
// BenchmarkServingQuery's cached_B/row against estimated_B/row).
func statesBytes(states schemas.Aggregate) int64 {
	var n int64
	for i := range states {
		if h := states[i].HLL; h != nil {
			b, _ := h.MarshalBinary()
			n += sketchFixedBytes + 2*int64(len(b))
		}
		if d := states[i].DD; d != nil {
			n += sketchFixedBytes + 2*int64(d.GetCount())
		}
	}
	return n
}

const sketchFixedBytes = 160

// overlaps reports whether window starts in [lo, hi] (inclusive) can fall
// in [fromMs, toMs).
func overlaps(lo, hi, fromMs, toMs int64) bool { return hi >= fromMs && lo < toMs }

// fileRange is the window range a manifest entry states for its file, from
// its min/max window or, lacking those, its day.
func fileRange(f schemas.ManifestFile) (lo, hi int64, known bool) {
	switch {
	case !f.MinTime.IsZero() && !f.MaxTime.IsZero():
		return f.MinTime.UnixMilli(), f.MaxTime.UnixMilli(), true
	case !f.Day.IsZero():
		day := f.Day.UTC().Truncate(24 * time.Hour)
		return day.UnixMilli(), day.Add(24*time.Hour).UnixMilli() - 1, true
	}
	return 0, 0, false
}

// scan merges every batch row of the snapshot's run that q covers into a
// Merger, reading files in parallel, and returns it.
func (b *batchReader) scan(ctx context.Context, q *Query, snap *Snapshot) (*Merger, error) {
	out := NewMerger(q)
	if snap.Manifest == nil {
		return out, nil
	}
	fromMs, toMs := q.FromMs(), q.ToMs()
	var todo []schemas.ManifestFile
	for _, f := range snap.Manifest.Files {
		if lo, hi, ok := fileRange(f); ok && !overlaps(lo, hi, fromMs, toMs) {
			continue
		}
		todo = append(todo, f)
	}
	if len(todo) == 0 {
		return out, nil
	}
	workers := runtime.GOMAXPROCS(0)
	if workers > len(todo) {
		workers = len(todo)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan schemas.ManifestFile)
	mergers := make([]*Merger, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		mergers[w] = NewMerger(q)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range jobs {
				if errs[w] != nil {
					continue
				}
				if err := b.scanFile(ctx, q, f, mergers[w]); err != nil {
					errs[w] = err
					cancel()
				}
			}
		}()
	}
feed:
	for _, f := range todo {
		select {
		case jobs <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, m := range mergers {
		out.MergeFrom(m)
	}
	return out, nil
}

// scanFile merges the rows of one file's overlapping row groups into m.
func (b *batchReader) scanFile(ctx context.Context, q *Query, f schemas.ManifestFile, m *Merger) error {
	fromMs, toMs := q.FromMs(), q.ToMs()
	file := &lazyFile{files: b.files, view: q.View, key: f.Key}
	defer file.close()
	groups, err := b.rowGroups(ctx, file)
	if err != nil {
		return err
	}
	for i, rg := range groups {
		if rg.HasStats && !overlaps(rg.MinMs, rg.MaxMs, fromMs, toMs) {
			continue
		}
		crg, key, err := b.rowGroup(ctx, file, i, rg)
		if err != nil {
			return err
		}
		if l := rollupLevel(q); l > 0 {
			ru, grew := crg.rollupFor(q.View, l)
			if grew > 0 {
				b.cache.grow(key, grew)
			}
			for _, sp := range ru.spans {
				switch {
				case sp.start >= fromMs && sp.start+l <= toMs: // whole L-window inside
					for j := sp.rlo; j < sp.rhi; j++ {
						m.Add(&ru.rows[j])
					}
				case sp.start < toMs && sp.start+l > fromMs: // cut by From or To
					for j := sp.lo; j < sp.hi; j++ {
						m.Add(&crg.rows[j])
					}
				}
			}
		} else {
			for j := range crg.rows {
				m.Add(&crg.rows[j])
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// lazyFile is a batch file opened on the first cache miss, if any.
type lazyFile struct {
	files ViewFiles
	view  *schemas.View
	key   string
	file  ViewFile
}

func (l *lazyFile) open(ctx context.Context) (ViewFile, error) {
	if l.file == nil {
		f, err := l.files.Open(ctx, l.view, l.key)
		if err != nil {
			return nil, fmt.Errorf("%w: opening batch file %s: %v", ErrUnavailable, l.key, err)
		}
		l.file = f
	}
	return l.file, nil
}

func (l *lazyFile) close() {
	if l.file != nil {
		l.file.Close()
		l.file = nil
	}
}

// rowGroups returns the row groups of a file, from the cache or its footer.
func (b *batchReader) rowGroups(ctx context.Context, file *lazyFile) ([]RowGroup, error) {
	metaKey := "meta\x00" + file.key
	if v, ok := b.cache.get(metaKey); ok {
		b.m.cacheHits.Inc()
		return v.([]RowGroup), nil
	}
	b.m.cacheMisses.Inc()
	f, err := file.open(ctx)
	if err != nil {
		return nil, err
	}
	groups := f.RowGroups()
	b.cache.put(metaKey, groups, int64(64+48*len(groups)+len(file.key)))
	return groups, nil
}

// rowGroup returns row group i of a file decoded, from the cache or the
// file, and its cache key.
func (b *batchReader) rowGroup(ctx context.Context, file *lazyFile, i int, rg RowGroup) (*cachedRowGroup, string, error) {
	key := "rg\x00" + file.key + "\x00" + strconv.Itoa(i)
	if v, ok := b.cache.get(key); ok {
		b.m.cacheHits.Inc()
		return v.(*cachedRowGroup), key, nil
	}
	b.m.cacheMisses.Inc()
	f, err := file.open(ctx)
	if err != nil {
		return nil, "", err
	}
	crg, size, err := b.readRowGroup(ctx, file.view, f, i, int(rg.Rows))
	if err != nil {
		return nil, "", fmt.Errorf("%w: reading batch file %s: %v", ErrUnavailable, file.key, err)
	}
	b.cache.put(key, crg, size)
	return crg, key, nil
}

// warm loads the row groups of a run's files into the cache, newest files
// first, until they hold budget bytes or ctx ends, and reports what it
// loaded. Rollups are built by the first query that needs them.
func (b *batchReader) warm(ctx context.Context, snap *Snapshot, budget int64) (groups int, bytes int64, err error) {
	if snap.Manifest == nil {
		return 0, 0, nil
	}
	files := append([]schemas.ManifestFile(nil), snap.Manifest.Files...)
	sort.SliceStable(files, func(i, j int) bool {
		_, hi, _ := fileRange(files[i])
		_, hj, _ := fileRange(files[j])
		return hi > hj
	})
	before, _ := b.cache.usage()
	for _, f := range files {
		file := &lazyFile{files: b.files, view: snap.View, key: f.Key}
		rgs, err := b.rowGroups(ctx, file)
		if err != nil {
			file.close()
			return groups, bytes, err
		}
		for i := len(rgs) - 1; i >= 0; i-- {
			if _, _, err := b.rowGroup(ctx, file, i, rgs[i]); err != nil {
				file.close()
				return groups, bytes, err
			}
			groups++
			now, _ := b.cache.usage()
			if bytes = now - before; bytes >= budget {
				file.close()
				return groups, bytes, nil
			}
			if err := ctx.Err(); err != nil {
				file.close()
				return groups, bytes, err
			}
		}
		file.close()
	}
	return groups, bytes, nil
}

// readRowGroup decodes every measure of every row of a row group (the cache
// serves later queries asking for other measures) and estimates the memory
// it holds.
func (b *batchReader) readRowGroup(ctx context.Context, v *schemas.View, file ViewFile, i, hint int) (*cachedRowGroup, int64, error) {
	crg := &cachedRowGroup{rows: make([]Row, 0, hint)}
	// Dimension values repeat across rows: intern them so the cache holds
	// one copy of each.
	intern := map[string]string{}
	var size int64 = 64
	err := file.ReadRowGroup(ctx, i, func(windowMs int64, dims []string, cells []any) error {
		ds := make([]string, len(dims))
		for k, d := range dims {
			s, ok := intern[d]
			if !ok {
				s = string([]byte(d)) // own copy: the reader may reuse its buffers
				intern[s] = s
				size += int64(len(s)) + 16
			}
			ds[k] = s
		}
		r, err := DecodeRow(v, windowMs, ds, cells, nil)
		if err != nil {
			return err
		}
		if s, ok := intern[r.Key]; ok {
			r.Key = s
		} else {
			intern[r.Key] = r.Key
			size += int64(len(r.Key)) + 16
		}
		size += rowOverhead(len(dims), len(cells))
		for _, c := range cells {
			if bs, ok := c.([]byte); ok && len(bs) > 0 {
				// A decoded sketch is an object of its own plus its data,
				// which takes more room than its encoding.
				size += sketchFixedBytes + 2*int64(len(bs))
			}
		}
		crg.rows = append(crg.rows, r)
		return nil
	})
	// Writers sort by window; rollups and span lookups rely on it.
	sort.SliceStable(crg.rows, func(i, j int) bool { return crg.rows[i].WindowMs < crg.rows[j].WindowMs })
	return crg, size, err
}

// rowOverhead is the fixed memory of one cached Row: the struct, the dims
// slice header and pointers, and the states.
func rowOverhead(dims, measures int) int64 {
	const rowStruct, stringHeader, state = 72, 16, 64
	return rowStruct + int64(dims)*stringHeader + int64(measures)*state
}
