package clickhouse

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	require.NoError(t, db.PublishRun(ctx, byCountry, "run-1"))
	require.Equal(t, all, count("clicks_by_country"))
	require.Equal(t, all, count("clicks_by_country_1h"))
	require.Equal(t, "0", count("clicks_total"))
	require.Equal(t, "0", count("clicks_total_1d"))
	require.NoError(t, db.PublishRun(ctx, total, "run-1"))
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
	require.NoError(t, db.PublishRun(ctx, byCountry, "run-2"))
	require.Equal(t, all, count("clicks_by_country"))
}
