package clickhouse

import (
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// daysEvents spreads makeEvents over three UTC days (event i moves i%3
// days later), so a run has rows on several days.
func daysEvents(s *schemas.Stream, n int, seed uint64) []testEvent {
	evs := makeEvents(s, n, 3, seed)
	ts := s.FieldIndex("ts")
	for i := range evs {
		d := time.Duration(i%3) * 24 * time.Hour
		evs[i].ev.Time = evs[i].ev.Time.Add(d)
		evs[i].ev.Values[ts].Time = evs[i].ev.Time
	}
	return evs
}

// runRows aggregates evs into the rows of a batch run, keyed by row key,
// with schemas' own Add (independently of the adapter).
func runRows(v *schemas.View, evs []testEvent) map[schemas.RowKey]ViewRow {
	out := map[schemas.RowKey]ViewRow{}
	for k, a := range aggregate(v, evs, 1, false, nil) {
		out[k.key] = viewRow(v, k.key, a)
	}
	return out
}

func rowsOf(m map[schemas.RowKey]ViewRow, keep func(ViewRow) bool) []ViewRow {
	var out []ViewRow
	for _, r := range m {
		if keep == nil || keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// readRun reads every row of a run back through SelectBatchRows.
func readRun(t *testing.T, db *DB, v *schemas.View, runID string) map[schemas.RowKey]ViewRow {
	t.Helper()
	got := map[schemas.RowKey]ViewRow{}
	require.NoError(t, db.SelectBatchRows(testCtx(t), v, runID, time.Time{}, time.Time{}, func(r ViewRow) error {
		k := schemas.RowKey{WindowMs: r.WindowStart.UnixMilli(), Dims: schemas.JoinDims(r.Dims)}
		_, dup := got[k]
		require.False(t, dup, "row %v read twice", k)
		got[k] = r
		return nil
	}))
	return got
}

// untouchable is a row source a load must not read.
func untouchable(t *testing.T) iter.Seq2[ViewRow, error] {
	return func(func(ViewRow, error) bool) { t.Error("the load read rows it should have skipped") }
}

// TestLoadBatchRunCarriesDaysOverAndRepairs walks the batch job's load
// protocol: a full run, an incremental run that copies its unchanged days
// from the previous run inside ClickHouse, a re-run that finds the run
// loaded and reads nothing, a current run that lost rows and is repaired,
// and a manifest whose row count does not match.
func TestLoadBatchRunCarriesDaysOverAndRepairs(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")

	// Run r1 over the first events.
	evs := daysEvents(s, 900, 11)
	want1 := runRows(v, evs[:600])
	m1 := &schemas.Manifest{View: v.Name, RunID: "20261125T100000Z-r1", ChunkSize: cfg.ChunkSize, Absorbed: map[int32]int64{0: 200, 1: 200}, Rows: int64(len(want1))}
	n, err := db.BatchRunRows(ctx, v, m1.RunID)
	require.NoError(t, err)
	require.Zero(t, n)
	loaded, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m1, Rows: seqOf(rowsOf(want1, nil))})
	require.NoError(t, err)
	require.EqualValues(t, len(want1), loaded)
	n, err = db.BatchRunRows(ctx, v, m1.RunID)
	require.NoError(t, err)
	require.EqualValues(t, len(want1), n)
	require.NoError(t, db.PublishRun(ctx, v, m1.RunID, time.Time{}))
	require.Equal(t, want1, readRun(t, db, v, m1.RunID))

	// Run r2 adds events of the second day only: the other days are
	// copied from r1, the second day's rows come from the caller.
	day2 := t0.Add(24 * time.Hour)
	var newer []testEvent
	for i, e := range evs[600:] {
		if (600+i)%3 == 1 {
			newer = append(newer, e)
		}
	}
	require.NotEmpty(t, newer)
	want2 := runRows(v, append(append([]testEvent{}, evs[:600]...), newer...))
	onDay2 := func(r ViewRow) bool {
		return r.WindowStart.Truncate(24 * time.Hour).Equal(day2.Truncate(24 * time.Hour))
	}
	fresh := rowsOf(want2, onDay2)
	require.Less(t, len(fresh), len(want2))
	m2 := &schemas.Manifest{View: v.Name, RunID: "20261126T100000Z-r2", ChunkSize: cfg.ChunkSize, Absorbed: map[int32]int64{0: 300, 1: 300, 2: 100}, Rows: int64(len(want2))}
	load2 := BatchLoad{Manifest: m2, CarryFrom: m1.RunID, Recomputed: []time.Time{day2.Add(5 * time.Hour), day2}, Rows: seqOf(fresh)}
	loaded, err = db.LoadBatchRun(ctx, v, load2)
	require.NoError(t, err)
	require.EqualValues(t, len(fresh), loaded, "only the recomputed day's rows come from the caller")
	require.Equal(t, want2, readRun(t, db, v, m2.RunID))
	require.Equal(t, want1, readRun(t, db, v, m1.RunID), "the carried-from run is untouched")
	require.NoError(t, db.PublishRun(ctx, v, m2.RunID, time.Time{}))
	run, absorbed, err := db.CurrentRun(ctx, v)
	require.NoError(t, err)
	require.Equal(t, m2.RunID, run)
	require.Equal(t, map[int32]int64{0: 3, 1: 3, 2: 1}, absorbed)

	// The same load again (a re-run after a crash past the load): nothing
	// to do, no row read, nothing changes.
	loaded, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m2, CarryFrom: m1.RunID, Recomputed: load2.Recomputed, Rows: untouchable(t)})
	require.NoError(t, err)
	require.Zero(t, loaded)
	require.Equal(t, want2, readRun(t, db, v, m2.RunID))

	// The current run lost rows (here: deleted behind the adapter's back):
	// the load repairs it in place, from scratch.
	require.NoError(t, db.Conn().Exec(ctx, "ALTER TABLE tandem.clicks_by_country_batch DELETE WHERE run_id = ? AND n > 1", m2.RunID))
	require.Eventually(t, func() bool {
		n, err := db.BatchRunRows(ctx, v, m2.RunID)
		return err == nil && n < m2.Rows
	}, 30*time.Second, 50*time.Millisecond)
	loaded, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m2, Rows: seqOf(rowsOf(want2, nil))})
	require.NoError(t, err)
	require.EqualValues(t, len(want2), loaded)
	require.Equal(t, want2, readRun(t, db, v, m2.RunID))

	// A manifest listing more rows than the load yields: an error, and no
	// absorbed chunks recorded for the run.
	m3 := &schemas.Manifest{View: v.Name, RunID: "20261127T100000Z-r3", ChunkSize: cfg.ChunkSize, Absorbed: map[int32]int64{0: 400}, Rows: int64(len(want2)) + 1}
	_, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m3, CarryFrom: m2.RunID, Rows: nil})
	require.ErrorContains(t, err, fmt.Sprintf("ClickHouse holds %d rows", len(want2)))
	abs, err := db.RunAbsorbed(ctx, v, m3.RunID)
	require.NoError(t, err)
	require.Empty(t, abs)
	// Fixed, the same run id loads (carrying every day: no recomputed day).
	m3.Rows--
	loaded, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m3, CarryFrom: m2.RunID})
	require.NoError(t, err)
	require.Zero(t, loaded)
	require.Equal(t, want2, readRun(t, db, v, m3.RunID))

	_, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m3, CarryFrom: m3.RunID})
	require.ErrorContains(t, err, "from itself")
	_, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m3, CarryFrom: "x' OR 1"})
	require.Error(t, err)

	// DropOldRuns keeps the current run (r2) and the ones asked for.
	dropped, err := db.DropOldRuns(ctx, v, m3.RunID)
	require.NoError(t, err)
	require.Equal(t, []string{m1.RunID}, dropped)
	require.Equal(t, []string{m2.RunID, m3.RunID}, queryStrings(t, db, "SELECT DISTINCT run_id FROM tandem.clicks_by_country_batch ORDER BY run_id"))
}

