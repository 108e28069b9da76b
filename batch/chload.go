package batch

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// CHStore is what the batch layer needs from ClickHouse: the adapter's
// batch-run protocol (see internal/clickhouse's LoadBatchRun). The
// adapter owns every statement; batch keeps no SQL of its own.
type CHStore interface {
	// BatchRunRows counts the rows of a run in the view's batch table.
	BatchRunRows(ctx context.Context, v *schemas.View, runID string) (int64, error)
	// LoadBatchRun loads a run, idempotently: a complete current run is
	// left alone, anything else of the run is dropped and loaded again.
	LoadBatchRun(ctx context.Context, v *schemas.View, load clickhouse.BatchLoad) (int64, error)
	// LoadLevels builds a loaded run's coarse levels for analysts
	// (idempotent, like LoadBatchRun).
	LoadLevels(ctx context.Context, v *schemas.View, m *schemas.Manifest) error
	// PublishRun makes a run current (idempotent).
	PublishRun(ctx context.Context, v *schemas.View, runID string, retainedFrom time.Time) error
	// DropOldRuns drops every run of the view's batch table but the
	// current one and keep.
	DropOldRuns(ctx context.Context, v *schemas.View, keep ...string) ([]string, error)
	// DeleteAbsorbedSpeedRows deletes the speed rows of chunks below
	// below[p] (ReleaseSpeedRows decides the bounds).
	DeleteAbsorbedSpeedRows(ctx context.Context, v *schemas.View, below map[int32]int64) error
}

var _ CHStore = (*clickhouse.DB)(nil)

// loadRun makes m the current run of its view in ClickHouse: rows into
// <view>_batch under m.RunID, its absorbed chunks into absorbed, then a
// newer version in runs, then older runs' partitions dropped. It is
// idempotent: a partly loaded run is dropped and loaded again, and an
// already current, complete run is left alone, so a retried job repairs
// whatever a crash left.
//
// prev and dirty, when set, name the previous run and the days this run
// recomputed: the rows of the other days are copied from prev inside
// ClickHouse instead of read from S3 (the incremental run's carried-over
// days), but only when prev is loaded completely.
func loadRun(ctx context.Context, db CHStore, st objstore.Bucket, v *schemas.View, m *schemas.Manifest, prev *schemas.Manifest, dirty map[int64]bool) error {
	load := clickhouse.BatchLoad{Manifest: m, RetainedFrom: m.Retained()}
	// ClickHouse holds the base rows only: the levels are the same events
	// again, rolled up.
	fromS3 := m.BaseFiles()
	if prev != nil && dirty != nil {
		// A count that fails or differs only means reading every file.
		if pn, err := db.BatchRunRows(ctx, v, prev.RunID); err == nil && pn == prev.Rows && pn > 0 {
			load.CarryFrom = prev.RunID
			fromS3 = nil
			for _, f := range m.BaseFiles() {
				if dirty[dayOf(f.Day)] {
					fromS3 = append(fromS3, f)
				}
			}
			for _, d := range sortedDays(dirty) {
				if dirty[d] {
					load.Recomputed = append(load.Recomputed, DayTime(d))
				}
			}
		}
	}
	load.Rows = fileRows(ctx, st, v, fromS3)
	if _, err := db.LoadBatchRun(ctx, v, load); err != nil {
		return fmt.Errorf("batch: loading %s run %s into ClickHouse: %w", v.Name, m.RunID, err)
	}
	// The levels before publishing: <view>_<level> reads the current run's.
	if err := db.LoadLevels(ctx, v, m); err != nil {
		return fmt.Errorf("batch: building the levels of %s run %s in ClickHouse: %w", v.Name, m.RunID, err)
	}
	// Publish: a higher version than any before makes this run current for
	// the merged SQL view in one insert (nothing when it is already).
	if err := db.PublishRun(ctx, v, m.RunID, m.Retained()); err != nil {
		return fmt.Errorf("batch: publishing %s run %s in ClickHouse: %w", v.Name, m.RunID, err)
	}
	if _, err := db.DropOldRuns(ctx, v); err != nil {
		return fmt.Errorf("batch: dropping the older runs of %s from ClickHouse: %w", v.Name, err)
	}
	return nil
}

// errStopRows ends a file read when the consumer of fileRows stops.
var errStopRows = errors.New("batch: rows no longer wanted")

// fileRows yields the rows of the view files, in order, as the adapter's
// rows. Files are opened only as the rows are read.
func fileRows(ctx context.Context, st objstore.Bucket, v *schemas.View, files []schemas.ManifestFile) iter.Seq2[clickhouse.ViewRow, error] {
	return func(yield func(clickhouse.ViewRow, error) bool) {
		for _, f := range files {
			err := readViewFile(ctx, st, v, f.Key, func(r parquet.ViewRow) error {
				if !yield(r, nil) {
					return errStopRows
				}
				return nil
			})
			if errors.Is(err, errStopRows) {
				return
			}
			if err != nil {
				yield(clickhouse.ViewRow{}, err) // readViewFile names the file
				return
			}
		}
	}
}
