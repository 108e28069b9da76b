package schemas

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/axiomhq/hyperloglog"

	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
)

// Sketch error bounds, stated so tests and documentation can hold them.
const (
	// QuantileRelativeAccuracy: a quantiles answer is within this fraction of
	// the true value at that rank (DDSketch's guarantee).
	QuantileRelativeAccuracy = 0.01
	// DistinctRelativeError: a distinct answer is within this fraction of the
	// true count with high probability (HyperLogLog, 2^14 registers: standard
	// error 0.81%, so this is about three standard errors).
	DistinctRelativeError = 0.025
	// DistinctAbsoluteError: a small count can be off by a register
	// collision or two once a sketch is dense (merging many rows makes it
	// so), which no relative bound covers; see DistinctBound.
	DistinctAbsoluteError = 2
)

// DistinctBound is the stated error bound of a distinct answer whose true
// count is n: the larger of DistinctRelativeError·n and DistinctAbsoluteError.
func DistinctBound(n float64) float64 {
	return math.Max(DistinctRelativeError*n, DistinctAbsoluteError)
}

// State is the mergeable aggregate of one measure over a set of events. Which
// fields are used depends on the measure type; the zero State is the
// aggregate of no events for every type.
type State struct {
	N   int64   // events counted (count) or values seen (other types)
	Sum float64 // sum
	Min float64 // min, meaningful when N > 0
	Max float64 // max, meaningful when N > 0
	HLL *hyperloglog.Sketch
	DD  *ddsketch.DDSketch
	// UniqHLL12 and TDigest are the ClickHouse aggregate-function states of
	// a distinct and a quantiles measure (uniqHLL12, quantilesTDigest),
	// kept beside HLL and DD from the same values so that analysts can
	// finalize the measure in SQL. Only the layers that write ClickHouse
	// rows have them (speed and batch folds); a State read back from a
	// stored cell has neither, and Merge then leaves them nil.
	UniqHLL12 *chstate.Distinct
	TDigest   *chstate.Quantiles
}

// Aggregate is the state of every measure of a view for one row (one window
// and one combination of dimension values), in the view's measure order.
type Aggregate []State

// NewAggregate returns the aggregate of no events.
func (v *View) NewAggregate() Aggregate { return make(Aggregate, len(v.Measures)) }

// Add folds one event of the view's stream into a.
func (v *View) Add(a Aggregate, ev *Event) {
	for i := range v.Measures {
		v.Measures[i].Add(&a[i], ev)
	}
}

// Merge folds src into dst. Merging is associative and commutative: the
// speed layer, the batch layer and serving all combine rows with it.
func (v *View) Merge(dst, src Aggregate) {
	for i := range v.Measures {
		v.Measures[i].Merge(&dst[i], &src[i])
	}
}

// Add folds one event into st. A measure ignores an event that lacks its
// field; a measure without a field (count) sees every event.
func (m *Measure) Add(st *State, ev *Event) {
	k := m.Kind()
	if k.Field == FieldNone {
		k.Add(st, nil)
		return
	}
	val := &ev.Values[m.fieldIndex] // not a copy: Add runs per event and measure
	if !val.Set {
		return
	}
	k.Add(st, val)
}

// Merge folds src into dst.
func (m *Measure) Merge(dst, src *State) {
	if src.N == 0 {
		return
	}
	m.Kind().Merge(dst, src)
	dst.N += src.N
}

// hllPrecision is the precision (log2 of the register count) of every
// distinct sketch: New14.
const hllPrecision = 14

func newHLL() *hyperloglog.Sketch { return hyperloglog.New14() }

func newDD() *ddsketch.DDSketch {
	dd, err := ddsketch.NewDefaultDDSketch(QuantileRelativeAccuracy)
	if err != nil {
		panic(err) // only for an accuracy outside (0, 1)
	}
	return dd
}

