package chstate

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// ClickHouse 18.16 cannot turn bytes sent by a client into an
// AggregateFunction value: CAST from String is refused ("Conversion from
// String to AggregateFunction … is not supported"), and clickhouse-go's
// native protocol has no AggregateFunction column to insert into. What it
// can do is build a state from values with arrayReduce('…State', array).
// So tandem stores each state as the arrays of values that rebuild it
// exactly, and the SQL view turns them into states:
//
//   - a Distinct as UInt64 keys: uniqHLL12 over String hashes each string
//     to a UInt64 (CityHash64) and then keeps exactly what uniqHLL12 over
//     UInt64 keeps for that number, so arrayReduce('uniqHLL12State', Keys)
//     is the same state, byte for byte (the oracle tests compare). A
//     small state's keys are its hashes, in order; a large state's are one
//     key per non-zero register, chosen so that the counter's hash of it
//     lands in that register with that rank (a preimage of intHash32).
//   - a Quantiles as its centroids: arrayReduce with
//     quantilesTDigestWeightedState adds each (mean, count) as one
//     centroid, which is what ClickHouse's merge of the serialized state
//     does with it.

// UniqHLL12KeysType is the column type of Distinct.AppendKeys's keys.
const UniqHLL12KeysType = "Array(UInt64)"

// AppendKeys appends to dst the keys whose uniqHLL12 over UInt64, inserted
// in order, is d's state byte for byte: its hashes while small, otherwise
// at least 17 keys (so the state is large too) that set exactly d's
// registers. A large state gives at most 4096 keys.
func (d *Distinct) AppendKeys(dst []uint64) []uint64 {
	if !d.isLarge() {
		return append(dst, d.small...)
	}
	n := 0
	if d.sparse != nil {
		for _, x := range d.sparse {
			dst = append(dst, preimage(x>>8, uint8(x), 0))
		}
		n = len(d.sparse)
	} else {
		for i, r := range d.large {
			if r != 0 {
				dst = append(dst, preimage(uint32(i), r, 0))
				n++
			}
		}
	}
	// Keys that collided in a register leave fewer than 17 non-zero
	// registers: add other keys of rank 1 in set registers, which change
	// nothing there, until the set is large. (Rare: the dense copy, 4 KB
	// to clear and fill, is made only then.)
	if n > smallSetSize {
		return dst
	}
	var tmp registers
	regs := d.dense(&tmp)
	for extra := uint32(1); n <= smallSetSize; extra++ {
		for i, r := range regs {
			if r != 0 && n <= smallSetSize {
				dst = append(dst, preimage(uint32(i), 1, extra))
				n++
			}
		}
	}
	return dst
}

// preimages caches preimage(bucket, rank, 0).
var preimages struct {
	once sync.Once
	keys []atomic.Uint64 // [bucket*(maxRank+1)+rank]; 0 until found
}

// preimage returns a key whose intHash32 puts it in bucket with the given
// rank (1..maxRank); variant picks another such key. The search is
// deterministic, so the same state always gives the same keys.
func preimage(bucket uint32, rank uint8, variant uint32) uint64 {
	if variant == 0 {
		preimages.once.Do(func() { preimages.keys = make([]atomic.Uint64, hllBuckets*(maxRank+1)) })
		p := &preimages.keys[int(bucket)*(maxRank+1)+int(rank)]
		k := p.Load()
		if k == 0 {
			// Two goroutines may both search; they find the same key.
			k = findPreimage(bucket, rank, 0)
			p.Store(k)
		}
		return k
	}
	return findPreimage(bucket, rank, variant)
}

// findPreimage inverts intHash32 for a 32-bit hash with the bucket in its
// low 12 bits and the rank as the trailing zeros (plus one) of the other
// 20: every step of the hash is invertible on 64 bits except the
// xor-with-rotation ones, which are solved bit by bit and need an even
// parity, so random upper halves are tried until one inverts.
func findPreimage(bucket uint32, rank uint8, variant uint32) uint64 {
	var h uint32
	if rank < maxRank {
		h = bucket | 1<<(hllPrecision+uint32(rank)-1)
	} else {
		h = bucket // tail 0: the largest rank
	}
	seed := uint64(bucket)<<40 | uint64(rank)<<32 | uint64(variant)
	for {
		seed = splitmix(seed)
		y := seed<<32 | uint64(h)
		if rank < maxRank {
			// Bits above the rank's bit are free in the 32-bit hash too.
			y |= uint64(uint32(seed>>32)) &^ (1<<(hllPrecision+uint32(rank)) - 1) & 0xffffffff
		}
		k, ok := unhash(y)
		if !ok || k == 0 {
			continue
		}
		if got := intHash32(k); got&(hllBuckets-1) == bucket && rankOf(got) == rank {
			return k
		}
	}
}

