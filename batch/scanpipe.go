package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-analytics/tandem/schemas"
)

// The scan is a pipeline per partition: a reader streams rows of the raw
// objects (the next object opened while the current one is read) into
// batches; a pool of decode workers, shared by every partition, gives each
// message the speed layer's verdict (schemas.Decoder), hashes its id and
// encodes its spill record; a sequencer takes the batches back in offset
// order and does what depends on order (first occurrence of an id wins)
// with no decoding left to do. So every core decodes whatever the number
// of partitions, and memory holds a few batches per partition.
//
// A row of a file whose typed columns hold Decoder's output (rawtyped.go)
// arrives with its event: the reader encodes its record, and the worker
// has only the future-skew check and the hash left to do. Other rows
// arrive as their original bytes, which the worker decodes.

const batchesInPipe = 8 // batches in flight per partition

var batchRows = 2048 // rows per batch (a variable for tests)

// Row verdicts of a decoded batch.
const (
	rowInvalid = iota // Decode refused it
	rowSkipped        // valid, but its day is not wanted (filtered out)
	rowValid          // valid: h0, h1, days and its record are set
)

// rawBatch is up to batchRows consecutive rows of one partition, in offset
// order, and what a decode worker made of them.
type rawBatch struct {
	n       int
	offsets []int64
	kafkaMs []int64
	kind    []uint8  // rowRaw, rowTyped (its id, time and record are set) or rowRefused
	raw     []byte   // the original bytes of the rows that did not
	ends    []uint32 // raw[ends[i-1]:ends[i]] is row i (empty if typed)
	ids     []byte   // the ids of typed rows
	idEnds  []uint32 // ids[idEnds[i-1]:idEnds[i]] is row i's (empty unless typed)
	timeMs  []int64  // event time of typed rows

	want    func(day int64) bool // nil: every day
	verdict []uint8
	h0, h1  []uint64
	days    []int64
	recs    []byte   // spill records of typed rows (by the reader), then of decoded rows
	recAt   []uint32 // recs[recAt[i]:recEnd[i]] is row i's record (empty unless valid)
	recEnd  []uint32
	done    chan struct{}
}

func (b *rawBatch) reset() {
	b.n = 0
	b.offsets, b.kafkaMs, b.kind, b.raw, b.ends = b.offsets[:0], b.kafkaMs[:0], b.kind[:0], b.raw[:0], b.ends[:0]
	b.ids, b.idEnds, b.timeMs = b.ids[:0], b.idEnds[:0], b.timeMs[:0]
	b.recs, b.recAt, b.recEnd = b.recs[:0], b.recAt[:0], b.recEnd[:0]
}

// add appends a row to decode from its original bytes (rowRaw), or one
// known to be invalid (rowRefused, raw nil).
func (b *rawBatch) add(kind uint8, off, kafkaMs int64, raw []byte) {
	b.offsets = append(b.offsets, off)
	b.kafkaMs = append(b.kafkaMs, kafkaMs)
	b.kind = append(b.kind, kind)
	b.raw = append(b.raw, raw...)
	b.ends = append(b.ends, uint32(len(b.raw)))
	b.idEnds = append(b.idEnds, uint32(len(b.ids)))
	b.timeMs = append(b.timeMs, 0)
	b.recAt = append(b.recAt, 0)
	b.recEnd = append(b.recEnd, 0)
	b.n++
}

// addTyped appends a rowTyped row.
func (b *rawBatch) addTyped(r *rawRow) {
	b.offsets = append(b.offsets, r.off)
	b.kafkaMs = append(b.kafkaMs, r.kafkaMs)
	b.kind = append(b.kind, rowTyped)
	b.ends = append(b.ends, uint32(len(b.raw)))
	b.ids = append(b.ids, r.id...)
	b.idEnds = append(b.idEnds, uint32(len(b.ids)))
	b.timeMs = append(b.timeMs, r.timeMs)
	b.recAt = append(b.recAt, uint32(len(b.recs)))
	b.recs = append(b.recs, r.rec...)
	b.recEnd = append(b.recEnd, uint32(len(b.recs)))
	b.n++
}

func span32(ends []uint32, i int) (uint32, uint32) {
	var start uint32
	if i > 0 {
		start = ends[i-1]
	}
	return start, ends[i]
}

// rec returns row i's encoded spill record (with its length prefix).
func (b *rawBatch) rec(i int) []byte {
	return b.recs[b.recAt[i]:b.recEnd[i]]
}

