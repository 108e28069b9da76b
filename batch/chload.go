package batch

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
)

// The ClickHouse side of a published run. internal/clickhouse owns the DDL
// (tables <view>_batch, runs, absorbed, <view>_speed); it has no load
// helpers, so the statements are here, over DB.Conn(), in the SQL subset
// ClickHouse 18.16 and current releases share.

func q(name string) string { return "`" + name + "`" }

// currentCHRun returns the run the runs table marks current for view ("" if none).
func currentCHRun(ctx context.Context, db *clickhouse.DB, view string) (string, uint64, error) {
	var runID string
	var version uint64
	err := db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT argMax(run_id, version), max(version) FROM %s.%s WHERE view = ?",
		q(db.Database()), q(clickhouse.TableRuns)), view).Scan(&runID, &version)
	if err != nil {
		return "", 0, fmt.Errorf("batch: reading the current run of %s from ClickHouse: %w", view, err)
	}
	return runID, version, nil
}

func batchRowCount(ctx context.Context, db *clickhouse.DB, view, runID string) (uint64, error) {
	var n uint64
	err := db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s WHERE run_id = ?",
		q(db.Database()), q(clickhouse.BatchTable(view))), runID).Scan(&n)
	return n, err
}

// loadRun makes m the current run of its view in ClickHouse: rows into
// <view>_batch under m.RunID, its absorbed chunks into absorbed, then a
// newer version in runs, then older runs' partitions dropped. It is
// idempotent: a partly loaded run is dropped and loaded again, and an
// already current, complete run is left alone, so a retried job repairs
// whatever a crash left.
//
// carried, when set, names a previous run whose rows of the days not in
// dirty may be copied inside ClickHouse instead of read from S3 (the
// incremental run's carried-over days); it is used only when that run is
// loaded completely.
func loadRun(ctx context.Context, db *clickhouse.DB, st *s3.Store, v *schemas.View, m *schemas.Manifest, prev *schemas.Manifest, dirty map[int64]bool) error {
	cur, version, err := currentCHRun(ctx, db, v.Name)
	if err != nil {
		return err
	}
	n, err := batchRowCount(ctx, db, v.Name, m.RunID)
	if err != nil {
		return fmt.Errorf("batch: counting rows of %s run %s in ClickHouse: %w", v.Name, m.RunID, err)
	}
	if cur == m.RunID && int64(n) == m.Rows {
		return dropOtherRuns(ctx, db, v.Name, m.RunID)
	}
	table := fmt.Sprintf("%s.%s", q(db.Database()), q(clickhouse.BatchTable(v.Name)))
	if n > 0 {
		if err := dropPartition(ctx, db, v.Name, m.RunID); err != nil {
			return err
		}
	}
	cols := v.RowColumns()
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = q(c.Name)
	}
	colList := strings.Join(names, ", ")

	// Carried-over days: copy inside ClickHouse when the previous run is
	// there whole; otherwise every file is read from S3.
	fromS3 := m.Files
	if prev != nil && dirty != nil {
		pn, err := batchRowCount(ctx, db, v.Name, prev.RunID)
		if err == nil && int64(pn) == prev.Rows && pn > 0 {
			var dates []string
			for d := range dirty {
				dates = append(dates, "'"+DayTime(d).Format("2006-01-02")+"'")
			}
			sort.Strings(dates)
			where := ""
			if len(dates) > 0 {
				where = " AND toDate(window_start) NOT IN (" + strings.Join(dates, ", ") + ")"
			}
			sql := fmt.Sprintf("INSERT INTO %s (run_id, %s) SELECT ?, %s FROM %s WHERE run_id = ?%s", table, colList, colList, table, where)
			if err := db.Conn().Exec(ctx, sql, m.RunID, prev.RunID); err != nil {
				return fmt.Errorf("batch: copying carried-over rows of %s in ClickHouse: %w", v.Name, err)
			}
			fromS3 = nil
			for _, f := range m.Files {
				if dirty[dayOf(f.Day)] {
					fromS3 = append(fromS3, f)
				}
			}
		}
	}
	for _, f := range fromS3 {
		batch, err := db.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s (run_id, %s)", table, colList))
		if err != nil {
			return fmt.Errorf("batch: loading %s into ClickHouse: %w", f.Key, err)
		}
		args := make([]any, 0, len(cols)+1)
		err = readViewFile(ctx, st, v, f.Key, func(r parquet.ViewRow) error {
			args = append(args[:0], m.RunID, r.WindowStart)
			for _, d := range r.Dims {
				args = append(args, d)
			}
			for i, c := range r.Cells {
				if b, ok := c.([]byte); ok && !v.Measures[i].Type.Exact() {
					c = string(b) // sketches are String columns
				}
				args = append(args, c)
			}
			return batch.Append(args...)
		})
		if err != nil {
			batch.Abort()
			return fmt.Errorf("batch: loading %s into ClickHouse: %w", f.Key, err)
		}
		if err := batch.Send(); err != nil {
			return fmt.Errorf("batch: loading %s into ClickHouse: %w", f.Key, err)
		}
	}
	if n, err := batchRowCount(ctx, db, v.Name, m.RunID); err != nil || int64(n) != m.Rows {
		return fmt.Errorf("batch: ClickHouse holds %d rows of %s run %s, the manifest lists %d (err %v)", n, v.Name, m.RunID, m.Rows, err)
	}

	ab, err := db.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (view, run_id, kafka_partition, chunks, absorbed_offset)",
		q(db.Database()), q(clickhouse.TableAbsorbed)))
	if err != nil {
		return fmt.Errorf("batch: inserting absorbed chunks: %w", err)
	}
	parts := make([]int32, 0, len(m.Absorbed))
	for p := range m.Absorbed {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		if err := ab.Append(v.Name, m.RunID, uint32(p), uint64(m.AbsorbedChunks(p)), uint64(m.Absorbed[p])); err != nil {
			ab.Abort()
			return fmt.Errorf("batch: inserting absorbed chunks: %w", err)
		}
	}
	if err := ab.Send(); err != nil {
		return fmt.Errorf("batch: inserting absorbed chunks: %w", err)
	}

	// Publish: a higher version than any before makes this run current for
	// the merged SQL view in one insert.
	newVersion := max(version+1, uint64(time.Now().UnixMilli()))
	rb, err := db.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (view, run_id, published_at, version)", q(db.Database()), q(clickhouse.TableRuns)))
	if err != nil {
		return fmt.Errorf("batch: publishing the run in ClickHouse: %w", err)
	}
	if err := rb.Append(v.Name, m.RunID, time.Now().UTC().Truncate(time.Second), newVersion); err != nil {
		rb.Abort()
		return fmt.Errorf("batch: publishing the run in ClickHouse: %w", err)
	}
	if err := rb.Send(); err != nil {
		return fmt.Errorf("batch: publishing the run in ClickHouse: %w", err)
	}
	return dropOtherRuns(ctx, db, v.Name, m.RunID)
}

