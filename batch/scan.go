package batch

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// touchSink keeps idTable.touch's loads from being optimised away.
var touchSink atomic.Uint64

// partitionsAtOnce bounds the partitions a scan reads at once.
var partitionsAtOnce = 2

// idHash is what a run remembers of an event id: 16 bytes of XXH3-128,
// whatever the id's length (collisions are beyond astronomically unlikely);
// in memory as its two big-endian halves (idTable).
type idHash [16]byte

// streamState is what one run leaves for the next run of the same stream to
// continue from: how far it read, its counts, each partition's dedup clock,
// and in separate objects, per partition, the id index (the counted
// occurrence of every id a later message can still be a duplicate of: all
// of them without a dedup_window, those of the window's last stretch with
// one) and the offsets of every duplicate dropped so far (phase B re-reads
// old offsets and must know which were counted). An incremental run needs
// all of it; when anything is missing or was computed under another
// definition, the next run recomputes in full.
type streamState struct {
	Stream        string `json:"stream"`
	RunID         string `json:"run_id"`
	SchemaVersion string `json:"schema_version"`
	// DecoderVersion is schemas.DecoderVersion: verdicts of another decoder
	// may differ, so the next run then recomputes in full.
	DecoderVersion string          `json:"decoder_version"`
	MaxFutureSkew  string          `json:"max_future_skew"`
	ChunkSize      int64           `json:"chunk_size"`
	Start          map[int32]int64 `json:"start_offsets"`
	Absorbed       map[int32]int64 `json:"absorbed_offsets"`
	Events         int64           `json:"events"`
	Duplicates     int64           `json:"duplicates"`
	Invalid        int64           `json:"invalid"`
	// Days lists every UTC day holding kept events (days since the epoch).
	Days []int64 `json:"days"`
	// IndexFormat is stateFormat: older states' indexes lack the clock.
	IndexFormat int `json:"index_format"`
	// DedupWindow is the stream's dedup_window the run applied.
	DedupWindow string `json:"dedup_window"`
	// Clock is each partition's dedup clock (schemas.DedupClock) at its
	// absorbed offset; absent before the partition's first message.
	Clock map[int32]int64 `json:"dedup_clock"`
	// IndexEntries counts the ids stored in each partition's index.
	IndexEntries map[int32]int64 `json:"index_entries"`
	// FileTimes holds, by raw object key, the least and greatest event
	// time (Unix ms) of the object's typed time column over all its row
	// groups, for the objects whose every row group has statistics. Phase
	// B then opens only the objects whose range touches a dirty day,
	// rather than every object of the history (issue #14). An object
	// missing here is opened, as before.
	FileTimes map[string][2]int64 `json:"file_times,omitempty"`
}

// stateFormat is the version of the state's objects; another version makes
// the next run recompute in full.
const stateFormat = 2

func statePrefix(stream, runID string) string { return fmt.Sprintf("batch/%s/runs/%s/", stream, runID) }
func stateKey(stream, runID string) string    { return statePrefix(stream, runID) + "state.json" }
func indexKey(stream, runID string, p int32) string {
	return fmt.Sprintf("%sids-p%05d.bin", statePrefix(stream, runID), p)
}
func dupsKey(stream, runID string, p int32) string {
	return fmt.Sprintf("%sdups-p%05d.bin", statePrefix(stream, runID), p)
}

// scanStats counts what a scan saw.
type scanStats struct {
	Read       atomic.Int64 // raw messages read (both phases)
	Events     atomic.Int64 // kept in the newly absorbed range
	Duplicates atomic.Int64
	Invalid    atomic.Int64
	IDsLoaded  atomic.Int64 // id index entries read from the previous run
	TableSlots atomic.Int64 // slots of the partitions' id tables at their largest
}

// windowTableHint is the most ids a table under a dedup window is sized
// for up front; it grows from there only if the window holds more. (A
// variable for tests.)
var windowTableHint = 1 << 16

