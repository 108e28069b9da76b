package clickhouse

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestMergedViewsHideBackfillingViews: the merged SQL views follow
// serving's backfilling rule. With no run on the stream both views answer
// from their speed rows; once one view has a run, the other (no run yet)
// answers nothing, level views included, until its own run is published;
// a view recreated for a changed definition answers nothing until its
// next run.
func TestMergedViewsHideBackfillingViews(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	byCountry, total := cfg.View("clicks_by_country"), cfg.View("clicks_total")
	evs := makeEvents(cfg.Stream("clicks"), 600, 3, 4)
	require.NoError(t, db.InsertSpeedRows(ctx, byCountry, speedRows(byCountry, evs, cfg.ChunkSize)))
	require.NoError(t, db.InsertSpeedRows(ctx, total, speedRows(total, evs, cfg.ChunkSize)))
	count := func(object string) string {
		return queryStrings(t, db, "SELECT toString(sum(n)) FROM tandem."+object)[0]
	}
	all := "600"
	// makeEvents may repeat ids, but speed rows hold every event given.
	require.Equal(t, all, count("clicks_by_country"))
	require.Equal(t, all, count("clicks_total"))
	require.Equal(t, all, count("clicks_total_1d"))

	// A run of clicks_by_country that absorbed nothing: clicks_total has
	// none and is backfilling.
	require.NoError(t, db.PublishRun(ctx, byCountry, "run-1", time.Time{}))
	require.Equal(t, all, count("clicks_by_country"))
	require.Equal(t, all, count("clicks_by_country_1h"))
	require.Equal(t, "0", count("clicks_total"))
	require.Equal(t, "0", count("clicks_total_1d"))
	require.NoError(t, db.PublishRun(ctx, total, "run-1", time.Time{}))
	require.Equal(t, all, count("clicks_total"))
	require.Equal(t, all, count("clicks_total_1d"))

	// clicks_by_country recreated for another granularity: backfilling.
	changed := parseConfig(t, strings.Replace(testConfigYAML, "granularity: 1m\n    dimensions: [country, device]", "granularity: 5m\n    dimensions: [country, device]", 1))
	changed.ClickHouse = cfg.ClickHouse
	_, err := db.Migrate(ctx, changed, "clicks_by_country")
	require.NoError(t, err)
	byCountry = changed.View("clicks_by_country")
	require.NoError(t, db.InsertSpeedRows(ctx, byCountry, speedRows(byCountry, evs, changed.ChunkSize)))
	require.Equal(t, "0", count("clicks_by_country"))
	require.Equal(t, all, count("clicks_total"))
	require.NoError(t, db.PublishRun(ctx, byCountry, "run-2", time.Time{}))
	require.Equal(t, all, count("clicks_by_country"))
}

// TestMergedViewsHideDroppedDays: with views[].retention, a published run
// holds only the days from its retained start, and the merged views (base
// and levels) hide the speed rows of late events for the days before it,
// as REST refuses them; a run without a retained start hides nothing.
func TestMergedViewsHideDroppedDays(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	evs := makeEvents(s, 600, 3, 4)
	for i := range evs { // every third event is two days late
		if i%3 == 0 {
			evs[i].ev.Time = evs[i].ev.Time.Add(-2 * schemas.Day)
			evs[i].ev.Values[s.FieldIndex("ts")].Time = evs[i].ev.Time
		}
	}
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))
	from := t0.UTC().Truncate(schemas.Day)
	kept := 0
	for _, e := range evs {
		if !e.ev.Time.Before(from) {
			kept++
		}
	}
	count := func(object string) string {
		return queryStrings(t, db, "SELECT toString(sum(n)) FROM tandem."+object)[0]
	}
	require.NoError(t, db.PublishRun(ctx, v, "run-1", time.Time{}))
	require.Equal(t, strconv.Itoa(len(evs)), count("clicks_by_country"))
	require.Less(t, kept, len(evs))
	require.NoError(t, db.PublishRun(ctx, v, "run-2", from))
	for _, object := range []string{"clicks_by_country", "clicks_by_country_1h", "clicks_by_country_1d"} {
		require.Equal(t, strconv.Itoa(kept), count(object), object)
		require.Equal(t, []string{"0"}, queryStrings(t, db, "SELECT toString(count()) FROM tandem."+object+" WHERE window_start < ?", from), object)
	}
}

// TestMigrateAddsRetainedFromToOlderRuns: a runs table of an older tandem
// (without retained_from) gains the column in place, keeps its rows, and
// the merged view answers them as before (1970: every day kept).
func TestMigrateAddsRetainedFromToOlderRuns(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 300, 2, 4)
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))
	require.NoError(t, db.PublishRun(ctx, v, "run-1", time.Time{}))
	require.NoError(t, db.exec(ctx, "ALTER TABLE tandem.runs DROP COLUMN retained_from"))
	require.NoError(t, db.exec(ctx, `INSERT INTO tandem.schema_meta (object, kind, owner, fingerprint, definition, statement, created_at, version)
		SELECT object, kind, owner, 'older', definition, statement, created_at, version + 1 FROM tandem.schema_meta FINAL WHERE object = 'runs'`))
	rep, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.Contains(t, rep.Changes, Change{Object: TableRuns, Kind: KindTable, Action: ActionColumnsAdded}, rep.String())
	require.NotContains(t, rep.String(), "tandem batch run --full")
	require.Equal(t, objectColumns(t, cfg, db, TableRuns), queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'runs'"))
	require.Equal(t, []string{"run-1"}, queryStrings(t, db, "SELECT argMax(run_id, version) FROM tandem.runs WHERE view = 'clicks_by_country'"))
	require.Equal(t, truth(v, evs), mergedRows(t, db, "SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.clicks_by_country"))
	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
}
