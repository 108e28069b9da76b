package batch

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
)

// The duplicate check within batch.dedup_memory (docs/architecture.md,
// "The duplicate rule"). A partition's
// id table holds the ids in scope: all of the partition's without a
// dedup_window, the window's with one; either way they grow with the event
// rate. When they would take the table past its share of the budget, the
// check becomes a grace hash join: every id in scope (the previous run's
// index entries, then each valid message's id, offset and dedup clock in
// offset order) is written to one of K local bucket files chosen by a
// seeded hash of the id, and each bucket is then decided alone by a table
// sized for it. Every occurrence of an id lands in the same bucket in
// offset order, behind the id's index entry, so the first-seen and window
// rules (idTable.admit) decide every occurrence exactly as one table
// would. The duplicates' offsets, sorted per bucket, are merged, and a
// second read of the partition's new messages spills the kept ones in
// offset order: the spill, the index and the duplicate offsets are the
// ones a single table gives.

// DefaultDedupMemory is batch.dedup_memory's default: 512 MiB for the id
// tables of the partitionsAtOnce partitions a scan reads at once, within
// the 8 GiB a batch worker is given (docs/operations.md).
const DefaultDedupMemory = 512 << 20

// MinDedupMemory is the least batch.dedup_memory accepted: below it a table
// is a few thousand ids and the buckets' buffers outweigh it.
const MinDedupMemory = 1 << 20

// dedupTableBits is the most slots (1<<bits) one partition's table may
// have under a budget of budget bytes: the budget is shared by the
// partitions read at once, and a table that doubles holds its old slots
// beside the new ones for a moment (1.5 times the new size).
func dedupTableBits(budget int64) uint {
	share := budget / int64(partitionsAtOnce)
	b := uint(10) // newIDTable's least
	for (int64(3)<<(b+1))*idEntryBytes/2 <= share {
		b++
	}
	return b
}

const idEntryBytes = 32 // unsafe.Sizeof(idEntry{}), the slot size

// dedupTableIDs is how many ids a table of at most 1<<bits slots holds
// without growing (idTable grows at 5/8 full).
func dedupTableIDs(bits uint) int64 { return int64(1) << bits * 5 / 8 }

// graceBufBytes is each bucket file's write buffer.
const graceBufBytes = 16 << 10

// maxGraceBuckets bounds the files a split writes at once; a bucket that
// still exceeds the table is split again.
const maxGraceBuckets = 1024

// maxGraceDepth bounds the splits of a bucket: only one id repeated more
// than a table's worth of times keeps a bucket too large, and its table
// holds one id.
const maxGraceDepth = 4

// graceBuckets are the bucket files of one split.
type graceBuckets struct {
	dir    string
	s0, s1 uint64 // the split's seed (odd multipliers)
	paths  []string
	files  []*os.File
	ws     []*bufio.Writer
	prior  []int64 // index entries in each bucket, ahead of its occurrences
	occ    []int64
	buf    [indexEntryBytes]byte
}

// graceBucketCount is K for n ids in scope and tables of ids ids each:
// buckets three quarters full on average, so the hash's spread seldom
// makes one split again.
func graceBucketCount(n, ids int64) int {
	k := (n + ids*3/4 - 1) / (ids * 3 / 4)
	return int(min(max(k, 2), maxGraceBuckets))
}

func newGraceBuckets(dir string, k int) (*graceBuckets, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	g := &graceBuckets{dir: dir, s0: rand.Uint64() | 1, s1: rand.Uint64() | 1,
		prior: make([]int64, k), occ: make([]int64, k)}
	for i := 0; i < k; i++ {
		path := filepath.Join(dir, fmt.Sprintf("b%04d", i))
		f, err := os.Create(path)
		if err != nil {
			g.close()
			return nil, err
		}
		g.paths, g.files, g.ws = append(g.paths, path), append(g.files, f), append(g.ws, bufio.NewWriterSize(f, graceBufBytes))
	}
	return g, nil
}

// add writes e to its bucket; prior entries come before any occurrence.
func (g *graceBuckets) add(e idEntry, prior bool) error {
	i := int(((e.h0*g.s0 + e.h1*g.s1) >> 32) * uint64(len(g.ws)) >> 32)
	if prior {
		g.prior[i]++
	} else {
		g.occ[i]++
	}
	putEntry(g.buf[:], e)
	_, err := g.ws[i].Write(g.buf[:])
	return err
}

