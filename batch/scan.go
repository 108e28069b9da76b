package batch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
)

// idHash is what a run remembers of an event id: 16 bytes of XXH3-128,
// whatever the id's length (collisions are beyond astronomically unlikely).
type idHash [16]byte

func hashID(id string) idHash { return xxh3.HashString128(id).Bytes() }

// streamState is what one run leaves for the next run of the same stream to
// continue from: how far it read, its counts, and (in separate objects, one
// per partition) the first offset of every valid id. An incremental run
// needs all of it; when anything is missing or was computed under another
// definition, the next run recomputes in full.
type streamState struct {
	Stream        string          `json:"stream"`
	RunID         string          `json:"run_id"`
	SchemaVersion string          `json:"schema_version"`
	MaxFutureSkew string          `json:"max_future_skew"`
	ChunkSize     int64           `json:"chunk_size"`
	Start         map[int32]int64 `json:"start_offsets"`
	Absorbed      map[int32]int64 `json:"absorbed_offsets"`
	Events        int64           `json:"events"`
	Duplicates    int64           `json:"duplicates"`
	Invalid       int64           `json:"invalid"`
	// Days lists every UTC day holding kept events (days since the epoch).
	Days []int64 `json:"days"`
}

func statePrefix(stream, runID string) string { return fmt.Sprintf("batch/%s/runs/%s/", stream, runID) }
func stateKey(stream, runID string) string    { return statePrefix(stream, runID) + "state.json" }
func indexKey(stream, runID string, p int32) string {
	return fmt.Sprintf("%sids-p%05d.bin", statePrefix(stream, runID), p)
}

// scanStats counts what a scan saw.
type scanStats struct {
	Read       atomic.Int64 // raw messages read (both phases)
	Events     atomic.Int64 // kept in the newly absorbed range
	Duplicates atomic.Int64
	Invalid    atomic.Int64
}

// scanner reads the master dataset of one stream into a spill.
type scanner struct {
	st      *s3.Store
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

	mu    sync.Mutex
	dirty map[int64]bool // days with newly kept events
	days  map[int64]bool // every day with kept events (prev + new)
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
	if err := sc.forPartitions(ctx, sc.phaseA); err != nil {
		return err
	}
	if sc.prev != nil && len(sc.dirty) > 0 {
		if err := sc.forPartitions(ctx, sc.phaseB); err != nil {
			return err
		}
	}
	return nil
}

