package parquet

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"time"
	"unsafe"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/schemas"
)

// RawRecord is one Kafka message of a stream as the master dataset keeps
// it: the decoded event when it was valid, and always the original bytes
// and where the message sat in Kafka.
type RawRecord struct {
	// Event is the decoded event, nil when the message failed validation
	// (its typed columns are then null; Raw still holds it).
	Event     *schemas.Event
	Raw       []byte
	Partition int32
	Offset    int64
	KafkaTime time.Time
}

// RawWriterOptions tune a RawWriter. The zero value is valid.
type RawWriterOptions struct {
	// RowGroupBytes cuts a row group when this much is buffered
	// (default DefaultRowGroupBytes).
	RowGroupBytes int64
	// Partition is recorded in the footer metadata.
	Partition int32
	// Decoder, when set, is the one whose verdicts the records carry (Event
	// nil for the messages it refused). Its MaxFutureSkew is recorded in the
	// footer (MetaMaxFutureSkew), so a reader applying another skew knows
	// whether a refusal could depend on it.
	Decoder *schemas.Decoder
}

// RawWriter writes one raw Parquet file of a stream, row by row, to an
// io.Writer, with memory bounded by the row-group size. Records must come
// in strictly increasing offset order (readers rely on it). A RawWriter is
// used by one goroutine.
//
// Records are converted to Parquet values column by column (RawBatch) and
// encoded batchRows at a time, a run of rows per column; a caller that
// writes from another goroutine than the one that has the records can fill
// a RawBatch there and hand it to WriteBatch, which leaves the writer's
// goroutine only the encoding.
type RawWriter struct {
	stream      *schemas.Stream
	t           *tableWriter
	pending     *RawBatch // records of Write not yet encoded
	first, last int64
}

type rawIndexes struct{ raw, partition, offset, kafkaTS int }

func rawIdx(s *schemas.Stream) rawIndexes {
	n := len(s.Fields)
	return rawIndexes{raw: n, partition: n + 1, offset: n + 2, kafkaTS: n + 3}
}

// NewRawWriter starts a raw file of stream s on w.
func NewRawWriter(w io.Writer, s *schemas.Stream, opts RawWriterOptions) *RawWriter {
	meta := [][2]string{
		{MetaKind, "raw"},
		{MetaStream, s.Name},
		{MetaSchemaVersion, s.SchemaVersion()},
		{MetaDecoderVersion, schemas.DecoderVersion},
		{MetaPartition, strconv.Itoa(int(opts.Partition))},
	}
	if opts.Decoder != nil {
		meta = append(meta, [2]string{MetaMaxFutureSkew, opts.Decoder.MaxFutureSkew.String()})
	}
	return &RawWriter{
		stream: s,
		t:      newTableWriter(w, schemaOf(s.Name, s.RawColumns(), schemas.ColRaw, s.IDField), opts.RowGroupBytes, meta),
		first:  -1,
		last:   -1,
	}
}

// Write appends one record. rec.Raw and the string values of rec.Event
// are referenced, not copied, until the writer encodes them (at most a few
// hundred records later, or at Close): the caller must not modify them.
// rec.Event itself is not kept, so the caller may reuse it right away.
func (w *RawWriter) Write(rec RawRecord) error {
	if w.last >= 0 && rec.Offset <= w.last {
		return fmt.Errorf("parquet: raw record offset %d after %d: offsets must increase", rec.Offset, w.last)
	}
	if w.t.closed {
		return errors.New("parquet: write after close")
	}
	if w.pending == nil {
		w.pending = NewRawBatch(w.stream)
	}
	w.pending.Add(rec)
	if w.first < 0 {
		w.first = rec.Offset
	}
	w.last = rec.Offset
	if w.pending.Len() >= batchRows {
		return w.flushPending()
	}
	return nil
}

