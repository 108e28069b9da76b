package batch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// rawFileReader reads the columns a run needs from a raw object: _offset,
// _kafka_ts, and either the typed columns, with _raw only for the rows
// whose typed columns are null (a file whose typed columns hold Decoder's
// output, see rawtyped.go), or _raw alone (any other file: every message
// is decoded again).
type rawFileReader struct {
	src                   io.Closer
	ra                    io.ReaderAt
	pf                    *parquet.RawFile
	stream                *schemas.Stream
	colOff, colTS, colRaw int
	colTime               int   // the stream's typed time field, for row-group pruning; -1 if absent
	colFields             []int // per declared field; nil: the typed columns are not used
	refusedInvalid        bool  // a row with null typed id is invalid (typedColumns)
}

// rawReadRanged chooses how raw objects are read: true reads only the
// byte ranges of the needed column chunks with ranged GETs (a large
// buffer, so a column chunk costs a few requests); false downloads the
// whole object to an unlinked temporary file first. Both are tested; the
// benchmark decides the default (docs/performance.md).
var rawReadRanged = true

// rawReadBuffer is the most a column chunk is read ahead by (chunkReader):
// with ranged reads, the largest GET. A chunk no larger is one GET.
const rawReadBuffer = 4 << 20

// rawPageBuffer is parquet-go's own read buffer per column (and the first
// read of the footer); it refills from the chunkReader's window.
const rawPageBuffer = 64 << 10

// openRawFile opens key for reading; dir holds temporary files; runSkew
// is the future skew the run validates with.
func openRawFile(ctx context.Context, st objstore.Bucket, key, dir string, s *schemas.Stream, runSkew time.Duration) (*rawFileReader, error) {
	if rawReadRanged {
		obj, err := objstore.Open(ctx, st, key)
		if err != nil {
			return nil, err
		}
		r, err := newRawFileReader(obj, obj, obj.Size(), s, runSkew)
		if err != nil {
			obj.Close()
			return nil, fmt.Errorf("batch: %s: %w", key, err)
		}
		return r, nil
	}
	body, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	f, err := os.CreateTemp(dir, "raw-*.parquet")
	if err != nil {
		return nil, fmt.Errorf("batch: temporary file for %s: %w", key, err)
	}
	os.Remove(f.Name()) // unlinked: the space is freed when closed, even after a crash
	size, err := io.Copy(f, body)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("batch: downloading %s: %w", key, err)
	}
	r, err := newRawFileReader(f, f, size, s, runSkew)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("batch: %s: %w", key, err)
	}
	return r, nil
}

func newRawFileReader(ra io.ReaderAt, c io.Closer, size int64, s *schemas.Stream, runSkew time.Duration) (*rawFileReader, error) {
	pf, err := parquet.OpenRawFile(ra, size, rawPageBuffer)
	if err != nil {
		return nil, err
	}
	r := &rawFileReader{src: c, ra: ra, pf: pf, stream: s, colTime: -1}
	look := func(name string) (int, error) {
		c, ok := pf.Column(name)
		if !ok {
			return -1, fmt.Errorf("raw file has no %s column", name)
		}
		return c, nil
	}
	if r.colOff, err = look(schemas.ColOffset); err != nil {
		return nil, err
	}
	if r.colTS, err = look(schemas.ColKafkaTS); err != nil {
		return nil, err
	}
	if r.colRaw, err = look(schemas.ColRaw); err != nil {
		return nil, err
	}
	if c, err := look(s.TimeField); err == nil {
		r.colTime = c
	}
	if cols, refusedInvalid, ok := typedColumns(pf, s, runSkew); ok {
		r.colFields, r.refusedInvalid = cols, refusedInvalid
	}
	return r, nil
}

// typed reports whether rows come with their typed columns.
func (r *rawFileReader) typed() bool { return r.colFields != nil }

func (r *rawFileReader) Close() error { return r.src.Close() }

func (r *rawFileReader) numRowGroups() int { return r.pf.NumRowGroups() }

// timeBounds returns the min and max event time (Unix ms) the archiver's
// typed time column holds in row group i. ok is false when unknown (no
// statistics, or only nulls): the caller must then read the row group.
func (r *rawFileReader) timeBounds(i int) (minMs, maxMs int64, ok bool) {
	if r.colTime < 0 {
		return 0, 0, false
	}
	return r.pf.Int64Bounds(i, r.colTime)
}

// offsetBounds returns the first and last offset of row group i.
func (r *rawFileReader) offsetBounds(i int) (lo, hi int64, ok bool) {
	return r.pf.Int64Bounds(i, r.colOff)
}

// rowStream reads rows of one row group page by page, the columns in
// step, so memory holds a page of each, never a whole row group (an
// archiver's row group can hold a whole 128 MB object).
type rowStream struct {
	offs, kts *parquet.Int64Pages
	raw       *parquet.BytesPages
	// Typed files: the typed columns, and _raw opened at the first row
	// that needs it (rawAt rows of it consumed), so a row group of valid
	// messages only never decompresses it.
	fields         []fieldCol
	rawCol         func() *parquet.BytesPages
	rawOpen        bool
	refusedInvalid bool
	row, rawAt     int64
	idIdx, tmIdx   int
}

