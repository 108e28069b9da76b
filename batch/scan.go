package batch

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
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
	// rather than every object of the history. An object
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
	IDsSpilled atomic.Int64 // ids the duplicate check wrote to its buckets (grace.go)
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
	// dedupMemory is batch.dedup_memory (0: DefaultDedupMemory).
	dedupMemory int64
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
	a := &phaseARun{sc: sc, p: p, window: sc.plan.Stream.DedupWindowMs(), bits: dedupTableBits(sc.budget()),
		w: sc.spill.writer(p.Partition, 1), dirty: map[int64]bool{}, lastDay: math.MinInt64}
	defer a.close()
	if err := a.openDups(ctx); err != nil {
		return err
	}
	// The ids in scope at the start: the previous run's index (its size
	// says how many), and at most one per new row; with a window the
	// table drops expired ids and may never need them all, so the check
	// starts in memory and spills only once the table would outgrow its
	// share of batch.dedup_memory.
	var prior *objstore.Object
	var priorN int64
	if sc.prev != nil {
		var err error
		if prior, err = objstore.Open(ctx, sc.st, indexKey(sc.plan.Stream.Name, sc.prev.RunID, p.Partition)); err != nil {
			return fmt.Errorf("batch: reading the id index of %s partition %d of run %s: %w", sc.plan.Stream.Name, p.Partition, sc.prev.RunID, err)
		}
		defer prior.Close()
		priorN = prior.Size() / indexEntryBytes
		a.clock.Ms, a.clock.Set = sc.prev.Clock[p.Partition]
	}
	room := rows // at most one id per row
	if a.window != math.MaxInt64 {
		room = min(room, int64(windowTableHint))
	}
	var err error
	if priorN+room > dedupTableIDs(a.bits) {
		err = a.grace(ctx, sp, prior, priorN, nil)
	} else {
		err = a.inMemory(ctx, sp, prior, int(room))
	}
	sc.stats.Events.Add(a.kept)
	sc.stats.Duplicates.Add(a.dups)
	sc.stats.Invalid.Add(a.invalid)
	sc.stats.TableSlots.Add(a.slots)
	if err != nil {
		return err
	}
	if err := a.w.flush(); err != nil {
		return err
	}
	sc.mu.Lock()
	for d := range a.dirty {
		sc.dirty[d] = true
		sc.days[d] = true
	}
	if a.clock.Set {
		sc.clock[p.Partition] = a.clock.Ms
	}
	sc.mu.Unlock()
	if sc.noIndex {
		return nil
	}
	if a.indexPath == "" { // decided in memory
		if a.indexN, err = a.writeIndexFile(func(bw *bufio.Writer) (int64, error) {
			n, err := appendIndex(bw, a.idx.entries(), a.clock.Ms, a.window)
			return int64(n), err
		}); err != nil {
			return err
		}
	}
	if err := putLocal(ctx, sc.st, a.indexPath, indexKey(sc.plan.Stream.Name, sc.runID, p.Partition)); err != nil {
		return fmt.Errorf("batch: storing the id index of %s partition %d: %w", sc.plan.Stream.Name, p.Partition, err)
	}
	sc.mu.Lock()
	sc.entries[p.Partition] = a.indexN
	sc.mu.Unlock()
	if err := a.dupw.Flush(); err != nil {
		return fmt.Errorf("batch: duplicate offsets: %w", err)
	}
	if err := putLocal(ctx, sc.st, a.dupPath, dupsKey(sc.plan.Stream.Name, sc.runID, p.Partition)); err != nil {
		return fmt.Errorf("batch: storing the duplicate offsets of %s partition %d: %w", sc.plan.Stream.Name, p.Partition, err)
	}
	return nil
}

// budget is batch.dedup_memory (its default when unset).
func (sc *scanner) budget() int64 {
	if sc.dedupMemory > 0 {
		return sc.dedupMemory
	}
	return DefaultDedupMemory
}

// phaseARun is phase A of one partition: the duplicate check and the
// spill of the kept events.
type phaseARun struct {
	sc     *scanner
	p      partitionPlan
	window int64
	bits   uint // the table's most slots (batch.dedup_memory's share)
	clock  schemas.DedupClock
	idx    *idTable // the in-memory table, until freed
	w      *spillWriter

	dirty               map[int64]bool
	lastDay             int64
	kept, dups, invalid int64
	slots               int64  // the largest table's slots
	indexPath           string // the index file, once written
	indexN              int64  // ids in it
	// The duplicate offsets object being written: the previous run's,
	// then this run's, as uvarint deltas.
	dupPath  string
	dupf     *os.File
	dupw     *bufio.Writer
	lastDup  int64
	graceDir string
}

