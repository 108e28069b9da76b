package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

	"github.com/axiomhq/hyperloglog"
)

// HLLUnion merges distinct sketches on flat data: the keys of sparse
// sketches into a plain slice, sorted and deduplicated only now and then
// (compact), the registers of dense ones into a register array, with no
// sketch object per sketch merged (AddBytes reads a stored encoding in
// place). Its Sketch is what Measure.Merge of the same sketches, in any
// order, gives once estimated: the library's sketch is dense exactly when
// a merged sketch was dense or the encoding of the union's sparse keys is
// longer than its register count (it checks on insertion and again in
// Estimate; the encoding only grows as keys are added), and otherwise
// holds the union of the sparse keys; dense registers are the maximum
// rank each key or register gives, whatever the order.
//
// The zero value is the union of nothing. Not safe for concurrent use.
type HLLUnion struct {
	// keys are sparse keys in no order, repeats allowed, except that
	// keys[:sorted] are sorted and distinct (after compact).
	keys   []uint32
	sorted int
	regs   []uint8 // the registers, once dense
	// dense holds regs and the count of registers of each value, which
	// is kept up to date while histOK (until a dense sketch is merged in
	// register by register): the estimate then needs no pass over the
	// 16,384 registers.
	dense  *hllRegs
	histOK bool
	buf    []byte   // a sketch's encoding, reused
	spare  []uint32 // the key slice compact and Merge merge into, reused
	radix  []uint32 // compact's scratch for sorting, reused
	any    bool
	// later holds sorted, distinct key lists of other unions merged with
	// MergeLater and not yet into keys (flush merges them all in one
	// pass); laterMax is the longest, laterKeys their total. Only a
	// sparse union has them.
	later     [][]uint32
	laterMax  int
	laterKeys int
}

// hllCompactFrom is how many keys a union holds before it first sorts
// them: below it, small unions sort once, in Sketch.
const hllCompactFrom = 4096

// Add merges sk (nil: nothing) into u. sk is only read.
func (u *HLLUnion) Add(sk *hyperloglog.Sketch) {
	if sk == nil {
		return
	}
	b, err := sk.AppendBinary(u.buf[:0])
	if err != nil {
		return // the zero sketch: nothing to merge, as Merge treats it
	}
	u.buf = b
	u.AddBytes(b)
}

// AddBytes merges the sketch whose encoding is b (the library's version 2
// encoding, as Measure.Cell writes it and ValidHLLBytes accepts) into u,
// without a sketch object: a dense sketch's registers are read in place, a
// sparse one's keys appended as they are read. b is only read.
func (u *HLLUnion) AddBytes(b []byte) {
	// The library's version 2 encoding (AppendBinary): version, precision,
	// 0, then 1 and the sparse state or 0 and the registers.
	if len(b) < 8 || b[0] != 2 || b[1] != hllPrecision {
		return // not from a checked cell (ValidHLLBytes refuses it)
	}
	u.any = true
	if b[3] == 0 {
		regs := b[8:]
		if len(regs) != hllM {
			return
		}
		u.toDense()
		u.histOK = false
		dst := u.regs[:hllM]
		for i, r := range regs[:hllM] {
			dst[i] = max(dst[i], r)
		}
		return
	}
	// Sparse: the recent-key set (count, keys), then the key list (count,
	// last key, byte length, varints of the first key and the differences).
	n := int(binary.BigEndian.Uint32(b[4:8]))
	p := 8
	for i := 0; i < n && p+4 <= len(b); i++ {
		u.addKey(binary.BigEndian.Uint32(b[p:]))
		p += 4
	}
	if p+12 > len(b) {
		return
	}
	list := b[p+12:]
	var k uint32
	for i := 0; i < len(list); {
		var x uint32
		for shift := uint(0); i < len(list); shift += 7 {
			c := list[i]
			i++
			x |= uint32(c&0x7f) << shift
			if c&0x80 == 0 {
				break
			}
		}
		k += x
		u.addKey(k)
	}
}

// HLLListKeys is how many keys the sorted key list of the sparse sketch
// encoded as b holds (b as AddBytes reads it): a lower bound of the
// distinct keys of any union b is added to. It is -1 for a dense encoding
// or one AddBytes does not read.
func HLLListKeys(b []byte) int {
	if len(b) < 8 || b[0] != 2 || b[1] != hllPrecision || b[3] == 0 {
		return -1
	}
	p := 8 + 4*int(binary.BigEndian.Uint32(b[4:8]))
	if p+4 > len(b) {
		return -1
	}
	return int(binary.BigEndian.Uint32(b[p:]))
}

