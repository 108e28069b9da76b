package clickhouse

import (
	"fmt"
	"strings"
	"sync"
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

// TestReplaceViewLeavesNoGap: the switch replaces a logical SQL view with
// one two-table RENAME, which 18.16 runs under its global lock, so an
// analyst's query issued at any moment finds the old view or the new one,
// never none. Readers query the view without a pause while it is replaced
// again and again; every read must succeed, and reads must see both
// definitions (the replacements happened while they read).
func TestReplaceViewLeavesNoGap(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	const name = "gap_check"
	definition := func(v int) object {
		return object{Statement: Statement{Object: name, Kind: KindView,
			SQL: fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s AS SELECT toUInt8(%d) AS v, count() AS rows FROM %s", qualified(db.db, name), v, qualified(db.db, "clicks_by_country_speed"))}}
	}
	require.NoError(t, db.exec(ctx, definition(1).SQL))

	const replacements = 150
	done := make(chan struct{})
	var (
		mu     sync.Mutex
		seen   = map[uint8]int{}
		failed []string
	)
	var readers sync.WaitGroup
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			deadline := time.Now().Add(90 * time.Second)
			for i := 0; i < 200_000 && time.Now().Before(deadline); i++ {
				select {
				case <-done:
					return
				default:
				}
				var v uint8
				var rows uint64
				err := db.Conn().QueryRow(ctx, "SELECT v, rows FROM "+qualified(db.db, name)).Scan(&v, &rows)
				mu.Lock()
				if err != nil {
					failed = append(failed, err.Error())
				} else {
					seen[v]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < replacements; i++ {
		require.NoError(t, db.replaceView(ctx, definition(2-i%2)))
	}
	close(done)
	readers.Wait()
	t.Logf("%d replacements; reads by definition %v; failed %d", replacements, seen, len(failed))
	require.Empty(t, failed[:min(len(failed), 5)], "reads that found no view while it was replaced (%d)", len(failed))
	require.Positive(t, seen[1], "reads of the first definition")
	require.Positive(t, seen[2], "reads of the second definition")
}
