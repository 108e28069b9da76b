package clickhouse

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sort"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// The batch contract, in the order the batch job calls it:
//
//  1. LoadBatchRun(view, manifest, rows): the run's rows go into their own
//     partition of <view>_batch and its absorbed chunks into `absorbed`.
//     Nobody reads them yet: readers follow `runs`.
//  2. (the job writes the S3 manifest)
//  3. PublishRun(view, run): one row in `runs` makes the run current for
//     the merged SQL view, atomically (the row is the commit point).
//  4. Later, once no reader can still be on an older run: DropOldRuns and
//     DeleteAbsorbedSpeedRows with that older run's absorbed chunks.
//
// A load that fails halfway can be retried with the same run id: the load
// starts by dropping whatever an earlier attempt left of the run.

// batchInsertRows is how many rows go into one insert block.
const batchInsertRows = 100_000

// LoadBatchRun loads one run of a view: every row rows yields (with
// m.RunID) into <view>_batch, then one `absorbed` row per partition of
// m.Absorbed. It returns the number of rows loaded. It refuses to reload
// the view's current (published) run. The rows' error, if any, stops the
// load and is returned; the partial run stays invisible.
func (db *DB) LoadBatchRun(ctx context.Context, v *schemas.View, m *schemas.Manifest, rows iter.Seq2[ViewRow, error]) (int64, error) {
	if m == nil || m.View != v.Name || m.ChunkSize <= 0 {
		return 0, fmt.Errorf("clickhouse: loading view %s: the manifest is missing, for another view, or without chunk_size", v.Name)
	}
	if err := checkRunID(m.RunID); err != nil {
		return 0, err
	}
	current, _, err := db.CurrentRun(ctx, v)
	if err != nil {
		return 0, err
	}
	if current == m.RunID {
		return 0, fmt.Errorf("clickhouse: run %s of view %s is already published; a new load needs a new run id", m.RunID, v.Name)
	}
	drop, _ := dropRunClause(m.RunID)
	if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, BatchTable(v.Name)), drop)); err != nil {
		return 0, fmt.Errorf("clickhouse: clearing an earlier attempt of run %s: %w", m.RunID, err)
	}

	sql, _ := batchInsertSQL(db.db, v)
	var total int64
	var pending [][]any
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if err := db.insert(ctx, sql, pending); err != nil {
			return fmt.Errorf("clickhouse: loading run %s into %s: %w", m.RunID, BatchTable(v.Name), err)
		}
		total += int64(len(pending))
		pending = pending[:0]
		return nil
	}
	for r, err := range rows {
		if err != nil {
			return total, err
		}
		args, err := rowArgs(v, &r, 1)
		if err != nil {
			return total, err
		}
		args[0] = m.RunID
		pending = append(pending, args)
		if len(pending) >= batchInsertRows {
			if err := flush(); err != nil {
				return total, err
			}
		}
	}
	if err := flush(); err != nil {
		return total, err
	}

	parts := make([]int32, 0, len(m.Absorbed))
	for p := range m.Absorbed {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	var abs [][]any
	for _, p := range parts {
		if p < 0 || m.Absorbed[p] < 0 {
			return total, fmt.Errorf("clickhouse: run %s: negative absorbed offset %d of partition %d", m.RunID, m.Absorbed[p], p)
		}
		abs = append(abs, []any{v.Name, m.RunID, uint32(p), uint64(m.AbsorbedChunks(p)), uint64(m.Absorbed[p])})
	}
	if err := db.insert(ctx, insertSQL(db.db, TableAbsorbed, absorbedColumns), abs); err != nil {
		return total, fmt.Errorf("clickhouse: recording the absorbed chunks of run %s: %w", m.RunID, err)
	}
	return total, nil
}

// insert sends rows as one batch.
func (db *DB) insert(ctx context.Context, sql string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := db.conn.PrepareBatch(ctx, sql)
	if err != nil {
		return err
	}
	defer b.Abort()
	for _, r := range rows {
		if err := b.Append(r...); err != nil {
			return err
		}
	}
	return b.Send()
}