// addKey adds one sparse key: to the registers once dense, else to the
// keys, sorting them when they have doubled since the last sort (so each
// key is sorted a bounded number of times, and the slice holds at most
// twice the distinct keys plus hllCompactFrom).
func (u *HLLUnion) addKey(k uint32) {
	if u.regs != nil {
		u.setReg(k)
		return
	}
	u.keys = append(u.keys, k)
	if len(u.keys) >= max(hllCompactFrom, 2*u.sorted) {
		u.compact()
	}
}

// compact sorts and deduplicates the keys, and turns u dense when their
// encoding is longer than the registers: what the library does at its
// next check. Only the keys added since the last compact are sorted; they
// are then merged with the sorted ones in one pass (sorting the whole
// slice again was most of a speed query's time in serve, issue 11).
func (u *HLLUnion) compact() {
	if u.regs != nil || u.sorted == len(u.keys) {
		return
	}
	tail := u.keys[u.sorted:]
	if len(tail) < hllRadixFrom {
		slices.Sort(tail)
	} else {
		u.radix = slices.Grow(u.radix[:0], len(tail))[:len(tail)]
		radixSortUint32(tail, u.radix)
	}
	if u.sorted == 0 {
		u.keys = slices.Compact(u.keys)
	} else {
		u.keys = u.mergeSorted(u.keys[:u.sorted], slices.Compact(tail))
	}
	u.sorted = len(u.keys)
	u.checkDense()
}

// hllRadixFrom is the fewest keys compact sorts by radix: below it a
// comparison sort is faster than four passes over 256 counters.
const hllRadixFrom = 256

