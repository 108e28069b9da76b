package schemas

import (
	"fmt"
	"slices"
	"time"
)

// FieldType is the type of one declared field of a stream.
type FieldType string

const (
	TypeString    FieldType = "string"
	TypeInt64     FieldType = "int64"
	TypeFloat64   FieldType = "float64"
	TypeBool      FieldType = "bool"
	TypeTimestamp FieldType = "timestamp"
)

// Numeric reports whether measures such as sum and quantiles may read the field.
func (t FieldType) Numeric() bool { return t == TypeInt64 || t == TypeFloat64 }

func (t FieldType) valid() bool {
	switch t {
	case TypeString, TypeInt64, TypeFloat64, TypeBool, TypeTimestamp:
		return true
	}
	return false
}

// Field is one declared field of a stream.
type Field struct {
	Name     string    `yaml:"name"`
	Type     FieldType `yaml:"type"`
	Required bool      `yaml:"required"`
}

// Stream is a named event type backed by one Kafka topic.
type Stream struct {
	Name       string  `yaml:"name"`
	Topic      string  `yaml:"topic"`
	Partitions int     `yaml:"partitions"`
	IDField    string  `yaml:"id_field"`
	TimeField  string  `yaml:"time_field"`
	Fields     []Field `yaml:"fields"`
	// RawEvents asks the speed layer to also keep the stream's recent events
	// in a ClickHouse table for ad-hoc SQL, for RawRetention.
	RawEvents    bool     `yaml:"raw_events"`
	RawRetention Duration `yaml:"raw_retention"`
	// DedupWindow is the duplicate horizon: an id seen again more than this
	// after its counted occurrence, in the partition's dedup clock
	// (schemas/dedup.go), counts as a new event. 0 (unset): forever.
	DedupWindow Duration `yaml:"dedup_window"`
	// Retention is how long the master dataset (raw objects) and the lake
	// export keep the stream's events, on Kafka time (schemas/retention.go).
	// 0 (unset): forever.
	Retention Duration `yaml:"retention"`

	fieldIndex map[string]int
	idIndex    int
	timeIndex  int
}

// FieldIndex returns the position of the named field in Fields, or -1.
func (s *Stream) FieldIndex(name string) int {
	if i, ok := s.fieldIndex[name]; ok {
		return i
	}
	return -1
}

// Field returns the named field and whether it is declared.
func (s *Stream) Field(name string) (Field, bool) {
	i := s.FieldIndex(name)
	if i < 0 {
		return Field{}, false
	}
	return s.Fields[i], true
}

// FieldDecls returns each declared field's declaration, "type" or
// "type required": what decides whether an event's value of it is valid.
// Batch runs record it in their manifests, so that a run computed under
// another declaration of a field is not taken for the configured one.
func (s *Stream) FieldDecls() map[string]string {
	out := make(map[string]string, len(s.Fields))
	for _, f := range s.Fields {
		d := string(f.Type)
		if f.Required {
			d += " required"
		}
		out[f.Name] = d
	}
	return out
}