// scanner reads the master dataset of one stream into a spill.
type scanner struct {
	st      objstore.Bucket
	plan    *streamPlan
	prev    *streamState // nil: full scan
	runID   string
	decoder *schemas.Decoder
	spill   *spillDir
	tmp     string
	workers int
	log     *slog.Logger
	stats   scanStats
	total   int64 // messages to read in phase A, for progress
	noIndex bool  // do not store the id index (a scan that is not a run)
	// keepFrom is the first day any view keeps (views[].retention): the
	// days before it are not recomputed. allDays makes every day from
	// keepFrom on dirty (previous.allDays). daysFrom is the first day the
	// cut master dataset still holds whole (retentionRecord.firstWholeDay):
	// the days before it are forgotten. 0: unset.
	keepFrom, daysFrom int64
	allDays            bool
	// phaseAOnly stops the scan after phase A: a split run's scan worker,
	// whose partitions' dirty days are not all the run's (split.go).
	phaseAOnly bool
	pool       *decodePool

	mu sync.Mutex
	// fileTimes are the raw objects' event-time bounds this scan saw in
	// their footers (streamState.FileTimes).
	fileTimes map[string][2]int64
	dirty     map[int64]bool // days with newly kept events
	days      map[int64]bool // every day with kept events (prev + new)
	clock     map[int32]int64
	entries   map[int32]int64 // ids stored in each partition's index
}

// prevAbsorbed is where phase A starts in partition p.
func (sc *scanner) prevAbsorbed(p partitionPlan) int64 {
	if sc.prev == nil {
		return 0
	}
	return sc.prev.Absorbed[p.Partition]
}

// run scans: phase A reads the newly absorbed offsets of every partition
// (all of them in a full scan), dedups against the previous run's index and
// spills the kept events, marking their days dirty; phase B (incremental
// only) re-reads, from older offsets, the row groups whose event-time
// statistics touch a dirty day and spills the events the index says were
// kept, so each dirty day is recomputed from all of its events.
func (sc *scanner) run(ctx context.Context) error {
	sc.dirty, sc.days = map[int64]bool{}, map[int64]bool{}
	sc.fileTimes = map[string][2]int64{}
	sc.clock, sc.entries = map[int32]int64{}, map[int32]int64{}
	if sc.prev != nil {
		for _, d := range sc.prev.Days {
			sc.days[d] = true
		}
	}
	for _, p := range sc.plan.Partitions {
		from := sc.prevAbsorbed(p)
		for _, f := range p.Files {
			if f.To > from {
				sc.total += f.To - max(f.From, from)
			}
		}
	}
	stopProgress := sc.progress(ctx)
	defer stopProgress()
	sc.pool = startDecodePool(sc.plan.Stream, sc.decoder.MaxFutureSkew, sc.workers)
	defer sc.pool.stop()
	if err := sc.forPartitions(ctx, sc.phaseA); err != nil {
		return err
	}
	if sc.phaseAOnly {
		return nil
	}
	sc.settleDays()
	if sc.prev != nil && len(sc.dirty) > 0 {
		if err := sc.forPartitions(ctx, sc.phaseB); err != nil {
			return err
		}
	}
	return nil
}

// settleDays turns phase A's days into the run's: the days the cut
// master dataset no longer holds whole are forgotten, and the dirty days
// are those from the first day a view keeps (every day, when allDays).
// A split run's publisher calls it on the workers' days combined.
func (sc *scanner) settleDays() {
	if sc.daysFrom != 0 {
		dropDaysBefore(sc.days, sc.daysFrom)
	}
	if sc.allDays {
		for d := range sc.days {
			sc.dirty[d] = true
		}
	}
	if sc.keepFrom != 0 {
		dropDaysBefore(sc.dirty, sc.keepFrom)
	}
}

// forPartitions runs fn for every partition, partitionsAtOnce at a time:
// the decode pool keeps every core busy with fewer, and each partition
// being read holds its id table in memory.
func (sc *scanner) forPartitions(ctx context.Context, fn func(ctx context.Context, p partitionPlan) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(partitionsAtOnce)
	for _, p := range sc.plan.Partitions {
		g.Go(func() error { return fn(gctx, p) })
	}
	return g.Wait()
}