// radixSortUint32 sorts keys by their bytes, least significant first, with
// tmp (as long as keys) as scratch; a byte equal in every key is skipped.
// Linear in the keys: pdqsort of the sparse keys appended by AddBytes was
// half of building a speed rollup's distinct unions in serve.
func radixSortUint32(keys, tmp []uint32) {
	var counts [4][256]int
	for _, k := range keys {
		counts[0][k&0xff]++
		counts[1][k>>8&0xff]++
		counts[2][k>>16&0xff]++
		counts[3][k>>24]++
	}
	src, dst := keys, tmp
	for pass := range counts {
		c := &counts[pass]
		shift := uint(8 * pass)
		if c[src[0]>>shift&0xff] == len(src) {
			continue // the same byte everywhere: already in order by it
		}
		sum := 0
		for i, n := range c {
			c[i] = sum
			sum += n
		}
		for _, k := range src {
			b := k >> shift & 0xff
			dst[c[b]] = k
			c[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// mergeSorted returns the sorted, distinct union of a and b (each sorted
// and distinct) in u's spare slice, keeping the slice it replaces as the
// next spare: no allocation once both have grown.
func (u *HLLUnion) mergeSorted(a, b []uint32) []uint32 {
	out := mergeSortedInto(slices.Grow(u.spare[:0], len(a)+len(b)), a, b)
	u.spare = u.keys[:0]
	return out
}

// mergeSortedInto appends to out the sorted, distinct union of a and b
// (each sorted and distinct).
func mergeSortedInto(out, a, b []uint32) []uint32 {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch x, y := a[i], b[j]; {
		case x < y:
			out = append(out, x)
			i++
		case y < x:
			out = append(out, y)
			j++
		default:
			out = append(out, x)
			i++
			j++
		}
	}
	return append(append(out, a[i:]...), b[j:]...)
}

// checkDense turns u dense when the encoding of its keys (sorted and
// distinct) is longer than the registers. The encoding only grows as keys
// are added, so checking more often than the library does cannot change
// whether the union ends dense.
func (u *HLLUnion) checkDense() {
	n, prev := 0, uint32(0)
	for _, k := range u.keys {
		n += uvarintLen(k - prev)
		prev = k
	}
	if n > hllM {
		u.toDense()
	}
}

// setReg raises the register of sparse key k to its rank, keeping hist.
func (u *HLLUnion) setReg(k uint32) {
	i, r := hllDecode(k)
	if old := u.regs[i]; r > old {
		u.regs[i] = r
		if u.histOK {
			u.dense.hist[old]--
			u.dense.hist[r]++
		}
	}
}

// hllRegPool holds the registers of unions let go of by Release: a
// query's groups each densify a union and drop it once estimated.
var hllRegPool = sync.Pool{New: func() any { return new(hllRegs) }}

// hllRegs is a dense union's registers and their histogram, pooled
// together.
type hllRegs struct {
	regs [hllM]uint8
	hist [256]int32
}

// toDense writes the registers from the keys, as toNormal does.
func (u *HLLUnion) toDense() {
	if u.regs != nil {
		return
	}
	d := hllRegPool.Get().(*hllRegs)
	clear(d.regs[:])
	d.hist = [256]int32{0: hllM}
	u.regs, u.dense, u.histOK = d.regs[:], d, true
	for _, k := range u.keys {
		u.setReg(k)
	}
	for _, l := range u.later {
		for _, k := range l {
			u.setReg(k)
		}
	}
	u.keys, u.sorted, u.spare, u.radix = nil, 0, nil, nil
	u.dropLater()
}

// Release gives u's registers back for another union to reuse; u is the
// union of nothing afterwards. Only for a union no one else reads.
func (u *HLLUnion) Release() {
	if u.dense != nil {
		hllRegPool.Put(u.dense)
	}
	*u = HLLUnion{}
}

// Merge merges o into u; o is only read.
func (u *HLLUnion) Merge(o *HLLUnion) {
	if o == nil || !o.any {
		return
	}
	u.any = true
	if o.regs != nil {
		u.toDense()
		u.histOK = false
		maxRegs(u.regs, o.regs)
		return
	}
	if u.regs != nil {
		for _, k := range o.keys {
			u.setReg(k)
		}
		for _, l := range o.later {
			for _, k := range l {
				u.setReg(k)
			}
		}
		return
	}
	if len(o.later) > 0 { // o noted lists of its own: merged with it
		for _, l := range o.later {
			u.pushLater(l)
		}
		defer u.flush()
	}
	if o.sorted == len(o.keys) && 8*len(o.keys) >= len(u.keys) {
		// A compacted union (a cached rollup's) not much smaller than u:
		// one pass over both sorted lists, instead of appending its keys
		// and sorting them again.
		u.compact()
		if u.regs == nil {
			u.keys = u.mergeSorted(u.keys, o.keys)
			u.sorted = len(u.keys)
			u.checkDense()
			return
		}
	}
	for _, k := range o.keys {
		u.addKey(k)
	}
}

// MergeLater merges o into u as Merge does, except that o's sorted key
// lists are only noted (no copy) and merged in, all at once, when u is
// next read or changed (flush): a group that takes in several small
// sparse unions merges their keys in one pass and one slice, instead of
// one pass and one slice per union. o must not change until then (a
// cached rollup's or a finished row's union, which are only read). Other
// unions (dense, or with unsorted keys) are merged at once.
func (u *HLLUnion) MergeLater(o *HLLUnion) {
	if o == nil || !o.any {
		return
	}
	if o.regs != nil || u.regs != nil || o.sorted != len(o.keys) || !u.any {
		u.Merge(o) // into an empty union: a copy, and no list to keep
		return
	}
	u.any = true
	if len(o.keys) > 0 {
		u.pushLater(o.keys)
	}
	for _, l := range o.later {
		u.pushLater(l)
	}
	if len(u.later) >= hllMaxLater {
		u.flush()
	}
}

// hllMaxLater bounds the lists a union notes before it merges them.
const hllMaxLater = 64

func (u *HLLUnion) pushLater(l []uint32) {
	if u.later == nil {
		u.later = make([][]uint32, 0, 4) // a group's parts: one per partition or so
	}
	u.later = append(u.later, l)
	u.laterMax = max(u.laterMax, len(l))
	u.laterKeys += len(l)
}

func (u *HLLUnion) dropLater() {
	u.later, u.laterMax, u.laterKeys = nil, 0, 0 // lets go of the other unions' lists
}

// flush merges the noted lists (MergeLater) into u's keys: one k-way
// merge of the sorted keys and the lists, or, when the lists are few
// keys beside u's, as added keys (sorted at the next compact, as Merge
// does with a small union). The keys end as they would have after
// merging each list at once: the union of the same keys, dense when
// their encoding is longer than the registers (checkDense; it only grows
// as keys are added, so when it is checked does not matter).
func (u *HLLUnion) flush() {
	if len(u.later) == 0 {
		return
	}
	if u.regs == nil && 8*u.laterKeys < len(u.keys) {
		lists := u.later
		u.later, u.laterMax, u.laterKeys = nil, 0, 0
		for _, l := range lists {
			for _, k := range l {
				u.addKey(k) // into the registers, should u turn dense
			}
		}
		return
	}
	u.compact() // may turn u dense, merging the lists into the registers
	if u.regs != nil {
		return
	}
	out := slices.Grow(u.spare[:0], len(u.keys)+u.laterKeys)
	if len(u.later) == 1 {
		out = mergeSortedInto(out, u.keys, u.later[0])
	} else {
		u.later = append(u.later, u.keys)
		out = mergeSortedLists(out, u.later)
	}
	u.spare = u.keys[:0]
	u.keys, u.sorted = out, len(out)
	u.dropLater()
	u.checkDense()
}

// mergeSortedLists appends to out the sorted, distinct union of lists
// (each sorted and distinct): a k-way merge over a heap of the lists'
// heads. lists' elements are consumed (resliced).
func mergeSortedLists(out []uint32, lists [][]uint32) []uint32 {
	h := lists[:0]
	for _, l := range lists {
		if len(l) > 0 {
			h = append(h, l)
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDownHeads(h, i)
	}
	var last uint32
	have := false
	for len(h) > 0 {
		l := h[0]
		if k := l[0]; !have || k != last {
			out = append(out, k)
			last, have = k, true
		}
		if len(l) > 1 {
			h[0] = l[1:]
		} else {
			n := len(h) - 1
			h[0] = h[n]
			h[n] = nil
			h = h[:n]
		}
		siftDownHeads(h, 0)
	}
	return out
}

// siftDownHeads restores the min-heap of h (by each list's first key)
// below i.
func siftDownHeads(h [][]uint32, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && h[c+1][0] < h[c][0] {
			c++
		}
		if h[i][0] <= h[c][0] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// maxRegs sets dst[i] = max(dst[i], src[i]) for every register of src,
// eight at a time: a register is below 128 (at most 64 − precision + 1),
// so per byte (a|0x80) − b never borrows from the next byte, and its high
// bit says a ≥ b. Merging cached dense rollups is most of a speed query's
// work (a day by hour merges ~1,400 dense unions), and the byte loop does
// not vectorize.
func maxRegs(dst, src []uint8) {
	const hi = 0x8080808080808080
	dst = dst[:len(src)]
	n := len(src) &^ 7
	for i := 0; i < n; i += 8 {
		a := binary.LittleEndian.Uint64(dst[i:])
		b := binary.LittleEndian.Uint64(src[i:])
		ge := ((a | hi) - b) & hi // 0x80 in the bytes where a ≥ b
		m := (ge >> 7) * 0xff     // 0xff there: no carries, each byte is 0 or 1
		binary.LittleEndian.PutUint64(dst[i:], a&m|b&^m)
	}
	for i := n; i < len(src); i++ {
		dst[i] = max(dst[i], src[i])
	}
}

// Sketch returns the library's sketch of the union; nil for the union of
// nothing. u must not be used afterwards.
func (u *HLLUnion) Sketch() *hyperloglog.Sketch {
	if !u.any {
		return nil
	}
	u.flush()
	u.compact()
	var b []byte
	if u.regs != nil {
		// The dense encoding: version 2, precision, bias 0, dense, the
		// register count and the registers.
		b = slices.Grow(u.buf[:0], 8+hllM)
		b = append(b, 2, hllPrecision, 0, 0)
		b = binary.BigEndian.AppendUint32(b, hllM)
		b = append(b, u.regs...)
	} else {
		// Sparse: the library's encoding of a sketch whose recent-key set
		// is empty and whose list holds the union.
		list := u.keys
		b = append(u.buf[:0], 2, hllPrecision, 0, 1, 0, 0, 0, 0)
		var last uint32
		if len(list) > 0 {
			last = list[len(list)-1]
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(list)))
		b = binary.BigEndian.AppendUint32(b, last)
		b = binary.BigEndian.AppendUint32(b, 0) // the varints' length, below
		start := len(b)
		var prev uint32
		for _, k := range list {
			for d := k - prev; ; d >>= 7 {
				if d < 0x80 {
					b = append(b, byte(d))
					break
				}
				b = append(b, byte(d&0x7f|0x80))
			}
			prev = k
		}
		binary.BigEndian.PutUint32(b[start-4:], uint32(len(b)-start))
	}
	sk := newHLL()
	if err := sk.UnmarshalBinary(b); err != nil {
		panic("schemas: the distinct encoding changed: " + err.Error())
	}
	return sk
}

// SparseKeys is a lower bound of the distinct sparse keys in u (the ones
// sorted so far, or the longest list noted by MergeLater); -1 once u is
// dense. While sparse, the library's estimate of the union is at least
// this many values.
func (u *HLLUnion) SparseKeys() int {
	if u.regs != nil {
		return -1
	}
	return max(u.sorted, u.laterMax)
}

// Densify makes u dense now, as the library would once its sparse list is
// long enough; merges of large unions are then cheaper. The union's values
// stay the same; its estimate is the dense one.
func (u *HLLUnion) Densify() { u.toDense() }

// AtLeast reports whether u is dense or holds at least n distinct sparse
// keys (a sparse union of n keys, n well below 2^25, estimates n: the
// library's linear count of n keys is n plus less than one for n under
// 8,000). It counts in a small hash set and stops at n, rather than
// sorting the keys.
func (u *HLLUnion) AtLeast(n int) bool {
	if u.regs != nil || u.sorted >= n || u.laterMax >= n {
		return true
	}
	if len(u.keys)+u.laterKeys < n {
		return false // fewer keys, repeats and all
	}
	u.flush()
	if u.regs != nil {
		return true
	}
	if len(u.keys) < n {
		return false
	}
	return u.distinct(n) >= n
}

// distinct counts u's distinct sparse keys, stopping at limit, in a small
// hash set (no sort).
func (u *HLLUnion) distinct(limit int) int {
	if u.sorted == len(u.keys) {
		return min(len(u.keys), limit)
	}
	size := 16
	for size < 2*min(limit, len(u.keys)) {
		size <<= 1
	}
	set := make([]uint32, size) // 0 is free: no sparse key is 0
	mask := uint32(size - 1)
	count := 0
	for _, k := range u.keys {
		h := k * 0x9e3779b1
		for i := (h>>16 ^ h) & mask; ; i = (i + 1) & mask {
			if set[i] == k {
				break
			}
			if set[i] == 0 {
				set[i] = k
				if count++; count >= limit {
					return count
				}
				break
			}
		}
	}
	return count
}

// Bytes is the memory u holds: its keys or registers and the struct,
// after merging the lists MergeLater noted.
func (u *HLLUnion) Bytes() int64 {
	u.flush()
	if u.dense != nil {
		return 120 + 1024 + hllM + 4*int64(cap(u.keys)+cap(u.spare)+cap(u.radix)) + int64(cap(u.buf))
	}
	return 120 + 4*int64(cap(u.keys)+cap(u.spare)+cap(u.radix)) + int64(cap(u.regs)) + int64(cap(u.buf))
}

// Dense reports whether u's Sketch is dense (it sorts u's keys to decide).
// It also lets go of the spare and scratch key slices: a union kept
// afterwards (a cached rollup's) holds only its keys.
func (u *HLLUnion) Dense() bool {
	u.flush()
	u.compact()
	u.spare, u.radix = nil, nil
	return u.regs != nil
}

// Estimate is u's Sketch's Estimate, computed from u's own registers or
// keys without building the sketch: the library's formulas, in the same
// floating-point operations (TestHLLUnionEstimate compares them).
func (u *HLLUnion) Estimate() uint64 {
	if !u.any {
		return 0
	}
	if u.regs == nil && 5*(len(u.keys)+u.laterKeys) <= hllM {
		// Sparse, and stays so with the lists MergeLater noted: count
		// the distinct keys of all without merging them.
		return hllSparseEstimate(u.distinctAll())
	}
	u.flush()
	if u.regs == nil && 5*len(u.keys) > hllM {
		u.compact() // as the library would check: it may turn dense
	}
	if u.regs == nil {
		// Sparse, and stays so: fewer keys than this encode in at most 5
		// bytes each, under the register count. Count them, unsorted.
		return hllSparseEstimate(u.distinct(len(u.keys) + 1))
	}
	if u.histOK {
		return hllEstimate(&u.dense.hist, u.regs)
	}
	return hllDenseEstimate(u.regs)
}

// hllSparseEstimate is the library's estimate of a sparse sketch of n
// distinct keys (linear counting over the sparse precision).
func hllSparseEstimate(n int) uint64 {
	const mp = 1 << hllSparse
	v := mp - min(uint32(n), mp-1)
	return uint64(float64(mp) * math.Log(float64(mp)/float64(v)))
}

// hllSetPool holds the hash sets distinctAll counts in.
var hllSetPool = sync.Pool{New: func() any { return new([]uint32) }}

// distinctAll counts the distinct keys of u's keys and of the lists
// MergeLater noted, in a pooled hash set (no merge, no sort).
func (u *HLLUnion) distinctAll() int {
	total := len(u.keys) + u.laterKeys
	if total == 0 {
		return 0
	}
	if len(u.later) == 0 && u.sorted == len(u.keys) {
		return len(u.keys)
	}
	size := 16
	for size < 2*total {
		size <<= 1
	}
	sp := hllSetPool.Get().(*[]uint32)
	set := *sp
	if cap(set) < size {
		set = make([]uint32, size)
	} else {
		set = set[:size]
		clear(set)
	}
	count, zero := countInto(set, u.keys, 0, false)
	for _, l := range u.later {
		count, zero = countInto(set, l, count, zero)
	}
	*sp = set
	hllSetPool.Put(sp)
	return count
}

// countInto inserts keys into set (open addressing, a power of two long,
// 0 marking a free slot), returning count and zero updated with the keys
// it had not seen; a key 0 (never written) is counted aside, in zero.
func countInto(set, keys []uint32, count int, zero bool) (int, bool) {
	mask := uint32(len(set) - 1)
	shift := uint(32 - bits.TrailingZeros(uint(len(set))))
	for _, k := range keys {
		if k == 0 {
			if !zero {
				zero = true
				count++
			}
			continue
		}
		// Fibonacci hashing: the product's high bits mix every bit of
		// the key (a sparse key's low bits are flags and ranks).
		for i := k * 0x9e3779b1 >> shift; ; i = (i + 1) & mask {
			x := set[i]
			if x == k {
				break
			}
			if x == 0 {
				set[i] = k
				count++
				break
			}
		}
	}
	return count, zero
}

// hllExactRank is the highest register value hllDenseEstimate adds out of
// order: 14 bits above the point (16,384 registers of at most 1) and 39
// below fill a float64's 53.
const hllExactRank = 53 - 1 - hllPrecision

// hllInvPow2[v] is the library's 1 / 2^v, as sumAndZeros computes it.
var hllInvPow2 = func() (t [256]float64) {
	for v := range t {
		t[v] = 1.0 / math.Pow(2.0, float64(v))
	}
	return t
}()

// hllDenseEstimate is the library's Estimate of dense registers (precision
// 14): sumAndZeros, alpha and beta14 of hyperloglog v0.3.0, term by term.
//
// The library adds 1/2^v register by register. Every term is a power of
// two, so while no register passes hllExactRank each partial sum is exact
// in a float64 (at most 2^14 in 53 bits down to 2^-39) and the sum is the
// same in any order: here it is added by value from a histogram. Higher
// ranks (about one register in 2^39) take the library's order.
func hllDenseEstimate(regs []uint8) uint64 {
	var hist [256]int32
	for _, v := range regs {
		hist[v]++
	}
	return hllEstimate(&hist, regs)
}

// hllEstimate is hllDenseEstimate of regs, whose histogram (the count of
// registers of each value) is hist.
func hllEstimate(hist *[256]int32, regs []uint8) uint64 {
	var sum float64
	ez := float64(hist[0])
	exact := true
	for v := hllExactRank + 1; v < len(hist); v++ {
		exact = exact && hist[v] == 0
	}
	if exact {
		for v := 0; v <= hllExactRank; v++ {
			sum += float64(hist[v]) * hllInvPow2[v]
		}
	} else {
		for _, v := range regs {
			sum += hllInvPow2[v]
		}
	}
	m := float64(hllM)
	alpha := 0.7213 / (1 + 1.079/m)
	zl := math.Log(ez + 1)
	beta := -0.371009760230692*ez +
		0.00978811941207509*zl +
		0.185796293324165*math.Pow(zl, 2) +
		0.203015527328432*math.Pow(zl, 3) +
		-0.116710521803686*math.Pow(zl, 4) +
		0.0431106699492820*math.Pow(zl, 5) +
		-0.00599583540511831*math.Pow(zl, 6) +
		0.000449704299509437*math.Pow(zl, 7)
	est := alpha * m * (m - ez) / (sum + beta)
	return uint64(est + 0.5)
}

// ValidHLLBytes returns b as AddBytes reads it: a distinct cell's sketch
// bytes (Measure.SketchBytes) checked as StateFromCell checks them, or
// re-encoded when stored in another version of the encoding. It returns
// nil for the empty sketch. The version 2 encoding (every sketch tandem
// writes) is checked in place by checkHLLV2, without building the sketch
// object StateFromCell would.
func ValidHLLBytes(m *Measure, b []byte) ([]byte, error) {
	if len(b) >= 8 && b[0] == 2 && b[1] == hllPrecision {
		if err := checkHLLV2(b); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadCell, m.Name, err)
		}
		return b, nil
	}
	st, err := m.StateFromCell(b)
	if err != nil || st.HLL == nil {
		return nil, err
	}
	return st.HLL.MarshalBinary()
}

// checkHLLV2 refuses exactly what the library's UnmarshalBinary refuses in
// a version 2 encoding of precision 14 (hyperloglog v0.3.0;
// TestCheckHLLV2MatchesLibrary compares them on mutated encodings).
func checkHLLV2(b []byte) error {
	const maxRho = 64 - hllPrecision + 1
	validKey := func(k uint32) bool {
		_, r := hllDecode(k)
		return r <= maxRho
	}
	if b[3] > 1 {
		return fmt.Errorf("distinct sketch header byte 3 is %d", b[3])
	}
	if b[2] != 0 {
		return fmt.Errorf("distinct sketch header byte 2 is %d", b[2])
	}
	if b[3] == 0 { // dense
		if binary.BigEndian.Uint32(b[4:8]) != hllM || len(b) != 8+hllM {
			return errors.New("distinct sketch has a wrong register count")
		}
		for i, r := range b[8:] {
			if r > maxRho {
				return fmt.Errorf("distinct sketch register %d is %d", i, r)
			}
		}
		return nil
	}
	tssz := binary.BigEndian.Uint32(b[4:8])
	need := 8 + 4*uint64(tssz)
	if need > uint64(len(b)) || tssz > hllM {
		return fmt.Errorf("distinct sketch claims %d recent keys", tssz)
	}
	for i := 8; i < int(need); i += 4 {
		if !validKey(binary.BigEndian.Uint32(b[i:])) {
			return fmt.Errorf("distinct sketch has a recent key of rank above %d", maxRho)
		}
	}
	rest := b[need:]
	if len(rest) < 12 {
		return errors.New("distinct sketch's key list is cut short")
	}
	count, last, sz := binary.BigEndian.Uint32(rest), binary.BigEndian.Uint32(rest[4:]), binary.BigEndian.Uint32(rest[8:])
	list := rest[12:]
	switch {
	case uint64(len(list)) != uint64(sz):
		return errors.New("distinct sketch's key list has a wrong length")
	case count >= 1<<hllSparse:
		return fmt.Errorf("distinct sketch claims %d keys", count)
	case count == 0 && (sz != 0 || last != 0):
		return errors.New("distinct sketch's empty key list has a size or last key")
	case count != 0 && (sz < count || uint64(sz) > 5*uint64(count)):
		return errors.New("distinct sketch's key list has an impossible size")
	}
	var entries, running uint32
	for i := 0; i < len(list); {
		// The library's varint (variableLengthList.decode): at most 5
		// bytes, the fifth at most 0x0f, no trailing zero byte.
		j := i
		var x uint32
		for ; j < len(list) && list[j]&0x80 != 0; j++ {
			x |= uint32(list[j]&0x7f) << (uint(j-i) * 7)
		}
		if j >= len(list) {
			return errors.New("distinct sketch's key list ends inside a number")
		}
		x |= uint32(list[j]) << (uint(j-i) * 7)
		if n := j - i + 1; n > 5 || (n == 5 && list[j] > 0x0f) || (n > 1 && list[j] == 0) {
			return errors.New("distinct sketch's key list has a malformed number")
		}
		i = j + 1
		next := running + x
		if entries > 0 && next <= running {
			return errors.New("distinct sketch's keys do not increase")
		}
		running = next
		if !validKey(running) {
			return fmt.Errorf("distinct sketch has a key of rank above %d", maxRho)
		}
		entries++
	}
	if count != entries || last != running {
		return errors.New("distinct sketch's key list disagrees with its count or last key")
	}
	return nil
}
