package batch

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
)

// idTable maps id hashes to the offset of the id's first valid occurrence
// in one partition: an open-addressing table (linear probing) of 24-byte
// entries, a third of what map[idHash]int64 costs per id, with no pointers
// for the GC to scan.
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
	zeroV  int64
}

type idEntry struct {
	h0, h1 uint64 // the hash, big-endian halves: (h0, h1) order is byte order
	off    int64
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
		return t.zeroV, t.zero
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
	if h0 == 0 && h1 == 0 {
		if t.zero {
			return false
		}
		t.zero, t.zeroV = true, off
		return true
	}
	if t.n >= len(t.ents)*5/8 {
		t.grow()
	}
	for i := t.home(h0, h1); ; i = (i + 1) & t.mask {
		e := &t.ents[i]
		if e.h0 == h0 && e.h1 == h1 {
			return false
		}
		if e.h0 == 0 && e.h1 == 0 {
			*e = idEntry{h0, h1, off}
			t.n++
			return true
		}
	}
}

func (t *idTable) grow() {
	old, oldMem := t.ents, t.mem
	t.alloc(64 - t.shift + 1)
	t.n = 0
	for _, e := range old {
		if e.h0 != 0 || e.h1 != 0 {
			t.insert(e.h0, e.h1, e.off)
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
		es = append(es, idEntry{0, 0, t.zeroV}) // room: the table is never full
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

// writeIndex writes entries as the index file format: 16 hash bytes and a
// little-endian 8-byte offset each, in any order (readers build a table).
func writeIndex(w io.Writer, es []idEntry) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var e [24]byte
	for _, x := range es {
		binary.BigEndian.PutUint64(e[:8], x.h0)
		binary.BigEndian.PutUint64(e[8:16], x.h1)
		binary.LittleEndian.PutUint64(e[16:], uint64(x.off))
		if _, err := bw.Write(e[:]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// readIndex reads an index file of size bytes (-1: unknown) into a table
// with room for extra more ids.
func readIndex(r io.Reader, size int64, extra int) (*idTable, error) {
	n := 0
	if size > 0 {
		if size%24 != 0 {
			return nil, fmt.Errorf("index of %d bytes is not whole entries", size)
		}
		n = int(size / 24)
	}
	t := newIDTable(n + extra)
	br := bufio.NewReaderSize(r, 1<<20)
	var e [24]byte
	for {
		if _, err := io.ReadFull(br, e[:]); err == io.EOF {
			return t, nil
		} else if err != nil {
			t.free()
			return nil, err
		}
		t.insert(binary.BigEndian.Uint64(e[:8]), binary.BigEndian.Uint64(e[8:16]), int64(binary.LittleEndian.Uint64(e[16:])))
	}
}
