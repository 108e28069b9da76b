package clickhouse

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// openCluster starts n ClickHouse 18.16 servers as the n shards of one
// cluster and opens a DB for cfg on the first, with clickhouse.cluster
// naming the cluster.
func openCluster(t *testing.T, cfg *schemas.Config, n int) (*DB, *testenv.ClickHouseCluster) {
	t.Helper()
	c := testenv.ClickHouseShards(t, n)
	cfg.ClickHouse.Addr = c.Servers[0].Addr
	cfg.ClickHouse.Username = c.Servers[0].Username
	cfg.ClickHouse.Password = c.Servers[0].Password
	cfg.ClickHouse.Cluster = c.Name
	db, err := Open(testCtx(t), cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	require.Len(t, db.servers, n)
	return db, c
}

// onServer opens a DB for cfg on server i of the cluster: what a serving
// replica or an analyst connected there reads.
func onServer(t *testing.T, cfg *schemas.Config, c *testenv.ClickHouseCluster, i int) *DB {
	t.Helper()
	cc := cfg.ClickHouse
	cc.Addr = c.Servers[i].Addr
	db, err := Open(testCtx(t), cc)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// localCounts returns the rows of a sharded table each server holds.
func localCounts(t *testing.T, c *testenv.ClickHouseCluster, table string) []uint64 {
	t.Helper()
	var out []uint64
	for _, s := range c.Servers {
		var n uint64
		require.NoError(t, s.Conn(t).QueryRow(testCtx(t), "SELECT count() FROM tandem."+ident(LocalTable(table))).Scan(&n))
		out = append(out, n)
	}
	return out
}

func TestClusterMigrateIsIdempotent(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, c := openCluster(t, cfg, 2)
	ctx := testCtx(t)

	rep, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.False(t, rep.UpToDate())
	// Every server got every object: a local and a Distributed table per
	// sharded table, the shared tables and the views.
	for _, s := range c.Servers {
		var created []string
		for _, ch := range rep.Changes {
			if ch.Server == s.Addr && ch.Action == ActionCreated && ch.Kind != KindFields && ch.Kind != KindDatabase {
				created = append(created, ch.Object)
			}
		}
		slices.Sort(created)
		tables := queryStrings(t, onServerConn(t, s), "SELECT name FROM system.tables WHERE database = 'tandem' ORDER BY name")
		require.Equal(t, tables, created, "server %s", s.Addr)
		for _, name := range []string{"clicks_by_country_speed", "clicks_by_country_speed_local", "clicks_by_country_batch_local",
			"clicks_by_country_levels_local", "clicks_events_local", "runs", "absorbed", "schema_meta", "clicks_by_country_1d"} {
			require.Contains(t, tables, name, "server %s", s.Addr)
		}
		engines := queryStrings(t, onServerConn(t, s), "SELECT engine_full FROM system.tables WHERE database = 'tandem' AND name = 'clicks_by_country_speed'")
		require.Len(t, engines, 1)
		require.Contains(t, engines[0], "Distributed('tandem_test', 'tandem', 'clicks_by_country_speed_local', kafka_partition)")
	}
	require.Contains(t, rep.String(), " on "+c.Servers[1].Addr)

	// Again: nothing changes on any server, and each server's schema_meta
	// holds the same records.
	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
	var metas [][]string
	for _, s := range c.Servers {
		metas = append(metas, queryStrings(t, onServerConn(t, s), "SELECT concat(object, ' ', fingerprint) FROM tandem.schema_meta FINAL ORDER BY object"))
	}
	require.NotEmpty(t, metas[0])
	require.Equal(t, metas[0], metas[1])
	// The dry run agrees: every view and stream unchanged.
	plan, err := db.Plan(ctx, cfg)
	require.NoError(t, err)
	require.NotEmpty(t, plan.Owners)
	for _, o := range plan.Owners {
		require.Equal(t, OwnerUnchanged, o.State, "%s", o.Owner)
	}
	// Connected to the other server, the same: up to date.
	rep, err = onServer(t, cfg, c, 1).Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())

	// A configuration for another cluster (or none) is refused.
	other := *cfg
	other.ClickHouse.Cluster = ""
	_, err = db.Migrate(ctx, &other)
	require.ErrorContains(t, err, "clickhouse.cluster")

	// A definition change is a new version on the cluster as on one
	// server, and --recreate recreates the view's tables on every server.
	changedCfg := parseConfig(t, strings.Replace(testConfigYAML, "granularity: 1h", "granularity: 15m", 1))
	changedCfg.ClickHouse = cfg.ClickHouse
	plan, err = db.Plan(ctx, changedCfg)
	require.NoError(t, err)
	for _, o := range plan.Owners {
		require.Equal(t, map[bool]OwnerState{true: OwnerNewVersion, false: OwnerUnchanged}[o.Owner == "clicks_total"], o.State, "%s", o.Owner)
	}
	rep, err = db.Migrate(ctx, changedCfg, "clicks_total")
	require.NoError(t, err)
	recreated := 0
	for _, ch := range rep.Changes {
		if ch.Action == ActionRecreated {
			recreated++
		}
	}
	// Every object of the view (speed, batch and levels tables, each
	// local and Distributed, and its views), on both servers.
	perServer := 0
	for _, st := range DDL(changedCfg, db.ServerVersion()) {
		if st.Owner == "clicks_total" {
			perServer++
		}
	}
	require.Equal(t, 9, perServer) // 3 tables × 2, the view, 2 level views
	require.Equal(t, 2*perServer, recreated, rep.String())
	rep, err = db.Migrate(ctx, changedCfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())

	// A view removed from the configuration: --drop-removed drops its
	// objects on every server.
	without := parseConfig(t, strings.Replace(testConfigYAML, "  - name: clicks_total\n    stream: clicks\n    granularity: 1h\n", "  - name: clicks_total2\n    stream: clicks\n    granularity: 1h\n", 1))
	without.ClickHouse = cfg.ClickHouse
	_, err = db.Migrate(ctx, without)
	require.NoError(t, err)
	const oldObjects = "SELECT name FROM system.tables WHERE database = 'tandem' AND (name = 'clicks_total' OR startsWith(name, 'clicks_total_'))"
	require.Len(t, queryStrings(t, onServerConn(t, c.Servers[1]), oldObjects), 9)
	dropped, err := db.DropRemoved(ctx, without)
	require.NoError(t, err)
	require.Equal(t, []string{"clicks_total"}, dropped)
	for _, s := range c.Servers {
		tables := queryStrings(t, onServerConn(t, s), oldObjects)
		require.Empty(t, tables, "server %s", s.Addr)
	}
}

func onServerConn(t *testing.T, s *testenv.ClickHouseServer) *DB {
	t.Helper()
	return &DB{conn: s.Conn(t), db: "tandem"}
}

// TestClusterMergedViewEqualsTruth runs the single-server checks of the
// merged view, serving's reads, the level views and the analyst's sketch
// SQL on two shards, and checks that the rows are spread over both.
func TestClusterMergedViewEqualsTruth(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, c := openCluster(t, cfg, 2)
	_, err := db.Migrate(testCtx(t), cfg)
	require.NoError(t, err)

	mergedViewAcrossBatchRuns(t, cfg, db)
	// Speed rows of partitions 0 and 2 are on shard 1, of partition 1 on
	// shard 2; batch rows are spread by window.
	for _, table := range []string{SpeedTable("clicks_by_country"), BatchTable("clicks_by_country")} {
		counts := localCounts(t, c, table)
		require.Positive(t, counts[0], table)
		require.Positive(t, counts[1], table)
	}
	for i, s := range c.Servers {
		parts := queryStrings(t, onServerConn(t, s), "SELECT DISTINCT toString(kafka_partition) FROM tandem.clicks_by_country_speed_local ORDER BY kafka_partition")
		want := map[int][]string{0: {"0", "2"}, 1: {"1"}}[i]
		require.Subset(t, want, parts, "server %d holds only its partitions", i)
	}
	// Read on the other server: the same answers.
	v := cfg.View("clicks_by_country")
	other := onServer(t, cfg, c, 1)
	require.Equal(t, goMerged(t, db, v), goMerged(t, other, v))
	const query = "SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.clicks_by_country"
	require.Equal(t, mergedRows(t, db, query), mergedRows(t, other, query))
}

func TestClusterLevelViewsAndAnalystSQL(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := openCluster(t, cfg, 2)
	_, err := db.Migrate(testCtx(t), cfg)
	require.NoError(t, err)
	levelViewsRolledUp(t, cfg, db)

	cfg2 := parseConfig(t, testConfigYAML)
	db2, c2 := openCluster(t, cfg2, 2)
	_, err = db2.Migrate(testCtx(t), cfg2)
	require.NoError(t, err)
	// The analyst on the second server: the views there read both shards.
	analystSketchSQL(t, cfg2, db2, c2.Servers[1].AnalystConn(t))
}

func TestClusterRawEventsAndUnpublish(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, c := openCluster(t, cfg, 2)
	ctx := testCtx(t)
	_, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	s := cfg.Stream("clicks")
	evs := makeEvents(s, 200, 3, 5)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var raw []RawEvent
	for i, e := range evs {
		kts := now.Add(-time.Duration(i%4) * 24 * time.Hour)
		raw = append(raw, RawEvent{Event: &e.ev, Raw: []byte(`{"id":"` + e.ev.ID + `"}`), Partition: e.partition, Offset: e.offset, KafkaTime: kts})
	}
	require.NoError(t, db.InsertRawEvents(ctx, s, raw))
	require.NoError(t, db.InsertRawEvents(ctx, s, raw[100:])) // replayed: replaces itself on its shard
	count := func() uint64 {
		var n uint64
		require.NoError(t, db.Conn().QueryRow(ctx, "SELECT count() FROM tandem.clicks_events FINAL").Scan(&n))
		return n
	}
	require.EqualValues(t, 200, count())
	counts := localCounts(t, c, RawTable("clicks"))
	require.Positive(t, counts[0])
	require.Positive(t, counts[1])
	days, err := db.DeleteExpiredRawEvents(ctx, s, now)
	require.NoError(t, err)
	require.Equal(t, []int{20261122}, days)
	require.EqualValues(t, 150, count())

	// Publishing and --recreate's unpublishing reach every server's runs.
	v := cfg.View("clicks_total")
	m := &schemas.Manifest{View: v.Name, RunID: "r1", ChunkSize: cfg.ChunkSize, Absorbed: map[int32]int64{0: 100}}
	_, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m})
	require.NoError(t, err)
	require.NoError(t, db.PublishRun(ctx, v, "r1", time.Time{}))
	for i := range c.Servers {
		run, absorbed, err := onServer(t, cfg, c, i).CurrentRun(ctx, v)
		require.NoError(t, err)
		require.Equal(t, "r1", run, "server %d", i)
		require.Equal(t, map[int32]int64{0: 1}, absorbed, "server %d", i)
	}
	_, err = db.Migrate(ctx, cfg, v.Name)
	require.NoError(t, err)
	for i := range c.Servers {
		run, absorbed, err := onServer(t, cfg, c, i).CurrentRun(ctx, v)
		require.NoError(t, err)
		require.Empty(t, run, "server %d", i)
		require.Empty(t, absorbed, fmt.Sprint("server ", i))
	}
}