// TestPublishRunVersions: a published run's version is above every
// earlier one even when an earlier version lies in the future, and is the
// publish time in milliseconds otherwise.
func TestPublishRunVersions(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	version := func() (string, uint64) {
		var run string
		var ver uint64
		require.NoError(t, db.Conn().QueryRow(ctx, "SELECT argMax(run_id, version), max(version) FROM tandem.runs WHERE view = ?", v.Name).Scan(&run, &ver))
		return run, ver
	}

	before := uint64(time.Now().UnixMilli())
	require.NoError(t, db.PublishRun(ctx, v, "a", time.Time{}))
	after := uint64(time.Now().UnixMilli())
	run, ver := version()
	require.Equal(t, "a", run)
	require.GreaterOrEqual(t, ver, before)
	require.LessOrEqual(t, ver, after)
	require.NoError(t, db.PublishRun(ctx, v, "a", time.Time{}))
	_, again := version()
	require.Equal(t, ver, again, "publishing the current run again writes nothing")

	// A version an hour ahead (a clock that ran fast): the next one is
	// still higher.
	future := uint64(time.Now().Add(time.Hour).UnixMilli())
	b, err := db.Conn().PrepareBatch(ctx, "INSERT INTO tandem.runs (view, run_id, published_at, version)")
	require.NoError(t, err)
	require.NoError(t, b.Append(v.Name, "b", time.Now().UTC(), future))
	require.NoError(t, b.Send())
	require.NoError(t, db.PublishRun(ctx, v, "c", time.Time{}))
	run, ver = version()
	require.Equal(t, "c", run)
	require.Equal(t, future+1, ver)
}

