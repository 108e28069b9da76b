package chstate

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"sync"
)

// QuantilesTDigestType is the column type that holds a Quantiles state for
// the levels tandem answers. The levels are part of the type, but not of
// the state's bytes: an analyst may finalize with any levels.
const QuantilesTDigestType = "AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64)"

// The parameters of ClickHouse's QuantileTDigest (fixed in the server).
const (
	tdEpsilon = float32(0.01)
	// tdMaxCentroids bounds a compressed digest on the current engine and
	// tdMaxUnmerged is when it compresses while adding.
	tdMaxCentroids = 2048
	tdMaxUnmerged  = 2048
	// MaxQuantilesCentroids is the most centroids a state may hold: 18.16
	// refuses to read more than 2048 ("Too large t-digest summary size").
	MaxQuantilesCentroids = 2048
)

// MaxQuantilesStateBytes is the largest serialized Quantiles state.
const MaxQuantilesStateBytes = 3 + 8*MaxQuantilesCentroids

type centroid struct {
	mean  float32
	count float32
}

// Quantiles builds the state of ClickHouse's quantilesTDigest over a Float64
// column. It follows the current engine's QuantileTDigest step for step
// (Float32 centroids, compression after every 2048 added centroids and
// before serializing, with Float64 temporaries), so its bytes equal the
// current engine's own quantilesTDigestState over the same values in the
// same order.
//
// The zero value is the state of no values. A Quantiles is not safe for
// concurrent use.
type Quantiles struct {
	centroids []centroid
	count     float64 // sum of the centroids' counts
	unmerged  int     // centroids added since the last compression
	// sorted is how many leading centroids are known to be in radixSort's
	// order. Sorting them in place changes nothing compress computes: a
	// stable sort of (a stable sort of A) followed by B is the stable sort
	// of A followed by B. So a reader that needs the order (AppendCentroids
	// at every speed-layer flush) sorts only what was added since.
	sorted int
}

// Add adds one value. Like ClickHouse it rounds the value to Float32
// (values beyond ±3.4e38 become ±Inf) and ignores NaN.
func (q *Quantiles) Add(x float64) { q.AddWeighted(x, 1) }

// AddWeighted adds a value with weight n (n = 0 adds nothing), as
// ClickHouse's add(x, cnt). It lets a caller build a digest from a
// histogram, for example DDSketch bins, one centroid per bin.
func (q *Quantiles) AddWeighted(x float64, n uint64) {
	v := float32(x)
	if n == 0 || v != v {
		return
	}
	q.addCentroid(centroid{v, float32(n)})
}

func (q *Quantiles) addCentroid(c centroid) {
	q.centroids = append(q.centroids, c)
	q.count += float64(c.count)
	q.unmerged++
	if q.unmerged > tdMaxUnmerged {
		q.compress()
	}
}

// Merge folds src into q as ClickHouse's quantilesTDigestMerge does with a
// serialized src: src's compressed centroids are added one by one. src is
// not changed.
func (q *Quantiles) Merge(src *Quantiles) {
	cs := src.centroids
	// A copy when src is q (adding would move the centroids being read) or
	// has centroids to compress first.
	if src == q || src.unmerged > 0 || len(cs) > tdMaxCentroids {
		c := Quantiles{centroids: append([]centroid(nil), src.centroids...), count: src.count, unmerged: src.unmerged}
		c.compress()
		cs = c.centroids
	}
	for _, c := range cs {
		q.addCentroid(c)
	}
}

// Count is the total weight of the values added (as ClickHouse keeps it, a
// Float64 sum of Float32 counts).
func (q *Quantiles) Count() float64 { return q.count }

// radixKey is ClickHouse's RadixSortFloatTransform: it maps a Float32's bits
// to an unsigned key in the order ClickHouse's radix sort puts centroids in
// (-0 before +0, which a float comparison would call equal).
func radixKey(f float32) uint32 {
	b := math.Float32bits(f)
	if b&0x80000000 != 0 {
		return ^b
	}
	return b ^ 0x80000000
}

// radixScratch holds radixSort's buffers between compressions: a digest
// compresses every 2048 values, and a buffer per digest would double its
// memory.
var radixScratch = sync.Pool{New: func() any { return new([]centroid) }}