func rankOf(h uint32) uint8 {
	tail := h >> hllPrecision
	if tail == 0 {
		return maxRank
	}
	if z := bits.TrailingZeros32(tail) + 1; z < maxRank {
		return uint8(z)
	}
	return maxRank
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// unhash inverts intHash32's 64-bit steps: y is the full 64-bit value
// before the truncation to 32 bits.
func unhash(y uint64) (uint64, bool) {
	var ok bool
	if y, ok = unxorRot(y, 22); !ok {
		return 0, false
	}
	y *= inverse(65) // key += key << 6
	if y, ok = unxorRot(y, 11); !ok {
		return 0, false
	}
	y *= inverse(21)
	if y, ok = unxorRot(y, 31); !ok {
		return 0, false
	}
	// key = ^key + key<<18 = key·(2^18 − 1) − 1
	return (y + 1) * inverse(1<<18-1), true
}

// unxorRot solves x ^ rotr(x, r) = y: bit i of y is x_i ^ x_(i+r mod 64),
// so along each cycle of i → i+r one bit is free and the rest follow; it
// has a solution when y's bits on each cycle have even parity.
func unxorRot(y uint64, r int) (uint64, bool) {
	g := gcd(r, 64)
	var x uint64
	for start := 0; start < g; start++ {
		i, xi := start, uint64(0) // x_start = 0
		for range 64/g - 1 {
			next := (i + r) % 64
			xn := xi ^ (y>>i)&1
			x |= xn << next
			i, xi = next, xn
		}
		if xi^(y>>i)&1 != 0 { // closing the cycle back to x_start = 0
			return 0, false
		}
	}
	return x, x^bits.RotateLeft64(x, -r) == y
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// inverse is the multiplicative inverse of an odd a modulo 2^64 (Newton).
func inverse(a uint64) uint64 {
	x := a
	for range 5 {
		x *= 2 - a*x
	}
	return x
}

// QuantilesMeansType and QuantilesCountsType are the column types of
// Quantiles.AppendCentroids's means and counts.
const (
	QuantilesMeansType  = "Array(Float32)"
	QuantilesCountsType = "Array(UInt64)"
)

// AppendCentroids appends the centroids of q's serialized state: the
// means and the counts (whole numbers: every count is a sum of whole
// weights, kept exactly by a Float32 below 2^24 and rounded to a whole
// Float32 above). Adding them in order as weighted values rebuilds what
// ClickHouse's merge of q's serialized state adds.
//
// Unlike MarshalBinary it leaves what q holds as it was: it only sorts
// q's centroids in place (which compress would do first anyway, see
// Quantiles.sorted) and glues them into the output as compress would,
// without a copy. So what q holds after some values never depends on when
// it was read, and the speed layer, which reads a row at every flush,
// writes the same centroids for the same events however its flushes
// fell; and each read sorts only the centroids added since the last.
func (q *Quantiles) AppendCentroids(means []float32, counts []uint64) ([]float32, []uint64) {
	if len(q.centroids) > tdMaxCentroids {
		// Past 2048 centroids compress may also glue in batches
		// (compressBrute), which needs the glued centroids in place: a
		// copy, as MarshalBinary's compress. Only a digest of thousands of
		// values between two reads gets here.
		bufp := copyScratch.Get().(*[]centroid)
		defer copyScratch.Put(bufp)
		c := Quantiles{centroids: append((*bufp)[:0], q.centroids...), count: q.count, unmerged: q.unmerged, sorted: q.sorted}
		c.compress()
		for _, x := range c.centroids {
			means = append(means, x.mean)
			counts = append(counts, uint64(x.count))
		}
		*bufp = c.centroids[:0]
		return means, counts
	}
	if q.unmerged == 0 {
		// Compressed since the last add: the centroids are the state's.
		for _, c := range q.centroids {
			means = append(means, c.mean)
			counts = append(counts, uint64(c.count))
		}
		return means, counts
	}
	q.sortTail()
	return q.appendGlued(means, counts)
}

// appendGlued appends the centroids compress makes of q's sorted
// centroids (at most 2048 of them, so that no batch gluing follows):
// compress's loop step for step, reading q and writing the glued centroids
// to the output instead of back into q. The loop is repeated rather than
// shared: through a shared function (not inlined) Quantiles.Add, whose
// compress runs it, was 1.5 % slower (BenchmarkQuantilesAdd 27.0 → 27.4 ns).
func (q *Quantiles) appendGlued(means []float32, counts []uint64) ([]float32, []uint64) {
	cs := q.centroids
	if len(cs) == 0 {
		return means, counts
	}
	countEps4 := q.count * float64(tdEpsilon) * 4
	sum := 0.0
	lMean := float64(cs[0].mean)
	lCount := float64(cs[0].count)
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
		} else {
			// compress's cs[l], now final: its mean and count as the
			// Float32s it stores (unchanged ones round-trip exactly).
			lc := float32(lCount)
			means = append(means, float32(lMean))
			counts = append(counts, uint64(lc))
			sum += float64(lc)
			lMean = float64(cs[r].mean)
			lCount = float64(cs[r].count)
		}
	}
	means = append(means, float32(lMean))
	counts = append(counts, uint64(float32(lCount)))
	return means, counts
}

// copyScratch holds AppendCentroids's copies.
var copyScratch = sync.Pool{New: func() any { return new([]centroid) }}

// AddCentroids adds centroids as AppendCentroids returns them, each as one
// weighted value: what arrayReduce('quantilesTDigestWeightedState', means,
// counts) builds.
func (q *Quantiles) AddCentroids(means []float32, counts []uint64) {
	for i, m := range means {
		q.AddWeighted(float64(m), counts[i])
	}
}
