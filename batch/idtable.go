package batch

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/tandem-analytics/tandem/schemas"
)

// idTable maps id hashes to the offset and dedup clock (schemas/dedup.go)
// of the id's counted occurrence in one partition (the latest, when a
// dedup_window lets an id count again): an open-addressing table (linear
// probing) of 32-byte entries, with no pointers for the GC to scan.
//
// A home slot is a multiply-shift hash of the id hash under a random seed
// per table, so a producer cannot choose ids that pile up in one probe run
// (the ids' XXH3 hashes are not keyed and anyone can compute them).
type idTable struct {
	ents   []idEntry // a power of two
	mem    []byte    // ents' mapping, if mapped (allocEntries)
	mask   int
	shift  uint
	s0, s1 uint64 // seed multipliers (odd)
	n      int    // entries, not counting the zero hash
	zero   bool   // the all-zero hash (the empty marker) is present
	zeroV  idEntry
	// maxBits, when set, is the most slots (1<<maxBits) roomFor lets the
	// table grow to: batch.dedup_memory's share (dedupTableBits).
	maxBits uint
}

type idEntry struct {
	h0, h1 uint64 // the hash, big-endian halves: (h0, h1) order is byte order
	off    int64
	ms     int64 // the dedup clock at off
}

func splitHash(h idHash) (uint64, uint64) {
	return binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])
}

// newIDTable returns a table sized for about n entries without growing.
func newIDTable(n int) *idTable {
	b := uint(10)
	for (1<<b)*5/8 < n && b < 40 {
		b++
	}
	t := &idTable{s0: rand.Uint64() | 1, s1: rand.Uint64() | 1}
	t.alloc(b)
	return t
}

func (t *idTable) alloc(bits uint) {
	t.ents, t.mem = allocEntries(1 << bits)
	t.mask = 1<<bits - 1
	t.shift = 64 - bits
}

func (t *idTable) len() int {
	if t.zero {
		return t.n + 1
	}
	return t.n
}

func (t *idTable) home(h0, h1 uint64) int { return int((h0*t.s0 + h1*t.s1) >> t.shift) }

// get returns the offset stored for h.
func (t *idTable) get(h0, h1 uint64) (int64, bool) {
	if h0 == 0 && h1 == 0 {
		return t.zeroV.off, t.zero
	}
	for i := t.home(h0, h1); ; i = (i + 1) & t.mask {
		e := &t.ents[i]
		if e.h0 == h0 && e.h1 == h1 {
			return e.off, true
		}
		if e.h0 == 0 && e.h1 == 0 {
			return 0, false
		}
	}
}

// insert stores off for h unless h is present; it reports whether it did.
func (t *idTable) insert(h0, h1 uint64, off int64) bool {
	return t.admit(h0, h1, off, 0, math.MaxInt64)
}

// admit decides an occurrence of h at offset off and dedup clock ms: a
// duplicate (false) if h is stored with a clock the window has not passed
// (schemas.DedupExpired), otherwise counted (true) and stored as h's
// counted occurrence. One probe both asks and records.
func (t *idTable) admit(h0, h1 uint64, off, ms, windowMs int64) bool {
	if h0 == 0 && h1 == 0 {
		if t.zero && !schemas.DedupExpired(t.zeroV.ms, ms, windowMs) {
			return false
		}
		t.zero, t.zeroV = true, idEntry{0, 0, off, ms}
		return true
	}
	if t.n >= len(t.ents)*5/8 && !t.makeRoom(ms, windowMs) {
		// Past maxBits: callers that keep to it ask roomFor first.
		t.rebuild(64-t.shift+1, ms, windowMs)
	}
	return t.probe(h0, h1, off, ms, windowMs)
}

// roomFor reports whether an admit at clock nowMs fits without the table
// growing past maxBits, making room as admit would (dropping the ids the
// window has passed, or doubling within the limit). Dropping changes no
// decision: a passed id makes no later occurrence a duplicate.
func (t *idTable) roomFor(nowMs, windowMs int64) bool {
	return t.n < len(t.ents)*5/8 || t.makeRoom(nowMs, windowMs)
}

// probe is admit once the table has room.
func (t *idTable) probe(h0, h1 uint64, off, ms, windowMs int64) bool {
	for i := t.home(h0, h1); ; i = (i + 1) & t.mask {
		e := &t.ents[i]
		if e.h0 == h0 && e.h1 == h1 {
			if !schemas.DedupExpired(e.ms, ms, windowMs) {
				return false
			}
			e.off, e.ms = off, ms
			return true
		}
		if e.h0 == 0 && e.h1 == 0 {
			*e = idEntry{h0, h1, off, ms}
			t.n++
			return true
		}
	}
}

// put stores e, replacing what is stored for its hash; the table doubles
// when full, dropping nothing.
func (t *idTable) put(e idEntry) {
	if e.h0 == 0 && e.h1 == 0 {
		t.zero, t.zeroV = true, e
		return
	}
	if t.n >= len(t.ents)*5/8 {
		t.rebuild(64-t.shift+1, 0, math.MaxInt64)
	}
	t.probe(e.h0, e.h1, e.off, e.ms, math.MinInt64) // always expired: replaced
}

