package clickhouse

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/schemas"
)

// Inserts go column by column: a block holds each column of the table in
// the Go type its ClickHouse column takes, and the insert hands every
// column to clickhouse-go in one call (batch.Column(i).Append) instead of
// one call per row with a []any of boxed values. That is the speed layer's
// hot path: it writes every flush this way.
//
// A block is sent as one batch, which ClickHouse writes as one part: its
// rows become visible together or not at all (callers keep blocks well
// below max_insert_block_size, 1,048,576 rows, so the server does not split
// them).

// SpeedBlock is a block of one view's speed rows for DB.InsertSpeedBlock.
// Build it with Append (from a schemas.Aggregate, what the speed layer
// holds) or AppendRow (from a SpeedRow's cells). Reset empties it and keeps
// its storage for the next block. A SpeedBlock is not safe for concurrent
// use.
type SpeedBlock struct {
	view     *schemas.View
	windows  []time.Time
	dims     [][]string // one column per dimension
	cells    []cellColumn
	parts    []uint32
	chunks   []uint64
	versions []uint64
	states   []stateValues // by measure; used by distinct and quantiles
	scratch  []any         // AppendRow's normalised cells
}

// cellColumn is one measure's column; which slice is used depends on the
// measure's type.
type cellColumn struct {
	ints   []int64   // count
	floats []float64 // sum; min and max values
	valid  []bool    // min and max: false is NULL (no event had the field)
	bytes  [][]byte  // distinct and quantiles sketches
	ptrs   []*float64
}

// NewSpeedBlock returns an empty block for v's speed rows with room for
// capacity rows.
func NewSpeedBlock(v *schemas.View, capacity int) *SpeedBlock {
	b := &SpeedBlock{view: v, dims: make([][]string, len(v.Dimensions)), cells: make([]cellColumn, len(v.Measures)), states: make([]stateValues, len(v.Measures))}
	b.grow(capacity)
	return b
}

// View returns the view whose rows the block holds.
func (b *SpeedBlock) View() *schemas.View { return b.view }

// Len returns the number of rows in the block.
func (b *SpeedBlock) Len() int { return len(b.windows) }

// Reset empties the block, keeping its storage. Sketch bytes appended
// before are no longer referenced.
func (b *SpeedBlock) Reset() {
	b.windows = b.windows[:0]
	for i := range b.dims {
		clear(b.dims[i])
		b.dims[i] = b.dims[i][:0]
	}
	for i := range b.cells {
		c := &b.cells[i]
		clear(c.bytes)
		clear(c.ptrs)
		c.ints, c.floats, c.valid, c.bytes, c.ptrs = c.ints[:0], c.floats[:0], c.valid[:0], c.bytes[:0], c.ptrs[:0]
	}
	b.parts, b.chunks, b.versions = b.parts[:0], b.chunks[:0], b.versions[:0]
	for i := range b.states {
		b.states[i].reset()
	}
}

// grow makes room for n more rows.
func (b *SpeedBlock) grow(n int) {
	if n <= 0 {
		return
	}
	b.windows = growTo(b.windows, n)
	for i := range b.dims {
		b.dims[i] = growTo(b.dims[i], n)
	}
	for i, m := range b.view.Measures {
		c := &b.cells[i]
		switch m.Kind().Cell {
		case schemas.CellInt64:
			c.ints = growTo(c.ints, n)
		case schemas.CellFloat64:
			c.floats = growTo(c.floats, n)
		case schemas.CellNullableFloat64:
			c.floats, c.valid = growTo(c.floats, n), growTo(c.valid, n)
		default:
			c.bytes = growTo(c.bytes, n)
		}
	}
	b.parts, b.chunks, b.versions = growTo(b.parts, n), growTo(b.chunks, n), growTo(b.versions, n)
}

func growTo[T any](s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	out := make([]T, len(s), len(s)+n)
	copy(out, s)
	return out
}

// checkSpeedKey refuses what the speed table cannot store.
func (b *SpeedBlock) checkSpeedKey(dims, measures int, partition int32, chunk, version int64) error {
	v := b.view
	if dims != len(v.Dimensions) || measures != len(v.Measures) {
		return fmt.Errorf("clickhouse: row of view %s has %d dimensions and %d measures; the view has %d and %d",
			v.Name, dims, measures, len(v.Dimensions), len(v.Measures))
	}
	if partition < 0 || chunk < 0 || version < 0 {
		return fmt.Errorf("clickhouse: speed row of view %s: negative partition, chunk or version (%d, %d, %d)", v.Name, partition, chunk, version)
	}
	return nil
}

