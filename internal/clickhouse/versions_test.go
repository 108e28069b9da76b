package clickhouse

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSwitchAndCollectVersions: a pending version is not switched before a
// run of it is published; once it is, the logical SQL views become the new
// version's (its columns, a level it no longer has dropped), its own SQL
// views go, the registry says current and retired; the retired version's
// tables are collected only after the grace, and never the logical SQL
// views, which share version 1's name.
func TestSwitchAndCollectVersions(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	// clicks_by_country at 1h: its _1h level goes, dimension device goes.
	changed := parseConfig(t, strings.Replace(testConfigYAML, "granularity: 1m\n    dimensions: [country, device]", "granularity: 1h\n    dimensions: [country]", 1))
	changed.ClickHouse = cfg.ClickHouse
	_, err := db.Migrate(ctx, changed)
	require.NoError(t, err)
	eff, err := db.Versioned(ctx, changed)
	require.NoError(t, err)
	tables := func() []string {
		return queryStrings(t, db, "SELECT name FROM system.tables WHERE database = 'tandem' AND name LIKE 'clicks_by_country%' ORDER BY name")
	}
	columns := func(table string) []string {
		return queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = ?", table)
	}
	require.Equal(t, []string{"clicks_by_country", "clicks_by_country_1d", "clicks_by_country_1h", "clicks_by_country__v2", "clicks_by_country__v2_1d",
		"clicks_by_country__v2_batch", "clicks_by_country__v2_levels", "clicks_by_country__v2_speed",
		"clicks_by_country_batch", "clicks_by_country_levels", "clicks_by_country_speed"}, tables())

	// Nothing published of version 2: no switch.
	switched, err := db.SwitchVersions(ctx, eff)
	require.NoError(t, err)
	require.Empty(t, switched)
	require.Contains(t, columns("clicks_by_country"), "device")

	pending := eff.VersionsOf("clicks_by_country")[1]
	require.Equal(t, "clicks_by_country__v2", pending.Name)
	require.NoError(t, db.PublishRun(ctx, pending, "run-2", time.Time{}))
	switched, err = db.SwitchVersions(ctx, eff)
	require.NoError(t, err)
	require.Equal(t, []string{"clicks_by_country"}, switched)
	require.NotContains(t, columns("clicks_by_country"), "device")
	require.Equal(t, []string{"clicks_by_country", "clicks_by_country_1d",
		"clicks_by_country__v2_batch", "clicks_by_country__v2_levels", "clicks_by_country__v2_speed",
		"clicks_by_country_batch", "clicks_by_country_levels", "clicks_by_country_speed"}, tables())
	require.Equal(t, []string{"clicks_by_country 1 retired", "clicks_by_country 2 current", "clicks_total 1 current"},
		queryStrings(t, db, "SELECT concat(view, ' ', toString(version), ' ', state) FROM tandem.view_versions FINAL ORDER BY view, version"))
	// The logical view reads version 2's tables and runs.
	sql := queryStrings(t, db, "SELECT create_table_query FROM system.tables WHERE database = 'tandem' AND name = 'clicks_by_country'")
	require.Len(t, sql, 1)
	require.Contains(t, sql[0], "clicks_by_country__v2_batch")
	require.Contains(t, sql[0], "view = 'clicks_by_country__v2'")
	// Migrate afterwards is up to date: the switch recorded what it made.
	rep, err := db.Migrate(ctx, changed)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
	after, err := db.Versioned(ctx, changed)
	require.NoError(t, err)
	require.Len(t, after.VersionsOf("clicks_by_country"), 1)

	// Collection: not within the grace; after it, version 1's tables go,
	// the logical SQL views stay.
	collected, err := db.CollectRetired(ctx, after, time.Hour, time.Now())
	require.NoError(t, err)
	require.Empty(t, collected)
	collected, err = db.CollectRetired(ctx, after, 0, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Empty(t, collected, "batch.removed_view_grace 0s keeps retired versions forever")
	collected, err = db.CollectRetired(ctx, after, time.Hour, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, []string{"clicks_by_country"}, collected)
	require.Equal(t, []string{"clicks_by_country", "clicks_by_country_1d",
		"clicks_by_country__v2_batch", "clicks_by_country__v2_levels", "clicks_by_country__v2_speed"}, tables())
	require.Equal(t, []string{"clicks_by_country 1 collected", "clicks_by_country 2 current", "clicks_total 1 current"},
		queryStrings(t, db, "SELECT concat(view, ' ', toString(version), ' ', state) FROM tandem.view_versions FINAL ORDER BY view, version"))
	var n uint64
	require.NoError(t, db.Conn().QueryRow(ctx, "SELECT count() FROM tandem.clicks_by_country").Scan(&n))
}
