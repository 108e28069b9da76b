package parquet

import (
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/schemas"
)

// ViewRow is one row of a view (schemas.ViewRow). Its States are stored
// in the view's StateColumns and read back only by NewViewReaderWithStates.
type ViewRow = schemas.ViewRow

// ViewWriterOptions tune a ViewWriter. The zero value is valid.
type ViewWriterOptions struct {
	// RowGroupBytes cuts a row group when this much is buffered
	// (default DefaultRowGroupBytes).
	RowGroupBytes int64
	// RowGroupRows cuts a row group after this many rows (default: no
	// limit). Smaller groups let readers prune by window more finely.
	RowGroupRows int64
}

// ViewWriter writes a view's rows to a Parquet file with row-group
// statistics on window_start. Write rows sorted by window_start so the
// statistics let readers skip whole row groups.
type ViewWriter struct {
	view    *schemas.View
	t       *tableWriter
	maxRows int64
	inGroup int64
}

// NewViewWriter starts a view file on w.
func NewViewWriter(w io.Writer, v *schemas.View, opts ViewWriterOptions) *ViewWriter {
	meta := [][2]string{{MetaKind, "view"}, {MetaView, v.Name}, {MetaSchemaVersion, v.Fingerprint()}}
	cols := append(v.RowColumns(), v.StateColumns()...)
	return &ViewWriter{view: v, t: newTableWriter(w, schemaOf(v.Name, cols), opts.RowGroupBytes, meta), maxRows: opts.RowGroupRows}
}

// Write appends one row. Cell types are checked against the measures.
func (w *ViewWriter) Write(r ViewRow) error {
	v := w.view
	if len(r.Dims) != len(v.Dimensions) || len(r.Cells) != len(v.Measures) {
		return fmt.Errorf("parquet: view %s row has %d dimensions and %d cells, want %d and %d",
			v.Name, len(r.Dims), len(r.Cells), len(v.Dimensions), len(v.Measures))
	}
	row := w.t.row()
	row[0] = pq.Int64Value(r.WindowStart.UnixMilli()).Level(0, 0, 0)
	approx := 8
	col := 1
	for _, d := range r.Dims {
		row[col] = pq.ByteArrayValue([]byte(d)).Level(0, 0, col)
		approx += len(d)
		col++
	}
	for i, m := range v.Measures {
		var pv pq.Value
		def := 0
		switch c := r.Cells[i].(type) {
		case int64:
			pv = pq.Int64Value(c)
		case float64:
			pv, def = pq.DoubleValue(c), 1
		case *float64:
			if c != nil {
				pv, def = pq.DoubleValue(*c), 1
			}
		case nil:
		case []byte:
			pv = pq.ByteArrayValue(c)
			approx += len(c)
		default:
			return fmt.Errorf("parquet: view %s measure %s: cell of type %T", v.Name, m.Name, c)
		}
		want := schemas.MeasureColumnType(m.Type)
		if !cellFits(want, r.Cells[i]) {
			return fmt.Errorf("parquet: view %s measure %s (%s): cell of type %T does not fit", v.Name, m.Name, m.Type, r.Cells[i])
		}
		if !want.Nullable {
			def = 0
		}
		row[col] = pv.Level(0, def, col)
		approx += 8
		col++
	}
	if r.States != nil && len(r.States) != len(v.Measures) {
		return fmt.Errorf("parquet: view %s row has %d states, want %d", v.Name, len(r.States), len(v.Measures))
	}
	for i, m := range v.Measures {
		if m.SQLStateColumn() == "" {
			continue
		}
		var b []byte
		if r.States != nil {
			b = r.States[i]
		}
		row[col] = pq.ByteArrayValue(b).Level(0, 0, col)
		approx += len(b)
		col++
	}
	if err := w.t.add(row, approx); err != nil {
		return err
	}
	w.inGroup++
	if w.maxRows > 0 && w.inGroup >= w.maxRows {
		w.inGroup = 0
		if err := w.t.writePending(); err != nil {
			return err
		}
		if err := w.t.w.Flush(); err != nil {
			return fmt.Errorf("parquet: writing a row group: %w", err)
		}
	}
	return nil
}

func cellFits(c schemas.Column, cell any) bool {
	switch cell.(type) {
	case int64:
		return c.Type == schemas.ColInt64
	case float64:
		return c.Type == schemas.ColFloat64
	case *float64, nil:
		return c.Type == schemas.ColFloat64 && c.Nullable
	case []byte:
		return c.Type == schemas.ColBytes
	}
	return false
}

// Rows is the number of rows written.
func (w *ViewWriter) Rows() int64 { return w.t.rows }

// Size estimates the file's size so far.
func (w *ViewWriter) Size() int64 { return w.t.size() }

// Written is the number of bytes emitted so far; after Close, the file size.
func (w *ViewWriter) Written() int64 { return w.t.written() }

// Close writes the footer. It does not close the io.Writer.
func (w *ViewWriter) Close() error { return w.t.close() }

// RowGroupInfo describes one row group of a view file.
type RowGroupInfo struct {
	Index   int
	Rows    int64
	MinTime time.Time // smallest window_start in the group
	MaxTime time.Time // largest window_start in the group
}

// ViewReader reads a view file.
type ViewReader struct {
	view   *schemas.View
	t      *tableReader
	groups []RowGroupInfo
	states bool // read the StateColumns into ViewRow.States
}

// NewViewReader opens a view file. The file must hold every column of the
// view's current definition (RowColumns); rows come without States.
func NewViewReader(v *schemas.View, r io.ReaderAt, size int64) (*ViewReader, error) {
	return newViewReader(v, r, size, false)
}

// NewViewReaderWithStates is NewViewReader for a reader that needs the
// SQL states too (the ClickHouse load): rows carry States. A file written
// before the view had state columns reads as rows without states (nil
// entries): the view's next full recompute writes them.
func NewViewReaderWithStates(v *schemas.View, r io.ReaderAt, size int64) (*ViewReader, error) {
	return newViewReader(v, r, size, true)
}

func newViewReader(v *schemas.View, r io.ReaderAt, size int64, states bool) (*ViewReader, error) {
	cols := v.RowColumns()
	required := len(cols)
	if states {
		cols = append(cols, v.StateColumns()...)
	}
	t, err := openTable(r, size, cols)
	if err != nil {
		return nil, err
	}
	for i, c := range t.cols[:required] {
		if c < 0 {
			return nil, fmt.Errorf("parquet: view file lacks column %q of view %s", cols[i].Name, v.Name)
		}
	}
	vr := &ViewReader{view: v, t: t, states: states}
	md := t.file.Metadata()
	for i, rg := range md.RowGroups {
		info := RowGroupInfo{Index: i, Rows: rg.NumRows}
		st := rg.Columns[t.cols[0]].MetaData.Statistics
		lo, hi := st.MinValue, st.MaxValue
		if len(lo) != 8 || len(hi) != 8 {
			lo, hi = st.Min, st.Max // files from writers that only fill the old fields
		}
		if len(lo) != 8 || len(hi) != 8 {
			// No statistics: the group can never be pruned.
			info.MinTime, info.MaxTime = time.UnixMilli(-1<<62).UTC(), time.UnixMilli(1<<62).UTC()
		} else {
			info.MinTime = time.UnixMilli(int64(binary.LittleEndian.Uint64(lo))).UTC()
			info.MaxTime = time.UnixMilli(int64(binary.LittleEndian.Uint64(hi))).UTC()
		}
		vr.groups = append(vr.groups, info)
	}
	return vr, nil
}

// NumRows is the number of rows in the file.
func (r *ViewReader) NumRows() int64 { return r.t.file.NumRows() }

// RowGroups describes the file's row groups with their window_start range.
func (r *ViewReader) RowGroups() []RowGroupInfo { return r.groups }

// Metadata reads a footer key (the Meta* constants).
func (r *ViewReader) Metadata(key string) (string, bool) { return r.t.lookup(key) }

// ReadRowGroup returns every row of row group i.
func (r *ViewReader) ReadRowGroup(i int) ([]ViewRow, error) {
	return r.ReadRowGroupColumns(i, true, nil)
}

