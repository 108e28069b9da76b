package parquet

import (
	"errors"
	"fmt"
	"io"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/schemas"
)

// batchRows is how many rows a writer hands to parquet-go at once and a
// reader decodes at once per column.
const batchRows = 512

// tableWriter writes rows of a flat schema, cutting row groups by buffered
// size so memory stays bounded however large the file grows.
type tableWriter struct {
	out           *countingWriter
	w             *pq.Writer
	ncols         int
	rowGroupBytes int64
	pending       []pq.Row
	slab          []pq.Value
	pendingBytes  int64
	rows          int64
	closed        bool
}

func newTableWriter(out io.Writer, schema *pq.Schema, rowGroupBytes int64, meta [][2]string) *tableWriter {
	if rowGroupBytes <= 0 {
		rowGroupBytes = DefaultRowGroupBytes
	}
	cw := &countingWriter{w: out}
	opts := []pq.WriterOption{schema, pq.Compression(codec), pq.CreatedBy("tandem", "", ""),
		// Values unique per row (ids, raw JSON) would grow a dictionary
		// without bound; past this size a column falls back to PLAIN.
		pq.DictionaryMaxBytes(4 << 20),
		pq.PageBufferSize(256 << 10),
	}
	for _, kv := range meta {
		opts = append(opts, pq.KeyValueMetadata(kv[0], kv[1]))
	}
	return &tableWriter{out: cw, w: pq.NewWriter(cw, opts...), ncols: len(schema.Columns()), rowGroupBytes: rowGroupBytes}
}

// row returns a zeroed row of ncols values to fill; it stays valid until
// the pending rows are written.
func (t *tableWriter) row() pq.Row {
	if len(t.slab) < t.ncols {
		t.slab = make([]pq.Value, t.ncols*batchRows)
	}
	r := pq.Row(t.slab[:t.ncols:t.ncols])
	t.slab = t.slab[t.ncols:]
	return r
}

// add queues a filled row. approxBytes estimates its size before encoding.
func (t *tableWriter) add(r pq.Row, approxBytes int) error {
	if t.closed {
		return errors.New("parquet: write after close")
	}
	t.pending = append(t.pending, r)
	t.pendingBytes += int64(approxBytes)
	t.rows++
	if len(t.pending) >= batchRows {
		return t.writePending()
	}
	return nil
}

func (t *tableWriter) writePending() error {
	if len(t.pending) == 0 {
		return nil
	}
	if _, err := t.w.WriteRows(t.pending); err != nil {
		return fmt.Errorf("parquet: writing rows: %w", err)
	}
	clear(t.pending) // drop references to the callers' bytes
	t.pending = t.pending[:0]
	t.pendingBytes = 0
	if t.w.Size()-t.out.n >= t.rowGroupBytes {
		if err := t.w.Flush(); err != nil {
			return fmt.Errorf("parquet: writing a row group: %w", err)
		}
	}
	return nil
}

// columnChunkRows is how many rows writeColumns hands to a column writer
// at once: a column writer cuts a page only between calls, so this bounds
// how far a page can exceed the page buffer size (as parquet-go's own
// WriteRows, which hands 64).
const columnChunkRows = 64

// writeColumns writes rows [from, to) given column by column: cols[c] holds
// column c's values of every row, with their levels set. It is the
// columnar counterpart of row/add (which it must not be mixed with before
// those rows are written): no row is assembled or taken apart, and each
// column writer gets a run of values at once.
func (t *tableWriter) writeColumns(cols [][]pq.Value, from, to int) error {
	if t.closed {
		return errors.New("parquet: write after close")
	}
	if err := t.writePending(); err != nil {
		return err
	}
	for from < to {
		n := min(to-from, columnChunkRows)
		writers := t.w.ColumnWriters()
		for c, vals := range cols {
			if _, err := writers[c].WriteRowValues(vals[from : from+n]); err != nil {
				return fmt.Errorf("parquet: writing column %d: %w", c, err)
			}
		}
		t.rows += int64(n)
		from += n
		if t.w.Size()-t.out.n >= t.rowGroupBytes {
			if err := t.w.Flush(); err != nil {
				return fmt.Errorf("parquet: writing a row group: %w", err)
			}
		}
	}
	return nil
}

// size estimates the file's size so far: bytes written, the buffered row
// group (uncompressed, so an over-estimate) and rows not yet encoded.
func (t *tableWriter) size() int64 { return t.w.Size() + t.pendingBytes }

func (t *tableWriter) setMeta(key, value string) { t.w.SetKeyValueMetadata(key, value) }

// close writes the last row group and the footer. It does not close the
// underlying writer.
func (t *tableWriter) close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	if err := t.writePending(); err != nil {
		return err
	}
	if err := t.w.Close(); err != nil {
		return fmt.Errorf("parquet: closing file: %w", err)
	}
	return nil
}

// written is the number of bytes written to the output so far (the file's
// size after close).
func (t *tableWriter) written() int64 { return t.out.n }