// appendDistinctKey appends what the distinct sketch hashes to dst: the
// value's canonical text, so 1 (int64) and "1" (string) fields of different
// streams count alike.
// The zero value of every type ("", 0, -0, false) hashes as the empty text:
// a Value does not carry its type, and without this an empty string would
// count as the string "0", and -0 and 0 as two numbers.
func appendDistinctKey(dst []byte, v *Value) []byte {
	switch {
	case v.Str != "":
		return append(dst, v.Str...)
	case !v.Time.IsZero():
		return strconv.AppendInt(dst, v.Time.UnixMilli(), 10)
	case v.Int != 0:
		return strconv.AppendInt(dst, v.Int, 10)
	case v.Bool:
		return append(dst, "true"...)
	case v.Float != 0:
		return strconv.AppendFloat(dst, v.Float, 'g', -1, 64)
	default:
		return dst
	}
}

// Cell returns st as the value stored in a view row's column for this
// measure, of its kind's CellShape: int64, float64, *float64 (nil when no
// event had the field) or []byte (empty when none).
func (m *Measure) Cell(st *State) any {
	k := m.Kind()
	switch k.Cell {
	case CellInt64:
		return k.Int(st)
	case CellFloat64:
		f, _ := k.Float(st)
		return f
	case CellNullableFloat64:
		return nullableFloat(k.Float(st))
	}
	return k.Encode(st)
}

// ErrBadCell is wrapped by StateFromCell's errors: stored bytes that do not
// decode, or a value of the wrong type.
var ErrBadCell = errors.New("stored measure value cannot be read")

// SketchBytes returns the encoded sketch of a sketch cell: []byte as
// written, or string as some drivers read it back; nil (or an empty
// result) is the empty sketch. Another type is ErrBadCell.
func (m *Measure) SketchBytes(cell any) ([]byte, error) {
	b, err := SketchCell(cell)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadCell, m.Name, err)
	}
	return b, nil
}

// StateFromCell reads back what Cell wrote. Numbers may come as any Go
// integer or float type and nullable ones as float64 or *float64 (nil =
// none), so ClickHouse and Parquet readers can pass their values straight
// in. For sum, N is 1 when the stored sum is non-zero, since the row count
// is not stored.
func (m *Measure) StateFromCell(cell any) (State, error) {
	k := m.Kind()
	if k == nil {
		return State{}, fmt.Errorf("%w: unknown measure type %q", ErrBadCell, m.Type)
	}
	st, err := k.FromCell(cell)
	if err != nil {
		return State{}, fmt.Errorf("%w: %s: %v", ErrBadCell, m.Name, err)
	}
	return st, nil
}

// decodeDD decodes a DDSketch, turning the library's panics on hostile bytes
// into an error: stored objects are input like any other.
//
// The library's default store pages bins by index and allocates pages for
// the whole range between the lowest and highest index it reads, so a few
// hostile bytes naming index ±2^40 ask for terabytes. The bytes are
// therefore first decoded into a map-based store, whose size is bounded by
// the input, and every bin checked against the indexes our mapping can
// produce; only then are they decoded for real.
func decodeDD(b []byte) (dd *ddsketch.DDSketch, err error) {
	defer func() {
		if r := recover(); r != nil {
			dd, err = nil, fmt.Errorf("corrupt quantile sketch: %v", r)
		}
	}()
	// Cell always encodes the mapping; without one the bytes are not ours.
	probe, err := ddsketch.DecodeDDSketch(b, store.SparseStoreConstructor, nil)
	if err != nil {
		return nil, err
	}
	ours := newDD().IndexMapping
	// A sketch of any other mapping (another accuracy or interpolation)
	// cannot be merged with ours, and Merge would drop it silently.
	if !probe.IndexMapping.Equals(ours) {
		return nil, fmt.Errorf("quantile sketch has relative accuracy %g and another index mapping than %g logarithmic", probe.RelativeAccuracy(), QuantileRelativeAccuracy)
	}
	lo, hi := ours.Index(ours.MinIndexableValue()), ours.Index(ours.MaxIndexableValue())
	var bad error
	check := func(index int, count float64) bool {
		if index < lo || index > hi || !(count >= 0) || math.IsInf(count, 0) {
			bad = fmt.Errorf("quantile sketch has a bin %d of count %g, outside what the mapping writes", index, count)
		}
		return bad != nil
	}
	probe.GetPositiveValueStore().ForEach(check)
	probe.GetNegativeValueStore().ForEach(check)
	if bad != nil {
		return nil, bad
	}
	if z := probe.GetZeroCount(); !(z >= 0) || math.IsInf(z, 0) {
		return nil, fmt.Errorf("quantile sketch has a zero count of %g", z)
	}
	if n := probe.GetCount(); math.IsInf(n, 0) || math.IsNaN(n) {
		return nil, fmt.Errorf("quantile sketch has a count of %g", n)
	}
	return ddsketch.DecodeDDSketch(b, store.DefaultProvider, nil)
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint32:
		return float64(n), true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	}
	return 0, false
}