// ReadRowGroupColumns returns the rows of row group i, in file order,
// decoding only some columns: window_start and the dimensions when keys is
// set (otherwise rows have a zero WindowStart and nil Dims), and the
// measures measures marks (nil: all; a measure not marked has a nil cell).
// Columns not read are not decompressed or decoded at all.
func (r *ViewReader) ReadRowGroupColumns(i int, keys bool, measures []bool) ([]ViewRow, error) {
	if i < 0 || i >= len(r.groups) {
		return nil, fmt.Errorf("parquet: row group %d of %d", i, len(r.groups))
	}
	out := make([]ViewRow, 0, r.groups[i].Rows)
	err := r.EachRowGroupRow(i, keys, measures, func(row ViewRow) error {
		out = append(out, row)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// EachRowGroupRow calls fn with each row of row group i in file order, the
// columns read as ReadRowGroupColumns reads them, without holding the
// group's rows at once: a reader that keeps only part of each row (or
// none) needs memory for one row, not the group. fn owns the row; an error
// from fn stops the read and is returned.
func (r *ViewReader) EachRowGroupRow(i int, keys bool, measures []bool, fn func(ViewRow) error) error {
	if i < 0 || i >= len(r.groups) {
		return fmt.Errorf("parquet: row group %d of %d", i, len(r.groups))
	}
	if measures != nil && len(measures) != len(r.view.Measures) {
		return fmt.Errorf("parquet: %d measure flags for view %s's %d measures", len(measures), r.view.Name, len(r.view.Measures))
	}
	var skip []bool
	if !keys || measures != nil {
		skip = make([]bool, len(r.t.cols))
		col := 1 + len(r.view.Dimensions)
		for c := 0; c < col; c++ {
			skip[c] = !keys
		}
		for m := range r.view.Measures {
			skip[col+m] = measures != nil && !measures[m]
		}
	}
	r.t.seekColumns(i, i+1, skip)
	defer func() { r.t.skip = nil }()
	for {
		row, err := r.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(row); err != nil {
			return err
		}
	}
}

// Rows iterates the rows whose window_start is in [from, to), reading only
// the row groups whose statistics overlap it. A zero from or to leaves that
// side open.
func (r *ViewReader) Rows(from, to time.Time) iter.Seq2[ViewRow, error] {
	return func(yield func(ViewRow, error) bool) {
		for _, g := range r.groups {
			if !to.IsZero() && !g.MinTime.Before(to) || !from.IsZero() && g.MaxTime.Before(from) {
				continue
			}
			r.t.seek(g.Index, g.Index+1)
			for {
				row, err := r.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					yield(ViewRow{}, err)
					return
				}
				if !to.IsZero() && !row.WindowStart.Before(to) || !from.IsZero() && row.WindowStart.Before(from) {
					continue
				}
				if !yield(row, nil) {
					return
				}
			}
		}
	}
}

func (r *ViewReader) next() (ViewRow, error) {
	if err := r.t.next(); err != nil {
		return ViewRow{}, err
	}
	v := r.view
	val := func(c int) pq.Value { return r.t.bufs[c][r.t.i] }
	skipped := func(c int) bool { return r.t.skip != nil && r.t.skip[c] }
	row := ViewRow{Cells: make([]any, len(v.Measures))}
	col := 1
	if !skipped(0) {
		row.WindowStart = time.UnixMilli(val(0).Int64()).UTC()
		row.Dims = make([]string, len(v.Dimensions))
		for i := range v.Dimensions {
			row.Dims[i] = string(val(col + i).ByteArray())
		}
	}
	col += len(v.Dimensions)
	for i, m := range v.Measures {
		if skipped(col) {
			col++
			continue
		}
		x := val(col)
		switch c := schemas.MeasureColumnType(m.Type); {
		case c.Type == schemas.ColInt64:
			row.Cells[i] = x.Int64()
		case c.Type == schemas.ColFloat64 && c.Nullable:
			if x.IsNull() {
				row.Cells[i] = (*float64)(nil)
			} else {
				f := x.Double()
				row.Cells[i] = &f
			}
		case c.Type == schemas.ColFloat64:
			row.Cells[i] = x.Double()
		default:
			row.Cells[i] = append([]byte{}, x.ByteArray()...)
		}
		col++
	}
	if r.states {
		row.States = make([][]byte, len(v.Measures))
		for i, m := range v.Measures {
			if m.SQLStateColumn() == "" {
				continue
			}
			if b := val(col).ByteArray(); len(b) > 0 {
				row.States[i] = append([]byte{}, b...)
			}
			col++
		}
	}
	return row, nil
}

// Close releases the reader's page buffers.
func (r *ViewReader) Close() error {
	r.t.closeCursors()
	return nil
}