// errTableFull stops the in-memory check where the table would outgrow
// its share of batch.dedup_memory.
var errTableFull = errors.New("batch: id table full")

func (a *phaseARun) close() {
	if a.idx != nil {
		a.idx.free()
	}
	if a.dupf != nil {
		a.dupf.Close()
		os.Remove(a.dupPath)
	}
	if a.indexPath != "" {
		os.Remove(a.indexPath)
	}
	if a.graceDir != "" {
		os.RemoveAll(a.graceDir)
	}
}

// openDups starts the duplicate offsets object with the previous run's.
func (a *phaseARun) openDups(ctx context.Context) error {
	a.dupPath = filepath.Join(a.sc.tmp, fmt.Sprintf("dups-%d", a.p.Partition))
	var err error
	if a.dupf, err = os.Create(a.dupPath); err != nil {
		return fmt.Errorf("batch: duplicate offsets: %w", err)
	}
	a.dupw = bufio.NewWriterSize(a.dupf, 1<<16)
	if a.sc.prev == nil || a.sc.noIndex {
		return nil
	}
	cur, err := openDups(ctx, a.sc.st, a.sc.plan.Stream.Name, a.sc.prev.RunID, a.p.Partition)
	if err != nil {
		return err
	}
	defer cur.close()
	for {
		off, ok, err := cur.next()
		if err != nil || !ok {
			return err
		}
		if err := a.putDup(off); err != nil {
			return err
		}
	}
}

// putDup appends a duplicate's offset (ascending) to the object.
func (a *phaseARun) putDup(off int64) error {
	var buf [binary.MaxVarintLen64]byte
	_, err := a.dupw.Write(buf[:binary.PutUvarint(buf[:], uint64(off-a.lastDup))])
	a.lastDup = off
	if err != nil {
		return fmt.Errorf("batch: duplicate offsets: %w", err)
	}
	return nil
}

// keep spills row i of b, a kept event.
func (a *phaseARun) keep(b *rawBatch, i int) error {
	a.kept++
	if d := b.days[i]; d != a.lastDay {
		a.dirty[d], a.lastDay = true, d
	}
	return a.w.addEncoded(b.days[i], b.rec(i))
}

