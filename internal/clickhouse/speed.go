package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/tandem-analytics/tandem/schemas"
)

// ViewRow is one row of a view (schemas.ViewRow). Rows read back from
// ClickHouse do not carry States.
type ViewRow = schemas.ViewRow

// SpeedRow is a ViewRow of the speed layer: the cumulative aggregate of one
// (window, dimensions) over the events of one chunk of one partition.
type SpeedRow struct {
	ViewRow
	Partition int32
	Chunk     int64
	// Version is the highest Kafka offset folded into the row. Of the rows
	// with the same (partition, chunk, window, dimensions), readers see the
	// one with the highest version.
	Version int64
}

// SpeedInsert returns the INSERT statement for PrepareBatch and its column
// names: the view's RowColumns, then kafka_partition, chunk, version.
// InsertSpeedBlock and InsertSpeedRows run it.
func (db *DB) SpeedInsert(v *schemas.View) (sql string, columns []string) {
	return speedInsertSQL(db.db, v)
}

// rowArgs returns window_start, the dims and the cells, after `lead` empty
// slots for columns that come first.
func rowArgs(v *schemas.View, r *ViewRow, lead int) ([]any, error) {
	return appendRowArgs(make([]any, lead, lead+1+len(r.Dims)+len(r.Cells)+3), v, r)
}

// appendRowArgs appends window_start, the dims and the cells to args.
func appendRowArgs(args []any, v *schemas.View, r *ViewRow) ([]any, error) {
	if len(r.Dims) != len(v.Dimensions) || len(r.Cells) != len(v.Measures) {
		return nil, fmt.Errorf("clickhouse: row of view %s has %d dimensions and %d cells; the view has %d and %d",
			v.Name, len(r.Dims), len(r.Cells), len(v.Dimensions), len(v.Measures))
	}
	args = append(args, r.WindowStart.UTC())
	for _, d := range r.Dims {
		args = append(args, d)
	}
	for i, m := range v.Measures {
		c, err := cellArg(&m, r.Cells[i])
		if err != nil {
			return nil, fmt.Errorf("clickhouse: row of view %s: %w", v.Name, err)
		}
		args = append(args, c)
	}
	return args, nil
}

// appendStateArgs appends the row's SQL state columns (viewStateCols).
func appendStateArgs(args []any, v *schemas.View, r *ViewRow) ([]any, error) {
	if r.States != nil && len(r.States) != len(v.Measures) {
		return nil, fmt.Errorf("clickhouse: row of view %s has %d states; the view has %d measures", v.Name, len(r.States), len(v.Measures))
	}
	for i := range v.Measures {
		m := &v.Measures[i]
		if m.Type.Exact() {
			continue
		}
		var b []byte
		if r.States != nil {
			b = r.States[i]
		}
		var err error
		if args, err = stateArgs(args, m, b); err != nil {
			return nil, fmt.Errorf("clickhouse: row of view %s: %w", v.Name, err)
		}
	}
	return args, nil
}

// cellArg normalises a cell to the Go type of its column.
func cellArg(m *schemas.Measure, cell any) (any, error) {
	switch m.Kind().Cell {
	case schemas.CellInt64:
		if n, ok := cell.(int64); ok {
			return n, nil
		}
	case schemas.CellFloat64:
		if f, ok := cell.(float64); ok {
			return f, nil
		}
	case schemas.CellNullableFloat64:
		switch c := cell.(type) {
		case *float64:
			return c, nil
		case float64:
			return &c, nil
		case nil:
			return (*float64)(nil), nil
		}
	default:
		switch c := cell.(type) {
		case []byte:
			return c, nil
		case string:
			return c, nil
		case nil:
			return "", nil
		}
	}
	return nil, fmt.Errorf("measure %s (%s): cell of type %T", m.Name, m.Type, cell)
}

// InsertSpeedRows writes rows to the view's speed table in one batch (one
// block, so they land in one part together), through a SpeedBlock.
// Rewriting a row with a higher Version replaces it for readers using
// FINAL.
func (db *DB) InsertSpeedRows(ctx context.Context, v *schemas.View, rows []SpeedRow) error {
	if len(rows) == 0 {
		return nil
	}
	b := NewSpeedBlock(v, len(rows))
	for i := range rows {
		if err := b.AppendRow(&rows[i]); err != nil {
			return err
		}
	}
	return db.InsertSpeedBlock(ctx, b)
}

