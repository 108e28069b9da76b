package schemas

import "time"

// ViewRow is one row of a view as the layers write and read it: a window,
// the dimension values in View.Dimensions order, and one cell per measure
// in the view's order as Measure.Cell returns it (int64 count, float64
// sum, *float64 min and max with nil for none, []byte sketches); rows read
// back carry the same types, ready for Measure.StateFromCell. The
// ClickHouse and Parquet adapters share this one type, so a row passes
// between them unchanged.
type ViewRow struct {
	WindowStart time.Time
	Dims        []string
	Cells       []any
	// States holds, per measure, the serialized ClickHouse state of a
	// distinct or quantiles measure (Measure.SQLStateCell); nil, or a nil
	// entry, writes the empty state (or, in a Parquet file, none). Rows
	// read back carry it only where the reader says so.
	States [][]byte
}