// PublishRun makes runID the view's current run: the merged SQL view
// answers from its batch rows and from speed rows of the chunks it did not
// absorb. Call it after LoadBatchRun returned without error.
func (db *DB) PublishRun(ctx context.Context, v *schemas.View, runID string) error {
	if err := checkRunID(runID); err != nil {
		return err
	}
	var version uint64
	var current string
	err := db.conn.QueryRow(ctx, currentRunSQL(db.db), v.Name).Scan(&current, &version)
	if err != nil && !isNoRows(err) {
		return fmt.Errorf("clickhouse: reading the current run of %s: %w", v.Name, err)
	}
	if current == runID {
		return nil // already published: publishing is idempotent
	}
	row := []any{v.Name, runID, time.Now().UTC(), version + 1}
	if err := db.insert(ctx, insertSQL(db.db, TableRuns, runsColumns), [][]any{row}); err != nil {
		return fmt.Errorf("clickhouse: publishing run %s of %s: %w", runID, v.Name, err)
	}
	return nil
}

// CurrentRun returns the view's current run and its absorbed chunks per
// partition (K_p). runID is "" when no run was published.
func (db *DB) CurrentRun(ctx context.Context, v *schemas.View) (runID string, absorbed map[int32]int64, err error) {
	var version uint64
	if err := db.conn.QueryRow(ctx, currentRunSQL(db.db), v.Name).Scan(&runID, &version); err != nil {
		if isNoRows(err) {
			return "", map[int32]int64{}, nil
		}
		return "", nil, fmt.Errorf("clickhouse: reading the current run of %s: %w", v.Name, err)
	}
	absorbed, err = db.RunAbsorbed(ctx, v, runID)
	return runID, absorbed, err
}

// RunAbsorbed returns the absorbed chunks per partition (K_p) LoadBatchRun
// recorded for a run.
func (db *DB) RunAbsorbed(ctx context.Context, v *schemas.View, runID string) (map[int32]int64, error) {
	rows, err := db.conn.Query(ctx, runAbsorbedSQL(db.db), v.Name, runID)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: reading the absorbed chunks of run %s: %w", runID, err)
	}
	defer rows.Close()
	out := map[int32]int64{}
	for rows.Next() {
		var p uint32
		var chunks, offset uint64
		if err := rows.Scan(&p, &chunks, &offset); err != nil {
			return nil, err
		}
		out[int32(p)] = int64(chunks)
	}
	return out, rows.Err()
}

// SelectBatchRows calls fn for each row of the run with window_start in
// [from, to) (a zero `to` means no end), in no particular order.
func (db *DB) SelectBatchRows(ctx context.Context, v *schemas.View, runID string, from, to time.Time, fn func(ViewRow) error) error {
	sql, args := selectBatchSQL(db.db, v, runID, from, to)
	rows, err := db.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("clickhouse: reading %s: %w", BatchTable(v.Name), err)
	}
	defer rows.Close()
	s := newRowScanner(v, 0, nil)
	dest := s.dest()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("clickhouse: reading %s: %w", BatchTable(v.Name), err)
		}
		if err := fn(s.row()); err != nil {
			return err
		}
	}
	return rows.Err()
}

// DropOldRuns drops from the view's batch table every run except the
// current one and those in keep, and returns the run ids dropped. Call it
// only once no reader can still be on a dropped run.
func (db *DB) DropOldRuns(ctx context.Context, v *schemas.View, keep ...string) ([]string, error) {
	current, _, err := db.CurrentRun(ctx, v)
	if err != nil {
		return nil, err
	}
	rows, err := db.conn.Query(ctx, batchRunsSQL(db.db, v))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: listing the runs in %s: %w", BatchTable(v.Name), err)
	}
	var loaded []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		loaded = append(loaded, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var dropped []string
	for _, id := range loaded {
		if id == current || slices.Contains(keep, id) {
			continue
		}
		clause, err := dropRunClause(id)
		if err != nil {
			return dropped, err
		}
		if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, BatchTable(v.Name)), clause)); err != nil {
			return dropped, fmt.Errorf("clickhouse: dropping run %s of %s: %w", id, v.Name, err)
		}
		dropped = append(dropped, id)
	}
	return dropped, nil
}
