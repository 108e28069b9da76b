package schemas

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// A MeasureKind is everything tandem knows about one measure type: which
// field it reads, how it adds an event and merges two states, how its cell
// is stored and read back, what its answer is, and the shapes the adapters
// need. Each kind lives in its own file (measure_count.go, measure_sum.go,
// …) and is listed once, in measureKinds.
//
// The adapters (ClickHouse, Parquet, serving's merge and encoders) never
// ask which measure type they hold; they switch on the shapes a kind
// describes (CellShape, ResultShape, SketchFamily, SQLStateShape). A new
// type that uses existing shapes is therefore one file and one table line;
// a new shape is a new case in each adapter, which the all-types test
// (TestEveryMeasureKind and its peers in the adapters) reaches.
type MeasureKind struct {
	Type MeasureType
	// Field is what the measure reads.
	Field FieldRule
	// Exact: computed exactly, not by a sketch.
	Exact bool
	// Cell is how the measure's cell is stored.
	Cell CellShape
	// Result is the shape of the measure's answer, and ResultDoc how
	// GET /v1/views describes it.
	Result    ResultShape
	ResultDoc string
	// Sketch is the sketch a CellSketch cell holds (SketchNone otherwise);
	// serving merges each family with its own union.
	Sketch SketchFamily
	// SQLState is the ClickHouse aggregate-function state kept beside the
	// cell so SQL can finalize a sketch measure (SQLStateNone otherwise).
	SQLState SQLStateShape
	// SQLMerge is the ClickHouse aggregate that merges stored cells of an
	// exact measure into one ("sum", "min", "max"); "" for sketches.
	SQLMerge string

	// Add folds one event into st. val is the event's value of the field,
	// set, or nil for a kind whose Field is FieldNone. It counts the event
	// in st.N.
	Add func(st *State, val *Value)
	// Merge folds src into dst; src.N > 0 (Measure.Merge skips empty
	// states) and dst.N is not yet increased.
	Merge func(dst, src *State)
	// Int is the cell of a CellInt64 kind; Float the cell of a CellFloat64
	// or CellNullableFloat64 kind (ok false: NULL); Encode the bytes of a
	// CellSketch kind (empty when no value). They are unboxed so hot paths
	// (the speed layer's blocks) store cells without allocating.
	Int    func(st *State) int64
	Float  func(st *State) (f float64, ok bool)
	Encode func(st *State) []byte
	// FromCell reads back a stored cell, whose Go type CellShape allows
	// (any integer or float type for numbers, a *float64 or nil for a
	// nullable, []byte, string or nil for a sketch). Its error need not
	// name the measure: Measure.StateFromCell does.
	FromCell func(cell any) (State, error)
	// Answer is the finished answer of st, of ResultShape's Go type.
	Answer func(st *State) any
}

// FieldRule is what field a measure type reads.
type FieldRule int

const (
	FieldNone    FieldRule = iota // no field: the measure sees every event
	FieldNumeric                  // an int64 or float64 field
	FieldAny                      // a field of any type
)

// CellShape is how a measure's cell is stored: Measure.Cell's Go type, the
// ClickHouse column and the Parquet column.
type CellShape int

const (
	CellInt64           CellShape = iota // int64; ClickHouse Int64
	CellFloat64                          // float64; ClickHouse Float64
	CellNullableFloat64                  // *float64, nil for no value; ClickHouse Nullable(Float64)
	CellSketch                           // []byte, empty for no value; ClickHouse String
)

// Column is the stored column type of a cell of this shape.
func (s CellShape) Column() Column {
	switch s {
	case CellInt64:
		return Column{Type: ColInt64}
	case CellFloat64:
		return Column{Type: ColFloat64}
	case CellNullableFloat64:
		return Column{Type: ColFloat64, Nullable: true}
	}
	return Column{Type: ColBytes}
}

// ResultShape is the shape of a measure's answer.
type ResultShape int

const (
	ResultInt64           ResultShape = iota // int64
	ResultFloat64                            // float64
	ResultNullableFloat64                    // *float64, nil for no value
	ResultUint64                             // uint64
	ResultQuantiles                          // *Quantiles, nil for no value: three nullable float64 parts
)

// SketchFamily is the sketch a CellSketch cell holds.
type SketchFamily int

const (
	SketchNone SketchFamily = iota
	SketchHLL               // HyperLogLog (State.HLL)
	SketchDD                // DDSketch (State.DD)
)