// progress logs rows/s, percent and ETA every 10 s until stopped.
func (sc *scanner) progress(ctx context.Context) func() {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				n := sc.stats.Read.Load()
				el := time.Since(start).Seconds()
				rate := float64(n) / el
				attrs := []any{"read", n, "rows_per_s", int64(rate)}
				if sc.total > 0 {
					pct := 100 * float64(n) / float64(sc.total)
					attrs = append(attrs, "percent", fmt.Sprintf("%.1f", min(pct, 100)))
					if rate > 0 && n < sc.total {
						attrs = append(attrs, "eta", time.Duration(float64(sc.total-n)/rate*float64(time.Second)).Round(time.Second).String())
					}
				}
				sc.log.Info("batch: reading the master dataset", attrs...)
			}
		}
	}()
	return func() { close(done) }
}

// spans lists the parts of p's files with offsets in [from, to).
func spans(p partitionPlan, from, to int64) (out []fileSpan, rows int64) {
	for _, f := range p.Files {
		lo, hi := max(f.From, from), min(f.To, to)
		if lo < hi {
			out = append(out, fileSpan{f: f, from: lo, to: hi})
			rows += hi - lo
		}
	}
	return out, rows
}

func (sc *scanner) phaseA(ctx context.Context, p partitionPlan) error {
	from := sc.prevAbsorbed(p)
	sp, rows := spans(p, from, p.Absorbed)
	if rows == 0 && sc.noIndex {
		return nil // nothing new to read, no index to store
	}
	var idx *idTable
	var clock schemas.DedupClock
	window := sc.plan.Stream.DedupWindowMs()
	room := int(rows) // at most one id per row: never grows
	if window != math.MaxInt64 {
		// Sized for the window, not the rows: the table drops expired ids
		// rather than grow past what the window holds (idTable.makeRoom).
		room = min(room, windowTableHint)
	}
	if sc.prev != nil {
		var err error
		if idx, err = loadIndex(ctx, sc.st, sc.plan.Stream.Name, sc.prev.RunID, p.Partition, room); err != nil {
			return err
		}
		sc.stats.IDsLoaded.Add(int64(idx.len()))
		clock.Ms, clock.Set = sc.prev.Clock[p.Partition]
	} else {
		idx = newIDTable(room)
	}
	defer func() {
		sc.stats.TableSlots.Add(int64(len(idx.ents)))
		idx.free()
	}()
	w := sc.spill.writer(p.Partition, 1)
	dirty := map[int64]bool{}
	lastDay := int64(math.MinInt64)
	var kept, dups, invalid int64
	var dupOffs []int64 // 8 bytes a duplicate of the newly absorbed range
	var sink uint64
	err := sc.pipe(ctx, sp, nil, nil, func(b *rawBatch) error {
		sink += idx.touch(b.h0[:b.n], b.h1[:b.n], b.verdict[:b.n])
		for i := 0; i < b.n; i++ {
			// Every message moves the clock, invalid ones too: the speed
			// layer sees them all as well.
			c := clock.Advance(b.kafkaMs[i])
			if b.verdict[i] != rowValid {
				invalid++
				continue
			}
			if !idx.admit(b.h0[i], b.h1[i], b.offsets[i], c, window) {
				dups++
				dupOffs = append(dupOffs, b.offsets[i])
				continue
			}
			kept++
			if d := b.days[i]; d != lastDay {
				dirty[d], lastDay = true, d
			}
			if err := w.addEncoded(b.days[i], b.rec(i)); err != nil {
				return err
			}
		}
		sc.stats.Read.Add(int64(b.n))
		return nil
	})
	touchSink.Add(sink)
	sc.stats.Events.Add(kept)
	sc.stats.Duplicates.Add(dups)
	sc.stats.Invalid.Add(invalid)
	if err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	sc.mu.Lock()
	for d := range dirty {
		sc.dirty[d] = true
		sc.days[d] = true
	}
	if clock.Set {
		sc.clock[p.Partition] = clock.Ms
	}
	sc.mu.Unlock()
	if sc.noIndex {
		return nil
	}
	n, err := saveIndex(ctx, sc.st, filepath.Join(sc.tmp, fmt.Sprintf("ids-%d", p.Partition)), sc.plan.Stream.Name, sc.runID, p.Partition, idx, clock.Ms, window)
	if err != nil {
		return err
	}
	sc.mu.Lock()
	sc.entries[p.Partition] = int64(n)
	sc.mu.Unlock()
	return sc.saveDups(ctx, p.Partition, dupOffs)
}

