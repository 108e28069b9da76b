package schemas

import (
	"encoding/binary"
	"math/bits"
	"slices"

	"github.com/axiomhq/hyperloglog"
	metro "github.com/dgryski/go-metro"

	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
)

// A Fold accumulates one row's events for a writer that folds the row
// completely before it reads it (the batch layer). Fold.Add(ev) for each
// event and then Aggregate return what NewAggregate and View.Add of the
// same events in the same order return: the same states, whose Cells are
// the same bytes (TestFoldMatchesAdd).
//
// It is faster for distinct measures over many values. The HyperLogLog
// library keeps a sketch sparse (a varint-delta list of 32-bit keys plus a
// set of recent keys) until the list passes 2^14 bytes, and every 164 new
// keys it decodes and re-encodes the whole list: a row of some thousand
// users spends ~300 ns an event there. A Fold replays the library's
// decisions on plain slices instead (the recent set, the sorted key list
// and its encoded length) and writes the dense registers itself once the
// library would have gone dense; the library's sketch is built once, at
// the end: from the registers, or — for a row that stayed sparse, whose
// encoding depends on the order of the library's own set — by inserting
// into it the keys the library would have seen, which is what Add did.
//
// The speed layer reads its rows between adds and uses View.Add.
type Fold struct {
	v   *View
	agg Aggregate
	hll []*hllFold // by measure; nil for other types and until a value
}

// NewFold returns the fold of no events.
func (v *View) NewFold() *Fold { return &Fold{v: v, agg: v.NewAggregate()} }

// Add folds one event of the view's stream into f. Not after Aggregate.
func (f *Fold) Add(ev *Event) {
	for i := range f.v.Measures {
		m := &f.v.Measures[i]
		if m.Kind().Sketch != SketchHLL {
			m.Add(&f.agg[i], ev)
			continue
		}
		val := &ev.Values[m.fieldIndex]
		if !val.Set {
			continue
		}
		if f.hll == nil {
			f.hll = make([]*hllFold, len(f.agg))
		}
		h := f.hll[i]
		if h == nil {
			h = &hllFold{}
			f.hll[i] = h
		}
		// Insert's hash of Measure.Add's key; the key is built on the stack.
		var buf [64]byte
		key := appendDistinctKey(buf[:0], val)
		h.insert(metro.Hash64(key, hllSeed))
		st := &f.agg[i]
		if st.UniqHLL12 == nil {
			st.UniqHLL12 = new(chstate.Distinct)
		}
		st.UniqHLL12.AddKey(key)
		st.N++
	}
}

// Aggregate finishes f and returns the row's aggregate.
func (f *Fold) Aggregate() Aggregate {
	for i, h := range f.hll {
		if h != nil {
			f.agg[i].HLL = h.sketch()
			f.hll[i] = nil
		}
	}
	return f.agg
}

// The library's constants (hyperloglog v0.3.0, encoding version 2, which
// pins the hash and the sparse precision): Insert hashes with MetroHash64
// and seed 1337; sparse keys keep 25 bits of index.
const (
	hllSeed   = 1337
	hllSparse = 25                // pp
	hllM      = 1 << hllPrecision // registers
	// hllTmpMax is the size of the recent-key set at which the library
	// merges it into the list: the first n with n*100 > m.
	hllTmpMax = hllM/100 + 1
	// hllLogMax bounds the keys a sparse fold remembers for its replay;
	// past it (a row whose values repeat over a long time without the
	// sketch going dense) the fold replays them and continues on the
	// library's sketch.
	hllLogMax = 1 << 16
)

// hllFold is one distinct state of a Fold.
type hllFold struct {
	// While sparse, the library's state: tmp is its recent-key set (open
	// addressing, 0 is free: no key is 0), list its sorted key list.
	tmp       []uint32
	tmpN      int
	list      []uint32
	listBytes int
	// log holds, in order, every key that was new to the recent set: the
	// inserts that changed the library's state; the others did nothing.
	log  []uint32
	regs []uint8             // dense registers, once the library would be dense
	sk   *hyperloglog.Sketch // the library's sketch, after a replay past hllLogMax
	// noLog: no replay (an HLLUnion builds its sketch from the list).
	noLog bool
}

func (h *hllFold) insert(x uint64) {
	switch {
	case h.regs != nil:
		i, r := hllPosVal(x)
		h.regs[i] = max(h.regs[i], r)
		return
	case h.sk != nil:
		h.sk.InsertHash(x)
		return
	}
	h.insertKey(hllEncode(x))
}

// insertKey adds the sparse key k: what the library does with a hash of
// that key, while sparse, and with its register and rank once dense.
func (h *hllFold) insertKey(k uint32) {
	switch {
	case h.regs != nil:
		i, r := hllDecode(k)
		h.regs[i] = max(h.regs[i], r)
		return
	case h.sk != nil:
		h.sk.InsertHash(hllKeyHash(k))
		return
	}
	if !h.tmpAdd(k) {
		return
	}
	if !h.noLog {
		h.log = append(h.log, k)
	}
	if h.tmpN < hllTmpMax {
		return
	}
	h.merge()
	switch {
	case h.listBytes > hllM:
		h.toDense()
	case len(h.log) > hllLogMax:
		h.sk = h.replay()
		*h = hllFold{sk: h.sk}
	}
}

