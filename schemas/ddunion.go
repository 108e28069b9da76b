package schemas

import (
	"slices"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// DDUnion merges quantile sketches on flat data: the bins of every sketch
// added, first as a list of (index, count) pairs and, once that list is
// long, into plain count arrays (positive and negative values), plus a
// zero count; it builds one sketch at the end. Merging with Measure.Merge
// copies the first sketch's stores and merges each further sketch store
// by store; a union of flat sketches (AddFlat, from DecodeDDFlat) adds
// counts in a loop. Bin counts are whole numbers, so their sums do not
// depend on the order: Sketch has exactly the bins, and therefore the
// quantiles, that Measure.Merge of the same sketches gives.
//
// The zero value is the union of nothing. Not safe for concurrent use.
type DDUnion struct {
	pos, neg   ddBins
	zero       float64
	any        bool
	addP, addN func(index int, count float64) bool // bound once: no closure per Add
	// later holds unions merged with MergeLater whose bins are not added
	// yet (flush adds them all, into stores sized once). Each one's own
	// bins are added: a noted union's own later ones are noted beside it.
	later []*DDUnion
}

// ddSparseMax is how many pairs a union keeps before it switches to count
// arrays: a group of a few sketches stays a short list (no array over
// their whole index range), a group of many adds into arrays.
const ddSparseMax = 512

// ddBins is one store's counts: pairs while short, then bins[i] for index
// i+offset.
type ddBins struct {
	idx    []int32
	cnt    []float64
	bins   []float64 // non-nil once dense
	offset int
	lo, hi int // the lowest and highest index with a count
	some   bool
}

func (b *ddBins) span(lo, hi int) {
	if !b.some {
		b.lo, b.hi, b.some = lo, hi, true
		return
	}
	b.lo, b.hi = min(b.lo, lo), max(b.hi, hi)
}

// add adds one bin (the signature of the library's ForEach).
func (b *ddBins) add(index int, count float64) bool {
	if count == 0 {
		return false
	}
	b.span(index, index)
	if b.bins == nil {
		b.idx = append(b.idx, int32(index))
		b.cnt = append(b.cnt, count)
		if len(b.idx) > ddSparseMax {
			b.densify()
		}
		return false
	}
	b.ensure(index)
	b.bins[index-b.offset] += count
	return false
}

// addFlat adds every bin of f.
func (b *ddBins) addFlat(f *FlatBins) {
	if len(f.Index) == 0 {
		return
	}
	b.span(int(f.Lo), int(f.Hi))
	if b.bins == nil && len(b.idx)+len(f.Index) <= ddSparseMax {
		b.idx = append(b.idx, f.Index...)
		b.cnt = append(b.cnt, f.Count...)
		return
	}
	if b.bins == nil {
		b.densify()
	}
	b.ensure(int(f.Lo))
	b.ensure(int(f.Hi))
	bins, off := b.bins, b.offset
	for k, i := range f.Index {
		bins[int(i)-off] += f.Count[k]
	}
}

// densify moves the pairs into count arrays over lo … hi, with slack.
func (b *ddBins) densify() {
	b.bins = make([]float64, b.hi-b.lo+1+64)
	b.offset = b.lo - 32
	for k, i := range b.idx {
		b.bins[int(i)-b.offset] += b.cnt[k]
	}
	b.idx, b.cnt = nil, nil
}

// ensure makes room for index, at least doubling the array.
func (b *ddBins) ensure(index int) {
	if index >= b.offset && index < b.offset+len(b.bins) {
		return
	}
	lo, hi := min(index, b.offset), max(index, b.offset+len(b.bins)-1)
	n := max(2*len(b.bins), hi-lo+1+64)
	start := lo // slack on the side that grew
	if index < b.offset {
		start = hi - n + 1
	}
	bins := make([]float64, n)
	copy(bins[b.offset-start:], b.bins)
	b.bins, b.offset = bins, start
}

// fill adds b's bins to st: the extremes first, so the dense store sizes
// itself once.
func (b *ddBins) fill(st store.Store) {
	if !b.some {
		return
	}
	if b.bins == nil {
		for k, i := range b.idx {
			if int(i) == b.lo || int(i) == b.hi {
				st.AddWithCount(int(i), b.cnt[k])
			}
		}
		for k, i := range b.idx {
			if int(i) != b.lo && int(i) != b.hi {
				st.AddWithCount(int(i), b.cnt[k])
			}
		}
		return
	}
	st.AddWithCount(b.lo, b.bins[b.lo-b.offset])
	if b.hi != b.lo {
		st.AddWithCount(b.hi, b.bins[b.hi-b.offset])
	}
	for i := b.lo + 1; i < b.hi; i++ {
		if c := b.bins[i-b.offset]; c != 0 {
			st.AddWithCount(i, c)
		}
	}
}

// store is the library store b fills: its dense one, a flat array (the
// paged default costs more to fill bin by bin, measured).
func (b *ddBins) store() store.Store {
	return store.NewDenseStore()
}

// Add merges dd (nil: nothing) into u. dd is only read.
func (u *DDUnion) Add(dd *ddsketch.DDSketch) {
	if dd == nil {
		return
	}
	if u.addP == nil {
		u.addP, u.addN = u.pos.add, u.neg.add
	}
	u.any = true
	u.zero += dd.GetZeroCount()
	dd.GetPositiveValueStore().ForEach(u.addP)
	dd.GetNegativeValueStore().ForEach(u.addN)
}

// AddFlat merges f (nil: nothing) into u. f is only read.
func (u *DDUnion) AddFlat(f *DDFlat) {
	if f == nil {
		return
	}
	u.any = true
	u.zero += f.Zero
	u.pos.addFlat(&f.Pos)
	u.neg.addFlat(&f.Neg)
}

// Sketch returns the merged sketch, or nil when nothing was added.
func (u *DDUnion) Sketch() *ddsketch.DDSketch {
	if !u.any {
		return nil
	}
	u.flush(false)
	dd := ddsketch.NewDDSketch(ddMapping, u.pos.store(), u.neg.store())
	u.pos.fill(dd.GetPositiveValueStore())
	u.neg.fill(dd.GetNegativeValueStore())
	if u.zero != 0 {
		_ = dd.AddWithCount(0, u.zero)
	}
	return dd
}

// Merge merges o (nil: nothing) into u: the same bins, so the same sketch,
// as adding to u every sketch added to o. o is only read, so one union (a
// cached speed rollup's) can be merged into many.
func (u *DDUnion) Merge(o *DDUnion) {
	if o == nil || !o.any {
		return
	}
	u.mergeOwn(o)
	for _, l := range o.later {
		u.mergeOwn(l)
	}
}

// mergeOwn adds o's own bins (not the unions o noted) to u.
func (u *DDUnion) mergeOwn(o *DDUnion) {
	u.any = true
	u.zero += o.zero
	u.pos.merge(&o.pos)
	u.neg.merge(&o.neg)
}

// MergeLater merges o into u as Merge does, except that o is only noted
// and its bins added when u is next read (flush: Sketch, Quantiles, Trim,
// Bytes), all at once into stores sized for them: a group that takes in
// several unions allocates its counts once instead of growing them with
// each. o must not change until then (a cached rollup's or a finished
// row's union, which are only read). Bin counts are whole numbers, so
// when they are added does not change a sum.
func (u *DDUnion) MergeLater(o *DDUnion) {
	if o == nil || !o.any {
		return
	}
	if !u.any {
		u.Merge(o) // into an empty union: a copy, and no list to keep
		return
	}
	if u.later == nil {
		u.later = make([]*DDUnion, 0, 4) // a group's parts: one per partition or so
	}
	u.later = append(u.later, o)
	u.later = append(u.later, o.later...)
	if len(u.later) >= ddMaxLater {
		u.flush(false)
	}
}

// ddMaxLater bounds the unions a union notes before it adds them.
const ddMaxLater = 64

// flush adds the bins of the unions MergeLater noted; into count arrays
// when dense is set (Quantiles reads them so).
func (u *DDUnion) flush(dense bool) {
	if len(u.later) == 0 {
		return
	}
	later := u.later
	u.later = nil
	u.pos.reserve(later, func(o *DDUnion) *ddBins { return &o.pos }, dense)
	u.neg.reserve(later, func(o *DDUnion) *ddBins { return &o.neg }, dense)
	for _, o := range later {
		u.mergeOwn(o)
	}
}

// reserve sizes b for adding the bins of side(o) for every o of later: a
// list of pairs grown once while they fit ddSparseMax (and dense is not
// set), else count arrays over every index they will hold.
func (b *ddBins) reserve(later []*DDUnion, side func(*DDUnion) *ddBins, dense bool) {
	lo, hi, some := b.lo, b.hi, b.some
	pairs := len(b.idx)
	for _, o := range later {
		ob := side(o)
		if !ob.some {
			continue
		}
		if !some {
			lo, hi, some = ob.lo, ob.hi, true
		} else {
			lo, hi = min(lo, ob.lo), max(hi, ob.hi)
		}
		if ob.bins == nil {
			pairs += len(ob.idx)
		} else {
			pairs += ddSparseMax + 1 // a dense one makes b dense
		}
	}
	if !some {
		return
	}
	if b.bins == nil && pairs <= ddSparseMax && !dense {
		b.idx = slices.Grow(b.idx, pairs-len(b.idx))
		b.cnt = slices.Grow(b.cnt, pairs-len(b.cnt))
		return
	}
	b.span(lo, hi)
	if b.bins == nil {
		b.densify()
	}
	b.ensure(lo)
	b.ensure(hi)
}

// merge adds o's bins to b; o is only read.
func (b *ddBins) merge(o *ddBins) {
	if !o.some {
		return
	}
	if o.bins == nil {
		b.addFlat(&FlatBins{Index: o.idx, Count: o.cnt, Lo: int32(o.lo), Hi: int32(o.hi)})
		return
	}
	b.span(o.lo, o.hi)
	if b.bins == nil {
		b.densify()
	}
	b.ensure(o.lo)
	b.ensure(o.hi)
	for i := o.lo; i <= o.hi; i++ {
		b.bins[i-b.offset] += o.bins[i-o.offset]
	}
}

// Bytes is the memory u holds: its pairs or count arrays and the struct.
func (u *DDUnion) Bytes() int64 {
	u.flush(false)
	n := int64(160)
	for _, b := range []*ddBins{&u.pos, &u.neg} {
		n += 4*int64(cap(b.idx)) + 8*int64(cap(b.cnt)+cap(b.bins))
	}
	return n
}

// Quantiles is what ResultQuantiles answers for u's Sketch (nil when it
// is empty), computed from u's bins without building the sketch: the
// library's GetValueAtQuantile (sketches-go v1.4.8) step for step, over
// the same bins. Counts are whole numbers, so the totals and running sums
// are exact in any order. Building the sketch and its stores for every
// answer row was a tenth of a six-measure query's CPU. u's
// pairs are moved into count arrays first; it stays the same union.
func (u *DDUnion) Quantiles() *Quantiles {
	if !u.any {
		return nil
	}
	u.flush(true)
	neg, pos := u.neg.total(), u.pos.total()
	if u.zero == 0 && neg == 0 && pos == 0 {
		return nil
	}
	count := u.zero + pos + neg
	at := func(q float64) float64 {
		rank := float64(q * (count - 1)) // no fused multiply-add, as the library
		switch {
		case rank < neg:
			return -ddMapping.Value(u.neg.keyAtRank(neg - 1 - rank))
		case rank < u.zero+neg:
			return 0
		default:
			return ddMapping.Value(u.pos.keyAtRank(rank - u.zero - neg))
		}
	}
	return &Quantiles{P50: at(0.5), P90: at(0.9), P99: at(0.99)}
}

// Trim lets go of the slack of u's count arrays (room left for indexes
// yet to come): for a union kept afterwards and only read (serving's
// bucket cache), whose bins are then the same.
func (u *DDUnion) Trim() {
	u.flush(false)
	u.pos.trim()
	u.neg.trim()
}

// Compact readies u to be kept and only read (a cached speed rollup's):
// each store's pairs become count arrays over their index range when
// those take no more memory, else the pairs are sorted with one per
// index; count arrays lose their slack (Trim). The bins are the same (a
// sum of whole-number counts does not depend on its order), and merging
// u afterwards adds one count per index, in order.
func (u *DDUnion) Compact() {
	u.flush(false)
	u.pos.compact()
	u.neg.compact()
}

func (b *ddBins) compact() {
	if !b.some || b.bins != nil {
		b.trim()
		return
	}
	if 2*(b.hi-b.lo+1) <= 3*len(b.idx) { // 8 bytes a slot against 12 a pair
		b.bins = make([]float64, b.hi-b.lo+1)
		b.offset = b.lo
		for k, i := range b.idx {
			b.bins[int(i)-b.offset] += b.cnt[k]
		}
		b.idx, b.cnt = nil, nil
		return
	}
	type pair struct {
		i int32
		c float64
	}
	ps := make([]pair, len(b.idx))
	for k := range b.idx {
		ps[k] = pair{b.idx[k], b.cnt[k]}
	}
	slices.SortFunc(ps, func(x, y pair) int { return int(x.i) - int(y.i) })
	idx, cnt := make([]int32, 0, len(ps)), make([]float64, 0, len(ps))
	for _, p := range ps {
		if n := len(idx); n > 0 && idx[n-1] == p.i {
			cnt[n-1] += p.c
			continue
		}
		idx, cnt = append(idx, p.i), append(cnt, p.c)
	}
	b.idx, b.cnt = slices.Clip(idx), slices.Clip(cnt)
}

func (b *ddBins) trim() {
	if b.bins == nil || !b.some {
		return
	}
	bins := make([]float64, b.hi-b.lo+1)
	copy(bins, b.bins[b.lo-b.offset:b.hi-b.offset+1])
	b.bins, b.offset = bins, b.lo
}

// total is the sum of b's counts.
func (b *ddBins) total() float64 {
	var n float64
	if b.bins == nil {
		for _, c := range b.cnt {
			n += c
		}
		return n
	}
	for _, c := range b.bins {
		n += c
	}
	return n
}

// keyAtRank is the library's DenseStore.KeyAtRank over b's bins: the
// lowest index whose running count passes rank.
func (b *ddBins) keyAtRank(rank float64) int {
	if rank < 0 {
		rank = 0
	}
	if !b.some {
		return 0
	}
	if b.bins == nil {
		b.densify()
	}
	var n float64
	for i := b.lo; i <= b.hi; i++ {
		n += b.bins[i-b.offset]
		if n > rank {
			return i
		}
	}
	return b.hi
}