// inMemory decides the partition's new rows with one table, loading the
// previous run's index (prior, when set) first. When the table would
// outgrow its share of the budget (a window holding more ids than it),
// it hands the rest of the rows to grace, from the row it stopped at, with
// the table's live ids as the prior entries.
func (a *phaseARun) inMemory(ctx context.Context, sp []fileSpan, prior *objstore.Object, room int) error {
	sc := a.sc
	if prior != nil {
		var err error
		if a.idx, err = readIndex(io.NewSectionReader(prior, 0, prior.Size()), prior.Size(), room); err != nil {
			return fmt.Errorf("batch: reading the id index of %s partition %d: %w", sc.plan.Stream.Name, a.p.Partition, err)
		}
		sc.stats.IDsLoaded.Add(int64(a.idx.len()))
	} else {
		a.idx = newIDTable(room)
	}
	a.idx.maxBits = max(a.bits, 64-a.idx.shift)
	idx := a.idx
	var sink uint64
	stopAt := int64(-1)
	err := sc.pipe(ctx, sp, nil, nil, func(b *rawBatch) error {
		sink += idx.touch(b.h0[:b.n], b.h1[:b.n], b.verdict[:b.n])
		for i := 0; i < b.n; i++ {
			// Every message moves the clock, invalid ones too: the speed
			// layer sees them all as well.
			c := a.clock.Advance(b.kafkaMs[i])
			if b.verdict[i] != rowValid {
				a.invalid++
				continue
			}
			if !idx.roomFor(c, a.window) {
				stopAt = b.offsets[i]
				sc.stats.Read.Add(int64(i))
				return errTableFull
			}
			if !idx.admit(b.h0[i], b.h1[i], b.offsets[i], c, a.window) {
				a.dups++
				if err := a.putDup(b.offsets[i]); err != nil {
					return err
				}
				continue
			}
			if err := a.keep(b, i); err != nil {
				return err
			}
		}
		sc.stats.Read.Add(int64(b.n))
		return nil
	})
	touchSink.Add(sink)
	a.slots = int64(len(idx.ents))
	if !errors.Is(err, errTableFull) {
		return err
	}
	// The clock advanced over the row stopped at; grace advances it there
	// again, which changes nothing (a running maximum).
	live := idx.entries()
	priorEntries := func(add func(idEntry) error) error {
		for _, e := range live {
			if !schemas.DedupExpired(e.ms, a.clock.Ms, a.window) {
				if err := add(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	rest, _ := spans(a.p, stopAt, a.p.Absorbed)
	return a.grace(ctx, rest, nil, int64(len(live)), priorEntries)
}

// grace decides the rows of sp in buckets (grace.go): the prior entries
// (the previous run's index object, or fromTable's entries) and every
// valid row's id go to bucket files, each bucket is decided alone, and a
// second read of sp spills the rows that are not duplicates.
func (a *phaseARun) grace(ctx context.Context, sp []fileSpan, prior *objstore.Object, priorN int64, fromTable func(add func(idEntry) error) error) error {
	sc := a.sc
	name := sc.plan.Stream.Name
	a.graceDir = filepath.Join(sc.tmp, fmt.Sprintf("dedup-%s-p%d", name, a.p.Partition))
	var rows int64
	for _, s := range sp {
		rows += s.to - s.from
	}
	diskErr := func(err error) error { return graceDiskError(name, a.p.Partition, a.graceDir, sc.budget(), err) }
	g, err := newGraceBuckets(a.graceDir, graceBucketCount(priorN+rows, dedupTableIDs(a.bits)))
	if err != nil {
		return diskErr(err)
	}
	defer g.close()
	var spilled int64
	addPrior := func(e idEntry) error {
		spilled++
		return g.add(e, true)
	}
	if fromTable != nil {
		err = fromTable(addPrior)
		a.idx.free()
		a.idx = nil
	} else if prior != nil {
		err = readIndexEntries(io.NewSectionReader(prior, 0, prior.Size()), addPrior)
		sc.stats.IDsLoaded.Add(spilled)
	}
	if err != nil {
		return diskErr(err)
	}
	// Pass 1: every valid row's id, offset and clock, in offset order.
	err = sc.pipe(ctx, sp, nil, nil, func(b *rawBatch) error {
		for i := 0; i < b.n; i++ {
			c := a.clock.Advance(b.kafkaMs[i])
			if b.verdict[i] != rowValid {
				a.invalid++
				continue
			}
			spilled++
			if err := g.add(idEntry{b.h0[i], b.h1[i], b.offsets[i], c}, false); err != nil {
				return diskErr(err)
			}
		}
		sc.stats.Read.Add(int64(b.n))
		return nil
	})
	if err == nil {
		if err = g.finish(); err != nil {
			err = diskErr(err)
		}
	}
	sc.stats.IDsSpilled.Add(spilled)
	if err != nil {
		return err
	}
	// The buckets, one table at a time, writing the index as they go.
	check := &graceCheck{dir: a.graceDir, window: a.window, clock: a.clock.Ms, bits: a.bits}
	if a.indexN, err = a.writeIndexFile(func(bw *bufio.Writer) (int64, error) {
		check.index = bw
		err := check.decide(g, 0)
		return check.indexN, err
	}); err != nil {
		return diskErr(err)
	}
	a.slots = max(a.slots, check.slots)
	a.dups += check.dups
	// Pass 2: the rows again, skipping the duplicates' offsets (merged in
	// ascending order, as the rows come), spilling the rest.
	m, err := openDupMerge(check.dupFiles)
	if err != nil {
		return diskErr(err)
	}
	defer m.close()
	nextDup, more, err := m.next()
	if err != nil {
		return diskErr(err)
	}
	err = sc.pipe(ctx, sp, nil, nil, func(b *rawBatch) error {
		for i := 0; i < b.n; i++ {
			if b.verdict[i] != rowValid {
				continue
			}
			if more && nextDup == b.offsets[i] {
				if err := a.putDup(nextDup); err != nil {
					return err
				}
				var merr error
				if nextDup, more, merr = m.next(); merr != nil {
					return diskErr(merr)
				}
				continue
			}
			if err := a.keep(b, i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if more {
		return fmt.Errorf("batch: %s partition %d: duplicate offset %d was not read again (the master dataset changed during the run?)", name, a.p.Partition, nextDup)
	}
	return nil
}

// writeIndexFile writes the index file with fill and returns the ids in it.
func (a *phaseARun) writeIndexFile(fill func(bw *bufio.Writer) (int64, error)) (int64, error) {
	a.indexPath = filepath.Join(a.sc.tmp, fmt.Sprintf("ids-%d", a.p.Partition))
	f, err := os.Create(a.indexPath)
	if err != nil {
		return 0, fmt.Errorf("batch: id index: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	n, err := fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return n, fmt.Errorf("batch: id index: %w", err)
	}
	return n, f.Close()
}

// putLocal stores the local file path as key.
func putLocal(ctx context.Context, st objstore.Bucket, path, key string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	return st.Put(ctx, key, f, info.Size())
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