// saveDups stores the offsets of every duplicate of partition p so far:
// the previous run's, then dupOffs (all higher), as uvarint deltas.
func (sc *scanner) saveDups(ctx context.Context, p int32, dupOffs []int64) error {
	path := filepath.Join(sc.tmp, fmt.Sprintf("dups-%d", p))
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("batch: duplicate offsets: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<16)
	var last int64
	var buf [binary.MaxVarintLen64]byte
	put := func(off int64) error {
		_, err := bw.Write(buf[:binary.PutUvarint(buf[:], uint64(off-last))])
		last = off
		return err
	}
	if sc.prev != nil {
		cur, err := openDups(ctx, sc.st, sc.plan.Stream.Name, sc.prev.RunID, p)
		if err != nil {
			return err
		}
		for {
			off, ok, err := cur.next()
			if err != nil {
				cur.close()
				return err
			}
			if !ok {
				break
			}
			if err := put(off); err != nil {
				cur.close()
				return err
			}
		}
		cur.close()
	}
	for _, off := range dupOffs {
		if err := put(off); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("batch: duplicate offsets: %w", err)
	}
	size, _ := f.Seek(0, io.SeekCurrent)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := sc.st.Put(ctx, dupsKey(sc.plan.Stream.Name, sc.runID, p), f, size); err != nil {
		return fmt.Errorf("batch: storing the duplicate offsets of %s partition %d: %w", sc.plan.Stream.Name, p, err)
	}
	return nil
}

// dupCursor reads a duplicate-offsets object in offset order, holding a
// buffer, not the list.
type dupCursor struct {
	obj  io.Closer
	r    *bufio.Reader
	last int64
	key  string
}

func openDups(ctx context.Context, st objstore.Bucket, stream, runID string, p int32) (*dupCursor, error) {
	key := dupsKey(stream, runID, p)
	obj, err := objstore.Open(ctx, st, key)
	if err != nil {
		return nil, fmt.Errorf("batch: reading the duplicate offsets of %s partition %d of run %s: %w", stream, p, runID, err)
	}
	return &dupCursor{obj: obj, r: bufio.NewReaderSize(io.NewSectionReader(obj, 0, obj.Size()), 1<<16), key: key}, nil
}

// next returns the next offset, or false at the end.
func (c *dupCursor) next() (int64, bool, error) {
	d, err := binary.ReadUvarint(c.r)
	if err == io.EOF {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("batch: reading %s: %w", c.key, err)
	}
	c.last += int64(d)
	return c.last, true, nil
}

func (c *dupCursor) close() { c.obj.Close() }

func (sc *scanner) phaseB(ctx context.Context, p partitionPlan) error {
	upTo := sc.prevAbsorbed(p)
	if upTo <= p.Start {
		return nil
	}
	// Rows come in offset order; so do the duplicates' offsets.
	cur, err := openDups(ctx, sc.st, sc.plan.Stream.Name, sc.runID, p.Partition)
	if err != nil {
		return err
	}
	defer cur.close()
	nextDup, more, err := cur.next()
	if err != nil {
		return err
	}
	dirty := sc.dirty // read-only from here on (the decode workers read it)
	touches := func(minMs, maxMs int64) bool {
		lo, hi := dayOf(time.UnixMilli(minMs)), dayOf(time.UnixMilli(maxMs))
		if hi-lo > int64(len(dirty)) {
			return true // wide row group: cheaper to read than to check day by day
		}
		for d := lo; d <= hi; d++ {
			if dirty[d] {
				return true
			}
		}
		return false
	}
	w := sc.spill.writer(p.Partition, 0)
	sp, _ := spans(p, p.Start, upTo)
	sp = slices.DeleteFunc(sp, func(s fileSpan) bool {
		t, ok := sc.prev.FileTimes[s.f.Key]
		return ok && !anyDayIn(dirty, dayOf(time.UnixMilli(t[0])), dayOf(time.UnixMilli(t[1])))
	})
	err = sc.pipe(ctx, sp, touches, func(day int64) bool { return dirty[day] }, func(b *rawBatch) error {
		for i := 0; i < b.n; i++ {
			if b.verdict[i] != rowValid {
				continue
			}
			off := b.offsets[i]
			for more && nextDup < off {
				var cerr error
				if nextDup, more, cerr = cur.next(); cerr != nil {
					return cerr
				}
			}
			if more && nextDup == off {
				continue // a duplicate
			}
			if err := w.addEncoded(b.days[i], b.rec(i)); err != nil {
				return err
			}
		}
		sc.stats.Read.Add(int64(b.n))
		return nil
	})
	if err != nil {
		return err
	}
	return w.flush()
}

// anyDayIn reports whether days holds a day in [lo, hi].
func anyDayIn(days map[int64]bool, lo, hi int64) bool {
	if hi-lo >= int64(len(days)) {
		for d := range days {
			if d >= lo && d <= hi {
				return true
			}
		}
		return false
	}
	for d := lo; d <= hi; d++ {
		if days[d] {
			return true
		}
	}
	return false
}

// noteFileTimes records the event-time bounds of raw object key from its
// footer, when every row group has them.
func (sc *scanner) noteFileTimes(key string, r *rawFileReader) {
	var lo, hi int64
	for g := 0; g < r.numRowGroups(); g++ {
		mn, mx, ok := r.timeBounds(g)
		if !ok {
			return // unknown: the next run must open it
		}
		if g == 0 || mn < lo {
			lo = mn
		}
		if g == 0 || mx > hi {
			hi = mx
		}
	}
	if r.numRowGroups() == 0 {
		return
	}
	sc.mu.Lock()
	sc.fileTimes[key] = [2]int64{lo, hi}
	sc.mu.Unlock()
}

// saveIndex writes the id index of one partition (writeIndex: the ids a
// message after clock can still be a duplicate of) and returns how many
// ids it holds. idx is unusable after (free it).
func saveIndex(ctx context.Context, st objstore.Bucket, path, stream, runID string, p int32, idx *idTable, clock, windowMs int64) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("batch: id index: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	n, err := writeIndex(f, idx.entries(), clock, windowMs)
	if err != nil {
		return 0, fmt.Errorf("batch: id index: %w", err)
	}
	size, _ := f.Seek(0, io.SeekCurrent)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if err := st.Put(ctx, indexKey(stream, runID, p), f, size); err != nil {
		return 0, fmt.Errorf("batch: storing the id index of %s partition %d: %w", stream, p, err)
	}
	return n, nil
}

// loadIndex reads the id index of one partition of a run into a table
// with room for extra more ids.
func loadIndex(ctx context.Context, st objstore.Bucket, stream, runID string, p int32, extra int) (*idTable, error) {
	obj, err := objstore.Open(ctx, st, indexKey(stream, runID, p))
	if err != nil {
		return nil, fmt.Errorf("batch: reading the id index of %s partition %d of run %s: %w", stream, p, runID, err)
	}
	defer obj.Close()
	idx, err := readIndex(io.NewSectionReader(obj, 0, obj.Size()), obj.Size(), extra)
	if err != nil {
		return nil, fmt.Errorf("batch: reading the id index of %s partition %d: %w", stream, p, err)
	}
	return idx, nil
}

func loadState(ctx context.Context, st objstore.Bucket, stream, runID string) (*streamState, error) {
	data, err := objstore.GetBytes(ctx, st, stateKey(stream, runID))
	if err != nil {
		return nil, err
	}
	var s streamState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("batch: state of %s run %s: %w", stream, runID, err)
	}
	return &s, nil
}