// SelectSpeedRows calls fn for each speed row of the view with window_start
// in [from, to) whose chunk the current batch run did not absorb: chunk >=
// absorbed[p] (K_p, the number of absorbed chunks of partition p; partitions
// not in the map have K_p = 0). It reads FINAL, so each row is the newest
// version the speed layer wrote. A zero `to` means no end. Rows come in no
// particular order, each with every measure, and fn may keep them; fn's
// error stops the scan and is returned. ScanSpeedRows does the same with
// filters and a subset of the measures.
func (db *DB) SelectSpeedRows(ctx context.Context, v *schemas.View, from, to time.Time, absorbed map[int32]int64, fn func(row SpeedRow) error) error {
	return db.ScanSpeedRows(ctx, SpeedQuery{View: v, From: from, To: to, Absorbed: absorbed}, func(r *SpeedRow) error {
		row := *r
		row.Dims = slices.Clone(r.Dims)
		row.Cells = slices.Clone(r.Cells)
		return fn(row)
	})
}

// ScanSpeedRows calls fn for each speed row q selects (see SpeedQuery),
// reading FINAL, so each row is the newest version the speed layer wrote.
// ClickHouse applies the time range, the chunk seam and the filters; only
// the measures q names are read (the other cells are nil). Rows come in no
// particular order. The row passed to fn, its Dims and its Cells are reused
// for the next row: fn must copy what it keeps (the values in Cells, sketch
// bytes included, are its own). fn's error stops the scan and is returned.
func (db *DB) ScanSpeedRows(ctx context.Context, q SpeedQuery, fn func(row *SpeedRow) error) error {
	sql, args, need, err := speedQuerySQL(db.db, &q)
	if err != nil {
		return err
	}
	table := SpeedTable(q.View.Name)
	rows, err := db.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("clickhouse: reading %s: %w", table, err)
	}
	defer rows.Close()
	s := newRowScanner(q.View, 0, need)
	var part uint32
	var chunk, version uint64
	dest := append(s.dest(), &part, &chunk, &version)
	var row SpeedRow
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("clickhouse: reading %s: %w", table, err)
		}
		s.rowInto(&row.ViewRow)
		row.Partition, row.Chunk, row.Version = int32(part), int64(chunk), int64(version)
		if err := fn(&row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: reading %s: %w", table, err)
	}
	return nil
}

// ScanSpeedRollup calls fn for each (bucket, group) of q (see
// SpeedRollupQuery and SpeedRollupRow), computed inside ClickHouse from
// the newest version of each selected speed row. Groups come in no
// particular order. The row passed to fn and its Dims and Cells are reused
// for the next group; the values in Cells (sketch bytes included) are fn's
// own, and must not be written: a sketch's bytes are shared with the
// string the driver decoded. fn's error stops the scan and is returned.
func (db *DB) ScanSpeedRollup(ctx context.Context, q SpeedRollupQuery, fn func(row *SpeedRollupRow) error) error {
	sql, args, need, err := speedRollupSQL(db.db, &q)
	if err != nil {
		return err
	}
	return db.scanRollup(ctx, "rolling up "+SpeedTable(q.View.Name), q.View, sql, args, need, len(q.GroupBy), q.ByChunk, fn)
}

// scanRollup runs a query whose rows are (bucket, [partition, chunk,]
// group-by values, one column per measure need marks in the view's
// order) and calls fn with each as a SpeedRollupRow: count int64, sum
// float64, min and max *float64, a sketch []([]byte) of the stored
// sketches. what names the query in errors.
func (db *DB) scanRollup(ctx context.Context, what string, v *schemas.View, sql string, args []any, need []bool, groupBy int, byChunk bool, fn func(row *SpeedRollupRow) error) error {
	rows, err := db.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("clickhouse: %s: %w", what, err)
	}
	defer rows.Close()
	var bucket, part uint32
	var chunk uint64
	row := SpeedRollupRow{Dims: make([]string, groupBy), Cells: make([]any, len(v.Measures))}
	dest := []any{&bucket}
	if byChunk {
		dest = append(dest, &part, &chunk)
	}
	for i := range row.Dims {
		dest = append(dest, &row.Dims[i])
	}
	counts := make([]int64, len(v.Measures))
	floats := make([]float64, len(v.Measures))
	nulls := make([]*float64, len(v.Measures))
	sketches := make([][]string, len(v.Measures))
	for i, m := range v.Measures {
		if !need[i] {
			continue
		}
		switch m.Kind().Cell {
		case schemas.CellInt64:
			dest = append(dest, &counts[i])
		case schemas.CellFloat64:
			dest = append(dest, &floats[i])
		case schemas.CellNullableFloat64:
			dest = append(dest, &nulls[i])
		default:
			dest = append(dest, &sketches[i])
		}
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("clickhouse: %s: %w", what, err)
		}
		row.Bucket = time.Unix(int64(bucket), 0).UTC()
		row.Partition, row.Chunk = int32(part), int64(chunk)
		for i, m := range v.Measures {
			if !need[i] {
				row.Cells[i] = nil
				continue
			}
			switch m.Kind().Cell {
			case schemas.CellInt64:
				row.Cells[i] = counts[i]
			case schemas.CellFloat64:
				row.Cells[i] = floats[i]
			case schemas.CellNullableFloat64:
				row.Cells[i] = nulls[i]
				nulls[i] = nil
			default:
				// Each string is the driver's own fresh copy of a value
				// (as it hands []byte destinations, binary.Str2Bytes):
				// its bytes are given out as they are, not copied again.
				// Readers of Cells only read sketches (docs above).
				bs := make([][]byte, len(sketches[i]))
				for j, s := range sketches[i] {
					bs[j] = unsafe.Slice(unsafe.StringData(s), len(s))
				}
				row.Cells[i] = bs
			}
		}
		if err := fn(&row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: %s: %w", what, err)
	}
	return nil
}