// TestClusterRefusesSingleServerTables: a database migrated without a
// cluster is not taken over by a clustered configuration silently; the
// error names the cluster, and --recreate of every owner moves it.
func TestClusterRefusesSingleServerTables(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, c := openCluster(t, cfg, 2)
	ctx := testCtx(t)
	single := parseConfig(t, testConfigYAML)
	single.ClickHouse = cfg.ClickHouse
	single.ClickHouse.Cluster = ""
	_, err := onServer(t, single, c, 0).Migrate(ctx, single)
	require.NoError(t, err)

	_, err = db.Migrate(ctx, cfg)
	require.ErrorIs(t, err, ErrDefinitionChanged)
	require.ErrorContains(t, err, "cluster: (none) → tandem_test")
	require.ErrorContains(t, err, "on server "+c.Servers[0].Addr)

	rep, err := db.Migrate(ctx, cfg, "clicks_by_country", "clicks_total", "clicks")
	require.NoError(t, err, rep.String())
	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
	engines := queryStrings(t, db, "SELECT engine FROM system.tables WHERE database = 'tandem' AND name = 'clicks_by_country_speed'")
	require.Equal(t, []string{"Distributed"}, engines)
}

// TestReplicatedCluster: two shards of two replicas each on a ZooKeeper
// (from Maven Central, scripts/zookeeper.sh), with clickhouse.replicated.
// Migrate is idempotent, the merged view equals the truth through two
// batch runs, every replica of a shard holds the shard's rows, and with
// one replica of each shard down the answers are unchanged.
func TestReplicatedCluster(t *testing.T) {
	zk := testenv.ZooKeeper(t)
	c := testenv.ClickHouseReplicatedShards(t, 2, 2, zk)
	cfg := parseConfig(t, testConfigYAML)
	cfg.ClickHouse.Addr = c.Servers[0].Addr
	cfg.ClickHouse.Cluster = c.Name
	cfg.ClickHouse.Replicated = true
	ctx := testCtx(t)
	db, err := Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	require.Len(t, db.servers, 4)

	rep, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.False(t, rep.UpToDate())
	engines := queryStrings(t, db, "SELECT engine FROM system.tables WHERE database = 'tandem' AND name IN ('clicks_by_country_speed_local', 'runs') ORDER BY name")
	require.Equal(t, []string{"ReplicatedReplacingMergeTree", "ReplicatedReplacingMergeTree"}, engines)
	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())

	mergedViewAcrossBatchRuns(t, cfg, db)
	// Both replicas of a shard come to hold the same rows (replication
	// follows the first replica, which took the writes).
	for shard := 0; shard < 2; shard++ {
		count := func(r int) uint64 {
			var n uint64
			require.NoError(t, c.Servers[shard*2+r].Conn(t).QueryRow(ctx, "SELECT count() FROM tandem.clicks_by_country_speed_local FINAL").Scan(&n))
			return n
		}
		require.Positive(t, count(0), "shard %d", shard+1)
		require.Eventually(t, func() bool { return count(0) == count(1) }, 30*time.Second, 100*time.Millisecond, "shard %d", shard+1)
	}

	// The first replica of each shard down: the second ones answer, the
	// same, read through a server that stays up.
	v := cfg.View("clicks_by_country")
	const query = "SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.clicks_by_country"
	want := mergedRows(t, db, query)
	wantGo := goMerged(t, db, v)
	survivor := onServer(t, cfg, c, 1)
	c.Servers[0].Kill()
	c.Servers[2].Kill()
	require.Equal(t, want, mergedRows(t, survivor, query))
	require.Equal(t, wantGo, goMerged(t, survivor, v))
}

// TestClusterSwitchVersion: a definition change on two shards. Migrate
// registers the pending version and creates its tables on both servers;
// SwitchVersions, connected to the first, makes the logical SQL views the
// new version's on both, and records what it made in both servers'
// schema_meta, so a migration from either server afterwards is up to date
// and both registries agree.
func TestClusterSwitchVersion(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, c := openCluster(t, cfg, 2)
	ctx := testCtx(t)
	_, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	changed := parseConfig(t, strings.Replace(testConfigYAML, "      - { name: items, type: sum, field: qty }\n", "      - { name: items, type: sum, field: qty }\n      - { name: top, type: max, field: qty }\n", 1))
	changed.ClickHouse = cfg.ClickHouse
	_, err = db.Migrate(ctx, changed)
	require.NoError(t, err)
	registry := func(s *testenv.ClickHouseServer) []string {
		return queryStrings(t, onServerConn(t, s), "SELECT concat(view, ' ', toString(version), ' ', state) FROM tandem.view_versions FINAL ORDER BY view, version")
	}
	logicalSQL := func(s *testenv.ClickHouseServer) string {
		sql := queryStrings(t, onServerConn(t, s), "SELECT create_table_query FROM system.tables WHERE database = 'tandem' AND name = 'clicks_total'")
		require.Len(t, sql, 1)
		return sql[0]
	}
	for i, s := range c.Servers {
		require.Equal(t, []string{"clicks_by_country 1 current", "clicks_total 1 current", "clicks_total 2 pending"}, registry(s), "server %d", i)
		for _, table := range []string{"clicks_total__v2_speed", "clicks_total__v2_speed_local", "clicks_total__v2_batch_local", "clicks_total__v2"} {
			require.Len(t, queryStrings(t, onServerConn(t, s), "SELECT name FROM system.tables WHERE database = 'tandem' AND name = ?", table), 1, "server %d: %s", i, table)
		}
		require.NotContains(t, logicalSQL(s), "clicks_total__v2_batch", "server %d", i)
	}

	eff, err := db.Versioned(ctx, changed)
	require.NoError(t, err)
	require.NoError(t, db.PublishRun(ctx, eff.VersionsOf("clicks_total")[1], "run-2", time.Time{}))
	switched, err := db.SwitchVersions(ctx, eff)
	require.NoError(t, err)
	require.Equal(t, []string{"clicks_total"}, switched)
	var metas [][]string
	for i, s := range c.Servers {
		require.Equal(t, []string{"clicks_by_country 1 current", "clicks_total 1 retired", "clicks_total 2 current"}, registry(s), "server %d", i)
		require.Contains(t, logicalSQL(s), "clicks_total__v2_batch", "server %d: the logical SQL view reads the new version", i)
		require.Contains(t, queryStrings(t, onServerConn(t, s), "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'clicks_total'"), "top", "server %d", i)
		metas = append(metas, queryStrings(t, onServerConn(t, s), "SELECT concat(object, ' ', fingerprint) FROM tandem.schema_meta FINAL ORDER BY object"))
	}
	require.Equal(t, metas[0], metas[1], "both servers' schema_meta record the switched views")
	for i := range c.Servers {
		rep, err := onServer(t, changed, c, i).Migrate(ctx, changed)
		require.NoError(t, err)
		require.True(t, rep.UpToDate(), "connected to server %d: %s", i, rep.String())
	}
}