// tmpAdd adds k to the recent-key set and reports whether it was new.
func (h *hllFold) tmpAdd(k uint32) bool {
	if 2*(h.tmpN+1) > len(h.tmp) {
		old := h.tmp
		h.tmp = make([]uint32, max(32, 2*len(old)))
		h.tmpN = 0
		for _, o := range old {
			if o != 0 {
				h.tmpAdd(o)
			}
		}
	}
	mask := uint32(len(h.tmp) - 1)
	hash := k * 0x9e3779b1
	for i := (hash>>16 ^ hash) & mask; ; i = (i + 1) & mask {
		switch h.tmp[i] {
		case k:
			return false
		case 0:
			h.tmp[i] = k
			h.tmpN++
			return true
		}
	}
}

// merge moves the recent keys into the sorted list, as mergeSparse does,
// and keeps listBytes, the length of the library's encoding of the list
// (compressedList.Len: the varints of the first key and of each difference
// to the previous one).
func (h *hllFold) merge() {
	var buf [hllTmpMax]uint32
	keys := buf[:0]
	for _, k := range h.tmp {
		if k != 0 {
			keys = append(keys, k)
		}
	}
	clear(h.tmp)
	h.tmpN = 0
	slices.Sort(keys)
	// Merge from the back into the grown list, inserting the new keys from
	// the largest down: a new key's successor is then the key written just
	// before it, its predecessor the next old key, and the encoding changes
	// by the varints of the two new differences less the one they replace.
	// Keys already in the list leave a gap at the front, closed afterwards.
	n := len(h.list)
	h.list = slices.Grow(h.list, len(keys))[:n+len(keys)]
	i, j, w := n-1, len(keys)-1, n+len(keys)-1
	for ; j >= 0; w-- {
		k := keys[j]
		switch {
		case i >= 0 && h.list[i] > k:
			h.list[w] = h.list[i]
			i--
			continue
		case i >= 0 && h.list[i] == k:
			i--
		default:
			var prev uint32
			if i >= 0 {
				prev = h.list[i]
			}
			h.listBytes += uvarintLen(k - prev)
			if w+1 < len(h.list) {
				next := h.list[w+1]
				h.listBytes += uvarintLen(next-k) - uvarintLen(next-prev)
			}
		}
		h.list[w] = k
		j--
	}
	if gap := w - i; gap > 0 {
		copy(h.list[i+1:], h.list[w+1:])
		h.list = h.list[:len(h.list)-gap]
	}
}

// uvarintLen is the length of the library's varint of d.
func uvarintLen(d uint32) int { return (bits.Len32(d|1) + 6) / 7 }

// toDense writes the registers from the list, as toNormal does.
func (h *hllFold) toDense() {
	regs := make([]uint8, hllM)
	for _, k := range h.list {
		i, r := hllDecode(k)
		regs[i] = max(regs[i], r)
	}
	*h = hllFold{regs: regs}
}

// sketch returns the library's sketch of everything inserted.
func (h *hllFold) sketch() *hyperloglog.Sketch {
	switch {
	case h.sk != nil:
		return h.sk
	case h.regs != nil:
		// The dense encoding: version 2, precision, bias 0, dense, the
		// register count and the registers.
		b := make([]byte, 0, 8+hllM)
		b = append(b, 2, hllPrecision, 0, 0)
		b = binary.BigEndian.AppendUint32(b, hllM)
		b = append(b, h.regs...)
		sk := newHLL()
		if err := sk.UnmarshalBinary(b); err != nil {
			panic("schemas: the dense distinct encoding changed: " + err.Error())
		}
		return sk
	}
	return h.replay()
}

// replay inserts the logged keys into a new library sketch.
func (h *hllFold) replay() *hyperloglog.Sketch {
	sk := newHLL()
	for _, k := range h.log {
		sk.InsertHash(hllKeyHash(k))
	}
	return sk
}

// hllPosVal is the register and rank of a hash (the library's getPosVal).
func hllPosVal(x uint64) (uint32, uint8) {
	i := x >> (64 - hllPrecision)
	w := x<<hllPrecision | 1<<(hllPrecision-1)
	return uint32(i), uint8(bits.LeadingZeros64(w)) + 1
}

// hllEncode is the sparse key of a hash (the library's encodeHash): the
// hash's top 25 bits, shifted left by one; if bits 25..14 from the top
// are all zero the key also carries the rank of the rest, and bit 0 says
// so.
func hllEncode(x uint64) uint32 {
	idx := uint32(x >> (64 - hllSparse))
	if (x>>(64-hllSparse))&(1<<(hllSparse-hllPrecision)-1) == 0 {
		low := x & (1<<(64-hllSparse) - 1)
		zeros := bits.LeadingZeros64(low<<hllSparse|(1<<hllSparse-1)) + 1
		return idx<<7 | uint32(zeros<<1) | 1
	}
	return idx << 1
}

// hllDecode is the register and rank of a sparse key (decodeHash).
func hllDecode(k uint32) (uint32, uint8) {
	if k&1 == 1 {
		return k >> (32 - hllPrecision), uint8((k>>1)&63) + hllSparse - hllPrecision
	}
	i := (k >> (hllSparse - hllPrecision + 1)) & (hllM - 1)
	return i, uint8(bits.LeadingZeros64(uint64(k<<(32-hllSparse+hllPrecision-1))) - 31)
}

// hllKeyHash returns a hash whose sparse key is k (hllEncode's inverse on
// its keys).
func hllKeyHash(k uint32) uint64 {
	if k&1 == 0 {
		return uint64(k>>1) << (64 - hllSparse)
	}
	x := uint64(k>>7) << (64 - hllSparse)
	if zeros := (k >> 1) & 63; zeros < 64-hllSparse+1 {
		x |= 1 << (64 - hllSparse - zeros)
	}
	return x
}