// decode fills the verdicts, hashes, days and records of b.
func (b *rawBatch) decode(dec *schemas.Decoder, rec *Record) {
	n := b.n
	b.verdict = grow(b.verdict, n)
	b.h0, b.h1 = grow(b.h0, n), grow(b.h1, n)
	b.days = grow(b.days, n)
	ev := &rec.Event // its Values storage is reused: each event is encoded before the next decode
	for i := 0; i < n; i++ {
		switch b.kind[i] {
		case rowRefused:
			b.verdict[i] = rowInvalid
			continue
		case rowTyped:
			// Decode's verdict without ingest time was "valid"; what is
			// left of it is the future-skew check.
			ms := b.timeMs[i]
			day := dayMs(ms)
			switch {
			case dec.TooFarAhead(time.UnixMilli(ms), time.UnixMilli(b.kafkaMs[i])):
				b.verdict[i] = rowInvalid
			case b.want != nil && !b.want(day):
				b.verdict[i] = rowSkipped
			default:
				b.verdict[i] = rowValid
				s, e := span32(b.idEnds, i)
				h := xxh3.Hash128(b.ids[s:e]) // hashID, as its two halves
				b.h0[i], b.h1[i] = h.Hi, h.Lo
				b.days[i] = day
			}
			continue
		}
		s, e := span32(b.ends, i)
		err := dec.DecodeInto(ev, b.raw[s:e], time.UnixMilli(b.kafkaMs[i]))
		switch {
		case err != nil:
			b.verdict[i] = rowInvalid
		case b.want != nil && !b.want(dayOf(ev.Time)):
			b.verdict[i] = rowSkipped
		default:
			b.verdict[i] = rowValid
			h := xxh3.HashString128(ev.ID) // hashID, as its two halves
			b.h0[i], b.h1[i] = h.Hi, h.Lo
			b.days[i] = dayOf(ev.Time)
			rec.Offset, rec.KafkaMs = b.offsets[i], b.kafkaMs[i]
			b.recAt[i] = uint32(len(b.recs))
			b.recs = encodeRecord(b.recs, dec.Stream, rec)
			b.recEnd[i] = uint32(len(b.recs))
		}
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// decodePool runs workers decode goroutines until stop.
type decodePool struct {
	q  chan *rawBatch
	wg sync.WaitGroup
}

func startDecodePool(s *schemas.Stream, skew time.Duration, workers int) *decodePool {
	p := &decodePool{q: make(chan *rawBatch, workers*batchesInPipe)}
	for i := 0; i < workers; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			dec := schemas.NewDecoder(s, skew) // one each: no state shared between workers
			var rec Record
			for b := range p.q {
				b.decode(dec, &rec)
				close(b.done)
			}
		}()
	}
	return p
}

// stop ends the workers once no pipeline sends any more.
func (p *decodePool) stop() {
	close(p.q)
	p.wg.Wait()
}

// fileSpan is the part of a raw object to read: offsets [from, to).
type fileSpan struct {
	f        rawFile
	from, to int64
}

// pipe reads spans (in order) of one partition through the decode pool
// and calls consume with every batch, in offset order, on one goroutine.
// keepGroup, if set, may skip row groups by event-time bounds; want, if
// set, marks the valid rows of other days rowSkipped.
func (sc *scanner) pipe(ctx context.Context, spans []fileSpan, keepGroup func(minMs, maxMs int64) bool,
	want func(day int64) bool, consume func(b *rawBatch) error) error {
	g, gctx := errgroup.WithContext(ctx)
	free := make(chan *rawBatch, batchesInPipe)
	for i := 0; i < batchesInPipe; i++ {
		free <- &rawBatch{}
	}
	ordered := make(chan *rawBatch, batchesInPipe)
	type opened struct {
		r   *rawFileReader
		err error
	}
	files := make(chan opened, 1) // the next object opens while one is read

	g.Go(func() error { // opener
		defer close(files)
		for _, sp := range spans {
			r, err := openRawFile(gctx, sc.st, sp.f.Key, sc.tmp, sc.plan.Stream, sc.decoder.MaxFutureSkew)
			if err == nil && sc.fileTimes != nil {
				sc.noteFileTimes(sp.f.Key, r)
			}
			select {
			case files <- opened{r, err}:
			case <-gctx.Done():
				if r != nil {
					r.Close()
				}
				return gctx.Err()
			}
			if err != nil {
				return err
			}
		}
		return nil
	})

	g.Go(func() error { // reader
		defer close(ordered)
		defer func() { // objects opened ahead and never read
			for o := range files {
				if o.r != nil {
					o.r.Close()
				}
			}
		}()
		var b *rawBatch
		send := func() error {
			b.want, b.done = want, make(chan struct{})
			ordered <- b // never blocks: at most batchesInPipe batches exist
			select {
			case sc.pool.q <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
			b = nil
			return nil
		}
		for _, sp := range spans {
			var o opened
			select {
			case o = <-files:
			case <-gctx.Done():
				return gctx.Err()
			}
			if o.err != nil {
				return o.err
			}
			err := sc.readSpan(gctx, o.r, sp, keepGroup, func(r *rawRow) error {
				if b == nil {
					select {
					case b = <-free:
					case <-gctx.Done():
						return gctx.Err()
					}
					b.reset()
				}
				if r.kind == rowTyped {
					b.addTyped(r)
				} else {
					b.add(r.kind, r.off, r.kafkaMs, r.raw)
				}
				if b.n == batchRows {
					return send()
				}
				return nil
			})
			o.r.Close()
			if err != nil {
				return err
			}
		}
		if b != nil && b.n > 0 {
			return send()
		}
		return nil
	})

	g.Go(func() error { // sequencer
		for b := range ordered {
			select {
			case <-b.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if err := consume(b); err != nil {
				return err
			}
			free <- b
		}
		return nil
	})
	return g.Wait()
}

// readSpan calls fn for every row of r with an offset in [sp.from, sp.to),
// in file order, with what rowStream.next made of it, valid only during
// the call.
func (sc *scanner) readSpan(ctx context.Context, r *rawFileReader, sp fileSpan, keepGroup func(minMs, maxMs int64) bool,
	fn func(row *rawRow) error) error {
	var row rawRow
	for g := 0; g < r.numRowGroups(); g++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if lo, hi, ok := r.offsetBounds(g); ok && (hi < sp.from || lo >= sp.to) {
			continue
		}
		if keepGroup != nil {
			if lo, hi, ok := r.timeBounds(g); ok && !keepGroup(lo, hi) {
				continue
			}
		}
		rs := r.rows(g)
		err := func() error {
			defer rs.Close()
			for {
				err := rs.next(&row)
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if row.off < sp.from || row.off >= sp.to {
					continue
				}
				if err := fn(&row); err != nil {
					return err
				}
			}
		}()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("batch: reading %s: %w", sp.f.Key, err)
		}
	}
	return nil
}