// SQLStateShape is the ClickHouse aggregate-function state kept beside a
// sketch measure (State.UniqHLL12, State.TDigest).
type SQLStateShape int

const (
	SQLStateNone      SQLStateShape = iota
	SQLStateUniqHLL12               // uniqHLL12 over the hashed keys: stored as Array(UInt64)
	SQLStateTDigest                 // quantilesTDigestWeighted: stored as Array(Float32) means, Array(UInt64) counts
)

// measureKinds is the one table of measure types, in the order error
// messages list them. A new type is a file defining its kind and one line
// here.
var measureKinds = []*MeasureKind{
	&countKind,
	&sumKind,
	&minKind,
	&maxKind,
	&distinctKind,
	&quantilesKind,
}

// KindOf returns the kind of measure type t, or nil when t is not
// registered.
func KindOf(t MeasureType) *MeasureKind {
	for _, k := range measureKinds {
		if k.Type == t {
			return k
		}
	}
	return nil
}

// MeasureKinds returns every registered kind, in table order.
func MeasureKinds() []*MeasureKind { return append([]*MeasureKind(nil), measureKinds...) }

// RegisterMeasureKind adds a kind to the table. It is meant for tests (a
// test-only measure type is one _test.go file that registers itself) and
// must run before any configuration is loaded, e.g. from an init function;
// it panics on a duplicate or incomplete kind.
func RegisterMeasureKind(k *MeasureKind) {
	if err := k.check(); err != nil {
		panic(err)
	}
	if KindOf(k.Type) != nil {
		panic(fmt.Sprintf("schemas: measure type %q registered twice", k.Type))
	}
	measureKinds = append(measureKinds, k)
}

// check reports what a kind lacks for its shapes.
func (k *MeasureKind) check() error {
	missing := func(what string) error { return fmt.Errorf("schemas: measure kind %q has no %s", k.Type, what) }
	switch {
	case k.Type == "":
		return errors.New("schemas: measure kind without a type")
	case k.Add == nil:
		return missing("Add")
	case k.Merge == nil:
		return missing("Merge")
	case k.FromCell == nil:
		return missing("FromCell")
	case k.Answer == nil:
		return missing("Answer")
	case k.Cell == CellInt64 && k.Int == nil:
		return missing("Int")
	case (k.Cell == CellFloat64 || k.Cell == CellNullableFloat64) && k.Float == nil:
		return missing("Float")
	case k.Cell == CellSketch && k.Encode == nil:
		return missing("Encode")
	case k.Exact && k.SQLMerge == "":
		return missing("SQLMerge")
	case k.Exact != (k.Cell != CellSketch):
		return fmt.Errorf("schemas: measure kind %q: an exact kind stores a number and a sketch kind a sketch", k.Type)
	}
	return nil
}

// measureTypeList is "count, sum, …, distinct or quantiles", for errors.
func measureTypeList() string {
	names := make([]string, len(measureKinds))
	for i, k := range measureKinds {
		names[i] = string(k.Type)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Kind returns the measure's kind: the one validation cached, or the
// table's (a Measure built without validation). It is nil for an unknown
// type, which validation refuses.
func (m *Measure) Kind() *MeasureKind {
	if m.kind != nil {
		return m.kind
	}
	return KindOf(m.Type)
}

// cellInt64 reads an integer cell: any Go integer or float type holding a
// whole number that fits an int64.
func IntCell(cell any) (int64, bool) {
	n, ok := toFloat(cell)
	if !ok || !(n >= math.MinInt64 && n < math.MaxInt64) || n != math.Trunc(n) { // also refuses NaN
		return 0, false
	}
	return int64(n), true
}

// cellNullableFloat reads a nullable float cell: nil or a nil *float64 is
// no value (ok true, null true).
func NullableFloatCell(cell any) (f float64, null, ok bool) {
	if cell == nil {
		return 0, true, true
	}
	if p, isPtr := cell.(*float64); isPtr {
		if p == nil {
			return 0, true, true
		}
		cell = *p
	}
	f, ok = toFloat(cell)
	return f, false, ok
}

// cellSketch reads a sketch cell: []byte as written, or string as some
// drivers read it back; nil is the empty sketch.
func SketchCell(cell any) ([]byte, error) {
	switch c := cell.(type) {
	case []byte:
		return c, nil
	case string:
		return []byte(c), nil
	case nil:
		return nil, nil
	default:
		return nil, fmt.Errorf("%T is not bytes", cell)
	}
}