// ChangedFieldDecls lists the fields declared both in decls (a manifest's
// Fields) and in the stream whose declarations differ, sorted. Fields
// added or removed are no change: an added one reads as missing in older
// events, a removed one is ignored.
func (s *Stream) ChangedFieldDecls(decls map[string]string) []string {
	var out []string
	for name, d := range s.FieldDecls() {
		if old, ok := decls[name]; ok && old != d {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// DLQTopic is where consumers put messages of this stream they cannot use.
func (s *Stream) DLQTopic() string { return s.Topic + ".dlq" }

// SchemaVersion is a short fingerprint of the declared fields, carried in a
// Kafka header so consumers can tell which schema a producer validated against.
func (s *Stream) SchemaVersion() string {
	h := fnv64(s.IDField + "|" + s.TimeField)
	for _, f := range s.Fields {
		h = fnv64(fmt.Sprintf("%x|%s|%s|%t", h, f.Name, f.Type, f.Required))
	}
	return fmt.Sprintf("%016x", h)
}

func (s *Stream) index() {
	s.fieldIndex = make(map[string]int, len(s.Fields))
	for i, f := range s.Fields {
		s.fieldIndex[f.Name] = i
	}
	s.idIndex = s.FieldIndex(s.IDField)
	s.timeIndex = s.FieldIndex(s.TimeField)
}

// MeasureType is the kind of aggregate a measure computes.
type MeasureType string

const (
	MeasureCount     MeasureType = "count"
	MeasureSum       MeasureType = "sum"
	MeasureMin       MeasureType = "min"
	MeasureMax       MeasureType = "max"
	MeasureDistinct  MeasureType = "distinct"
	MeasureQuantiles MeasureType = "quantiles"
)

// Exact reports whether the measure is computed exactly (not by a sketch).
func (t MeasureType) Exact() bool {
	k := KindOf(t)
	return k != nil && k.Exact
}

// Measure is one aggregate of a view.
type Measure struct {
	Name  string      `yaml:"name"`
	Type  MeasureType `yaml:"type"`
	Field string      `yaml:"field"`

	fieldIndex int          // position of Field in the stream, -1 without one
	kind       *MeasureKind // Type's kind, set by validation (Kind)
}

// View is an aggregate over one stream.
type View struct {
	Name        string      `yaml:"name"`
	Stream      string      `yaml:"stream"`
	Granularity Granularity `yaml:"granularity"`
	Dimensions  []string    `yaml:"dimensions"`
	Measures    []Measure   `yaml:"measures"`
	// LevelNames are the coarse levels the batch run also publishes the
	// view at (views[].levels, such as [1h, 1d]); nil means the default
	// (DefaultLevels), an empty list none. Validated into levels.
	LevelNames *[]string `yaml:"levels"`
	// Retention is how long the batch run keeps the view's days, in S3 and
	// ClickHouse, on event time (schemas/retention.go): whole UTC days.
	// 0 (unset): forever.
	Retention Duration `yaml:"retention"`

	stream   *Stream
	levels   []Granularity // coarsest first
	dimIndex []int         // position of each dimension in the stream's fields

	// In a Versioned configuration (versions.go): the configured name
	// (Name is then the version's physical name), the version number and
	// whether it is the pending version.
	logical string
	version int
	pending bool
}

// Levels returns the coarse levels the batch run publishes the view at,
// coarsest first: each coarser than the view's granularity, a multiple of
// it and a divisor of one day (level files are written per UTC day).
func (v *View) Levels() []Granularity { return v.levels }

// DefaultLevels are the levels of a view that does not set views[].levels:
// those of them coarser than and a multiple of its granularity.
var DefaultLevels = []Granularity{Granularity(24 * time.Hour), Granularity(time.Hour)}

// StreamDef returns the stream the view aggregates.
func (v *View) StreamDef() *Stream { return v.stream }

// MeasureIndex returns the position of the named measure, or -1.
func (v *View) MeasureIndex(name string) int {
	for i, m := range v.Measures {
		if m.Name == name {
			return i
		}
	}
	return -1
}

// DimensionIndex returns the position of the named dimension, or -1.
func (v *View) DimensionIndex(name string) int {
	for i, d := range v.Dimensions {
		if d == name {
			return i
		}
	}
	return -1
}

// Fingerprint identifies the view's storage shape (granularity, dimensions,
// measures and the types of the fields they read). Storage created for one
// fingerprint must not be reused silently for another.
func (v *View) Fingerprint() string {
	s := fmt.Sprintf("%s|%s|%v", v.Stream, v.Granularity, v.Dimensions)
	for _, m := range v.Measures {
		s += fmt.Sprintf("|%s:%s:%s", m.Name, m.Type, m.Field)
	}
	return fmt.Sprintf("%016x", fnv64(s))
}

func fnv64(s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

// Duration is a time.Duration written in YAML as "90s", "5m", "1h".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }
