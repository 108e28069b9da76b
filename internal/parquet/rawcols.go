package parquet

import (
	"errors"
	"fmt"
	"io"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/schemas"
)

// RawFile is page-by-page read access to the columns of a raw file, for the
// batch scan: it reads only the column chunks asked for, a page of each at
// a time, so memory holds a page per column, never a whole row group (an
// archiver's row group can hold a whole 128 MB object). Columns are named
// by index (Column); values come out as plain Go slices and scalars.
type RawFile struct {
	ra io.ReaderAt
	pf *pq.File
}

// OpenRawFile reads the footer of the size-byte file at ra. pageBuffer is
// parquet-go's own read buffer per column (and for the footer's first
// read); it refills from the window a Pages call reads ahead.
func OpenRawFile(ra io.ReaderAt, size int64, pageBuffer int) (*RawFile, error) {
	pf, err := pq.OpenFile(ra, size, pq.SkipBloomFilters(true), pq.SkipPageIndex(true), pq.ReadBufferSize(pageBuffer))
	if err != nil {
		return nil, err
	}
	return &RawFile{ra: ra, pf: pf}, nil
}

// Column returns the index of the leaf column name.
func (f *RawFile) Column(name string) (int, bool) {
	leaf, ok := f.pf.Schema().Lookup(name)
	if !ok {
		return -1, false
	}
	return leaf.ColumnIndex, true
}

// Meta returns the footer's key-value metadata under key.
func (f *RawFile) Meta(key string) (string, bool) { return f.pf.Lookup(key) }

// TypedColumn returns the index of the typed column of field fd when it is
// what RawWriter writes for the field: optional, not repeated, of the
// field's physical type.
func (f *RawFile) TypedColumn(fd schemas.Field) (int, bool) {
	leaf, found := f.pf.Schema().Lookup(fd.Name)
	if !found || leaf.MaxRepetitionLevel != 0 || leaf.MaxDefinitionLevel != 1 || leaf.Node.Type().Kind() != PhysicalKind(schemas.FieldColumnType(fd.Type)) {
		return -1, false
	}
	return leaf.ColumnIndex, true
}

// NumRowGroups is the file's row group count.
func (f *RawFile) NumRowGroups() int { return len(f.pf.RowGroups()) }

// Int64Bounds returns the smallest and largest value of INT64 column c in
// row group g from the footer's statistics; ok is false when unknown (no
// statistics, or only nulls).
func (f *RawFile) Int64Bounds(g, c int) (lo, hi int64, ok bool) {
	cc := f.pf.RowGroups()[g].ColumnChunks()[c]
	fc, isFile := cc.(*pq.FileColumnChunk)
	if !isFile {
		return 0, 0, false
	}
	a, b, ok := fc.Bounds()
	if !ok || a.IsNull() || b.IsNull() || a.Kind() != pq.Int64 {
		return 0, 0, false
	}
	return a.Int64(), b.Int64(), true
}

// pages returns the pages of column c of row group g, read ahead through
// a chunkReader: a buffer the size of the chunk (at most window) instead
// of a window for every column whatever its size, the chunk still read
// with one request per window.
func (f *RawFile) pages(g, c int, window int64) pq.Pages {
	cols := f.pf.RowGroups()[g].ColumnChunks()
	fc, ok := cols[c].(*pq.FileColumnChunk)
	rgs := f.pf.Metadata().RowGroups
	if !ok || g >= len(rgs) || c >= len(rgs[g].Columns) {
		return cols[c].Pages()
	}
	md := &rgs[g].Columns[c].MetaData
	start := md.DataPageOffset
	if md.DictionaryPageOffset != 0 {
		start = md.DictionaryPageOffset
	}
	return fc.PagesFrom(&chunkReader{ra: f.ra, end: start + md.TotalCompressedSize, window: window})
}