func (w *RawWriter) flushPending() error {
	if w.pending == nil || w.pending.Len() == 0 {
		return nil
	}
	err := w.t.writeColumns(w.pending.cols, 0, w.pending.Len())
	w.pending.Reset()
	return err
}

// WriteBatch appends records of a batch of this writer's stream from
// b[from] on, in order, as Write would one by one, and returns how many it
// took: it stops after the record that brings Size to limit or more (limit
// <= 0: no limit), and at the latest when the writer encodes its pending
// records, so that Size after it returns is what it would be after Write of
// the same records. The records' bytes are referenced until they are
// encoded, as with Write; b itself may be reset and refilled right away.
func (w *RawWriter) WriteBatch(b *RawBatch, from int, limit int64) (int, error) {
	if w.t.closed {
		return 0, errors.New("parquet: write after close")
	}
	if w.pending == nil {
		w.pending = NewRawBatch(w.stream)
	}
	to := min(b.Len(), from+batchRows-w.pending.Len())
	if limit > 0 {
		size := w.Size()
		for i := from; i < to; i++ {
			if size += int64(b.sizes[i]); size >= limit {
				to = i + 1
				break
			}
		}
	}
	if from >= to {
		return 0, nil
	}
	last := w.last
	for _, o := range b.offsets[from:to] {
		if o <= last && last >= 0 {
			return 0, fmt.Errorf("parquet: raw record offset %d after %d: offsets must increase", o, last)
		}
		last = o
	}
	w.pending.appendFrom(b, from, to)
	if w.first < 0 {
		w.first = b.offsets[from]
	}
	w.last = last
	if w.pending.Len() >= batchRows {
		return to - from, w.flushPending()
	}
	return to - from, nil
}

// RawBatch is a run of records of one stream converted to Parquet values,
// column by column, for RawWriter.WriteBatch. Like Write, it references
// rec.Raw and the event's strings, not rec.Event.
type RawBatch struct {
	stream  *schemas.Stream
	idx     rawIndexes
	cols    [][]pq.Value // per raw column, one value per record
	offsets []int64
	sizes   []int32 // estimated uncompressed size per record
	total   int64   // sum of sizes
}

// NewRawBatch returns an empty batch of stream s.
func NewRawBatch(s *schemas.Stream) *RawBatch {
	return &RawBatch{stream: s, idx: rawIdx(s), cols: make([][]pq.Value, len(s.Fields)+4)}
}

// Len is the number of records in the batch.
func (b *RawBatch) Len() int { return len(b.offsets) }

// Offset is the Kafka offset of record i.
func (b *RawBatch) Offset(i int) int64 { return b.offsets[i] }

// Reset empties the batch, dropping its references to records' bytes and
// keeping its storage.
func (b *RawBatch) Reset() {
	for c, col := range b.cols {
		clear(col)
		b.cols[c] = col[:0]
	}
	b.offsets, b.sizes, b.total = b.offsets[:0], b.sizes[:0], 0
}

// appendFrom appends records [from, to) of o.
func (b *RawBatch) appendFrom(o *RawBatch, from, to int) {
	for c := range b.cols {
		b.cols[c] = append(b.cols[c], o.cols[c][from:to]...)
	}
	b.offsets = append(b.offsets, o.offsets[from:to]...)
	for _, n := range o.sizes[from:to] {
		b.sizes = append(b.sizes, n)
		b.total += int64(n)
	}
}

// bytes estimates the batch's uncompressed size.
func (b *RawBatch) bytes() int64 { return b.total }