func (sc *scanner) forPartitions(ctx context.Context, fn func(ctx context.Context, p partitionPlan) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(sc.workers)
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

// eachRawRow calls fn for every row of f with an offset in [from, to), in
// offset order; keepGroup, if set, may skip row groups by time bounds.
func (sc *scanner) eachRawRow(ctx context.Context, f rawFile, from, to int64, keepGroup func(minMs, maxMs int64) bool,
	fn func(off, kafkaMs int64, raw []byte) error) error {
	r, err := openRawFile(ctx, sc.st, f.Key, sc.tmp, sc.plan.Stream)
	if err != nil {
		return err
	}
	defer r.Close()
	var rc rawColumns
	for g := 0; g < r.numRowGroups(); g++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if lo, hi, ok := r.offsetBounds(g); ok && (hi < from || lo >= to) {
			continue
		}
		if keepGroup != nil {
			if lo, hi, ok := r.timeBounds(g); ok && !keepGroup(lo, hi) {
				continue
			}
		}
		if err := r.readRowGroup(g, &rc); err != nil {
			return fmt.Errorf("batch: reading %s: %w", f.Key, err)
		}
		for i, off := range rc.offsets {
			if off < from || off >= to {
				continue
			}
			if err := fn(off, rc.kafkaMs[i], rc.rawAt(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (sc *scanner) phaseA(ctx context.Context, p partitionPlan) error {
	from := sc.prevAbsorbed(p)
	idx := map[idHash]int64{}
	if sc.prev != nil {
		var err error
		if idx, err = loadIndex(ctx, sc.st, sc.plan.Stream.Name, sc.prev.RunID, p.Partition); err != nil {
			return err
		}
	}
	w := sc.spill.writer(p.Partition, 1)
	dirty := map[int64]bool{}
	var rec Record
	rec.Partition = p.Partition
	for _, f := range p.Files {
		if f.To <= from {
			continue
		}
		var read, kept, dups, invalid int64
		err := sc.eachRawRow(ctx, f, max(f.From, from), f.To, nil, func(off, kafkaMs int64, raw []byte) error {
			read++
			if read%4096 == 0 {
				sc.stats.Read.Add(4096)
			}
			ev, err := sc.decoder.Decode(raw, time.UnixMilli(kafkaMs))
			if err != nil {
				invalid++
				return nil
			}
			h := hashID(ev.ID)
			if _, seen := idx[h]; seen {
				dups++
				return nil
			}
			idx[h] = off
			kept++
			rec.Offset, rec.KafkaMs, rec.Event = off, kafkaMs, ev
			dirty[dayOf(ev.Time)] = true
			return w.add(&rec)
		})
		sc.stats.Read.Add(read % 4096)
		sc.stats.Events.Add(kept)
		sc.stats.Duplicates.Add(dups)
		sc.stats.Invalid.Add(invalid)
		if err != nil {
			return err
		}
	}
	if err := w.flush(); err != nil {
		return err
	}
	sc.mu.Lock()
	for d := range dirty {
		sc.dirty[d] = true
		sc.days[d] = true
	}
	sc.mu.Unlock()
	if sc.noIndex {
		return nil
	}
	return saveIndex(ctx, sc.st, filepath.Join(sc.tmp, fmt.Sprintf("ids-%d", p.Partition)), sc.plan.Stream.Name, sc.runID, p.Partition, idx)
}

func (sc *scanner) phaseB(ctx context.Context, p partitionPlan) error {
	upTo := sc.prevAbsorbed(p)
	if upTo <= p.Start {
		return nil
	}
	idx, err := loadIndex(ctx, sc.st, sc.plan.Stream.Name, sc.runID, p.Partition)
	if err != nil {
		return err
	}
	dirty := sc.dirty // read-only from here on
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
	var rec Record
	rec.Partition = p.Partition
	for _, f := range p.Files {
		if f.From >= upTo {
			break
		}
		err := sc.eachRawRow(ctx, f, f.From, min(f.To, upTo), touches, func(off, kafkaMs int64, raw []byte) error {
			sc.stats.Read.Add(1)
			ev, err := sc.decoder.Decode(raw, time.UnixMilli(kafkaMs))
			if err != nil || !dirty[dayOf(ev.Time)] {
				return nil
			}
			if first, ok := idx[hashID(ev.ID)]; !ok || first != off {
				return nil // a duplicate: the index says which occurrence was kept
			}
			rec.Offset, rec.KafkaMs, rec.Event = off, kafkaMs, ev
			return w.add(&rec)
		})
		if err != nil {
			return err
		}
	}
	return w.flush()
}

// saveIndex writes the id index of one partition: entries of 16-byte hash
// and 8-byte offset, sorted by hash.
func saveIndex(ctx context.Context, st *s3.Store, path, stream, runID string, p int32, idx map[idHash]int64) error {
	keys := make([]idHash, 0, len(idx))
	for h := range idx {
		keys = append(keys, h)
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i][:], keys[j][:]) < 0 })
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("batch: id index: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	var e [24]byte
	for _, h := range keys {
		copy(e[:16], h[:])
		binary.LittleEndian.PutUint64(e[16:], uint64(idx[h]))
		bw.Write(e[:])
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("batch: id index: %w", err)
	}
	size, _ := f.Seek(0, io.SeekCurrent)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := st.Put(ctx, indexKey(stream, runID, p), f, size); err != nil {
		return fmt.Errorf("batch: storing the id index of %s partition %d: %w", stream, p, err)
	}
	return nil
}

func loadIndex(ctx context.Context, st *s3.Store, stream, runID string, p int32) (map[idHash]int64, error) {
	body, err := st.Get(ctx, indexKey(stream, runID, p))
	if err != nil {
		return nil, fmt.Errorf("batch: reading the id index of %s partition %d of run %s: %w", stream, p, runID, err)
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 1<<20)
	idx := map[idHash]int64{}
	var e [24]byte
	for {
		if _, err := io.ReadFull(br, e[:]); err == io.EOF {
			return idx, nil
		} else if err != nil {
			return nil, fmt.Errorf("batch: reading the id index of %s partition %d: %w", stream, p, err)
		}
		var h idHash
		copy(h[:], e[:16])
		idx[h] = int64(binary.LittleEndian.Uint64(e[16:]))
	}
}

func loadState(ctx context.Context, st *s3.Store, stream, runID string) (*streamState, error) {
	data, err := st.GetBytes(ctx, stateKey(stream, runID))
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
func ScanDays(ctx context.Context, st *s3.Store, cfg *schemas.Config, s *schemas.Stream, absorbed map[int32]int64, tmp string, log *slog.Logger,
	day func(day time.Time, each func(fn func(*Record) error) error) error) (ScanStats, error) {
	plan, err := planStream(ctx, st, s, cfg.ChunkSize)
	if err != nil {
		return ScanStats{}, err
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
	sc := &scanner{st: st, plan: plan, runID: "scan", decoder: schemas.NewDecoder(s, cfg.Ingest.MaxFutureSkew.D()),
		spill: sp, tmp: dir, workers: runtime.GOMAXPROCS(0), log: log, noIndex: true}
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
