package speed

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/schemas"
)

// outcome is what happened to one message.
type outcome int

const (
	outFolded    outcome = iota // counted in every view
	outDuplicate                // id seen in this or the previous chunk, within the dedup window: dropped
	outInvalid                  // failed validation: dead-lettered
	outIDOnly                   // chunk k-1 of a resume: read for its ids only
)

// resume says where a claim starts and what is already durable.
type resume struct {
	// start is the first offset to read (kafka.FirstOffset when nothing is
	// stored).
	start int64
	// idOnlyBelow: messages below this offset (chunk k-1) only add their ids.
	idOnlyBelow int64
	// durable is o: every view's rows, every raw event and every dead
	// letter up to this offset are already written; -1 for none.
	durable int64
}

// planResume turns a stored progress o into where to read from: with
// k = chunk(o+1), chunk k-1 is read for its ids and chunk k is rebuilt.
func planResume(o, chunkSize int64) resume {
	if o < 0 {
		return resume{start: kafka.FirstOffset, idOnlyBelow: -1, durable: -1}
	}
	k := schemas.ChunkOf(o+1, chunkSize)
	if k == 0 {
		return resume{start: 0, idOnlyBelow: 0, durable: o}
	}
	return resume{start: schemas.ChunkStart(k-1, chunkSize), idOnlyBelow: schemas.ChunkStart(k, chunkSize), durable: o}
}

// rowState is one row of the open chunk.
type rowState struct {
	window time.Time
	dims   []string
	agg    schemas.Aggregate
	dirty  bool
}

// viewState is one view's rows of the open chunk of one partition.
type viewState struct {
	view   *schemas.View
	dimIdx []int // stream field of each dimension, as View.Key reads them
	// rows by rowKey: the same grouping as View.Key (window start, then
	// the dimension values), encoded so a lookup needs no allocation.
	rows  map[string]*rowState
	dirty []*rowState // rows of the open chunk changed since the last write
	// pending are the final rows of finished chunks not yet written; they
	// go out in the same insert as the open chunk's rows.
	pending []Row
}

// partState is the speed layer's state for one claimed partition. It is a
// pure function of the messages fed to it (and the resume point), which is
// what makes replays write the same rows. A partState is used by one
// goroutine.
type partState struct {
	stream    *schemas.Stream
	dec       *schemas.Decoder
	partition int32
	chunkSize int64
	views     []*viewState

	chunk int64 // the open chunk, -1 before the first message
	high  int64 // highest offset consumed in the open chunk
	// ids and prevIDs hold the ids seen in the open and the previous chunk,
	// each with the dedup clock of its counted occurrence (the window runs
	// from there, not from the latest sighting: schemas/dedup.go).
	ids      map[idHash]int64
	prevIDs  map[idHash]int64
	clock    schemas.DedupClock // over every message read since the claim
	windowMs int64              // the stream's dedup_window (DedupWindowMs)
	keyBuf   []byte             // scratch for rowKey
	// ev is the message being folded (Decoder.DecodeInto): its Values
	// storage is reused and its strings share the message's bytes, so
	// whatever outlives the message is cloned.
	ev schemas.Event

	res        resume
	caughtUp   bool // past res.durable: new output from here on
	consumed   int64
	lastRead   int64 // highest offset read, for the commit hint
	newest     time.Time
	dlq        []kafka.DeadLetter
	dlqReasons []schemas.Reason // metric label of each dead letter
	raw        []RawEvent
	ingestMs   []int64 // message timestamps of folded events since the last write
	changed    int     // rows dirtied or pending, raw events and dead letters since the last write
	newestOut  time.Time
}

// idHash is what the layer remembers of an event id: its XXH3-128, as the
// batch layer does (batch/scan.go), so both layers call the same events
// duplicates. The id sets then hold no pointers (the garbage collector
// skips them) and cost 16 bytes an id whatever the id's length; a false
// duplicate needs two ids of one partition, at most two chunks apart, with
// the same 128-bit hash.
type idHash = xxh3.Uint128