// ChunkSpan is the smallest and largest window start among a chunk's
// speed rows.
type ChunkSpan struct{ Min, Max time.Time }

// SpeedChunkSpans returns the window span of each listed chunk that has
// speed rows (chunks without rows are absent). Serving uses it to tell
// whether a query's range holds a closed chunk whole.
func (db *DB) SpeedChunkSpans(ctx context.Context, v *schemas.View, chunks map[int32][]int64) (map[int32]map[int64]ChunkSpan, error) {
	out := map[int32]map[int64]ChunkSpan{}
	sql, err := speedSpansSQL(db.db, v, chunks)
	if err != nil || sql == "" {
		return out, err
	}
	rows, err := db.conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: reading chunk spans of %s: %w", SpeedTable(v.Name), err)
	}
	defer rows.Close()
	for rows.Next() {
		var p, lo, hi uint32
		var c uint64
		if err := rows.Scan(&p, &c, &lo, &hi); err != nil {
			return nil, fmt.Errorf("clickhouse: reading chunk spans of %s: %w", SpeedTable(v.Name), err)
		}
		if out[int32(p)] == nil {
			out[int32(p)] = map[int64]ChunkSpan{}
		}
		out[int32(p)][int64(c)] = ChunkSpan{Min: time.Unix(int64(lo), 0).UTC(), Max: time.Unix(int64(hi), 0).UTC()}
	}
	return out, rows.Err()
}

