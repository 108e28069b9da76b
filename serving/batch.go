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
//
// Decoded row groups outside the cache are bounded too: at most
// decodeSlots row groups are decoded, or held decoded by a query that
// could not cache them, at once, and concurrent misses of one row group
// decode it once (the others wait for it and find it cached). Without
// that, N clients asking for the same uncached day each decode it: serve
// held N row groups of tens of MB at once.
type batchReader struct {
	files ViewFiles
	cache *lru
	m     *metrics

	decoding chan struct{} // a slot per row group being decoded or held uncached
	flightMu sync.Mutex
	flights  map[string]*flight // row groups being decoded, by cache key
}

// flight is a decode of one row group in progress; done closes when it
// ends.
type flight struct{ done chan struct{} }

// decodeSlots is how many row groups may be decoded at once: decoding is
// CPU work, so more than a core's worth adds memory, not throughput.
func decodeSlots() int { return max(2, runtime.GOMAXPROCS(0)) }

func newBatchReader(files ViewFiles, cacheBytes int64, m *metrics) *batchReader {
	c := newLRU(cacheBytes)
	c.onEvict = func(int64) { m.cacheEvictions.Inc() }
	return &batchReader{files: files, cache: c, m: m, decoding: make(chan struct{}, decodeSlots()), flights: map[string]*flight{}}
}

// cachedRowGroup is the decoded content of one row group: its rows sorted
// by window, with the states of the measures decoded so far. A query
// decodes only the measures it asks for (neither their columns nor their
// sketches otherwise); a later query asking for others reads just those
// columns and adds their states. A measure's states are written before
// decoded marks it, under mu, and never again, so a query that saw the
// mark under mu reads them without the lock.
type cachedRowGroup struct {
	rows []Row
	// order maps file order to rows (nil: the file was in window order).
	order []int32

	mu      sync.Mutex
	decoded []bool // per view measure
	bytes   int64  // estimated memory held, for the cache
}

// missing returns the measures need marks (nil: all) that are not decoded
// yet, or nil when there are none.
func (c *cachedRowGroup) missing(need []bool) []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []bool
	for i, d := range c.decoded {
		if !d && (need == nil || need[i]) {
			if out == nil {
				out = make([]bool, len(c.decoded))
			}
			out[i] = true
		}
	}
	return out
}

// measureMask marks the view measures q asks for.
func measureMask(q *Query) []bool {
	need := make([]bool, len(q.View.Measures))
	for _, mi := range q.Measures {
		need[mi] = true
	}
	return need
}

// segment is a part of a query's [From, To) answered from one level of the
// run: the rows of that level whose window starts in [lo, hi). Level 0 is
// the base rows.
type segment struct {
	level  schemas.Granularity
	lo, hi int64
}

// useLevels, when false, answers every query from the base rows;
// tests compare both paths with it.
var useLevels = true

// planSegments splits [From, To) into segments, each read from the
// coarsest level that tiles it: a level-L window is used only when it lies
// wholly inside [From, To) and inside one bucket of the query (L divides
// the query granularity, or the granularity is "all"; with local buckets,
// every bucket boundary is a multiple of L: a 1d level never answers
// Amsterdam days, a 1h level does), and finer levels,
// down to the base rows, fill the ragged edges. Every base window whose
// start is in [From, To) is then covered exactly once: by itself or by the
// one level window holding it, which is the View.Merge of the same base
// rows (the batch run builds levels from them).
func planSegments(q *Query, levels []schemas.Granularity) []segment {
	var usable []int64
	if useLevels {
		g := q.Granularity.D().Milliseconds()
		for _, l := range levels { // coarsest first
			lm := l.D().Milliseconds()
			if lm <= 0 {
				continue
			}
			tiles := g == 0 || g%lm == 0
			if q.Local != nil { // local buckets: every boundary on a level window's
				tiles, _ = q.Local.AlignedTo(lm / 1000)
			}
			if tiles {
				usable = append(usable, lm)
			}
		}
	}
	var out []segment
	var tile func(lo, hi int64, levels []int64)
	tile = func(lo, hi int64, levels []int64) {
		if lo >= hi {
			return
		}
		if len(levels) == 0 {
			out = append(out, segment{lo: lo, hi: hi})
			return
		}
		l := levels[0]
		a, b := floorMs(lo+l-1, l), floorMs(hi, l) // first and last level boundary inside
		if a >= b {
			tile(lo, hi, levels[1:])
			return
		}
		tile(lo, a, levels[1:])
		out = append(out, segment{level: schemas.Granularity(time.Duration(l) * time.Millisecond), lo: a, hi: b})
		tile(b, hi, levels[1:])
	}
	tile(q.FromMs(), q.ToMs(), usable)
	return out
}

