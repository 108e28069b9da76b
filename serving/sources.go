package serving

import (
	"context"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// ManifestStore reads the small objects serving polls: the manifest of each
// view. A missing object is reported with objstore.ErrNotFound.
type ManifestStore = objstore.BucketReader

// ViewFiles opens the Parquet files of batch runs.
type ViewFiles interface {
	// Open opens the batch view file key of view v for reading. The caller
	// closes the returned file.
	Open(ctx context.Context, v *schemas.View, key string) (ViewFile, error)
}

// ViewFile is one open batch view file.
type ViewFile interface {
	// RowGroups describes the file's row groups, in file order.
	RowGroups() []RowGroup
	// ReadRowGroup calls fn for every row of row group i, in file order,
	// with the window start (Unix ms), the dimension values in the view's
	// order, and one cell per view measure (as Measure.Cell wrote it). It
	// reads only the columns asked: the window and dimensions when keys is
	// set (otherwise fn gets 0 and nil), and the measures need marks (nil:
	// all; the cell of a measure not marked is nil). fn must not keep dims
	// or cells after it returns.
	ReadRowGroup(ctx context.Context, i int, keys bool, need []bool, fn func(windowMs int64, dims []string, cells []any) error) error
	Close() error
}

// RowGroup is the statistics of one row group: the smallest and largest
// window start in it (Unix ms) and its row count. HasStats is false when
// the file carries no statistics; such a row group is always read.
type RowGroup struct {
	MinMs, MaxMs int64
	Rows         int64
	HasStats     bool
}

// SpeedSource reads the speed layer's rows (ClickHouse).
type SpeedSource interface {
	// ScanSpeed calls fn, in no particular order, for every speed row of
	// q.View whose window start is in [q.From, q.To) and whose chunk was
	// not absorbed: chunk >= absorbed[p] for its partition p (0 for a
	// partition not listed). Rows must reflect the newest version of each
	// (window, dimensions, partition, chunk). A source may leave out rows
	// that q.Filters reject and may decode only q.Measures; it must not
	// keep the Row after fn returns.
	ScanSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Row) error) error
	// RollupSpeed calls fn, in no particular order, once per (bucket,
	// group) of q over the same speed rows ScanSpeed reads (newest version
	// of each row, unabsorbed chunks, q's range and filters): g.WindowMs is
	// the bucket start (any value for granularity "all"), g.Dims the
	// group-by values in q.GroupBy order and g.States the merged states in
	// q.Measures order. The answer equals feeding ScanSpeed's rows to a
	// Merger; a source computes it where the rows are. fn must not keep g.
	RollupSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(g *Group) error) error
	// MaxWindow returns the newest window start among the view's speed rows
	// of unabsorbed chunks, or the zero time when there are none.
	MaxWindow(ctx context.Context, v *schemas.View, absorbed map[int32]int64) (time.Time, error)
	// Ping checks that the source answers.
	Ping(ctx context.Context) error
}