// MaxSpeedWindow returns the newest window start among the view's speed
// rows of chunks not absorbed (chunk >= absorbed[p], as for
// SelectSpeedRows), or the zero time when there are none: how fresh the
// speed half of an answer is.
func (db *DB) MaxSpeedWindow(ctx context.Context, v *schemas.View, absorbed map[int32]int64) (time.Time, error) {
	sql, err := speedFreshnessSQL(db.db, v, absorbed)
	if err != nil {
		return time.Time{}, err
	}
	var maxSec uint32
	var n uint64
	if err := db.conn.QueryRow(ctx, sql).Scan(&maxSec, &n); err != nil {
		return time.Time{}, fmt.Errorf("clickhouse: reading the newest window of %s: %w", SpeedTable(v.Name), err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(int64(maxSec), 0).UTC(), nil
}

// rowScanner holds typed scan destinations for a view row and turns them
// into a ViewRow with Measure.Cell's types.
type rowScanner struct {
	v      *schemas.View
	need   []bool // measures selected; nil: all
	lead   []any
	window time.Time
	dims   []string
	counts []int64
	floats []float64
	nulls  []*float64
	strs   []string
	dest0  []any
}

// newRowScanner scans `lead` String columns, window_start, the dimensions
// and the measures need selects (every measure when need is nil).
func newRowScanner(v *schemas.View, lead int, need []bool) *rowScanner {
	n := len(v.Measures)
	s := &rowScanner{v: v, need: need, dims: make([]string, len(v.Dimensions)), counts: make([]int64, n), floats: make([]float64, n),
		nulls: make([]*float64, n), strs: make([]string, n)}
	for i := 0; i < lead; i++ {
		var x string
		s.lead = append(s.lead, &x)
	}
	s.dest0 = append(s.dest0, s.lead...)
	s.dest0 = append(s.dest0, &s.window)
	for i := range s.dims {
		s.dest0 = append(s.dest0, &s.dims[i])
	}
	for i, m := range v.Measures {
		if !s.reads(i) {
			continue
		}
		switch m.Kind().Cell {
		case schemas.CellInt64:
			s.dest0 = append(s.dest0, &s.counts[i])
		case schemas.CellFloat64:
			s.dest0 = append(s.dest0, &s.floats[i])
		case schemas.CellNullableFloat64:
			s.dest0 = append(s.dest0, &s.nulls[i])
		default:
			s.dest0 = append(s.dest0, &s.strs[i])
		}
	}
	return s
}

func (s *rowScanner) reads(i int) bool { return s.need == nil || s.need[i] }

// dest returns a fresh slice of the scan destinations; callers append
// destinations of trailing columns.
func (s *rowScanner) dest() []any { return slices.Clone(s.dest0) }

// row copies the scanned values out into a new ViewRow.
func (s *rowScanner) row() ViewRow {
	var r ViewRow
	s.rowInto(&r)
	return r
}

// rowInto writes the scanned values into r, reusing r's Dims and Cells.
// Cell values are new each row: min and max pointers come fresh from the
// driver, sketch bytes are copied.
func (s *rowScanner) rowInto(r *ViewRow) {
	r.WindowStart = s.window.UTC()
	r.Dims = append(r.Dims[:0], s.dims...)
	if cap(r.Cells) < len(s.v.Measures) {
		r.Cells = make([]any, len(s.v.Measures))
	}
	r.Cells = r.Cells[:len(s.v.Measures)]
	for i, m := range s.v.Measures {
		if !s.reads(i) {
			r.Cells[i] = nil
			continue
		}
		switch m.Kind().Cell {
		case schemas.CellInt64:
			r.Cells[i] = s.counts[i]
		case schemas.CellFloat64:
			r.Cells[i] = s.floats[i]
		case schemas.CellNullableFloat64:
			r.Cells[i] = s.nulls[i] // nil or a new pointer: the driver allocates one per value
			s.nulls[i] = nil
		default:
			r.Cells[i] = []byte(s.strs[i])
		}
	}
}

// SpeedProgress returns, per Kafka partition with speed rows, the highest
// version (Kafka offset) folded into any of the view's speed rows.
// Partitions without rows are absent.
func (db *DB) SpeedProgress(ctx context.Context, v *schemas.View) (map[int32]int64, error) {
	return db.scanProgress(ctx, v, speedProgressSQL(db.db, v))
}

// SpeedProgressFrom is SpeedProgress reading, of each partition listed in
// from, only the rows of chunks from[p] and later (every partition not
// listed whole): the granules of those chunks, not the whole table. The
// answer is SpeedProgress's. A row of chunk c folds only offsets of chunk
// c, so its version is in [c·chunk_size, (c+1)·chunk_size): when a listed
// partition has a row at or after from[p], the highest version is among
// those rows. When it has none (its rows were deleted as absorbed, or
// from[p] is past them), the whole table is read instead. Serving passes
// the chunk of the progress it saw last.
func (db *DB) SpeedProgressFrom(ctx context.Context, v *schemas.View, from map[int32]int64) (map[int32]int64, error) {
	cond, err := chunksFromCondition(from)
	if err != nil {
		return nil, err
	}
	if cond == "" {
		return db.SpeedProgress(ctx, v)
	}
	out, err := db.scanProgress(ctx, v, speedProgressWhereSQL(db.db, v, cond))
	if err != nil {
		return nil, err
	}
	for p := range from {
		if _, ok := out[p]; !ok {
			return db.SpeedProgress(ctx, v)
		}
	}
	return out, nil
}

func (db *DB) scanProgress(ctx context.Context, v *schemas.View, sql string) (map[int32]int64, error) {
	rows, err := db.conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: reading progress of %s: %w", SpeedTable(v.Name), err)
	}
	defer rows.Close()
	out := map[int32]int64{}
	for rows.Next() {
		var p uint32
		var version uint64
		if err := rows.Scan(&p, &version); err != nil {
			return nil, fmt.Errorf("clickhouse: reading progress of %s: %w", SpeedTable(v.Name), err)
		}
		out[int32(p)] = int64(version)
	}
	return out, rows.Err()
}

// SpeedResume returns where the speed layer may resume a view's rows of
// one Kafka partition: the highest offset o such that no row of the view
// for offsets <= o of the partition needs writing, or -1.
//
//   - When the view has speed rows of the partition: the highest version
//     among them (the speed layer's own progress; a row's version is the
//     highest offset folded into it).
//   - Otherwise, when the view's current published run absorbed K > 0
//     chunks of the partition: K*chunkSize - 1.
//   - Otherwise -1.
//
// Which run counts. Only the current published run: the run PublishRun
// made current, the one `runs` names and the merged SQL view answers from.
// A run that is loaded but not published (LoadBatchRun without PublishRun:
// a batch job in progress or one that died between the two) does not
// count, even when it absorbed more: until it is published the merged view
// reads the current run and needs speed rows of every chunk from the
// current run's K on, and a job that died may never publish it. A run that
// is no longer current does not count either (an operator may publish an
// older run again; its readers need the chunks from its K on).
//
// Why skipping the chunks below K loses nothing. The fallback applies only
// when the view has no speed rows of the partition at all. Readers of the
// current run read speed rows of chunks >= K only: the merged view, and
// serving replicas, whose S3 manifest the batch job publishes before it
// loads and publishes the run here (so it is never older than the run
// here), as do readers of any later run (which absorbs at least as much).
// A serving replica may still be on an older run, with K' <= K.
// DeleteAbsorbedSpeedRows deletes only below what every live replica's
// lease names, so only below K' (its contract, kept by
// batch.ReleaseSpeedRows), and a view without any speed row never had one
// of a chunk >= K': the rows
// such a replica would read between K' and K were never written. The
// fallback does not write them either, so the replica misses them until it
// switches to the current run, whose batch rows hold them: exactly what it
// missed before the speed layer resumed (the speed layer's lag). Without
// the fallback the speed layer would re-read the partition from its first
// retained offset and rewrite rows of absorbed chunks, for nobody but that
// replica.
//
// chunkSize is the configured chunk_size: the speed table is recreated
// and the view's runs forgotten when it changes (see Migrate), so K counts
// chunks of this size.
func (db *DB) SpeedResume(ctx context.Context, v *schemas.View, partition int32, chunkSize int64) (int64, error) {
	if partition < 0 || chunkSize <= 0 {
		return 0, fmt.Errorf("clickhouse: resume point of view %s: partition %d and chunk size %d must not be negative or zero", v.Name, partition, chunkSize)
	}
	var n, version uint64
	if err := db.conn.QueryRow(ctx, speedVersionSQL(db.db, v), uint32(partition)).Scan(&n, &version); err != nil {
		return 0, fmt.Errorf("clickhouse: reading the progress of %s partition %d: %w", SpeedTable(v.Name), partition, err)
	}
	if n > 0 {
		return int64(version), nil
	}
	return db.AbsorbedResume(ctx, v, partition, chunkSize)
}

// AbsorbedResume returns the last offset of the chunks of the partition the
// view's current published run absorbed, or -1 when it has no run or the
// run absorbed none of the partition.
func (db *DB) AbsorbedResume(ctx context.Context, v *schemas.View, partition int32, chunkSize int64) (int64, error) {
	if partition < 0 || chunkSize <= 0 {
		return 0, fmt.Errorf("clickhouse: absorbed chunks of view %s: partition %d and chunk size %d must not be negative or zero", v.Name, partition, chunkSize)
	}
	var rows, chunks uint64
	if err := db.conn.QueryRow(ctx, currentAbsorbedSQL(db.db), v.Name, uint32(partition), v.Name).Scan(&rows, &chunks); err != nil {
		return 0, fmt.Errorf("clickhouse: reading the chunks of %s partition %d the current run absorbed: %w", v.Name, partition, err)
	}
	if rows > 0 && chunks > 0 {
		return int64(chunks)*chunkSize - 1, nil
	}
	return -1, nil
}

// DeleteAbsorbedSpeedRows deletes the view's speed rows of chunks below
// below[p] (per partition) and waits until the server applied the
// deletion.
//
// Contract: below[p] is at most the K_p of the run current here and of
// every run a serving replica or a running query still reads by. A
// replica still answering from run R needs the speed rows of every chunk R
// did not absorb; batch.ReleaseSpeedRows reads the serving leases to know
// (docs/architecture.md, "Deleting absorbed speed rows").
//
// It counts the matching rows first and runs no mutation when there are
// none: every ALTER DELETE rewrites the table's parts, and a batch job
// that finds nothing new to delete (a re-run, a repair) should not.
func (db *DB) DeleteAbsorbedSpeedRows(ctx context.Context, v *schemas.View, below map[int32]int64) error {
	clause, err := deleteAbsorbedClause(below)
	if err != nil || clause == "" {
		return err
	}
	count, err := absorbedSpeedCountSQL(db.db, v, below)
	if err != nil {
		return err
	}
	var n uint64
	if err := db.conn.QueryRow(ctx, count).Scan(&n); err != nil {
		return fmt.Errorf("clickhouse: counting the absorbed speed rows of %s: %w", SpeedTable(v.Name), err)
	}
	if n == 0 {
		return nil
	}
	return db.mutate(ctx, db.local(SpeedTable(v.Name)), clause)
}
