package chstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/go-faster/city"
)

// UniqHLL12Type is the column type that holds a Distinct state.
const UniqHLL12Type = "AggregateFunction(uniqHLL12, String)"

// The shape of ClickHouse's uniqHLL12 over a String column:
// HyperLogLogWithSmallSetOptimization<UInt64, 16, 12> fed with
// CityHash64 (v1.0.2) of each string, whose large form is
// HyperLogLogCounter<12, IntHash32<UInt64>, UInt32, double> with the
// default FullFeatured mode and StableIfBig denominator.
const (
	smallSetSize = 16
	hllPrecision = 12
	hllBuckets   = 1 << hllPrecision // 4096
	rankWidth    = 5                 // bits per register (UInt32 hash values)
	// maxRank is sizeof(UInt32)*8 - precision + 1: the rank of a hash
	// whose 20 tail bits are all zero.
	maxRank      = 32 - hllPrecision + 1 // 21
	rankBytes    = hllBuckets * rankWidth / 8
	denomEntries = maxRank + 1
	// largeBytes is sizeof(HyperLogLogCounter): the register array, the
	// UInt32 rank histogram (the "stable" denominator) and the UInt16 count
	// of zero registers, written as the raw struct.
	largeBytes = rankBytes + 4*denomEntries + 2 // 2650
)

// MaxDistinctStateBytes is the largest serialized Distinct state: the
// is-large flag and the HyperLogLog counter.
const MaxDistinctStateBytes = 1 + largeBytes // 2651

// DistinctSQLRelativeError is the stated bound of uniqHLL12Merge over
// Distinct states: about five standard errors of a HyperLogLog of 2^12
// registers (1.04/√4096 = 1.6%), because ClickHouse's estimator, which
// these states reproduce byte for byte, errs more than that in its
// correction region: over 300 random sets of 10,000 keys the worst was
// 6.9%, over 4,000 of 67 keys 7.5%. Up to 16 distinct keys the answer is
// exact. The oracle tests hold it on both servers, which finalize the same
// bytes to the same number. (An analyst comparing with
// uniqHLL12(toString(x)) on raw rows of a current server may see another
// number: it drops the injective toString and hashes x as a number.)
const DistinctSQLRelativeError = 0.08

// DistinctSQLAbsoluteError: past 16 keys a small count can be off by a few
// register collisions (up to 5 of 50 keys in 4,000 random sets), which no
// relative bound covers; see DistinctSQLBound.
const DistinctSQLAbsoluteError = 5

// DistinctSQLBound is the stated error bound of uniqHLL12Merge when the
// true count is n: 0 up to 16 (the state is the set of hashes), otherwise
// the larger of DistinctSQLRelativeError·n and DistinctSQLAbsoluteError.
func DistinctSQLBound(n int) float64 {
	if n <= smallSetSize {
		return 0
	}
	return max(DistinctSQLRelativeError*float64(n), DistinctSQLAbsoluteError)
}

// ErrBadState is wrapped by every UnmarshalBinary error: the bytes are not a
// state this package writes.
var ErrBadState = errors.New("chstate: bad aggregate-function state")

// Distinct builds the state of ClickHouse's uniqHLL12 over a String column,
// byte for byte: up to 16 distinct keys are kept as their 64-bit hashes in
// insertion order (the count is exact), the 17th turns the state into a
// HyperLogLog of 4096 5-bit registers.
//
// The zero value is the state of no keys. A Distinct is not safe for
// concurrent use.
type Distinct struct {
	small []uint64 // hashes in insertion order, while not large
	// Once more than 16 distinct keys were seen the state is large: its
	// registers, held as sparse (the set registers, sorted, as
	// bucket<<8 | rank) until sparseMax of them are set, then dense. Only
	// the memory differs: both serialize as ClickHouse's registers. A
	// speed-layer row of a few hundred users costs a few hundred entries,
	// not 4 KB.
	sparse []uint32
	large  *registers // dense registers
}

// sparseMax is the most set registers a sparse state holds: 4 bytes each,
// half the 4,096 bytes of the dense registers.
const sparseMax = hllBuckets / 8

// isLarge reports whether the state is large, sparse or dense.
func (d *Distinct) isLarge() bool { return d.large != nil || d.sparse != nil }

// setMax raises register bucket to rank if it is below.
func (d *Distinct) setMax(bucket uint32, rank uint8) {
	if d.large != nil {
		if rank > d.large[bucket] {
			d.large[bucket] = rank
		}
		return
	}
	e := bucket << 8
	i, _ := slices.BinarySearch(d.sparse, e)
	if i < len(d.sparse) && d.sparse[i]>>8 == bucket {
		if uint8(d.sparse[i]) < rank {
			d.sparse[i] = e | uint32(rank)
		}
		return
	}
	if len(d.sparse) >= sparseMax {
		regs := new(registers)
		for _, x := range d.sparse {
			regs[x>>8] = uint8(x)
		}
		d.large, d.sparse = regs, nil
		d.large[bucket] = rank
		return
	}
	d.sparse = slices.Insert(d.sparse, i, e|uint32(rank))
}