// TestDeleteAbsorbedSpeedRowsSkipsEmptyMutations: a deletion that matches
// no row runs no mutation; one that matches deletes exactly the rows of
// chunks below K_p.
func TestDeleteAbsorbedSpeedRowsSkipsEmptyMutations(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 900, 3, 12)
	var rows []SpeedRow
	for _, r := range speedRows(v, evs, cfg.ChunkSize) {
		if r.Chunk >= 1 {
			rows = append(rows, r)
		}
	}
	require.NoError(t, db.InsertSpeedRows(ctx, v, rows))
	mutations := func() []string {
		return queryStrings(t, db, "SELECT mutation_id FROM system.mutations WHERE database = 'tandem' AND table = 'clicks_by_country_speed'")
	}
	left := func() map[[2]int64]int {
		out := map[[2]int64]int{}
		require.NoError(t, db.SelectSpeedRows(ctx, v, time.Time{}, time.Time{}, nil, func(r SpeedRow) error {
			out[[2]int64{int64(r.Partition), r.Chunk}]++
			return nil
		}))
		return out
	}
	count := func(keep func(SpeedRow) bool) map[[2]int64]int {
		out := map[[2]int64]int{}
		for _, r := range rows {
			if keep(r) {
				out[[2]int64{int64(r.Partition), r.Chunk}]++
			}
		}
		return out
	}
	all := count(func(SpeedRow) bool { return true })
	require.Equal(t, all, left())

	// Chunk 0 has no rows; partition 2 absorbed nothing.
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, map[int32]int64{0: 1, 1: 1, 2: 0}))
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, map[int32]int64{}))
	require.Empty(t, mutations(), "nothing matched: no mutation")
	require.Equal(t, all, left())

	absorbed := map[int32]int64{0: 2, 2: 3}
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, absorbed))
	require.Len(t, mutations(), 1)
	require.Equal(t, count(func(r SpeedRow) bool { return r.Chunk >= absorbed[r.Partition] }), left())
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, absorbed))
	require.Len(t, mutations(), 1, "deleted already: no second mutation")
	require.Error(t, db.DeleteAbsorbedSpeedRows(ctx, v, map[int32]int64{0: -1}))
}