func (r *rawFileReader) rows(g int) *rowStream {
	s := &rowStream{
		offs: r.pf.Int64Column(g, r.colOff, schemas.ColOffset, rawReadBuffer),
		kts:  r.pf.Int64Column(g, r.colTS, schemas.ColKafkaTS, rawReadBuffer),
	}
	raw := func() *parquet.BytesPages { return r.pf.BytesColumn(g, r.colRaw, schemas.ColRaw, rawReadBuffer) }
	if !r.typed() {
		s.raw, s.rawOpen = raw(), true
		return s
	}
	s.rawCol = raw
	s.refusedInvalid = r.refusedInvalid
	s.idIdx, s.tmIdx = r.stream.FieldIndex(r.stream.IDField), r.stream.FieldIndex(r.stream.TimeField)
	s.fields = make([]fieldCol, len(r.colFields))
	for i, c := range r.colFields {
		f := r.stream.Fields[i]
		s.fields[i] = fieldCol{pages: r.pf.TypedColumnPages(g, c, f.Name, f.Type, rawReadBuffer), typ: f.Type}
	}
	return s
}

// What rowStream.next makes of a row.
const (
	rowRaw     = iota // its original bytes, to decode
	rowTyped          // its spill record, id and time, from the typed columns
	rowRefused        // nothing: the writer refused it, and so would the run
)

// rawRow is one row as rowStream.next returns it; its slices are valid
// until the following call.
type rawRow struct {
	off, kafkaMs int64
	kind         uint8
	raw          []byte // rowRaw: the original bytes
	id           []byte // rowTyped: the event id
	timeMs       int64  // rowTyped: the event time (Unix ms)
	rec          []byte // rowTyped: the spill record, as encodeRecord writes it
}

// next reads the next row into r; it returns io.EOF after the last.
func (s *rowStream) next(r *rawRow) (err error) {
	r.raw, r.id = nil, nil
	r.off, err = s.offs.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			// Every column must end here too.
			if _, e := s.kts.Next(); !errors.Is(e, io.EOF) {
				return errors.New("columns of different lengths")
			}
			if s.fields == nil {
				if _, e := s.raw.Next(); !errors.Is(e, io.EOF) {
					return errors.New("columns of different lengths")
				}
			}
			for i := range s.fields {
				if _, _, _, _, e := s.fields[i].encodeNext(nil); !errors.Is(e, io.EOF) {
					return errors.New("columns of different lengths")
				}
			}
		}
		return err
	}
	if r.kafkaMs, err = s.kts.Next(); err != nil {
		return shorter(err)
	}
	if s.fields == nil {
		r.kind = rowRaw
		r.raw, err = s.raw.Next()
		return shorter(err)
	}
	row := s.row
	s.row++

	// The record as encodeRecord writes it: length (patched below),
	// offset, Kafka time, presence bitmap, set values.
	b := append(r.rec[:0], 0, 0, 0, 0)
	b = binary.AppendVarint(b, r.off)
	b = binary.AppendVarint(b, r.kafkaMs)
	bm := len(b)
	for i := 0; i < (len(s.fields)+7)/8; i++ {
		b = append(b, 0)
	}
	var idSet, timeSet bool
	for i := range s.fields {
		var set bool
		var str []byte
		var n int64
		if b, set, str, n, err = s.fields[i].encodeNext(b); err != nil {
			return shorter(err)
		}
		if set {
			b[bm+i/8] |= 1 << (i % 8)
		}
		switch i {
		case s.idIdx:
			idSet, r.id = set, str
		case s.tmIdx:
			timeSet, r.timeMs = set, n
		}
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)-4))
	r.rec = b
	// A valid event has its id and time (both required).
	if idSet && timeSet {
		r.kind = rowTyped
		return nil
	}
	r.id = nil
	if s.refusedInvalid {
		r.kind = rowRefused
		return nil
	}
	// Refused by the archiver, perhaps for a reason that does not hold for
	// this run: decode it again.
	r.kind = rowRaw
	if !s.rawOpen {
		s.raw, s.rawOpen = s.rawCol(), true
	}
	for ; s.rawAt < row; s.rawAt++ {
		if _, err = s.raw.Next(); err != nil {
			return shorter(err)
		}
	}
	r.raw, err = s.raw.Next()
	s.rawAt++
	return shorter(err)
}

// shorter reports a column ending before _offset does (nil stays nil).
func shorter(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("columns of different lengths")
	}
	return err
}

func (s *rowStream) Close() {
	s.offs.Close()
	s.kts.Close()
	if s.rawOpen {
		s.raw.Close()
	}
	for i := range s.fields {
		s.fields[i].pages.Close()
	}
}