// dense returns the large state's registers: the dense ones, or tmp
// filled from the sparse ones.
func (d *Distinct) dense(tmp *registers) *registers {
	if d.large != nil {
		return d.large
	}
	*tmp = registers{}
	for _, x := range d.sparse {
		tmp[x>>8] = uint8(x)
	}
	return tmp
}

// AddKey adds one value. ClickHouse hashes a String value's bytes, so key
// must be the value's canonical text: for tandem's distinct measures the
// same key the measure's own sketch hashes (see schemas.Measure.Add), so
// that an int 1 and a string "1" count alike in SQL as in the REST answer.
func (d *Distinct) AddKey(key []byte) { d.insert(city.CH64(key)) }

// AddString is AddKey for a string.
func (d *Distinct) AddString(key string) {
	// Converting for the hash does not escape, so no copy is kept.
	d.insert(city.CH64([]byte(key)))
}

func (d *Distinct) insert(h uint64) {
	if d.isLarge() {
		bucket, rank := position(h)
		d.setMax(bucket, rank)
		return
	}
	for _, x := range d.small {
		if x == h {
			return
		}
	}
	if len(d.small) < smallSetSize {
		d.small = append(d.small, h)
		return
	}
	d.toLarge()
	d.insert(h)
}

func (d *Distinct) toLarge() {
	small := d.small
	d.small, d.sparse = nil, make([]uint32, 0, 2*smallSetSize)
	for _, x := range small {
		d.insert(x)
	}
}

// Merge folds src into d the way ClickHouse's uniqHLL12Merge does: a small
// src is inserted key by key in its order, a large one register by register.
func (d *Distinct) Merge(src *Distinct) {
	if !src.isLarge() {
		for _, x := range src.small {
			d.insert(x)
		}
		return
	}
	if !d.isLarge() {
		d.toLarge()
	}
	if src.sparse != nil {
		// A copy when src is d: setMax may move d's entries.
		for _, x := range slices.Clone(src.sparse) {
			d.setMax(x>>8, uint8(x))
		}
		return
	}
	for i, r := range src.large {
		if r != 0 {
			d.setMax(uint32(i), r)
		}
	}
}

// Exact reports whether the state still holds every key's hash (at most 16
// distinct keys), so that uniqHLL12Merge of this state alone is exact up to
// 64-bit hash collisions.
func (d *Distinct) Exact() bool { return !d.isLarge() }

// Len is the number of distinct keys while Exact; -1 afterwards.
func (d *Distinct) Len() int {
	if d.isLarge() {
		return -1
	}
	return len(d.small)
}

// intHash32 is ClickHouse's intHash32<0> (Thomas Wang's 64-to-32-bit hash
// with rotations), which the HyperLogLog counter applies to each key.
func intHash32(key uint64) uint32 {
	key = ^key + key<<18
	key ^= bits.RotateLeft64(key, -31)
	key *= 21
	key ^= bits.RotateLeft64(key, -11)
	key += key << 6
	key ^= bits.RotateLeft64(key, -22)
	return uint32(key)
}

type registers [hllBuckets]uint8

// position is the register a key lands in and its rank there.
func position(key uint64) (bucket uint32, rank uint8) {
	h := intHash32(key)
	bucket = h & (hllBuckets - 1)
	tail := h >> hllPrecision
	rank = uint8(maxRank)
	if tail != 0 {
		if z := bits.TrailingZeros32(tail) + 1; z < maxRank {
			rank = uint8(z)
		}
	}
	return bucket, rank
}

// MarshalBinary returns the state as ClickHouse serializes it (the bytes of
// an AggregateFunction(uniqHLL12, String) value in RowBinary or Native):
// a bool is-large byte, then either the small set (VarUInt count and the
// 64-bit hashes, little-endian, in insertion order) or the raw
// HyperLogLogCounter struct.
func (d *Distinct) MarshalBinary() ([]byte, error) { return d.AppendBinary(nil), nil }

// AppendBinary appends MarshalBinary's bytes to dst.
func (d *Distinct) AppendBinary(dst []byte) []byte {
	if !d.isLarge() {
		dst = append(dst, 0)
		dst = binary.AppendUvarint(dst, uint64(len(d.small)))
		for _, x := range d.small {
			dst = binary.LittleEndian.AppendUint64(dst, x)
		}
		return dst
	}
	dst = append(dst, 1)
	start := len(dst)
	dst = append(dst, make([]byte, largeBytes)...)
	packed := dst[start : start+rankBytes]
	var hist [denomEntries]uint32
	var tmp registers
	for i, r := range d.dense(&tmp) {
		hist[r]++
		// Register i occupies bits [5i, 5i+5) of a little-endian bit string
		// (ClickHouse's CompactArray).
		bit := i * rankWidth
		v := uint16(r) << (bit % 8)
		packed[bit/8] |= byte(v)
		if hi := byte(v >> 8); hi != 0 {
			packed[bit/8+1] |= hi
		}
	}
	// The denominator is the histogram of register values; the counter
	// keeps it up to date on every insert, so it equals the histogram.
	for i, n := range hist {
		binary.LittleEndian.PutUint32(dst[start+rankBytes+4*i:], n)
	}
	binary.LittleEndian.PutUint16(dst[start+rankBytes+4*denomEntries:], uint16(hist[0]))
	return dst
}