// Quantiles is the answer of a quantiles measure.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// Result is the finished answer of st, of its kind's ResultShape: int64,
// float64, *float64 (nil when no value), uint64 or *Quantiles (nil when no
// value).
func (m *Measure) Result(st *State) any { return m.Kind().Answer(st) }

// RowKey identifies one row of a view: a window and the dimension values.
type RowKey struct {
	WindowMs int64  // window start, Unix milliseconds
	Dims     string // dimension values, joined by JoinDims
}

// Window returns the window start as a time.
func (k RowKey) Window() time.Time { return time.UnixMilli(k.WindowMs).UTC() }

// Key returns the row an event falls into. A missing dimension groups as "".
func (v *View) Key(ev *Event) RowKey {
	// Built on the stack: one allocation per key.
	var buf [128]byte
	return RowKey{WindowMs: v.Granularity.WindowStartMs(ev.Time.UnixMilli()), Dims: string(v.AppendDims(buf[:0], ev))}
}

// AppendDims appends Key(ev).Dims to dst without making it a string, for
// callers that look rows up by their bytes.
func (v *View) AppendDims(dst []byte, ev *Event) []byte {
	for _, fi := range v.dimIndex {
		s := ev.Values[fi].Str
		dst = strconv.AppendInt(dst, int64(len(s)), 10)
		dst = append(dst, ':')
		dst = append(dst, s...)
	}
	return dst
}

// JoinDims encodes dimension values as one comparable string. Each value is
// length-prefixed, so any bytes, separators included, round-trip.
func JoinDims(vals []string) string {
	var b strings.Builder
	for _, s := range vals {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String()
}

// SplitDims reverses JoinDims.
func SplitDims(s string) ([]string, error) {
	var out []string
	for len(s) > 0 {
		colon := strings.IndexByte(s, ':')
		if colon < 0 {
			return nil, errors.New("dims: missing length")
		}
		// Only the lengths JoinDims writes: plain decimal digits without
		// a sign or leading zeros, so one value list has one encoding.
		digits := s[:colon]
		if digits == "" || len(digits) > 1 && digits[0] == '0' || strings.Trim(digits, "0123456789") != "" {
			return nil, errors.New("dims: bad length")
		}
		n, err := strconv.Atoi(digits)
		if err != nil || n > len(s)-colon-1 {
			return nil, errors.New("dims: bad length")
		}
		out = append(out, s[colon+1:colon+1+n])
		s = s[colon+1+n:]
	}
	return out, nil
}

// SQLStateCell returns st's ClickHouse state as its serialized bytes (what
// an AggregateFunction column holds), or nil when the measure has none or
// st does not carry it (a State read back from a cell). Like ClickHouse's
// own serialization it compresses a quantiles state first, which changes
// how later values would be glued but not what the state answers: call it
// on a finished state (the batch run's rows); the speed layer, which goes
// on adding, reads its states without compressing them (SpeedBlock).
func (m *Measure) SQLStateCell(st *State) []byte {
	switch m.Kind().SQLState {
	case SQLStateUniqHLL12:
		if st.UniqHLL12 != nil {
			return st.UniqHLL12.AppendBinary(nil)
		}
	case SQLStateTDigest:
		if st.TDigest != nil {
			return st.TDigest.AppendBinary(nil)
		}
	}
	return nil
}