// Append adds one row: the window's start, the dimension values in the
// view's order, the aggregate (one state per measure, in the view's order),
// and the row's partition, chunk and version. Each cell is the value
// schemas.Measure.Cell gives (count and sum read straight from the state,
// min and max NULL when no event had the field, sketches serialised). The
// block keeps dims' strings and nothing else of agg. On error nothing is
// appended.
func (b *SpeedBlock) Append(window time.Time, dims []string, agg schemas.Aggregate, partition int32, chunk, version int64) error {
	if err := b.checkSpeedKey(len(dims), len(agg), partition, chunk, version); err != nil {
		return err
	}
	b.windows = append(b.windows, window.UTC())
	for i, d := range dims {
		b.dims[i] = append(b.dims[i], d)
	}
	for i := range b.view.Measures {
		m, st, c := &b.view.Measures[i], &agg[i], &b.cells[i]
		switch k := m.Kind(); k.Cell {
		case schemas.CellInt64:
			c.ints = append(c.ints, k.Int(st))
		case schemas.CellFloat64:
			f, _ := k.Float(st)
			c.floats = append(c.floats, f)
		case schemas.CellNullableFloat64:
			f, ok := k.Float(st)
			c.floats, c.valid = append(c.floats, f), append(c.valid, ok)
		default:
			c.bytes = append(c.bytes, k.Encode(st))
			b.states[i].appendState(m, st)
		}
	}
	b.parts, b.chunks, b.versions = append(b.parts, uint32(partition)), append(b.chunks, uint64(chunk)), append(b.versions, uint64(version))
	return nil
}

// AppendRow adds a SpeedRow, whose cells have Measure.Cell's types (min
// and max may also be a float64 or nil; sketches a string or nil, which is
// stored as no bytes). On error nothing is appended.
func (b *SpeedBlock) AppendRow(r *SpeedRow) error {
	if err := b.checkSpeedKey(len(r.Dims), len(r.Cells), r.Partition, r.Chunk, r.Version); err != nil {
		return err
	}
	if r.States != nil && len(r.States) != len(r.Cells) {
		return fmt.Errorf("clickhouse: row of view %s has %d states and %d cells", b.view.Name, len(r.States), len(r.Cells))
	}
	b.scratch = b.scratch[:0]
	var states []*schemas.State
	for i := range b.view.Measures {
		m := &b.view.Measures[i]
		c, err := cellArg(m, r.Cells[i])
		if err != nil {
			return fmt.Errorf("clickhouse: row of view %s: %w", b.view.Name, err)
		}
		b.scratch = append(b.scratch, c)
		if !m.Type.Exact() && r.States != nil {
			st, err := decodeState(m, r.States[i])
			if err != nil {
				return fmt.Errorf("clickhouse: row of view %s: %w", b.view.Name, err)
			}
			if states == nil {
				states = make([]*schemas.State, len(b.view.Measures))
			}
			states[i] = st
		}
	}
	b.windows = append(b.windows, r.WindowStart.UTC())
	for i, d := range r.Dims {
		b.dims[i] = append(b.dims[i], d)
	}
	for i, m := range b.view.Measures {
		c := &b.cells[i]
		switch cell := b.scratch[i]; m.Kind().Cell {
		case schemas.CellInt64:
			c.ints = append(c.ints, cell.(int64))
		case schemas.CellFloat64:
			c.floats = append(c.floats, cell.(float64))
		case schemas.CellNullableFloat64:
			p := cell.(*float64)
			if p == nil {
				c.floats, c.valid = append(c.floats, 0), append(c.valid, false)
			} else {
				c.floats, c.valid = append(c.floats, *p), append(c.valid, true)
			}
		default:
			switch s := cell.(type) {
			case []byte:
				c.bytes = append(c.bytes, s)
			case string:
				c.bytes = append(c.bytes, []byte(s))
			}
			var st *schemas.State
			if states != nil {
				st = states[i]
			}
			b.states[i].appendState(&m, st)
		}
	}
	clear(b.scratch)
	b.parts, b.chunks, b.versions = append(b.parts, uint32(r.Partition)), append(b.chunks, uint64(r.Chunk)), append(b.versions, uint64(r.Version))
	return nil
}

