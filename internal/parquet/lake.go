package parquet

import (
	"io"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/schemas"
)

// LakeColumns are the columns of a stream's lake export (`tandem export`):
// the raw file's columns (schemas.Stream.RawColumns) without the original
// JSON — the typed fields, then where each event sat in Kafka.
func LakeColumns(s *schemas.Stream) []schemas.Column {
	var cols []schemas.Column
	for _, c := range s.RawColumns() {
		if c.Name != schemas.ColRaw {
			cols = append(cols, c)
		}
	}
	return cols
}

// lakeRowsPerWrite is how many rows a LakeWriter buffers before handing
// them to parquet-go.
const lakeRowsPerWrite = 256

// LakeWriter writes one lake file of a stream, event by event, with the
// same column types, compression and encodings as raw files. It is used by
// one goroutine.
type LakeWriter struct {
	s   *schemas.Stream
	w   *pq.Writer
	buf []pq.Row
	n   int // fields
}

// NewLakeWriter starts a lake file of stream s on w.
func NewLakeWriter(w io.Writer, s *schemas.Stream) *LakeWriter {
	schema := schemaOf(s.Name, LakeColumns(s), s.IDField)
	return &LakeWriter{s: s, n: len(s.Fields), buf: make([]pq.Row, 0, lakeRowsPerWrite),
		w: pq.NewWriter(w, schema, pq.CreatedBy("tandem", "", ""),
			pq.KeyValueMetadata(MetaKind, "lake"),
			pq.KeyValueMetadata(MetaStream, s.Name),
			pq.KeyValueMetadata(MetaSchemaVersion, s.SchemaVersion()))}
}

// Write appends the event ev (valid: every required field set) that sat at
// offset of partition, written to Kafka at kafkaMs (Unix ms).
func (lw *LakeWriter) Write(ev *schemas.Event, partition int32, offset, kafkaMs int64) error {
	// Columns are in LakeColumns order: the fields, then partition,
	// offset and Kafka time.
	row := make(pq.Row, lw.n+3)
	for i, f := range lw.s.Fields {
		v := ev.Values[i]
		if !v.Set {
			row[i] = pq.Value{}.Level(0, 0, i)
			continue
		}
		row[i] = fieldValue(f.Type, v).Level(0, 1, i)
	}
	row[lw.n] = pq.Int32Value(partition).Level(0, 0, lw.n)
	row[lw.n+1] = pq.Int64Value(offset).Level(0, 0, lw.n+1)
	row[lw.n+2] = pq.Int64Value(kafkaMs).Level(0, 0, lw.n+2)
	lw.buf = append(lw.buf, row)
	if len(lw.buf) == cap(lw.buf) {
		return lw.flush()
	}
	return nil
}

func (lw *LakeWriter) flush() error {
	if len(lw.buf) == 0 {
		return nil
	}
	_, err := lw.w.WriteRows(lw.buf)
	lw.buf = lw.buf[:0]
	return err
}

// Close writes the buffered rows and the footer. It does not close the
// underlying writer.
func (lw *LakeWriter) Close() error {
	if err := lw.flush(); err != nil {
		return err
	}
	return lw.w.Close()
}
