// Package parquet is tandem's adapter for Apache Parquet files, built on
// parquet-go: the raw files of the master dataset (RawWriter, RawReader),
// the files of batch views (ViewWriter, ViewReader), and the matching Arrow
// schemas for readers that speak Arrow.
//
// Files are flat (no nesting), zstd-compressed, with dictionary-encoded
// string columns, row-group statistics and a page index, so engines such as
// DuckDB, Spark, Trino and Arrow read them and can prune by statistics.
// Column order in a file is the order of the schemas.Column list.
package parquet

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	pq "github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/parquet-go/parquet-go/encoding"

	"github.com/tandem-analytics/tandem/schemas"
)

// Key-value metadata written into every file's footer.
const (
	MetaKind          = "tandem.kind" // "raw" or "view"
	MetaStream        = "tandem.stream"
	MetaView          = "tandem.view"
	MetaSchemaVersion = "tandem.schema_version" // Stream.SchemaVersion or View.Fingerprint
	MetaPartition     = "tandem.partition"
	MetaFirstOffset   = "tandem.first_offset"
	MetaLastOffset    = "tandem.last_offset"
	// MetaDecoderVersion is schemas.DecoderVersion in raw files: with
	// MetaSchemaVersion, it says under which rules the typed columns were
	// decoded.
	MetaDecoderVersion = "tandem.decoder_version"
	// MetaMaxFutureSkew is, in raw files, the max_future_skew (a Go
	// duration; 0s: the check off) of the decoder whose verdicts the typed
	// columns hold (RawWriterOptions.Decoder). Absent: unknown.
	MetaMaxFutureSkew = "tandem.max_future_skew"
)

// DefaultRowGroupBytes is the buffered (uncompressed) size at which a
// writer cuts a row group. It bounds a writer's memory: about this much
// plus the compressed pages of the current row group.
const DefaultRowGroupBytes = 32 << 20

var codec compress.Codec = &zstd.Codec{Level: zstd.SpeedDefault}

// node returns the Parquet node of one column.
func node(c schemas.Column, dictionary bool) pq.Node {
	var n pq.Node
	switch c.Type {
	case schemas.ColTimestamp:
		n = pq.Timestamp(pq.Millisecond)
	case schemas.ColString:
		n = pq.String()
		if dictionary {
			n = pq.Encoded(n, &pq.RLEDictionary)
		}
	case schemas.ColInt64:
		n = pq.Int(64)
	case schemas.ColInt32:
		n = pq.Int(32)
	case schemas.ColFloat64:
		n = pq.Leaf(pq.DoubleType)
	case schemas.ColBool:
		n = pq.Leaf(pq.BooleanType)
	case schemas.ColBytes:
		n = pq.Leaf(pq.ByteArrayType)
	default:
		panic(fmt.Sprintf("parquet: unknown column type %d", c.Type))
	}
	n = pq.Compressed(n, codec)
	if c.Nullable {
		return pq.Optional(n)
	}
	return pq.Required(n)
}

// schemaOf builds the file schema of cols, keeping their order. plain names
// string columns that must not be dictionary-encoded (values unique per
// row, such as the original JSON).
func schemaOf(name string, cols []schemas.Column, plain ...string) *pq.Schema {
	g := make(group, len(cols))
	for i, c := range cols {
		dict := c.Type == schemas.ColString
		for _, p := range plain {
			dict = dict && c.Name != p
		}
		g[i] = &field{Node: node(c, dict), name: c.Name}
	}
	return pq.NewSchema(name, g)
}

// group is a Parquet group whose fields keep the order given (parquet-go's
// own Group is a map and sorts its fields by name).
type group []pq.Field

func (g group) ID() int                     { return 0 }
func (g group) String() string              { return "group" }
func (g group) Type() pq.Type               { return pq.Group{}.Type() }
func (g group) Optional() bool              { return false }
func (g group) Repeated() bool              { return false }
func (g group) Required() bool              { return true }
func (g group) Leaf() bool                  { return false }
func (g group) Fields() []pq.Field          { return g }
func (g group) Encoding() encoding.Encoding { return nil }
func (g group) Compression() compress.Codec { return nil }
func (g group) GoType() reflect.Type {
	fields := make([]reflect.StructField, len(g))
	for i, f := range g {
		fields[i] = reflect.StructField{
			Name: "F" + strconv.Itoa(i),
			Type: f.GoType(),
			Tag:  reflect.StructTag(`parquet:` + strconv.Quote(f.Name())),
		}
	}
	return reflect.StructOf(fields)
}

type field struct {
	pq.Node
	name string
}

func (f *field) Name() string { return f.name }

// Value is used by parquet-go only to deconstruct Go structs; tandem builds
// rows value by value, so it never is.
func (f *field) Value(base reflect.Value) reflect.Value {
	if base.Kind() == reflect.Struct {
		return base.FieldByNameFunc(func(n string) bool { return strings.EqualFold(n, f.name) })
	}
	return reflect.Value{}
}

// arrowType maps a column type to Arrow.
func arrowType(t schemas.ColumnType) arrow.DataType {
	switch t {
	case schemas.ColTimestamp:
		return &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	case schemas.ColString:
		return arrow.BinaryTypes.String
	case schemas.ColInt64:
		return arrow.PrimitiveTypes.Int64
	case schemas.ColInt32:
		return arrow.PrimitiveTypes.Int32
	case schemas.ColFloat64:
		return arrow.PrimitiveTypes.Float64
	case schemas.ColBool:
		return arrow.FixedWidthTypes.Boolean
	case schemas.ColBytes:
		return arrow.BinaryTypes.Binary
	}
	panic(fmt.Sprintf("parquet: unknown column type %d", t))
}

// ArrowSchema is the Arrow schema of cols, in order. It is the schema
// Arrow-based readers (pqarrow) infer from the files this package writes.
func ArrowSchema(cols []schemas.Column) *arrow.Schema {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{Name: c.Name, Type: arrowType(c.Type), Nullable: c.Nullable}
	}
	return arrow.NewSchema(fields, nil)
}

// ArrowSchemaRaw is the Arrow schema of a stream's raw files.
func ArrowSchemaRaw(s *schemas.Stream) *arrow.Schema { return ArrowSchema(s.RawColumns()) }

// ArrowSchemaView is the Arrow schema of a view's rows.
func ArrowSchemaView(v *schemas.View) *arrow.Schema { return ArrowSchema(v.RowColumns()) }

// countingWriter counts the bytes a parquet writer has emitted, so the
// size of the buffered row group is known.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
