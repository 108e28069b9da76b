package clickhouse

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/schemas"
)

// The batch contract, in the order the batch job calls it:
//
//  1. (the job writes the run's files and its S3 manifest: the run exists)
//  2. LoadBatchRun(view, load): the run's rows go into their own partition
//     of <view>_batch (rows the previous run already holds for days that
//     did not change are copied inside ClickHouse) and its absorbed chunks
//     into `absorbed`. Nobody reads them yet: readers follow `runs`.
//  3. PublishRun(view, run): one row in `runs` makes the run current for
//     the merged SQL view, atomically (the row is the commit point).
//  4. DropOldRuns, and DeleteAbsorbedSpeedRows below what no serving
//     replica reads any more (batch.ReleaseSpeedRows: at most the K_p of
//     the run just published).
//
// Every step is idempotent, so a job that died anywhere is repaired by
// running the same steps again with the same run: a partly loaded run is
// dropped and loaded again, a completely loaded current run is left alone,
// and publishing the current run again changes nothing.

// batchInsertRows is how many rows go into one insert block.
const batchInsertRows = 100_000

// BatchLoad is one run for DB.LoadBatchRun.
type BatchLoad struct {
	// Manifest is the run's manifest. LoadBatchRun uses View, RunID,
	// ChunkSize, Absorbed and Rows: the run must hold exactly Rows rows
	// once loaded.
	Manifest *schemas.Manifest
	// CarryFrom, when not "", names a run loaded in the view's batch table
	// whose rows are copied into the new run inside ClickHouse (no data
	// through the client), except the rows of the UTC days in Recomputed
	// (each time names the UTC day it falls in). Rows then yields only
	// the rows of those days. The caller makes sure CarryFrom is loaded
	// completely: the row count check after the load catches a copy that
	// came short, but only as an error.
	CarryFrom  string
	Recomputed []time.Time
	// RetainedFrom, when set, leaves the carried rows before it behind:
	// the days views[].retention dropped. The run's partition then holds
	// none of them, and the older runs' partitions, which do, are
	// dropped whole by DropOldRuns.
	RetainedFrom time.Time
	// Rows yields the run's rows not carried over; nil yields none. Its
	// error, if any, stops the load and is returned.
	Rows iter.Seq2[ViewRow, error]
}