// idSetHint pre-sizes the id sets (they keep their size across chunks),
// capped so a huge chunk_size does not allocate up front.
func idSetHint(chunkSize int64) int { return int(min(chunkSize, 1<<16)) }

func newPartState(stream *schemas.Stream, views []*schemas.View, dec *schemas.Decoder, partition int32, chunkSize int64, res resume) *partState {
	p := &partState{
		stream: stream, dec: dec, partition: partition, chunkSize: chunkSize,
		chunk: -1, high: -1, lastRead: -1, res: res,
		ids:      make(map[idHash]int64, idSetHint(chunkSize)),
		prevIDs:  make(map[idHash]int64, idSetHint(chunkSize)),
		windowMs: stream.DedupWindowMs(),
	}
	p.caughtUp = res.durable < 0
	for _, v := range views {
		vs := &viewState{view: v, rows: make(map[string]*rowState)}
		for _, d := range v.Dimensions {
			vs.dimIdx = append(vs.dimIdx, stream.FieldIndex(d))
		}
		p.views = append(p.views, vs)
	}
	return p
}

// rowKey appends to dst the key of the row ev falls into in the view: the
// window start (8 bytes) and each dimension value, length first. Like
// View.Key it is injective, so both group events alike; a missing
// dimension is "".
func (vs *viewState) rowKey(dst []byte, windowMs int64, ev *schemas.Event) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(windowMs))
	for _, fi := range vs.dimIdx {
		s := ev.Values[fi].Str
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// process folds one record of the partition. Records must come in offset
// order. What outlives the call shares no memory with m, except the raw
// bytes of raw events (Value), which keep their fetch response until they
// are written.
func (p *partState) process(m *kafka.Record) (outcome, error) {
	if !p.caughtUp && m.Offset > p.res.durable {
		// Everything folded so far (offsets <= o) is durable with the same
		// or a newer version: only what changes from here on needs writing.
		p.markWritten()
		p.caughtUp = true
	}
	k := schemas.ChunkOf(m.Offset, p.chunkSize)
	if k != p.chunk {
		p.cross(k)
	}
	p.high = m.Offset
	p.lastRead = m.Offset
	fresh := m.Offset > p.res.durable // not yet written by anyone
	// Every message moves the clock, invalid ones too, as in the batch layer.
	clock := p.clock.Advance(m.Time.UnixMilli())

	ev := &p.ev
	err := p.dec.DecodeInto(ev, m.Value, m.Time)
	if err != nil {
		if fresh && m.Offset >= p.res.idOnlyBelow {
			// Headers are decoded only here: the dead letter carries the
			// original's (undecodable ones are dropped, the letter is not).
			// Key and value are copied: a letter waits for the next write,
			// and sharing would keep its whole fetch response alive.
			msg, _ := m.Message(p.stream.Topic, p.partition)
			msg.Key, msg.Value = bytes.Clone(msg.Key), bytes.Clone(msg.Value)
			p.dlq = append(p.dlq, kafka.DeadLetter{Message: msg, Reason: err.Error()})
			p.dlqReasons = append(p.dlqReasons, schemas.ReasonOf(err))
			p.changed++
		}
		return outInvalid, err
	}
	// Every valid id counts as seen in its chunk, duplicates included
	// (so the horizon reaches on a chunk from the latest sighting), with the
	// clock of its counted occurrence: an id in the open chunk was counted
	// no earlier than its entry in the previous one, so it decides alone.
	h := xxh3.HashString128(ev.ID)
	if at, ok := p.ids[h]; ok {
		if !schemas.DedupExpired(at, clock, p.windowMs) {
			return outDuplicate, nil
		}
	} else if at, ok := p.prevIDs[h]; ok && !schemas.DedupExpired(at, clock, p.windowMs) {
		p.ids[h] = at
		return outDuplicate, nil
	}
	p.ids[h] = clock
	if m.Offset < p.res.idOnlyBelow {
		return outIDOnly, nil
	}
	for _, vs := range p.views {
		windowMs := vs.view.Granularity.WindowStart(ev.Time).UnixMilli()
		p.keyBuf = vs.rowKey(p.keyBuf[:0], windowMs, ev)
		r := vs.rows[string(p.keyBuf)]
		if r == nil {
			dims := make([]string, len(vs.dimIdx))
			for i, fi := range vs.dimIdx {
				dims[i] = strings.Clone(ev.Values[fi].Str)
			}
			r = &rowState{window: time.UnixMilli(windowMs).UTC(), dims: dims, agg: vs.view.NewAggregate()}
			vs.rows[string(p.keyBuf)] = r
		}
		vs.view.Add(r.agg, ev)
		if !r.dirty {
			r.dirty = true
			vs.dirty = append(vs.dirty, r)
			p.changed++
		}
	}
	if fresh {
		if p.stream.RawEvents {
			p.raw = append(p.raw, RawEvent{Event: ownEvent(ev), Raw: m.Value, Partition: p.partition, Offset: m.Offset, KafkaTime: m.Time})
			p.changed++
		}
		p.ingestMs = append(p.ingestMs, m.Time.UnixMilli())
		if ev.Time.After(p.newest) {
			p.newest = ev.Time
		}
	}
	return outFolded, nil
}

// ownEvent is a copy of ev that shares no memory with ev or its message.
func ownEvent(ev *schemas.Event) schemas.Event {
	out := schemas.Event{ID: strings.Clone(ev.ID), Time: ev.Time, Values: slices.Clone(ev.Values)}
	for i := range out.Values {
		out.Values[i].Str = strings.Clone(out.Values[i].Str)
	}
	return out
}

// cross closes the open chunk and opens chunk k. The closed chunk's changed
// rows become pending with the chunk's last offset as version; its ids
// become the previous chunk's ids when k follows it directly.
func (p *partState) cross(k int64) {
	if p.chunk >= 0 {
		for _, vs := range p.views {
			for _, r := range vs.dirty {
				vs.pending = append(vs.pending, Row{Window: r.window, Dims: r.dims, Agg: r.agg,
					Partition: p.partition, Chunk: p.chunk, Version: p.high})
			}
			vs.dirty = vs.dirty[:0]
			clear(vs.rows)
		}
	}
	if k == p.chunk+1 {
		p.ids, p.prevIDs = p.prevIDs, p.ids
		clear(p.ids)
	} else {
		// A gap (or the first message): nothing of chunk k-1 was read.
		clear(p.ids)
		clear(p.prevIDs)
	}
	p.chunk = k
}

// rows returns what a write of view i must upsert: the pending rows of
// finished chunks and the changed rows of the open chunk.
func (p *partState) rows(i int) []Row {
	vs := p.views[i]
	out := make([]Row, 0, len(vs.pending)+len(vs.dirty))
	out = append(out, vs.pending...)
	for _, r := range vs.dirty {
		out = append(out, Row{Window: r.window, Dims: r.dims, Agg: r.agg, Partition: p.partition, Chunk: p.chunk, Version: p.high})
	}
	return out
}

// written records that view i's rows were upserted.
func (p *partState) written(i int) {
	vs := p.views[i]
	for _, r := range vs.dirty {
		r.dirty = false
	}
	vs.dirty = vs.dirty[:0]
	vs.pending = nil
}

// markWritten forgets every pending output, as if written.
func (p *partState) markWritten() {
	for i := range p.views {
		p.written(i)
	}
	p.dlq, p.dlqReasons, p.raw, p.ingestMs = nil, nil, nil, p.ingestMs[:0]
	p.changed = 0
}

// dirtyViews reports whether any view has rows to write.
func (p *partState) dirtyViews() bool {
	for _, vs := range p.views {
		if len(vs.dirty) > 0 || len(vs.pending) > 0 {
			return true
		}
	}
	return false
}

// pendingOutput reports whether a flush has anything to write.
func (p *partState) pendingOutput() bool {
	return p.caughtUp && (len(p.dlq) > 0 || len(p.raw) > 0 || p.dirtyViews())
}