// ScanStats counts what ScanDays read.
type ScanStats struct {
	Read, Events, Duplicates, Invalid int64
}

// ScanDays reads the valid, deduplicated events (first offset of each id
// per partition wins) of stream s from the master dataset, up to absorbed
// offsets per partition (absent partitions: nothing), spilling them to tmp
// by UTC day. It then calls day once per UTC day holding events, in day
// order; each(fn) calls fn for every record of that day in (partition,
// offset) order and may be called more than once. Records are reused
// between calls to fn.
//
// The data-lake export uses it; a batch run uses the same scanner.
//
// runID names the batch run that absorbed exactly absorbed ("" when none
// did). Once streams[].retention cut the master dataset, the first
// occurrences of some ids are gone, so the scan cannot start afresh: it
// takes the duplicate decisions that run stored and needs runID. from,
// when set, leaves out the days before it (LakeRetainedFrom).
func ScanDays(ctx context.Context, st objstore.Bucket, cfg *schemas.Config, s *schemas.Stream, absorbed map[int32]int64, runID string, from time.Time, tmp string, log *slog.Logger,
	day func(day time.Time, each func(fn func(*Record) error) error) error) (ScanStats, error) {
	plan, err := planStream(ctx, st, s, cfg.ChunkSize)
	if err != nil {
		return ScanStats{}, err
	}
	rec, err := readRetention(ctx, st, s.Name)
	if err != nil {
		return ScanStats{}, err
	}
	var prev *streamState
	if cut := rec.cutBelow(); cut != "" {
		if prev, err = cutScanState(ctx, st, cfg, s, absorbed, runID, cut); err != nil {
			return ScanStats{}, err
		}
	}
	for i := range plan.Partitions {
		p := &plan.Partitions[i]
		limit := absorbed[p.Partition]
		if p.Absorbed < limit {
			return ScanStats{}, fmt.Errorf("batch: %s partition %d: the master dataset covers offsets below %d only, not the %d asked for", s.Name, p.Partition, p.Absorbed, limit)
		}
		p.Absorbed = limit
		var files []rawFile
		for _, f := range p.Files {
			if f.From >= limit {
				break
			}
			f.To = min(f.To, limit)
			files = append(files, f)
		}
		p.Files = files
	}
	dir, err := os.MkdirTemp(tmp, "scan-")
	if err != nil {
		return ScanStats{}, err
	}
	defer os.RemoveAll(dir)
	if log == nil {
		log = slog.Default()
	}
	sp := &spillDir{dir: filepath.Join(dir, "spill"), stream: s}
	sc := &scanner{st: st, plan: plan, runID: "scan", decoder: schemas.NewDecoder(s, cfg.MaxFutureSkew.D()),
		spill: sp, tmp: dir, workers: runtime.GOMAXPROCS(0), log: log, noIndex: true}
	if prev != nil {
		// Phase B alone, over every day, with the run's duplicate offsets.
		sc.prev, sc.runID, sc.allDays = prev, prev.RunID, true
	}
	if !from.IsZero() {
		sc.keepFrom, sc.daysFrom = dayOf(from), dayOf(from)
	}
	if err := sc.run(ctx); err != nil {
		return ScanStats{}, err
	}
	stats := ScanStats{Read: sc.stats.Read.Load(), Events: sc.stats.Events.Load(), Duplicates: sc.stats.Duplicates.Load(), Invalid: sc.stats.Invalid.Load()}
	for _, d := range sortedDays(sc.days) {
		err := day(DayTime(d), func(fn func(*Record) error) error { return sp.readDay(d, s.Partitions, fn) })
		if err != nil {
			return stats, err
		}
	}
	return stats, nil
}