// Add appends one record (no order check: WriteBatch makes it).
//
// Only the definition level of a set optional value is filled in: a
// column writer reads nothing else of a value's levels and column index
// (a null is the zero Value, definition level 0; a required column ignores
// levels), and setting them all costs a fifth of the conversion.
func (b *RawBatch) Add(rec RawRecord) {
	approx := len(rec.Raw) + 24
	for i, f := range b.stream.Fields {
		if rec.Event == nil || i >= len(rec.Event.Values) || !rec.Event.Values[i].Set {
			b.cols[i] = append(b.cols[i], pq.Value{})
			continue
		}
		v := rec.Event.Values[i]
		if f.Type == schemas.TypeString {
			approx += len(v.Str)
		}
		b.cols[i] = append(b.cols[i], fieldValue(f.Type, v).Level(0, 1, i))
		approx += 8
	}
	x := b.idx
	b.cols[x.raw] = append(b.cols[x.raw], pq.ByteArrayValue(rec.Raw))
	b.cols[x.partition] = append(b.cols[x.partition], pq.Int32Value(rec.Partition))
	b.cols[x.offset] = append(b.cols[x.offset], pq.Int64Value(rec.Offset))
	b.cols[x.kafkaTS] = append(b.cols[x.kafkaTS], pq.Int64Value(rec.KafkaTime.UnixMilli()))
	b.offsets = append(b.offsets, rec.Offset)
	b.sizes = append(b.sizes, int32(min(approx, 1<<30)))
	b.total += int64(approx)
}

// Rows is the number of records written.
func (w *RawWriter) Rows() int64 { return w.t.rows }

// Offsets are the first and last offsets written (-1 before any).
func (w *RawWriter) Offsets() (first, last int64) { return w.first, w.last }

// Size estimates the file's size so far (an over-estimate until Close, as
// the open row group is counted uncompressed).
func (w *RawWriter) Size() int64 {
	if w.pending != nil {
		return w.t.size() + w.pending.bytes()
	}
	return w.t.size()
}

// Written is the number of bytes emitted so far; after Close, the file size.
func (w *RawWriter) Written() int64 { return w.t.written() }

// Close writes the footer (with the offset range in its metadata). It does
// not close the io.Writer.
func (w *RawWriter) Close() error {
	w.t.setMeta(MetaFirstOffset, strconv.FormatInt(w.first, 10))
	w.t.setMeta(MetaLastOffset, strconv.FormatInt(w.last, 10))
	if err := w.flushPending(); err != nil {
		return err
	}
	return w.t.close()
}

// RawReadOptions tune a RawReader. The zero value reads every column.
type RawReadOptions struct {
	// Columns limits which declared fields and _raw are read (names from
	// Stream.RawColumns). _partition, _offset and _kafka_ts are always read.
	// Empty reads everything.
	Columns []string
}

// RawReader iterates the records of one raw file in file order, which is
// offset order. Declared fields missing from the file (added to the stream
// after it was written) read as unset.
type RawReader struct {
	stream  *schemas.Stream
	t       *tableReader
	idx     rawIndexes
	read    []bool // per raw column: selected
	idCol   int
	timeCol int
}

