package schemas

import (
	"encoding/binary"

	"github.com/axiomhq/hyperloglog"
)

// HLLUnion merges distinct sketches on flat data: the keys of sparse
// sketches into a Fold's plain slices (a recent-key set and a sorted key
// list), the registers of dense ones into a register array. Merging many
// sketches with Measure.Merge makes the library re-encode its whole sparse
// list every 164 new keys, allocating each time; a union allocates only as
// its slices grow. Its Sketch estimates what Measure.Merge of the same
// sketches, in any order, estimates: both hold the union of the sparse
// keys, and both turn dense exactly when that union's encoding passes the
// library's threshold (the encoding only grows as keys are added).
//
// The zero value is the union of nothing. Not safe for concurrent use.
type HLLUnion struct {
	f   hllFold // noLog set by Add
	buf []byte  // a sketch's encoding, reused
	any bool
}

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
	u.any = true
	u.f.noLog = true
	if u.f.sk != nil { // past the replay bound: the library's own merge
		_ = u.f.sk.Merge(sk)
		return
	}
	// The library's version 2 encoding (AppendBinary): version, precision,
	// 0, then 1 and the sparse state or 0 and the registers.
	if len(b) < 8 || b[1] != hllPrecision {
		return // another precision cannot come from a decoded cell
	}
	if b[3] == 0 {
		regs := b[8:]
		if len(regs) != hllM {
			return
		}
		if u.f.regs == nil {
			u.f.merge()
			u.f.toDense()
		}
		for i, r := range regs {
			u.f.regs[i] = max(u.f.regs[i], r)
		}
		return
	}
	// Sparse: the recent-key set (count, keys), then the key list (count,
	// last key, byte length, varints of the first key and the differences).
	n := int(binary.BigEndian.Uint32(b[4:8]))
	p := 8
	for i := 0; i < n && p+4 <= len(b); i++ {
		u.f.insertKey(binary.BigEndian.Uint32(b[p:]))
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
		u.f.insertKey(k)
	}
}

// Sketch returns the library's sketch of the union; nil for the union of
// nothing. u must not be used afterwards.
func (u *HLLUnion) Sketch() *hyperloglog.Sketch {
	if !u.any {
		return nil
	}
	if u.f.regs != nil || u.f.sk != nil {
		return u.f.sketch()
	}
	// Sparse: the library's encoding of a sketch whose recent-key set is
	// empty and whose list holds the union, read back by the library.
	u.f.merge()
	list := u.f.list
	b := append(u.buf[:0], 2, hllPrecision, 0, 1, 0, 0, 0, 0)
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
	sk := newHLL()
	if err := sk.UnmarshalBinary(b); err != nil {
		panic("schemas: the sparse distinct encoding changed: " + err.Error())
	}
	return sk
}

// SparseKeys is a lower bound of the distinct sparse keys in u (the ones
// already in its sorted list); -1 once u is dense. While sparse, the
// library's estimate of the union is at least this many values.
func (u *HLLUnion) SparseKeys() int {
	if u.f.regs != nil || u.f.sk != nil {
		return -1
	}
	return len(u.f.list)
}

// Densify makes u dense now, as the library would once its sparse list is
// long enough; merges of large unions are then cheaper. The union's values
// stay the same; its estimate is the dense one.
func (u *HLLUnion) Densify() {
	switch {
	case u.f.regs != nil:
	case u.f.sk != nil:
		d := hyperloglog.NewNoSparse()
		_ = d.Merge(u.f.sk)
		u.f.sk = d
	default:
		u.f.merge()
		u.f.toDense()
	}
}