// makeRoom doubles the table, or, under a dedup window, first drops the
// entries the window has passed at clock nowMs: clocks only grow, so no
// later occurrence can be their duplicate, and a table that keeps only
// them holds about the window's ids, however long the history. The table
// doubles only if at least half of it would still be live, and not past
// maxBits: it reports false, changing nothing, when it would have to.
func (t *idTable) makeRoom(nowMs, windowMs int64) bool {
	bits := 64 - t.shift
	if windowMs != math.MaxInt64 {
		live := 0
		for i := range t.ents {
			if e := &t.ents[i]; (e.h0 != 0 || e.h1 != 0) && !schemas.DedupExpired(e.ms, nowMs, windowMs) {
				live++
			}
		}
		if live < len(t.ents)*5/16 {
			t.rebuild(bits, nowMs, windowMs)
			return true
		}
	}
	if t.maxBits != 0 && bits+1 > t.maxBits {
		return false
	}
	t.rebuild(bits+1, nowMs, windowMs)
	return true
}

// rebuild moves the entries the window has not passed at nowMs into a new
// table of 1<<bits slots.
func (t *idTable) rebuild(bits uint, nowMs, windowMs int64) {
	old, oldMem := t.ents, t.mem
	t.alloc(bits)
	t.n = 0
	for _, e := range old {
		if (e.h0 != 0 || e.h1 != 0) && !schemas.DedupExpired(e.ms, nowMs, windowMs) {
			t.put(e)
		}
	}
	freeEntries(oldMem)
}

// free releases the table's memory; the table and any slice entries
// returned are unusable afterwards. It may be called more than once.
func (t *idTable) free() {
	freeEntries(t.mem)
	t.ents, t.mem = nil, nil
}

// entries compacts the entries to the front of the table and returns
// them, in no particular order, valid until free. The table is unusable
// for anything else afterwards.
func (t *idTable) entries() []idEntry {
	n := 0
	for i := range t.ents {
		if e := t.ents[i]; e.h0 != 0 || e.h1 != 0 {
			t.ents[n] = e
			n++
		}
	}
	es := t.ents[:n]
	if t.zero {
		es = append(es, t.zeroV) // room: the table is never full
	}
	return es
}

// touch loads the home slots of the valid rows' hashes, so the inserts
// that follow find them in cache: the loads do not depend on each other,
// and the CPU overlaps their cache misses, which one insert after another
// cannot (a batch's slots fit in L2).
func (t *idTable) touch(h0, h1 []uint64, verdict []uint8) uint64 {
	var sink uint64
	for i := range verdict {
		if verdict[i] == rowValid {
			sink += t.ents[t.home(h0[i], h1[i])].h0
		}
	}
	return sink
}

// indexEntryBytes is the size of an index file entry.
const indexEntryBytes = 32

// appendIndex writes to bw the entries a later occurrence can still be a
// duplicate of — those whose clock is less than the window before clock
// (the partition's clock at the end of the run; clocks only grow) — in
// the index file format: 16 hash bytes, a little-endian 8-byte offset and
// 8-byte clock each, in any order (readers build a table), so one index
// can come from many tables (grace.go's buckets). It returns how many it
// wrote; the caller flushes.
func appendIndex(bw *bufio.Writer, es []idEntry, clock, windowMs int64) (int, error) {
	var e [indexEntryBytes]byte
	n := 0
	for _, x := range es {
		if schemas.DedupExpired(x.ms, clock, windowMs) {
			continue
		}
		putEntry(e[:], x)
		if _, err := bw.Write(e[:]); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// putEntry and getEntry are an entry in the index file format, which the
// duplicate check's bucket files share.
func putEntry(e []byte, x idEntry) {
	binary.BigEndian.PutUint64(e[:8], x.h0)
	binary.BigEndian.PutUint64(e[8:16], x.h1)
	binary.LittleEndian.PutUint64(e[16:24], uint64(x.off))
	binary.LittleEndian.PutUint64(e[24:32], uint64(x.ms))
}

func getEntry(e []byte) idEntry {
	return idEntry{binary.BigEndian.Uint64(e[:8]), binary.BigEndian.Uint64(e[8:16]),
		int64(binary.LittleEndian.Uint64(e[16:24])), int64(binary.LittleEndian.Uint64(e[24:32]))}
}

// readIndex reads an index file of size bytes (-1: unknown) into a table
// with room for extra more ids.
func readIndex(r io.Reader, size int64, extra int) (*idTable, error) {
	n := 0
	if size > 0 {
		if size%indexEntryBytes != 0 {
			return nil, fmt.Errorf("index of %d bytes is not whole entries", size)
		}
		n = int(size / indexEntryBytes)
	}
	t := newIDTable(n + extra)
	if err := readIndexEntries(r, func(e idEntry) error { t.put(e); return nil }); err != nil {
		t.free()
		return nil, err
	}
	return t, nil
}

// readIndexEntries calls fn for each entry of an index file.
func readIndexEntries(r io.Reader, fn func(idEntry) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var e [indexEntryBytes]byte
	for {
		if _, err := io.ReadFull(br, e[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(getEntry(e[:])); err != nil {
			return err
		}
	}
}