// NewRawReader opens a raw file of stream s.
func NewRawReader(s *schemas.Stream, r io.ReaderAt, size int64, opts RawReadOptions) (*RawReader, error) {
	cols := s.RawColumns()
	idx := rawIdx(s)
	read := make([]bool, len(cols))
	for i := range read {
		read[i] = len(opts.Columns) == 0 || i == idx.partition || i == idx.offset || i == idx.kafkaTS
	}
	for _, name := range opts.Columns {
		found := false
		for i, c := range cols {
			if c.Name == name {
				read[i], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("parquet: stream %s has no raw column %q", s.Name, name)
		}
	}
	want := make([]schemas.Column, len(cols))
	copy(want, cols)
	t, err := openTable(r, size, want)
	if err != nil {
		return nil, err
	}
	for i := range read {
		if !read[i] {
			t.cols[i] = -1
		}
	}
	if t.cols[idx.offset] < 0 || t.cols[idx.partition] < 0 {
		return nil, fmt.Errorf("parquet: file is not a raw file of stream %s: it lacks %s or %s", s.Name, schemas.ColOffset, schemas.ColPartition)
	}
	if k, ok := t.lookup(MetaStream); ok && k != s.Name {
		return nil, fmt.Errorf("parquet: file holds stream %q, not %q", k, s.Name)
	}
	return &RawReader{stream: s, t: t, idx: idx, read: read,
		idCol: s.FieldIndex(s.IDField), timeCol: s.FieldIndex(s.TimeField)}, nil
}

// NumRows is the number of records in the file.
func (r *RawReader) NumRows() int64 { return r.t.file.NumRows() }

// Metadata reads a footer key (the Meta* constants).
func (r *RawReader) Metadata(key string) (string, bool) { return r.t.lookup(key) }

// Next returns the next record, or io.EOF after the last. Event is set
// when the record's id column was read and is not null (the message was a
// valid event); fields not read are unset in it.
func (r *RawReader) Next() (RawRecord, error) {
	if err := r.t.next(); err != nil {
		return RawRecord{}, err
	}
	vals := func(c int) pq.Value { return r.t.bufs[c][r.t.i] }
	rec := RawRecord{
		Partition: vals(r.idx.partition).Int32(),
		Offset:    vals(r.idx.offset).Int64(),
	}
	if r.t.cols[r.idx.kafkaTS] >= 0 {
		rec.KafkaTime = time.UnixMilli(vals(r.idx.kafkaTS).Int64()).UTC()
	}
	if r.t.cols[r.idx.raw] >= 0 {
		rec.Raw = append([]byte(nil), vals(r.idx.raw).ByteArray()...)
	}
	if r.idCol >= 0 && r.t.cols[r.idCol] >= 0 && !vals(r.idCol).IsNull() {
		ev := &schemas.Event{Values: make([]schemas.Value, len(r.stream.Fields))}
		for i, f := range r.stream.Fields {
			if r.t.cols[i] < 0 {
				continue
			}
			v := vals(i)
			if v.IsNull() {
				continue
			}
			sv := schemas.Value{Set: true}
			switch f.Type {
			case schemas.TypeString:
				sv.Str = string(v.ByteArray())
			case schemas.TypeInt64:
				sv.Int = v.Int64()
				sv.Float = float64(sv.Int)
			case schemas.TypeFloat64:
				sv.Float = v.Double()
			case schemas.TypeBool:
				sv.Bool = v.Boolean()
			case schemas.TypeTimestamp:
				sv.Time = time.UnixMilli(v.Int64()).UTC()
			}
			ev.Values[i] = sv
		}
		ev.ID = ev.Values[r.idCol].Str
		if r.timeCol >= 0 {
			ev.Time = ev.Values[r.timeCol].Time
		}
		rec.Event = ev
	}
	return rec, nil
}

// All iterates the remaining records; it stops at the first error.
func (r *RawReader) All() iter.Seq2[RawRecord, error] {
	return func(yield func(RawRecord, error) bool) {
		for {
			rec, err := r.Next()
			if err == io.EOF {
				return
			}
			if !yield(rec, err) || err != nil {
				return
			}
		}
	}
}

// Close releases the reader's page buffers.
func (r *RawReader) Close() error {
	r.t.closeCursors()
	return nil
}

// fieldValue is the Parquet value of one set field of a decoded event, as
// every tandem file stores it (timestamps as epoch milliseconds). A string's
// bytes are lent, not copied: parquet-go copies them when the row is
// written, so the row must be written before the event's strings change.
func fieldValue(t schemas.FieldType, v schemas.Value) pq.Value {
	switch t {
	case schemas.TypeString:
		return pq.ByteArrayValue(unsafe.Slice(unsafe.StringData(v.Str), len(v.Str)))
	case schemas.TypeInt64:
		return pq.Int64Value(v.Int)
	case schemas.TypeFloat64:
		return pq.DoubleValue(v.Float)
	case schemas.TypeBool:
		return pq.BooleanValue(v.Bool)
	case schemas.TypeTimestamp:
		return pq.Int64Value(v.Time.UnixMilli())
	}
	return pq.Value{}
}