func dropPartition(ctx context.Context, db *clickhouse.DB, view, runID string) error {
	sql := fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION ?", q(db.Database()), q(clickhouse.BatchTable(view)))
	if err := db.Conn().Exec(ctx, sql, runID); err != nil {
		return fmt.Errorf("batch: dropping run %s of %s from ClickHouse: %w", runID, view, err)
	}
	return nil
}

// dropOtherRuns drops every partition of <view>_batch but keep's.
func dropOtherRuns(ctx context.Context, db *clickhouse.DB, view, keep string) error {
	rows, err := db.Conn().Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active",
		db.Database(), clickhouse.BatchTable(view))
	if err != nil {
		return fmt.Errorf("batch: listing runs of %s in ClickHouse: %w", view, err)
	}
	var drop []string
	for rows.Next() {
		var part string
		if err := rows.Scan(&part); err != nil {
			rows.Close()
			return err
		}
		// system.parts shows a String partition key quoted: 'run'.
		id := strings.TrimSuffix(strings.TrimPrefix(part, "'"), "'")
		if id != keep {
			drop = append(drop, id)
		}
	}
	rows.Close()
	for _, id := range drop {
		if err := dropPartition(ctx, db, view, id); err != nil {
			return err
		}
	}
	return nil
}

// deleteAbsorbedSpeedRows deletes the speed rows of the chunks older
// absorbed: per partition, chunk < K_p(older). older must be a run before
// the one just published, so serving replicas still on it lose nothing
// they read (they answer those chunks from its files).
func deleteAbsorbedSpeedRows(ctx context.Context, db *clickhouse.DB, view string, older *schemas.Manifest) error {
	if older == nil {
		return nil
	}
	var conds []string
	parts := make([]int32, 0, len(older.Absorbed))
	for p := range older.Absorbed {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		if k := older.AbsorbedChunks(p); k > 0 {
			conds = append(conds, fmt.Sprintf("(kafka_partition = %d AND chunk < %d)", p, k))
		}
	}
	if len(conds) == 0 {
		return nil
	}
	table := clickhouse.SpeedTable(view)
	// Skip the mutation when nothing matches: each ALTER DELETE rewrites parts.
	var n uint64
	where := strings.Join(conds, " OR ")
	if err := db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s WHERE %s", q(db.Database()), q(table), where)).Scan(&n); err != nil {
		return fmt.Errorf("batch: counting absorbed speed rows of %s: %w", view, err)
	}
	if n == 0 {
		return nil
	}
	if err := db.Conn().Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DELETE WHERE %s", q(db.Database()), q(table), where)); err != nil {
		return fmt.Errorf("batch: deleting absorbed speed rows of %s: %w", view, err)
	}
	// 18.16 applies mutations in the background and has no mutations_sync:
	// wait, so the job's exit means the rows are gone.
	for {
		var pending uint64
		err := db.Conn().QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0",
			db.Database(), table).Scan(&pending)
		if err != nil {
			return fmt.Errorf("batch: waiting for the speed-row deletion of %s: %w", view, err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