// LoadBatchRun loads one run of a view into <view>_batch, then records its
// absorbed chunks (one `absorbed` row per partition of the manifest's
// Absorbed). It returns the number of rows it read from load.Rows (the
// carried rows are not counted).
//
// It is idempotent. When the run is the view's current run and already
// holds Manifest.Rows rows it does nothing and reads no row (0, nil).
// Otherwise whatever an earlier attempt left of the run is dropped and the
// run loaded again; this also repairs a current run that lost rows, whose
// readers see it without batch rows until the load ends. After the load
// the run must hold exactly Manifest.Rows rows, else the load fails before
// recording the absorbed chunks; a failed load stays invisible (unless it
// repaired the current run) and is retried by calling again.
func (db *DB) LoadBatchRun(ctx context.Context, v *schemas.View, load BatchLoad) (int64, error) {
	m := load.Manifest
	if m == nil || m.View != v.Name || m.ChunkSize <= 0 || m.Rows < 0 {
		return 0, fmt.Errorf("clickhouse: loading view %s: the manifest is missing, for another view, without chunk_size or with negative rows", v.Name)
	}
	if err := checkRunID(m.RunID); err != nil {
		return 0, err
	}
	if load.CarryFrom != "" {
		if err := checkRunID(load.CarryFrom); err != nil {
			return 0, err
		}
		if load.CarryFrom == m.RunID {
			return 0, fmt.Errorf("clickhouse: run %s of view %s cannot carry rows over from itself", m.RunID, v.Name)
		}
	}
	current, _, err := db.currentRun(ctx, v)
	if err != nil {
		return 0, err
	}
	n, err := db.BatchRunRows(ctx, v, m.RunID)
	if err != nil {
		return 0, err
	}
	if current == m.RunID && n == m.Rows {
		return 0, nil // loaded and published: nothing to repair
	}
	table := qualified(db.db, db.local(BatchTable(v.Name)))
	if n > 0 {
		drop, _ := dropRunClause(m.RunID)
		if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", table, drop)); err != nil {
			return 0, fmt.Errorf("clickhouse: clearing an earlier attempt of run %s of %s: %w", m.RunID, v.Name, err)
		}
	}
	if load.CarryFrom != "" {
		sql, args := copyBatchSQL(db.db, v, load.CarryFrom, m.RunID, load.Recomputed, load.RetainedFrom)
		if err := db.execHere(ctx, sql, args...); err != nil {
			return 0, fmt.Errorf("clickhouse: copying the carried-over rows of run %s of %s into run %s: %w", load.CarryFrom, v.Name, m.RunID, err)
		}
	}
	total, err := db.insertViewRows(ctx, v, m.RunID, load.Rows)
	if err != nil {
		return total, err
	}
	if n, err := db.BatchRunRows(ctx, v, m.RunID); err != nil {
		return total, err
	} else if n != m.Rows {
		return total, fmt.Errorf("clickhouse: ClickHouse holds %d rows of %s run %s, the manifest lists %d", n, v.Name, m.RunID, m.Rows)
	}
	if err := db.waitRunReplicated(ctx, db.local(BatchTable(v.Name)), m.RunID); err != nil {
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

// insertViewRows streams rows into the batch table under runID, in blocks
// of batchInsertRows (each its own insert), and returns how many it sent.
func (db *DB) insertViewRows(ctx context.Context, v *schemas.View, runID string, rows iter.Seq2[ViewRow, error]) (int64, error) {
	if rows == nil {
		return 0, nil
	}
	sql, _ := batchInsertSQL(db.db, v)
	fail := func(err error) error {
		return fmt.Errorf("clickhouse: loading run %s into %s: %w", runID, BatchTable(v.Name), err)
	}
	var (
		b       driver.Batch
		inBlock int
		total   int64
		args    []any
	)
	defer func() {
		if b != nil {
			b.Abort()
		}
	}()
	for r, err := range rows {
		if err != nil {
			return total, err
		}
		if args, err = appendRowArgs(append(args[:0], runID), v, &r); err != nil {
			return total, err
		}
		if args, err = appendStateArgs(args, v, &r); err != nil {
			return total, err
		}
		if b == nil {
			if b, err = db.conn.PrepareBatch(ctx, sql); err != nil {
				b = nil
				return total, fail(err)
			}
		}
		if err := b.Append(args...); err != nil {
			return total, fail(err)
		}
		if inBlock++; inBlock == batchInsertRows {
			err := b.Send()
			b, inBlock = nil, 0
			if err != nil {
				return total, fail(err)
			}
			total += batchInsertRows
		}
	}
	if b != nil {
		err := b.Send()
		b = nil
		if err != nil {
			return total, fail(err)
		}
		total += int64(inBlock)
	}
	return total, nil
}

// BatchRunRows returns how many rows of the run the view's batch table
// holds (0 for a run never loaded or dropped).
func (db *DB) BatchRunRows(ctx context.Context, v *schemas.View, runID string) (int64, error) {
	var n uint64
	if err := db.conn.QueryRow(ctx, batchRunRowsSQL(db.db, v), runID).Scan(&n); err != nil {
		return 0, fmt.Errorf("clickhouse: counting the rows of run %s in %s: %w", runID, BatchTable(v.Name), err)
	}
	return int64(n), nil
}

// insert sends rows to a shared table (runs, absorbed) as one batch: on a
// cluster to every server, which each hold the shared tables whole, so
// that the merged views' subqueries read the same rows on any server.
func (db *DB) insert(ctx context.Context, sql string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	return db.forEach(func(s *DB) error { return s.insertHere(ctx, sql, rows) })
}

func (db *DB) insertHere(ctx context.Context, sql string, rows [][]any) error {
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
// absorb. Call it after LoadBatchRun returned without error. Publishing the
// current run again does nothing.
//
// The new runs row's version is max(current version + 1, now in Unix
// milliseconds): always above every earlier version, whatever the clock
// does, and otherwise the publish time, so that versions written by
// separate processes (a second deployment on the same database, a runs
// table restored from a backup) still order by time instead of colliding
// on the same small integer.
//
// retainedFrom is the run's retained start (Manifest.Retained; the zero
// time: every day kept): the merged SQL views answer no window before it.
//
// On a cluster every server holds its own runs table; each server that
// does not have runID current gets the row, so a publish that failed on
// one server is completed by publishing again.
func (db *DB) PublishRun(ctx context.Context, v *schemas.View, runID string, retainedFrom time.Time) error {
	if err := checkRunID(runID); err != nil {
		return err
	}
	if len(db.servers) > 0 {
		return db.forEach(func(s *DB) error { return s.PublishRun(ctx, v, runID, retainedFrom) })
	}
	current, version, err := db.currentRun(ctx, v)
	if err != nil {
		return err
	}
	if current == runID {
		return nil // already published: publishing is idempotent
	}
	now := time.Now()
	row := []any{v.Name, runID, now.UTC().Truncate(time.Second), max(version+1, uint64(now.UnixMilli())), sqlDateTime(retainedFrom)}
	if err := db.insert(ctx, insertSQL(db.db, TableRuns, runsColumns), [][]any{row}); err != nil {
		return fmt.Errorf("clickhouse: publishing run %s of %s: %w", runID, v.Name, err)
	}
	return nil
}

// currentRun returns the view's current run and the version of its runs
// row ("" and 0 when no run was published).
func (db *DB) currentRun(ctx context.Context, v *schemas.View) (string, uint64, error) {
	var runID string
	var version uint64
	if err := db.conn.QueryRow(ctx, currentRunSQL(db.db), v.Name).Scan(&runID, &version); err != nil {
		if isNoRows(err) {
			return "", 0, nil
		}
		return "", 0, fmt.Errorf("clickhouse: reading the current run of %s: %w", v.Name, err)
	}
	return runID, version, nil
}

// CurrentRun returns the view's current run and its absorbed chunks per
// partition (K_p). runID is "" when no run was published.
func (db *DB) CurrentRun(ctx context.Context, v *schemas.View) (runID string, absorbed map[int32]int64, err error) {
	if runID, _, err = db.currentRun(ctx, v); err != nil {
		return "", nil, err
	}
	if runID == "" {
		return "", map[int32]int64{}, nil
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
	current, _, err := db.currentRun(ctx, v)
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
		if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, db.local(BatchTable(v.Name))), clause)); err != nil {
			return dropped, fmt.Errorf("clickhouse: dropping run %s of %s: %w", id, v.Name, err)
		}
		dropped = append(dropped, id)
	}
	return dropped, db.dropOldLevels(ctx, v, current, keep)
}

// sqlDateTime is t as a DateTime value: the zero time (no bound) is the
// epoch, DateTime's least value, which every window is at or after.
func sqlDateTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t.UTC()
}