func floorMs(ms, size int64) int64 {
	b := ms - ms%size
	if ms < 0 && ms%size != 0 {
		b -= size
	}
	return b
}

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
	var todo []fileJob
	for _, sg := range planSegments(q, snap.Manifest.Levels) {
		for _, f := range snap.Manifest.Files {
			if f.Level != sg.level {
				continue
			}
			if lo, hi, ok := fileRange(f); ok && !overlaps(lo, hi, sg.lo, sg.hi) {
				continue
			}
			todo = append(todo, fileJob{f, sg})
		}
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
	jobs := make(chan fileJob)
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
				if err := b.scanFile(ctx, q, f.file, f.seg, mergers[w]); err != nil {
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

// fileJob is one file to read for one segment of a query.
type fileJob struct {
	file schemas.ManifestFile
	seg  segment
}

// scanFile merges the rows of one file whose windows are in the segment
// into m.
func (b *batchReader) scanFile(ctx context.Context, q *Query, f schemas.ManifestFile, sg segment, m *Merger) error {
	file := &lazyFile{files: b.files, view: q.View, key: f.Key}
	defer file.close()
	groups, err := b.rowGroups(ctx, file)
	if err != nil {
		return err
	}
	need := measureMask(q)
	for i, rg := range groups {
		if rg.HasStats && !overlaps(rg.MinMs, rg.MaxMs, sg.lo, sg.hi) {
			continue
		}
		crg, release, err := b.rowGroup(ctx, file, i, rg, need)
		if err != nil {
			return err
		}
		// Rows are sorted by window: the segment's are one run of them.
		rows := crg.rows
		lo := sort.Search(len(rows), func(j int) bool { return rows[j].WindowMs >= sg.lo })
		hi := sort.Search(len(rows), func(j int) bool { return rows[j].WindowMs >= sg.hi })
		for j := lo; j < hi; j++ {
			m.Add(&rows[j])
		}
		release()
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

// rowGroup returns row group i of a file with at least the measures need
// marks (nil: all) decoded, from the cache, the file, or both, and a
// release the caller calls once it no longer reads the rows. A row group
// read from the file holds a decode slot until then (the cache may not
// have kept it, and the caller holds it meanwhile); one the cache had
// holds none.
func (b *batchReader) rowGroup(ctx context.Context, file *lazyFile, i int, rg RowGroup, need []bool) (*cachedRowGroup, func(), error) {
	key := "rg\x00" + file.key + "\x00" + strconv.Itoa(i)
	for {
		if crg, ok := b.cachedRowGroup(key, need); ok {
			return crg, func() {}, nil
		}
		// Wait for another query's decode of the same row group, then
		// look again: it is cached unless the cache could not keep it.
		b.flightMu.Lock()
		f, busy := b.flights[key]
		if !busy {
			f = &flight{done: make(chan struct{})}
			b.flights[key] = f
		}
		b.flightMu.Unlock()
		if busy {
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			continue // cached now, unless the cache could not keep it: then decode it ourselves
		}
		crg, err := b.decodeRowGroup(ctx, file, key, i, rg, need)
		b.flightMu.Lock()
		delete(b.flights, key)
		b.flightMu.Unlock()
		close(f.done)
		if err != nil {
			return nil, nil, err
		}
		return crg, func() { <-b.decoding }, nil
	}
}

// cachedRowGroup returns the cached row group under key if it has every
// measure need marks decoded.
func (b *batchReader) cachedRowGroup(key string, need []bool) (*cachedRowGroup, bool) {
	v, ok := b.cache.get(key)
	if !ok || v.(*cachedRowGroup).missing(need) != nil {
		return nil, false
	}
	b.m.cacheHits.Inc()
	return v.(*cachedRowGroup), true
}

// decodeRowGroup reads row group i from the file under a decode slot,
// which it returns held unless it fails: the measures the cached row
// group lacks if it is cached, the whole row group otherwise. It caches
// the result when the cache can hold it.
func (b *batchReader) decodeRowGroup(ctx context.Context, file *lazyFile, key string, i int, rg RowGroup, need []bool) (crg *cachedRowGroup, err error) {
	select {
	case b.decoding <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() {
		if err != nil {
			<-b.decoding
		}
	}()
	b.m.cacheMisses.Inc()
	f, err := file.open(ctx)
	if err != nil {
		return nil, err
	}
	if v, ok := b.cache.get(key); ok {
		crg = v.(*cachedRowGroup)
		if miss := crg.missing(need); miss != nil {
			if err := addMeasures(ctx, file.view, f, i, crg, miss); err != nil {
				return nil, fmt.Errorf("%w: reading batch file %s: %v", ErrUnavailable, file.key, err)
			}
		}
		crg.mu.Lock()
		size := crg.bytes
		crg.mu.Unlock()
		b.cache.put(key, crg, size)
		return crg, nil
	}
	crg, err = readRowGroup(ctx, file.view, f, i, int(rg.Rows), need)
	if err != nil {
		return nil, fmt.Errorf("%w: reading batch file %s: %v", ErrUnavailable, file.key, err)
	}
	b.cache.put(key, crg, crg.bytes)
	return crg, nil
}

// warm loads the row groups of a run's files into the cache, coarsest
// level first (the fewest rows, answering the most), each newest first,
// until they hold budget bytes or ctx ends, and reports what it loaded.
func (b *batchReader) warm(ctx context.Context, snap *Snapshot, budget int64) (groups int, bytes int64, err error) {
	if snap.Manifest == nil {
		return 0, 0, nil
	}
	files := append([]schemas.ManifestFile(nil), snap.Manifest.Files...)
	sort.SliceStable(files, func(i, j int) bool {
		if files[i].Level != files[j].Level {
			return files[i].Level > files[j].Level
		}
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
			_, release, err := b.rowGroup(ctx, file, i, rgs[i], nil)
			if err != nil {
				file.close()
				return groups, bytes, err
			}
			release()
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

// readRowGroup decodes the window, dimensions and the measures need marks
// (nil: all) of every row of a row group, and estimates the memory it
// holds.
func readRowGroup(ctx context.Context, v *schemas.View, file ViewFile, i, hint int, need []bool) (*cachedRowGroup, error) {
	crg := &cachedRowGroup{rows: make([]Row, 0, hint), decoded: make([]bool, len(v.Measures))}
	for m := range crg.decoded {
		crg.decoded[m] = need == nil || need[m]
	}
	// Dimension values repeat across rows: intern them so the cache holds
	// one copy of each.
	intern := map[string]string{}
	var size int64 = 64
	err := file.ReadRowGroup(ctx, i, true, need, func(windowMs int64, dims []string, cells []any) error {
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
		r, err := DecodeRow(v, windowMs, ds, cells, need)
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
		for m := range v.Measures {
			size += sketchBytes(&r, m)
		}
		crg.rows = append(crg.rows, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Writers sort by window; scanFile's search relies on it. Should a file
	// not be, the order is kept to add measures later.
	if !sort.SliceIsSorted(crg.rows, func(i, j int) bool { return crg.rows[i].WindowMs < crg.rows[j].WindowMs }) {
		idx := make([]int32, len(crg.rows))
		for k := range idx {
			idx[k] = int32(k)
		}
		sort.SliceStable(idx, func(a, b int) bool { return crg.rows[idx[a]].WindowMs < crg.rows[idx[b]].WindowMs })
		sorted := make([]Row, len(crg.rows))
		crg.order = make([]int32, len(idx))
		for to, from := range idx {
			sorted[to] = crg.rows[from]
			crg.order[from] = int32(to)
		}
		crg.rows = sorted
	}
	crg.bytes = size
	return crg, nil
}

// addMeasures reads the columns of the measures miss marks from row group
// i and adds their states to crg (measures another query added meanwhile
// are left as they are).
func addMeasures(ctx context.Context, v *schemas.View, file ViewFile, i int, crg *cachedRowGroup, miss []bool) error {
	states := make([][]schemas.State, len(miss))
	flats := make([][]*schemas.DDFlat, len(miss))
	hlls := make([][][]byte, len(miss))
	for m, x := range miss {
		if x {
			states[m] = make([]schemas.State, 0, len(crg.rows))
			switch v.Measures[m].Kind().Sketch {
			case schemas.SketchDD:
				flats[m] = make([]*schemas.DDFlat, 0, len(crg.rows))
			case schemas.SketchHLL:
				hlls[m] = make([][]byte, 0, len(crg.rows))
			}
		}
	}
	var size int64
	err := file.ReadRowGroup(ctx, i, false, miss, func(_ int64, _ []string, cells []any) error {
		for m, x := range miss {
			if !x {
				continue
			}
			st, f, hb, err := decodeCell(&v.Measures[m], cells[m])
			if err != nil {
				return fmt.Errorf("view %s, measure %s: %w", v.Name, v.Measures[m].Name, err)
			}
			states[m] = append(states[m], st)
			if flats[m] != nil {
				flats[m] = append(flats[m], f)
			}
			if hlls[m] != nil {
				hlls[m] = append(hlls[m], hb)
			}
			size += flatBytes(f) + hllBytes(hb)
		}
		return nil
	})
	if err != nil {
		return err
	}
	crg.mu.Lock()
	defer crg.mu.Unlock()
	for m, x := range miss {
		if !x || crg.decoded[m] {
			continue
		}
		if len(states[m]) != len(crg.rows) {
			return fmt.Errorf("row group %d has %d rows, measure %s %d values", i, len(crg.rows), v.Measures[m].Name, len(states[m]))
		}
		for k, st := range states[m] {
			to := k
			if crg.order != nil {
				to = int(crg.order[k])
			}
			crg.rows[to].States[m] = st
			if flats[m] != nil {
				crg.rows[to].Flat[m] = flats[m][k] // Flat has a slot per measure (DecodeRow)
			}
			if hlls[m] != nil {
				crg.rows[to].HLL[m] = hlls[m][k] // so has HLL
			}
		}
		crg.decoded[m] = true
	}
	crg.bytes += size
	return nil
}

// sketchBytes is the memory of measure m's sketch in r beyond
// rowOverhead (flatBytes, hllBytes).
func sketchBytes(r *Row, m int) int64 {
	var n int64
	if r.Flat != nil {
		n += flatBytes(r.Flat[m])
	}
	if r.HLL != nil {
		n += hllBytes(r.HLL[m])
	}
	return n
}

// flatBytes is the memory of a quantile sketch's flat counts: the struct
// and, per bin, an index and a count.
func flatBytes(f *schemas.DDFlat) int64 {
	if f == nil {
		return 0
	}
	return 128 + 12*int64(cap(f.Pos.Index)+cap(f.Neg.Index))
}

// hllBytes is the memory of a distinct sketch's bytes: the allocation
// (rounded up to Go's size classes, about 1/8 at most) and its header.
func hllBytes(b []byte) int64 {
	if b == nil {
		return 0
	}
	return 16 + int64(cap(b))*9/8
}

// rowOverhead is the fixed memory of one cached Row: the struct, the dims
// slice header and pointers, the states, and the Flat and HLL slots.
func rowOverhead(dims, measures int) int64 {
	const rowStruct, stringHeader, state, slots = 104, 16, 64, 8 + 24
	return rowStruct + int64(dims)*stringHeader + int64(measures)*(state+slots)
}
