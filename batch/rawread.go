package batch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/internal/objstore"
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
	pf                    *pq.File
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
	pf, err := pq.OpenFile(ra, size, pq.SkipBloomFilters(true), pq.SkipPageIndex(true), pq.ReadBufferSize(rawPageBuffer))
	if err != nil {
		return nil, err
	}
	r := &rawFileReader{src: c, ra: ra, pf: pf, stream: s, colTime: -1}
	look := func(name string) (int, error) {
		leaf, ok := pf.Schema().Lookup(name)
		if !ok {
			return -1, fmt.Errorf("raw file has no %s column", name)
		}
		return leaf.ColumnIndex, nil
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

func (r *rawFileReader) numRowGroups() int { return len(r.pf.RowGroups()) }

// timeBounds returns the min and max event time (Unix ms) the archiver's
// typed time column holds in row group i. ok is false when unknown (no
// statistics, or only nulls): the caller must then read the row group.
func (r *rawFileReader) timeBounds(i int) (minMs, maxMs int64, ok bool) {
	if r.colTime < 0 {
		return 0, 0, false
	}
	cc := r.pf.RowGroups()[i].ColumnChunks()[r.colTime]
	fc, isFile := cc.(*pq.FileColumnChunk)
	if !isFile {
		return 0, 0, false
	}
	lo, hi, ok := fc.Bounds()
	if !ok || lo.IsNull() || hi.IsNull() || lo.Kind() != pq.Int64 {
		return 0, 0, false
	}
	return lo.Int64(), hi.Int64(), true
}

// offsetBounds returns the first and last offset of row group i.
func (r *rawFileReader) offsetBounds(i int) (lo, hi int64, ok bool) {
	cc := r.pf.RowGroups()[i].ColumnChunks()[r.colOff]
	fc, isFile := cc.(*pq.FileColumnChunk)
	if !isFile {
		return 0, 0, false
	}
	a, b, ok := fc.Bounds()
	if !ok || a.Kind() != pq.Int64 {
		return 0, 0, false
	}
	return a.Int64(), b.Int64(), true
}

// rowStream reads rows of one row group page by page, the columns in
// step, so memory holds a page of each, never a whole row group (an
// archiver's row group can hold a whole 128 MB object).
type rowStream struct {
	offs, kts int64Pages
	raw       bytesPages
	// Typed files: the typed columns, and _raw opened at the first row
	// that needs it (rawAt rows of it consumed), so a row group of valid
	// messages only never decompresses it.
	fields         []fieldPages
	rawCol         func() pq.Pages
	rawOpen        bool
	refusedInvalid bool
	row, rawAt     int64
	idIdx, tmIdx   int
}

func (r *rawFileReader) rows(g int) *rowStream {
	cols := r.pf.RowGroups()[g].ColumnChunks()
	s := &rowStream{
		offs: int64Pages{pages: r.pages(g, cols, r.colOff), name: schemas.ColOffset},
		kts:  int64Pages{pages: r.pages(g, cols, r.colTS), name: schemas.ColKafkaTS},
	}
	if !r.typed() {
		s.raw, s.rawOpen = bytesPages{pages: r.pages(g, cols, r.colRaw)}, true
		return s
	}
	s.rawCol = func() pq.Pages { return r.pages(g, cols, r.colRaw) }
	s.refusedInvalid = r.refusedInvalid
	s.idIdx, s.tmIdx = r.stream.FieldIndex(r.stream.IDField), r.stream.FieldIndex(r.stream.TimeField)
	s.fields = make([]fieldPages, len(r.colFields))
	for i, c := range r.colFields {
		s.fields[i] = fieldPages{pages: r.pages(g, cols, c), name: r.stream.Fields[i].Name, typ: r.stream.Fields[i].Type}
	}
	return s
}

// pages returns the pages of column c of row group g, read ahead through
// a chunkReader: a buffer the size of the chunk (at most rawReadBuffer)
// instead of a rawReadBuffer for every column whatever its size, the
// chunk still read with one GET per rawReadBuffer.
func (r *rawFileReader) pages(g int, cols []pq.ColumnChunk, c int) pq.Pages {
	fc, ok := cols[c].(*pq.FileColumnChunk)
	rgs := r.pf.Metadata().RowGroups
	if !ok || g >= len(rgs) || c >= len(rgs[g].Columns) {
		return cols[c].Pages()
	}
	md := &rgs[g].Columns[c].MetaData
	start := md.DataPageOffset
	if md.DictionaryPageOffset != 0 {
		start = md.DictionaryPageOffset
	}
	return fc.PagesFrom(&chunkReader{ra: r.ra, end: start + md.TotalCompressedSize, window: rawReadBuffer})
}

// chunkReader reads a column chunk (the bytes before end) ahead in
// windows of at most window bytes, for parquet-go's small buffer to
// refill from. Reads outside the window go to ra.
type chunkReader struct {
	ra     io.ReaderAt
	end    int64
	window int64
	buf    []byte // the chunk's bytes from off
	off    int64
}

func (c *chunkReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for len(p) > 0 {
		if off >= c.off && off < c.off+int64(len(c.buf)) {
			k := copy(p, c.buf[off-c.off:])
			n, off, p = n+k, off+int64(k), p[k:]
			continue
		}
		size := min(c.end-off, c.window)
		if size <= int64(len(p)) { // past the chunk, or no smaller than p
			k, err := c.ra.ReadAt(p, off)
			return n + k, err
		}
		if int64(cap(c.buf)) < size {
			c.buf = make([]byte, size)
		}
		k, err := c.ra.ReadAt(c.buf[:size], off)
		c.buf, c.off = c.buf[:k], off
		if k == 0 {
			return n, err
		}
	}
	return n, nil
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
	r.off, err = s.offs.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			// Every column must end here too.
			if _, e := s.kts.next(); !errors.Is(e, io.EOF) {
				return errors.New("columns of different lengths")
			}
			if s.fields == nil {
				if _, e := s.raw.next(); !errors.Is(e, io.EOF) {
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
	if r.kafkaMs, err = s.kts.next(); err != nil {
		return shorter(err)
	}
	if s.fields == nil {
		r.kind = rowRaw
		r.raw, err = s.raw.next()
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
		s.raw, s.rawOpen = bytesPages{pages: s.rawCol()}, true
	}
	for ; s.rawAt < row; s.rawAt++ {
		if _, err = s.raw.next(); err != nil {
			return shorter(err)
		}
	}
	r.raw, err = s.raw.next()
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
	s.offs.close()
	s.kts.close()
	if s.rawOpen {
		s.raw.close()
	}
	for i := range s.fields {
		s.fields[i].close()
	}
}

// int64Pages yields the values of a required INT64 column chunk.
type int64Pages struct {
	pages pq.Pages
	name  string
	page  pq.Page
	vals  []int64
	own   []int64
	i     int
	buf   []pq.Value
}

func (c *int64Pages) next() (int64, error) {
	for c.i >= len(c.vals) {
		if err := c.load(); err != nil {
			return 0, err
		}
	}
	v := c.vals[c.i]
	c.i++
	return v, nil
}

func (c *int64Pages) load() error {
	c.release()
	p, err := c.pages.ReadPage()
	if err != nil {
		return err
	}
	c.page, c.i = p, 0
	if p.NumNulls() > 0 {
		return fmt.Errorf("column %s: unexpected nulls", c.name)
	}
	if p.Dictionary() == nil {
		d := p.Data()
		c.vals = d.Int64()
		return nil
	}
	c.own = c.own[:0]
	vals, err := readValues(p, &c.buf)
	for _, v := range vals {
		c.own = append(c.own, v.Int64())
	}
	c.vals = c.own
	return err
}

func (c *int64Pages) release() {
	if c.page != nil {
		pq.Release(c.page)
		c.page, c.vals = nil, nil
	}
}

func (c *int64Pages) close() {
	c.release()
	c.pages.Close()
}

// bytesPages yields the values of a required BYTE_ARRAY column chunk.
type bytesPages struct {
	pages pq.Pages
	page  pq.Page
	data  []byte
	offs  []uint32 // data[offs[i]:offs[i+1]] is value i
	i     int
	own   []byte
	ownO  []uint32
	buf   []pq.Value
}

func (c *bytesPages) next() ([]byte, error) {
	for c.i+1 >= len(c.offs) {
		if err := c.load(); err != nil {
			return nil, err
		}
	}
	v := c.data[c.offs[c.i]:c.offs[c.i+1]]
	c.i++
	return v, nil
}

func (c *bytesPages) load() error {
	c.release()
	p, err := c.pages.ReadPage()
	if err != nil {
		return err
	}
	c.page, c.i = p, 0
	if p.NumNulls() > 0 {
		return fmt.Errorf("column %s: unexpected nulls", schemas.ColRaw)
	}
	if p.Dictionary() == nil {
		d := p.Data()
		c.data, c.offs = d.ByteArray()
		return nil
	}
	vals, err := readValues(p, &c.buf)
	c.own, c.ownO = c.own[:0], append(c.ownO[:0], 0)
	for _, v := range vals {
		c.own = append(c.own, v.ByteArray()...)
		c.ownO = append(c.ownO, uint32(len(c.own)))
	}
	c.data, c.offs = c.own, c.ownO
	return err
}

func (c *bytesPages) release() {
	if c.page != nil {
		pq.Release(c.page)
		c.page, c.data, c.offs = nil, nil, nil
	}
}

func (c *bytesPages) close() {
	c.release()
	c.pages.Close()
}

// readValues reads a dictionary-encoded page's values into *buf.
func readValues(p pq.Page, buf *[]pq.Value) ([]pq.Value, error) {
	if cap(*buf) < int(p.NumValues()) {
		*buf = make([]pq.Value, p.NumValues())
	}
	vals := (*buf)[:p.NumValues()]
	n, err := p.Values().ReadValues(vals)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return vals[:n], nil
}