// radixSort sorts centroids by radixKey of their means, stably, as the LSD
// radix sort ClickHouse uses: the same order as a stable comparison sort,
// in linear time (compression is most of the per-value cost otherwise).
// Passes over a byte that every key shares are skipped.
func radixSort(cs []centroid) {
	if len(cs) < 2 {
		return
	}
	if len(cs) <= insertionMax {
		insertionSort(cs)
		return
	}
	bufp := radixScratch.Get().(*[]centroid)
	defer radixScratch.Put(bufp)
	if cap(*bufp) < len(cs) {
		*bufp = make([]centroid, len(cs))
	}
	src, dst := cs, (*bufp)[:len(cs)]
	var counts [4][256]int
	for _, c := range src {
		k := radixKey(c.mean)
		counts[0][k&0xff]++
		counts[1][k>>8&0xff]++
		counts[2][k>>16&0xff]++
		counts[3][k>>24]++
	}
	for pass := range 4 {
		shift := 8 * uint(pass)
		cnt := &counts[pass]
		if cnt[radixKey(src[0].mean)>>shift&0xff] == len(src) {
			continue // every key has this byte: the order stays
		}
		pos := 0
		for b := range cnt {
			n := cnt[b]
			cnt[b] = pos
			pos += n
		}
		for _, c := range src {
			b := radixKey(c.mean) >> shift & 0xff
			dst[cnt[b]] = c
			cnt[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &cs[0] {
		copy(cs, src)
	}
}

// insertionMax is the longest input radixSort sorts by insertion: below
// it the radix sort's fixed work (four 256-entry histograms, cleared and
// summed) costs more than the comparisons. The speed layer compresses a
// copy of every changed row's digest at each flush, most of them a few
// values (BenchmarkSinkBlock).
const insertionMax = 64

// insertionSort is a stable insertion sort by radixKey: the same order as
// radixSort's.
func insertionSort(cs []centroid) {
	for i := 1; i < len(cs); i++ {
		c := cs[i]
		k := radixKey(c.mean)
		j := i
		for ; j > 0 && radixKey(cs[j-1].mean) > k; j-- {
			cs[j] = cs[j-1]
		}
		cs[j] = c
	}
}

func canBeMerged(lMean float64, rMean float32) bool {
	return lMean == float64(rMean) || (!math.IsInf(lMean, 0) && !math.IsInf(float64(rMean), 0))
}

// compress is QuantileTDigest::compress of the current engine: a stable
// sort by mean (LSD radix sort there), then neighbours are glued while their
// joint weight stays within 4·ε·N·q(1−q). Every float64 conversion below
// mirrors a Float64 temporary there; the explicit conversions also keep the
// compiler from fusing a multiply and add, which would change the rounding.
func (q *Quantiles) compress() {
	if q.unmerged > 0 || len(q.centroids) > tdMaxCentroids {
		q.sortTail()
		cs := q.centroids
		l := 0
		countEps4 := q.count * float64(tdEpsilon) * 4
		sum := 0.0
		lMean := float64(cs[l].mean)
		lCount := float64(cs[l].count)
		for r := 1; r < len(cs); r++ {
			ql := (sum + float64(lCount*0.5)) / q.count
			err := ql * (1 - ql)
			qr := (sum + lCount + float64(float64(cs[r].count)*0.5)) / q.count
			err2 := qr * (1 - qr)
			if err > err2 {
				err = err2
			}
			k := countEps4 * err
			if lCount+float64(cs[r].count) <= k && canBeMerged(lMean, cs[r].mean) {
				lCount += float64(cs[r].count)
				if float64(cs[r].mean) != lMean {
					lMean += float64(float64(cs[r].count)*(float64(cs[r].mean)-lMean)) / lCount
				}
				cs[l].mean = float32(lMean)
				cs[l].count = float32(lCount)
			} else {
				sum += float64(cs[l].count)
				l++
				if l != r {
					cs[l] = cs[r]
				}
				lMean = float64(cs[l].mean)
				lCount = float64(cs[l].count)
			}
		}
		q.count = sum + lCount
		q.centroids = cs[:l+1]
		q.unmerged = 0
	}
	q.compressBrute()
	// Gluing keeps the order up to rounding of the glued means; what the
	// next sortTail may assume is checked, not argued.
	q.sorted = sortedPrefix(q.centroids)
}

// sortedPrefix is the length of cs's leading run in radixSort's order.
func sortedPrefix(cs []centroid) int {
	for i := 1; i < len(cs); i++ {
		if radixKey(cs[i].mean) < radixKey(cs[i-1].mean) {
			return i
		}
	}
	return len(cs)
}

// sortTail puts q's centroids in radixSort's order, stably, in place:
// it sorts those after the sorted prefix and merges them in (the
// prefix's first on equal keys, as a stable sort of the whole keeps them).
func (q *Quantiles) sortTail() {
	cs := q.centroids
	if q.sorted >= len(cs) {
		return
	}
	mid := q.sorted
	if tail := cs[mid:]; len(tail) > mid {
		// Mostly new centroids (compress after 2048 adds): sorting all
		// costs about what sorting the tail does, and needs no merge.
		radixSort(cs)
	} else {
		radixSort(tail)
		if mid > 0 && radixKey(cs[mid-1].mean) > radixKey(tail[0].mean) {
			mergeSorted(cs, mid)
		}
	}
	q.sorted = len(cs)
}

// mergeSorted merges the sorted runs cs[:mid] and cs[mid:] in place,
// stably, from the back, through a copy of the second run.
func mergeSorted(cs []centroid, mid int) {
	bufp := radixScratch.Get().(*[]centroid)
	defer radixScratch.Put(bufp)
	tail := append((*bufp)[:0], cs[mid:]...)
	*bufp = tail
	i, j := mid-1, len(tail)-1
	for k := len(cs) - 1; j >= 0; k-- {
		if i >= 0 && radixKey(cs[i].mean) > radixKey(tail[j].mean) {
			cs[k] = cs[i]
			i--
		} else {
			cs[k] = tail[j]
			j--
		}
	}
}

// compressBrute is QuantileTDigest::compressBrute: if compression left more
// than 2048 centroids, glue them in equal batches.
func (q *Quantiles) compressBrute() {
	cs := q.centroids
	if len(cs) <= tdMaxCentroids {
		return
	}
	batch := (len(cs) + tdMaxCentroids - 1) / tdMaxCentroids
	l := 0
	sum := 0.0
	lMean := float64(cs[l].mean)
	lCount := float64(cs[l].count)
	pos := 0
	for r := 1; r < len(cs); r++ {
		if pos < batch-1 {
			lCount += float64(cs[r].count)
			if float64(cs[r].mean) != lMean {
				lMean += float64(float64(cs[r].count)*(float64(cs[r].mean)-lMean)) / lCount
			}
			cs[l].mean = float32(lMean)
			cs[l].count = float32(lCount)
			pos++
		} else {
			if cs[l].mean == cs[l].mean { // a batch that came out NaN is dropped
				sum += float64(cs[l].count)
				l++
			}
			cs[l] = cs[r]
			lMean = float64(cs[l].mean)
			lCount = float64(cs[l].count)
			pos = 0
		}
	}
	if cs[l].mean == cs[l].mean {
		q.count = sum + lCount
		q.centroids = cs[:l+1]
	} else {
		q.count = sum
		q.centroids = cs[:l]
	}
}

// MarshalBinary compresses the digest and returns it as ClickHouse
// serializes it (the bytes of an AggregateFunction(quantilesTDigest(…),
// Float64) value in RowBinary or Native): VarUInt count of centroids, then
// each centroid's Float32 mean and Float32 count, little-endian, in
// ascending order of mean.
func (q *Quantiles) MarshalBinary() ([]byte, error) { return q.AppendBinary(nil), nil }

// AppendBinary appends MarshalBinary's bytes to dst. It compresses q, which
// does not change what q holds, only how.
func (q *Quantiles) AppendBinary(dst []byte) []byte {
	if len(q.centroids) > 0 {
		q.compress()
	}
	dst = binary.AppendUvarint(dst, uint64(len(q.centroids)))
	for _, c := range q.centroids {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(c.mean))
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(c.count))
	}
	return dst
}

// UnmarshalBinary replaces q with the state in b, which must be exactly one
// serialized quantilesTDigest state. It refuses what ClickHouse would not
// have written or could not read on both versions: more than 2048
// centroids, a count that is not positive and finite, a NaN mean, means out
// of ascending order, or trailing bytes. It allocates at most what the
// stated count of centroids needs and only after checking b holds them.
func (q *Quantiles) UnmarshalBinary(b []byte) error {
	n, k := uvarint(b)
	if k <= 0 || n > MaxQuantilesCentroids {
		return fmt.Errorf("%w: quantilesTDigest: centroid count is not a number up to %d", ErrBadState, MaxQuantilesCentroids)
	}
	rest := b[k:]
	if uint64(len(rest)) != 8*n {
		return fmt.Errorf("%w: quantilesTDigest: %d centroids in %d bytes", ErrBadState, n, len(rest))
	}
	cs := make([]centroid, n)
	total := 0.0
	for i := range cs {
		c := centroid{
			mean:  math.Float32frombits(binary.LittleEndian.Uint32(rest[8*i:])),
			count: math.Float32frombits(binary.LittleEndian.Uint32(rest[8*i+4:])),
		}
		if !(c.count > 0) || math.IsInf(float64(c.count), 0) {
			return fmt.Errorf("%w: quantilesTDigest: centroid %d has count %g", ErrBadState, i, c.count)
		}
		if c.mean != c.mean {
			return fmt.Errorf("%w: quantilesTDigest: centroid %d has a NaN mean", ErrBadState, i)
		}
		if i > 0 && radixKey(c.mean) < radixKey(cs[i-1].mean) {
			return fmt.Errorf("%w: quantilesTDigest: centroid %d is out of order", ErrBadState, i)
		}
		cs[i] = c
		total += float64(c.count)
	}
	*q = Quantiles{centroids: cs, count: total, sorted: len(cs)}
	return nil
}

// Quantiles returns the values at levels (each in [0, 1]) as the current
// engine's quantilesTDigestMerge(levels) finalizes this state, digit for
// digit: the centroids are walked in order and the answer interpolated
// between neighbouring means in Float32, a singleton centroid answering
// its own value. With no values every answer is NaN. It compresses q, which
// does not change what q holds. (18.16 interpolates without the singleton
// rule, so its answers can differ within the rank bound.)
func (q *Quantiles) Quantiles(levels ...float64) []float64 {
	out := make([]float64, len(levels))
	if len(q.centroids) == 0 {
		for i := range out {
			// ClickHouse's quiet NaN, bit for bit (Go's math.NaN has
			// another payload).
			out[i] = float64(math.Float32frombits(0x7fc00000))
		}
		return out
	}
	q.compress()
	cs := q.centroids
	if len(cs) == 1 {
		for i := range out {
			out[i] = float64(cs[0].mean)
		}
		return out
	}
	perm := make([]int, len(levels))
	for i := range perm {
		perm[i] = i
	}
	sort.SliceStable(perm, func(i, j int) bool { return levels[perm[i]] < levels[perm[j]] })
	oneHalf := func(b bool) float64 {
		if b {
			return 0.5
		}
		return 0
	}
	ri := 0
	if len(levels) == 0 {
		return out
	}
	x := levels[perm[0]] * q.count
	prevX := 0.0
	var sum float32 // a Float32 in ClickHouse too
	prevMean, prevCount := cs[0].mean, cs[0].count
	for _, c := range cs {
		currentX := float64(sum) + float64(c.count)*0.5
		if currentX >= x {
			left := prevX + oneHalf(prevCount == 1)
			right := currentX - oneHalf(c.count == 1)
			for currentX >= x {
				switch {
				case x <= left:
					out[perm[ri]] = float64(prevMean)
				case x >= right:
					out[perm[ri]] = float64(c.mean)
				default:
					out[perm[ri]] = float64(interpolate(float32(x), float32(left), prevMean, float32(right), c.mean))
				}
				ri++
				if ri == len(levels) {
					return out
				}
				x = levels[perm[ri]] * q.count
			}
		}
		sum += c.count
		prevMean, prevCount, prevX = c.mean, c.count, currentX
	}
	for ; ri < len(levels); ri++ {
		out[perm[ri]] = float64(cs[len(cs)-1].mean)
	}
	return out
}

// interpolate is QuantileTDigest::interpolate: Float32 arguments, the slope
// in Float32, the blend in Float64 (conversions keep it unfused).
func interpolate(x, x1, y1, x2, y2 float32) float32 {
	k := float64((x - x1) / (x2 - x1))
	return float32(float64((1-k)*float64(y1)) + float64(k*float64(y2)))
}