// UnmarshalBinary replaces d with the state in b, which must be exactly one
// serialized uniqHLL12 state. It refuses anything ClickHouse would not have
// written: a small set of more than 16 or repeated hashes, a register above
// the maximum rank, a denominator or zero count that disagrees with the
// registers, or trailing bytes. Its allocation is bounded by
// MaxDistinctStateBytes whatever b holds.
func (d *Distinct) UnmarshalBinary(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: uniqHLL12: empty", ErrBadState)
	}
	switch b[0] {
	case 0:
		n, k := uvarint(b[1:])
		if k <= 0 || n > smallSetSize {
			return fmt.Errorf("%w: uniqHLL12: small-set size is not a count up to %d", ErrBadState, smallSetSize)
		}
		rest := b[1+k:]
		if uint64(len(rest)) != 8*n {
			return fmt.Errorf("%w: uniqHLL12: small set of %d hashes has %d bytes", ErrBadState, n, len(rest))
		}
		small := make([]uint64, 0, n)
		for i := uint64(0); i < n; i++ {
			h := binary.LittleEndian.Uint64(rest[8*i:])
			for _, x := range small {
				if x == h {
					return fmt.Errorf("%w: uniqHLL12: small set repeats a hash", ErrBadState)
				}
			}
			small = append(small, h)
		}
		*d = Distinct{small: small}
		return nil
	case 1:
		if len(b) != MaxDistinctStateBytes {
			return fmt.Errorf("%w: uniqHLL12: HyperLogLog of %d bytes, want %d", ErrBadState, len(b)-1, largeBytes)
		}
		body := b[1:]
		regs := new(registers)
		var hist [denomEntries]uint32
		for i := range regs {
			bit := i * rankWidth
			v := uint16(body[bit/8])
			if bit/8+1 < rankBytes {
				v |= uint16(body[bit/8+1]) << 8
			}
			r := uint8(v>>(bit%8)) & (1<<rankWidth - 1)
			if r > maxRank {
				return fmt.Errorf("%w: uniqHLL12: register %d has rank %d above %d", ErrBadState, i, r, maxRank)
			}
			regs[i] = r
			hist[r]++
		}
		for i, n := range hist {
			if got := binary.LittleEndian.Uint32(body[rankBytes+4*i:]); got != n {
				return fmt.Errorf("%w: uniqHLL12: denominator counts %d registers of rank %d, the registers hold %d", ErrBadState, got, i, n)
			}
		}
		if got := binary.LittleEndian.Uint16(body[rankBytes+4*denomEntries:]); uint32(got) != hist[0] {
			return fmt.Errorf("%w: uniqHLL12: zero count %d, the registers hold %d zeros", ErrBadState, got, hist[0])
		}
		*d = Distinct{large: regs}
		return nil
	}
	return fmt.Errorf("%w: uniqHLL12: first byte %d is not a bool", ErrBadState, b[0])
}

// uvarint reads a VarUInt as ClickHouse writes it: the shortest encoding,
// so that one state has one byte form.
func uvarint(b []byte) (uint64, int) {
	n, k := binary.Uvarint(b)
	if k <= 0 || k != len(binary.AppendUvarint(nil, n)) {
		return 0, 0
	}
	return n, k
}

// Estimate is the number uniqHLL12Merge finalizes this state to: the exact
// count while Exact, else ClickHouse's HyperLogLog estimate (raw harmonic
// mean, linear counting up to 2.5·4096, rounded half up). The REST API can
// answer from it with the same digits as the SQL view.
func (d *Distinct) Estimate() uint64 {
	if !d.isLarge() {
		return uint64(len(d.small))
	}
	var hist [denomEntries]uint32
	if d.sparse != nil {
		hist[0] = hllBuckets - uint32(len(d.sparse))
		for _, x := range d.sparse {
			hist[uint8(x)]++
		}
	} else {
		for _, r := range d.large {
			hist[r]++
		}
	}
	// The denominator Σ 2^-rank, summed from the top rank down by halving
	// as ClickHouse does; every partial sum is exact in a float64.
	den := float64(hist[denomEntries-1])
	for i := denomEntries - 2; i >= 0; i-- {
		den /= 2
		den += float64(hist[i])
	}
	const m = float64(hllBuckets)
	alpha := 0.7213 / (1 + 1.079/m)
	raw := alpha * m * m / den
	est := raw
	if raw <= 4294967296.0/30.0 && raw <= 2.5*m && hist[0] != 0 {
		est = m * (math.Log(m) - math.Log(float64(hist[0])))
	}
	return uint64(est + 0.5)
}