// Int64Column yields the values of required INT64 column c (named name, for
// errors) in row group g, reading ahead window bytes at a time.
func (f *RawFile) Int64Column(g, c int, name string, window int64) *Int64Pages {
	return &Int64Pages{pages: f.pages(g, c, window), name: name}
}

// BytesColumn yields the values of required BYTE_ARRAY column c in row
// group g.
func (f *RawFile) BytesColumn(g, c int, name string, window int64) *BytesPages {
	return &BytesPages{pages: f.pages(g, c, window), name: name}
}

// TypedColumnPages yields the values of the optional typed column c of a
// field of type typ in row group g, row by row.
func (f *RawFile) TypedColumnPages(g, c int, name string, typ schemas.FieldType, window int64) *TypedPages {
	return &TypedPages{pages: f.pages(g, c, window), name: name, typ: typ}
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

// Int64Pages yields the values of a required INT64 column chunk.
type Int64Pages struct {
	pages pq.Pages
	name  string
	page  pq.Page
	vals  []int64
	own   []int64
	i     int
	buf   []pq.Value
}

// Next returns the next value; io.EOF after the last.
func (c *Int64Pages) Next() (int64, error) {
	for c.i >= len(c.vals) {
		if err := c.load(); err != nil {
			return 0, err
		}
	}
	v := c.vals[c.i]
	c.i++
	return v, nil
}

func (c *Int64Pages) load() error {
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

func (c *Int64Pages) release() {
	if c.page != nil {
		pq.Release(c.page)
		c.page, c.vals = nil, nil
	}
}

// Close releases the column.
func (c *Int64Pages) Close() {
	c.release()
	c.pages.Close()
}

// BytesPages yields the values of a required BYTE_ARRAY column chunk.
type BytesPages struct {
	pages pq.Pages
	name  string
	page  pq.Page
	data  []byte
	offs  []uint32 // data[offs[i]:offs[i+1]] is value i
	i     int
	own   []byte
	ownO  []uint32
	buf   []pq.Value
}

// Next returns the next value, valid until the following call; io.EOF
// after the last.
func (c *BytesPages) Next() ([]byte, error) {
	for c.i+1 >= len(c.offs) {
		if err := c.load(); err != nil {
			return nil, err
		}
	}
	v := c.data[c.offs[c.i]:c.offs[c.i+1]]
	c.i++
	return v, nil
}

func (c *BytesPages) load() error {
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

func (c *BytesPages) release() {
	if c.page != nil {
		pq.Release(c.page)
		c.page, c.data, c.offs = nil, nil, nil
	}
}

// Close releases the column.
func (c *BytesPages) Close() {
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

// TypedPages yields the values of one typed (optional) column chunk, row
// by row, without building a parquet-go value for the common types (the
// fast paths: plain or dictionary strings, int64s, doubles).
type TypedPages struct {
	pages pq.Pages
	name  string
	typ   schemas.FieldType
	page  pq.Page

	rows int    // rows in the page
	i    int    // next row
	j    int    // next non-null value
	defs []byte // definition levels (1: set); nil when the page has no nulls

	// One of these holds the page's non-null values (fast paths), or vals
	// holds one value per row (any other page).
	ints    []int64
	dbls    []float64
	data    []byte
	offs    []uint32 // data[offs[k]:offs[k+1]] is value k, or dictionary entry k when idx is set
	idx     []int32  // dictionary indexes of the values
	vals    []pq.Value
	generic bool
	buf     []pq.Value
}

// TypedValue is one row's value of a typed column: Set is false for a
// null; otherwise the field of the column's type holds it (Str for a
// string, valid until the next call; Int for an int64 or a timestamp in
// Unix ms; Float; Bool).
type TypedValue struct {
	Set   bool
	Str   []byte
	Int   int64
	Float float64
	Bool  bool
}

// Next reads the next row's value into v; io.EOF after the last row.
func (c *TypedPages) Next(v *TypedValue) error {
	for c.i >= c.rows {
		if err := c.load(); err != nil {
			return err
		}
	}
	row := c.i
	c.i++
	if c.generic {
		return c.value(v, c.vals[row])
	}
	if c.defs != nil && c.defs[row] == 0 {
		v.Set = false
		return nil
	}
	k := c.j
	c.j++
	v.Set = true
	switch c.typ {
	case schemas.TypeString:
		if c.idx != nil {
			k = int(c.idx[k])
			if k < 0 || k+1 >= len(c.offs) {
				return fmt.Errorf("column %s: dictionary index out of range", c.name)
			}
		}
		v.Str = c.data[c.offs[k]:c.offs[k+1]]
		return nil
	case schemas.TypeInt64, schemas.TypeTimestamp:
		v.Int = c.ints[k]
		return nil
	case schemas.TypeFloat64:
		v.Float = c.dbls[k]
		return nil
	}
	return fmt.Errorf("column %s: no fast path for %s", c.name, c.typ)
}

// value is Next for a generic Parquet value.
func (c *TypedPages) value(v *TypedValue, pv pq.Value) error {
	v.Set = !pv.IsNull()
	if !v.Set {
		return nil
	}
	switch c.typ {
	case schemas.TypeString:
		v.Str = pv.ByteArray()
	case schemas.TypeInt64, schemas.TypeTimestamp:
		v.Int = pv.Int64()
	case schemas.TypeFloat64:
		v.Float = pv.Double()
	case schemas.TypeBool:
		v.Bool = pv.Boolean()
	default:
		return fmt.Errorf("column %s: unknown type %s", c.name, c.typ)
	}
	return nil
}

func (c *TypedPages) load() error {
	c.release()
	p, err := c.pages.ReadPage()
	if err != nil {
		return err
	}
	c.page, c.i, c.j, c.rows = p, 0, 0, int(p.NumRows())
	c.generic, c.defs, c.idx = false, nil, nil
	if p.NumNulls() > 0 {
		c.defs = p.DefinitionLevels()
		if len(c.defs) != c.rows {
			return c.loadGeneric(p)
		}
	}
	nonNull := c.rows - int(p.NumNulls())
	d := p.Data()
	if dict := p.Dictionary(); dict != nil {
		if c.typ != schemas.TypeString {
			return c.loadGeneric(p)
		}
		c.idx = d.Int32()
		dd := dict.Page().Data()
		c.data, c.offs = dd.ByteArray()
		if len(c.idx) != nonNull {
			return c.loadGeneric(p)
		}
		return nil
	}
	switch c.typ {
	case schemas.TypeString:
		c.data, c.offs = d.ByteArray()
		if len(c.offs) != nonNull+1 {
			return c.loadGeneric(p)
		}
	case schemas.TypeInt64, schemas.TypeTimestamp:
		if c.ints = d.Int64(); len(c.ints) != nonNull {
			return c.loadGeneric(p)
		}
	case schemas.TypeFloat64:
		if c.dbls = d.Double(); len(c.dbls) != nonNull {
			return c.loadGeneric(p)
		}
	default:
		return c.loadGeneric(p)
	}
	return nil
}

// loadGeneric reads page p value by value: the path for what the fast
// paths do not know (booleans, dictionaries of numbers).
func (c *TypedPages) loadGeneric(p pq.Page) error {
	c.generic = true
	c.vals = c.buf[:0]
	if cap(c.buf) < c.rows {
		c.buf = make([]pq.Value, c.rows)
	}
	vals := c.buf[:c.rows]
	n, err := p.Values().ReadValues(vals)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if n != c.rows {
		return fmt.Errorf("column %s: page of %d rows holds %d values", c.name, c.rows, n)
	}
	c.vals = vals
	return nil
}

func (c *TypedPages) release() {
	if c.page != nil {
		pq.Release(c.page)
		c.page, c.ints, c.dbls, c.data, c.offs, c.idx, c.vals = nil, nil, nil, nil, nil, nil, nil
	}
}

// Close releases the column.
func (c *TypedPages) Close() {
	c.release()
	c.pages.Close()
}