// tableReader reads selected columns of a flat file row group by row
// group, a batch of values per column at a time.
type tableReader struct {
	file  *pq.File
	cols  []int // file leaf index per wanted column, -1 when the file lacks it
	group int   // row group being read, -1 before the first
	left  int64 // rows of the group not yet returned
	end   int   // row groups at or past end are not read

	// skip, when set, marks wanted columns not to read this time: their
	// values are null, as for a column the file lacks (see seekColumns).
	skip []bool

	cursors []*columnCursor
	bufs    [][]pq.Value
	n, i    int // rows in the current batch, and the position in it
}

// openTable opens a file and maps the wanted columns onto its columns by
// name, checking that each present column has the expected physical type.
func openTable(r io.ReaderAt, size int64, want []schemas.Column) (*tableReader, error) {
	f, err := pq.OpenFile(r, size, pq.SkipBloomFilters(true), pq.ReadBufferSize(1<<20))
	if err != nil {
		return nil, fmt.Errorf("parquet: opening file: %w", err)
	}
	byName := map[string]int{}
	for i, path := range f.Schema().Columns() {
		if len(path) == 1 {
			byName[path[0]] = i
		}
	}
	leaves := f.Schema().Fields()
	t := &tableReader{file: f, group: -1, end: len(f.RowGroups()), cols: make([]int, len(want))}
	for i, c := range want {
		idx, ok := byName[c.Name]
		if !ok {
			t.cols[i] = -1
			continue
		}
		kind := leaves[idx].Type().Kind()
		if kind != PhysicalKind(c.Type) {
			return nil, fmt.Errorf("parquet: column %q is stored as %s, want %s", c.Name, kind, PhysicalKind(c.Type))
		}
		t.cols[i] = idx
	}
	t.cursors = make([]*columnCursor, len(want))
	t.bufs = make([][]pq.Value, len(want))
	for i := range t.bufs {
		t.bufs[i] = make([]pq.Value, batchRows)
	}
	return t, nil
}

// PhysicalKind is the Parquet physical type tandem stores a column of type
// t as, in raw and view files alike.
func PhysicalKind(t schemas.ColumnType) pq.Kind {
	switch t {
	case schemas.ColTimestamp, schemas.ColInt64:
		return pq.Int64
	case schemas.ColInt32:
		return pq.Int32
	case schemas.ColFloat64:
		return pq.Double
	case schemas.ColBool:
		return pq.Boolean
	}
	return pq.ByteArray
}

// seek positions the reader at the start of row group g and limits it to
// groups before end.
func (t *tableReader) seek(g, end int) {
	t.seekColumns(g, end, nil)
}

// seekColumns is seek reading only the wanted columns skip does not mark
// (nil: all): a skipped column's pages are never decoded.
func (t *tableReader) seekColumns(g, end int, skip []bool) {
	t.closeCursors()
	t.group, t.end, t.left, t.n, t.i = g-1, end, 0, 0, 0
	t.skip = skip
}

// next advances to the next row. It returns io.EOF after the last. The
// row's values are t.bufs[c][t.i], valid until the next call.
func (t *tableReader) next() error {
	t.i++
	if t.i < t.n {
		return nil
	}
	for t.left == 0 {
		t.closeCursors()
		t.group++
		if t.group >= t.end {
			return io.EOF
		}
		rg := t.file.RowGroups()[t.group]
		t.left = rg.NumRows()
		chunks := rg.ColumnChunks()
		for c, idx := range t.cols {
			if idx >= 0 && (t.skip == nil || !t.skip[c]) {
				t.cursors[c] = &columnCursor{pages: chunks[idx].Pages()}
			}
		}
	}
	n := int(min(t.left, batchRows))
	for c, cur := range t.cursors {
		if cur == nil {
			for j := range n {
				t.bufs[c][j] = pq.Value{}
			}
			continue
		}
		if err := cur.readFull(t.bufs[c][:n]); err != nil {
			return fmt.Errorf("parquet: row group %d, column %d: %w", t.group, t.cols[c], err)
		}
	}
	t.left -= int64(n)
	t.n, t.i = n, 0
	return nil
}

func (t *tableReader) closeCursors() {
	for i, c := range t.cursors {
		if c != nil {
			c.close()
			t.cursors[i] = nil
		}
	}
}

// columnCursor reads the values of one column chunk page after page.
type columnCursor struct {
	pages  pq.Pages
	page   pq.Page
	values pq.ValueReader
}

// readFull fills buf with the next len(buf) values of the column. Byte
// arrays in buf point into page memory: copy what must outlive the next call.
func (c *columnCursor) readFull(buf []pq.Value) error {
	for len(buf) > 0 {
		if c.values == nil {
			p, err := c.pages.ReadPage()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return io.ErrUnexpectedEOF // fewer values than rows
				}
				return err
			}
			c.page, c.values = p, p.Values()
		}
		n, err := c.values.ReadValues(buf)
		buf = buf[n:]
		if errors.Is(err, io.EOF) {
			// Page memory is not released to parquet-go's pool: values
			// of this page may still be in the caller's batch.
			c.page, c.values = nil, nil
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *columnCursor) close() {
	if c.pages != nil {
		c.pages.Close()
	}
}

// lookup reads footer metadata.
func (t *tableReader) lookup(key string) (string, bool) { return t.file.Lookup(key) }