// finish flushes and closes the files, leaving them for reading.
func (g *graceBuckets) finish() error {
	var first error
	for i, w := range g.ws {
		if err := w.Flush(); err != nil && first == nil {
			first = err
		}
		if err := g.files[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	g.files = nil
	return first
}

func (g *graceBuckets) close() {
	for _, f := range g.files {
		f.Close()
	}
	g.files = nil
}

// graceCheck decides a partition's ids bucket by bucket.
type graceCheck struct {
	dir      string
	window   int64
	clock    int64 // the partition's dedup clock at the end of the scan
	bits     uint  // the tables' most slots
	index    *bufio.Writer
	indexN   int64
	dupFiles []string // each bucket's duplicates' offsets, ascending (8 bytes LE)
	dups     int64
	slots    int64 // the largest table's slots
	seq      int
}

// decide decides every bucket of g, splitting again any bucket with more
// ids than a table holds.
func (c *graceCheck) decide(g *graceBuckets, depth int) error {
	for i, path := range g.paths {
		n := g.prior[i] + g.occ[i]
		if n > dedupTableIDs(c.bits) && depth < maxGraceDepth {
			sub, err := c.split(path, g.prior[i], n, depth)
			if err != nil {
				return err
			}
			if err := c.decide(sub, depth+1); err != nil {
				return err
			}
			continue
		}
		if err := c.decideBucket(path, g.prior[i], n); err != nil {
			return err
		}
	}
	return nil
}

// split spreads one bucket over new ones under another seed, keeping the
// order (prior entries first).
func (c *graceCheck) split(path string, prior, n int64, depth int) (*graceBuckets, error) {
	c.seq++
	sub, err := newGraceBuckets(filepath.Join(c.dir, fmt.Sprintf("split%d-%d", depth, c.seq)), graceBucketCount(n, dedupTableIDs(c.bits)))
	if err != nil {
		return nil, err
	}
	err = readBucket(path, func(k int64, e idEntry) error { return sub.add(e, k < prior) })
	if err == nil {
		err = sub.finish()
	}
	if err != nil {
		sub.close()
		return nil, err
	}
	return sub, os.Remove(path)
}

// readBucket calls fn for each entry of a bucket file, in order, with its
// position.
func readBucket(path string, fn func(k int64, e idEntry) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var b [indexEntryBytes]byte
	for k := int64(0); ; k++ {
		if _, err := io.ReadFull(br, b[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(k, getEntry(b[:])); err != nil {
			return err
		}
	}
}

// decideBucket runs one bucket through a table sized for it: its prior
// entries stored, its occurrences admitted in offset order. The
// duplicates' offsets go to a file of their own, the table's entries to
// the index.
func (c *graceCheck) decideBucket(path string, prior, n int64) error {
	// n counts occurrences: past maxGraceDepth a bucket that still holds
	// more is one id repeated, and its table grows only with distinct ids.
	t := newIDTable(int(min(n, dedupTableIDs(c.bits))))
	defer t.free()
	c.slots = max(c.slots, int64(len(t.ents)))
	c.seq++
	dpath := filepath.Join(c.dir, fmt.Sprintf("dups%d", c.seq))
	df, err := os.Create(dpath)
	if err != nil {
		return err
	}
	defer df.Close()
	dw := bufio.NewWriterSize(df, graceBufBytes)
	var b [8]byte
	err = readBucket(path, func(k int64, e idEntry) error {
		if k < prior {
			t.put(e)
			return nil
		}
		if t.admit(e.h0, e.h1, e.off, e.ms, c.window) {
			return nil
		}
		c.dups++
		binary.LittleEndian.PutUint64(b[:], uint64(e.off))
		_, err := dw.Write(b[:])
		return err
	})
	if err == nil {
		err = dw.Flush()
	}
	if err != nil {
		return err
	}
	c.dupFiles = append(c.dupFiles, dpath)
	m, err := appendIndex(c.index, t.entries(), c.clock, c.window)
	c.indexN += int64(m)
	if err != nil {
		return err
	}
	return os.Remove(path)
}

// dupMerge yields the buckets' duplicate offsets in ascending order: each
// file is ascending (a bucket keeps offset order), so a heap of their
// heads merges them.
type dupMerge struct {
	h dupHeap
}

type dupHead struct {
	off int64
	r   *bufio.Reader
	f   *os.File
}

type dupHeap []*dupHead

func (h dupHeap) Len() int           { return len(h) }
func (h dupHeap) Less(i, j int) bool { return h[i].off < h[j].off }
func (h dupHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dupHeap) Push(x any)        { *h = append(*h, x.(*dupHead)) }
func (h *dupHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func openDupMerge(paths []string) (*dupMerge, error) {
	m := &dupMerge{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			m.close()
			return nil, err
		}
		hd := &dupHead{r: bufio.NewReaderSize(f, 4<<10), f: f}
		ok, err := hd.advance()
		if err != nil {
			f.Close()
			m.close()
			return nil, err
		}
		if !ok {
			f.Close()
			continue
		}
		m.h = append(m.h, hd)
	}
	heap.Init(&m.h)
	return m, nil
}

func (hd *dupHead) advance() (bool, error) {
	var b [8]byte
	if _, err := io.ReadFull(hd.r, b[:]); err == io.EOF {
		return false, nil
	} else if err != nil {
		return false, err
	}
	hd.off = int64(binary.LittleEndian.Uint64(b[:]))
	return true, nil
}

// next returns the next offset, or false at the end.
func (m *dupMerge) next() (int64, bool, error) {
	if len(m.h) == 0 {
		return 0, false, nil
	}
	hd := m.h[0]
	off := hd.off
	ok, err := hd.advance()
	if err != nil {
		return 0, false, err
	}
	if ok {
		heap.Fix(&m.h, 0)
	} else {
		hd.f.Close()
		heap.Pop(&m.h)
	}
	return off, true, nil
}

func (m *dupMerge) close() {
	for _, hd := range m.h {
		hd.f.Close()
	}
	m.h = nil
}

// graceDiskError makes a full disk under --tmp say what filled it and
// what to change.
func graceDiskError(stream string, p int32, dir string, budget int64, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("batch: the duplicate check of %s partition %d holds more ids than batch.dedup_memory (%d bytes) allows in memory and spills them to %s, and that disk is full: free space there, give the run another --tmp, or raise batch.dedup_memory: %w", stream, p, budget, dir, err)
	}
	return fmt.Errorf("batch: the duplicate check of %s partition %d spilling to %s: %w", stream, p, dir, err)
}
