package clickhouse

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// rollUpExact merges exact answers into the level's windows, the way the
// level views should.
func rollUpExact(rows map[schemas.RowKey]exact, l schemas.Granularity) map[schemas.RowKey]exact {
	out := map[schemas.RowKey]exact{}
	for k, e := range rows {
		k.WindowMs = l.WindowStartMs(k.WindowMs)
		o := out[k]
		o.present = true
		o.n += e.n
		o.sum += e.sum
		if e.lo != nil && (o.lo == nil || *e.lo < *o.lo) {
			o.lo = e.lo
		}
		if e.hi != nil && (o.hi == nil || *e.hi > *o.hi) {
			o.hi = e.hi
		}
		out[k] = o
	}
	return out
}

// TestLevelViewsEqualMergedViewRolledUp: on ClickHouse 18.16, each
// <view>_<level> merged view answers what the merged view answers rolled
// up to the level's windows — across two published runs (levels built
// from each run's batch rows, the speed rows of unabsorbed chunks floored
// to the level), and LoadLevels is idempotent, checks the manifest's level
// row counts and DropOldRuns drops old runs' levels.
func TestLevelViewsEqualMergedViewRolledUp(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	levelViewsRolledUp(t, cfg, db)
}

// levelViewsRolledUp checks the level views against the truth rolled up
// through two batch runs and the clean-up, on a migrated db.
func levelViewsRolledUp(t *testing.T, cfg *schemas.Config, db *DB) {
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	hour, day := schemas.Granularity(time.Hour), schemas.Granularity(24*time.Hour)
	require.Equal(t, []schemas.Granularity{day, hour}, v.Levels())

	// Events over 50 hours (three UTC days), so levels have many windows.
	evs := makeEvents(s, 1500, 3, 11)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range evs {
		ts := t0.Add(time.Duration(r.Int64N(int64(50 * time.Hour)))).Truncate(time.Millisecond)
		evs[i].ev.Time = ts
		evs[i].ev.Values[s.FieldIndex("ts")].Time = ts
	}
	want := truth(v, evs)
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))

	query := func(l schemas.Granularity) map[schemas.RowKey]exact {
		return mergedRows(t, db, fmt.Sprintf("SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.%s", ident(LevelView(v.Name, l))))
	}
	// Nothing published: the speed rows, rolled up.
	for _, l := range v.Levels() {
		require.Equal(t, rollUpExact(want, l), query(l), "level %s", l)
	}

	publish := func(runID string, absorbed map[int32]int64) *schemas.Manifest {
		agg := aggregate(v, evs, cfg.ChunkSize, false, func(e testEvent) bool { return e.offset < absorbed[e.partition] })
		var rows []ViewRow
		m := &schemas.Manifest{View: v.Name, RunID: runID, ChunkSize: cfg.ChunkSize, Absorbed: absorbed, Levels: v.Levels()}
		perLevel := map[schemas.Granularity]map[schemas.RowKey]bool{day: {}, hour: {}}
		for k, a := range agg {
			rows = append(rows, viewRow(v, k.key, a))
			for l, seen := range perLevel {
				seen[schemas.RowKey{WindowMs: l.WindowStartMs(k.key.WindowMs), Dims: k.key.Dims}] = true
			}
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].WindowStart.Before(rows[j].WindowStart) })
		m.Rows = int64(len(rows))
		for l, seen := range perLevel {
			// One file per level stands for the day files: LoadLevels sums them.
			m.Files = append(m.Files, schemas.ManifestFile{Key: schemas.ViewLevelDayKey(v.Name, runID, l, t0, 0), Level: l, Rows: int64(len(seen))})
		}
		_, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m, Rows: seqOf(rows)})
		require.NoError(t, err)
		require.NoError(t, db.LoadLevels(ctx, v, m))
		require.NoError(t, db.PublishRun(ctx, v, runID, time.Time{}))
		return m
	}
	m1 := publish("r1", map[int32]int64{0: 200, 1: 100})
	for _, l := range v.Levels() {
		require.Equal(t, rollUpExact(want, l), query(l), "level %s after r1", l)
	}
	// Idempotent: a second call changes nothing.
	before := queryStrings(t, db, "SELECT toString(count()) FROM tandem.clicks_by_country_levels")
	require.NoError(t, db.LoadLevels(ctx, v, m1))
	require.Equal(t, before, queryStrings(t, db, "SELECT toString(count()) FROM tandem.clicks_by_country_levels"))
	// A manifest whose level rows disagree is refused, naming the level.
	bad := *m1
	bad.Files = append([]schemas.ManifestFile(nil), m1.Files...)
	bad.Files[0].Rows++
	err := db.LoadLevels(ctx, v, &bad)
	require.ErrorContains(t, err, "the manifest lists")

	publish("r2", map[int32]int64{0: 300, 1: 200, 2: 100})
	for _, l := range v.Levels() {
		require.Equal(t, rollUpExact(want, l), query(l), "level %s after r2", l)
	}
	dropped, err := db.DropOldRuns(ctx, v)
	require.NoError(t, err)
	require.Equal(t, []string{"r1"}, dropped)
	require.Equal(t, []string{"r2"}, queryStrings(t, db, "SELECT DISTINCT run_id FROM tandem.clicks_by_country_levels"))
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, map[int32]int64{0: 2, 1: 1}))
	for _, l := range v.Levels() {
		require.Equal(t, rollUpExact(want, l), query(l), "level %s after cleanup", l)
	}
	// One row per (day, dimension values) at 1d.
	require.Equal(t, []string{fmt.Sprint(len(rollUpExact(want, day)))}, queryStrings(t, db, "SELECT toString(count()) FROM tandem.clicks_by_country_1d"))
}