// columns returns the block's columns in SpeedInsert's order, as the
// slices clickhouse-go appends in one call each.
func (b *SpeedBlock) columns() []any {
	cols := make([]any, 0, 1+len(b.dims)+len(b.cells)+3)
	cols = append(cols, b.windows)
	for _, d := range b.dims {
		cols = append(cols, d)
	}
	for i, m := range b.view.Measures {
		c := &b.cells[i]
		switch m.Kind().Cell {
		case schemas.CellInt64:
			cols = append(cols, c.ints)
		case schemas.CellFloat64:
			cols = append(cols, c.floats)
		case schemas.CellNullableFloat64:
			c.ptrs = nullables(c.ptrs[:0], c.floats, c.valid)
			cols = append(cols, c.ptrs)
		default:
			cols = append(cols, c.bytes)
		}
	}
	cols = append(cols, b.parts, b.chunks, b.versions)
	for i := range b.view.Measures {
		cols = b.states[i].columns(&b.view.Measures[i], cols)
	}
	return cols
}

// nullables appends, per value, a pointer to it or nil where !valid: the
// form clickhouse-go takes for a Nullable column, without a pointer
// allocation per value.
func nullables[T any](dst []*T, vals []T, valid []bool) []*T {
	for i := range vals {
		if valid[i] {
			dst = append(dst, &vals[i])
		} else {
			dst = append(dst, nil)
		}
	}
	return dst
}

// InsertSpeedBlock writes the block's rows to its view's speed table in one
// batch (one part: they become visible together). Rewriting a row with a
// higher version replaces it for readers using FINAL. The block is left as
// it was; the caller may Reset and reuse it.
func (db *DB) InsertSpeedBlock(ctx context.Context, b *SpeedBlock) error {
	if b.Len() == 0 {
		return nil
	}
	sql, _ := db.SpeedInsert(b.view)
	return db.insertColumns(ctx, sql, SpeedTable(b.view.Name), b.Len(), b.columns())
}

// insertColumns sends one batch of whole columns.
func (db *DB) insertColumns(ctx context.Context, sql, table string, rows int, cols []any) error {
	batch, err := db.conn.PrepareBatch(ctx, sql)
	if err != nil {
		return fmt.Errorf("clickhouse: preparing an insert into %s: %w", table, err)
	}
	defer func(batch driver.Batch) { _ = batch.Abort() }(batch)
	for i, c := range cols {
		if err := appendColumn(batch.Column(i), c); err != nil {
			return fmt.Errorf("clickhouse: insert into %s: column %d: %w", table, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("clickhouse: insert of %d rows into %s: %w", rows, table, err)
	}
	return nil
}

// appendColumn appends a whole column to the batch. An array column (the
// SQL states' keys and centroids) goes row by row, each row as pointers to
// its values: clickhouse-go's Append of a [][]T walks it by reflection and
// boxes every element in an allocation, and AppendRow of a []T still boxes
// every element; AppendRow of a []*T copies the values behind the pointers
// without allocating, in about half the time (docs/performance.md).
func appendColumn(c driver.BatchColumn, col any) error {
	switch rows := col.(type) {
	case [][]uint64:
		return appendRows(c, rows)
	case [][]float32:
		return appendRows(c, rows)
	}
	return c.Append(col)
}

func appendRows[T any](c driver.BatchColumn, rows [][]T) error {
	var ptrs []*T
	for _, r := range rows {
		ptrs = ptrs[:0]
		for i := range r {
			ptrs = append(ptrs, &r[i])
		}
		// The driver copies the values; ptrs is reused for the next row.
		if err := c.AppendRow(ptrs); err != nil {
			return err
		}
	}
	return nil
}

// RawBlock is a block of one stream's raw events for DB.InsertRawBlock.
// Build it with Append; Reset empties it and keeps its storage. A RawBlock
// is not safe for concurrent use.
type RawBlock struct {
	stream  *schemas.Stream
	fields  []fieldColumn
	raws    [][]byte
	parts   []int32
	offsets []int64
	times   []time.Time
}

// fieldColumn is one declared field's Nullable column; which slice is used
// depends on the field's type.
type fieldColumn struct {
	valid  []bool
	strs   []string
	ints   []int64
	floats []float64
	bools  []uint8
	times  []time.Time

	strPtrs   []*string
	intPtrs   []*int64
	floatPtrs []*float64
	boolPtrs  []*uint8
	timePtrs  []*time.Time
}

// NewRawBlock returns an empty block for s's raw events with room for
// capacity events.
func NewRawBlock(s *schemas.Stream, capacity int) *RawBlock {
	b := &RawBlock{stream: s, fields: make([]fieldColumn, len(s.Fields))}
	if capacity > 0 {
		b.raws = make([][]byte, 0, capacity)
		b.parts = make([]int32, 0, capacity)
		b.offsets = make([]int64, 0, capacity)
		b.times = make([]time.Time, 0, capacity)
		for i, f := range s.Fields {
			c := &b.fields[i]
			c.valid = make([]bool, 0, capacity)
			switch f.Type {
			case schemas.TypeInt64:
				c.ints = make([]int64, 0, capacity)
			case schemas.TypeFloat64:
				c.floats = make([]float64, 0, capacity)
			case schemas.TypeBool:
				c.bools = make([]uint8, 0, capacity)
			case schemas.TypeTimestamp:
				c.times = make([]time.Time, 0, capacity)
			default:
				c.strs = make([]string, 0, capacity)
			}
		}
	}
	return b
}

// Stream returns the stream whose events the block holds.
func (b *RawBlock) Stream() *schemas.Stream { return b.stream }

// Len returns the number of events in the block.
func (b *RawBlock) Len() int { return len(b.raws) }

// Reset empties the block, keeping its storage.
func (b *RawBlock) Reset() {
	clear(b.raws)
	b.raws, b.parts, b.offsets, b.times = b.raws[:0], b.parts[:0], b.offsets[:0], b.times[:0]
	for i := range b.fields {
		c := &b.fields[i]
		clear(c.strs)
		clear(c.strPtrs)
		clear(c.intPtrs)
		clear(c.floatPtrs)
		clear(c.boolPtrs)
		clear(c.timePtrs)
		c.valid, c.strs, c.ints, c.floats, c.bools, c.times = c.valid[:0], c.strs[:0], c.ints[:0], c.floats[:0], c.bools[:0], c.times[:0]
		c.strPtrs, c.intPtrs, c.floatPtrs, c.boolPtrs, c.timePtrs = c.strPtrs[:0], c.intPtrs[:0], c.floatPtrs[:0], c.boolPtrs[:0], c.timePtrs[:0]
	}
}

// Append adds one event: its decoded values (one per declared field; a
// value not Set is NULL), the original JSON, and where it was read from.
// The block keeps raw and the event's strings, not ev itself. On error
// nothing is appended.
func (b *RawBlock) Append(ev *schemas.Event, raw []byte, partition int32, offset int64, kafkaTime time.Time) error {
	s := b.stream
	if ev == nil || len(ev.Values) != len(s.Fields) {
		return fmt.Errorf("clickhouse: raw event of stream %s does not match its %d fields", s.Name, len(s.Fields))
	}
	for i, f := range s.Fields {
		val, c := &ev.Values[i], &b.fields[i]
		c.valid = append(c.valid, val.Set)
		switch f.Type {
		case schemas.TypeInt64:
			c.ints = append(c.ints, val.Int)
		case schemas.TypeFloat64:
			c.floats = append(c.floats, val.Float)
		case schemas.TypeBool:
			var u uint8
			if val.Bool {
				u = 1
			}
			c.bools = append(c.bools, u)
		case schemas.TypeTimestamp:
			c.times = append(c.times, val.Time.UTC())
		default:
			c.strs = append(c.strs, val.Str)
		}
	}
	b.raws = append(b.raws, raw)
	b.parts, b.offsets, b.times = append(b.parts, partition), append(b.offsets, offset), append(b.times, kafkaTime.UTC())
	return nil
}

// columns returns the block's columns in RawInsert's order.
func (b *RawBlock) columns() []any {
	cols := make([]any, 0, len(b.fields)+4)
	for i, f := range b.stream.Fields {
		c := &b.fields[i]
		switch f.Type {
		case schemas.TypeInt64:
			c.intPtrs = nullables(c.intPtrs[:0], c.ints, c.valid)
			cols = append(cols, c.intPtrs)
		case schemas.TypeFloat64:
			c.floatPtrs = nullables(c.floatPtrs[:0], c.floats, c.valid)
			cols = append(cols, c.floatPtrs)
		case schemas.TypeBool:
			c.boolPtrs = nullables(c.boolPtrs[:0], c.bools, c.valid)
			cols = append(cols, c.boolPtrs)
		case schemas.TypeTimestamp:
			c.timePtrs = nullables(c.timePtrs[:0], c.times, c.valid)
			cols = append(cols, c.timePtrs)
		default:
			c.strPtrs = nullables(c.strPtrs[:0], c.strs, c.valid)
			cols = append(cols, c.strPtrs)
		}
	}
	return append(cols, b.raws, b.parts, b.offsets, b.times)
}

// InsertRawBlock writes the block's events to its stream's raw-events table
// in one batch. Writing an event again (same partition and offset) replaces
// it: the table is a ReplacingMergeTree by (_partition, _offset).
func (db *DB) InsertRawBlock(ctx context.Context, b *RawBlock) error {
	if b.Len() == 0 {
		return nil
	}
	sql, _ := db.RawInsert(b.stream)
	return db.insertColumns(ctx, sql, RawTable(b.stream.Name), b.Len(), b.columns())
}
