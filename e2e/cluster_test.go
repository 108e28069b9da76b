package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestExactnessOnCluster is issue 14's two-shard ClickHouse: the platform
// as processes on two ClickHouse 18.16 servers that are the two shards of
// clickhouse.cluster. The speed layer writes through the Distributed
// tables, the batch job loads, publishes and drops runs on the cluster;
// REST and the merged SQL views (exact measures and the distinct and
// quantiles states), read on either server, equal the truth with speed
// rows only, with batch and speed rows mixed, and after a final run.
func TestExactnessOnCluster(t *testing.T) {
	p := newPlatform(t, platformOptions{chunkSize: 500, shards: 2})
	p.start("ingest", "speed", "archive", "serve")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	// The speed layer migrated the cluster at start; again changes nothing.
	out, err := exec.Command(p.bin, "migrate", "--config", p.cfgPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "up to date", "%s", out)

	rec := newRecorder()
	sink := newRetrySink(p.ingestURL, rec, 3)
	var truth []event
	wave := func(n int, seed uint64) {
		t.Helper()
		g, err := gen.New(gen.Options{
			Stream: p.cfg.Stream(streamName), Seed: seed, Events: int64(n), Rate: 2000,
			Spacing: 20 * time.Minute / time.Duration(n), Batch: 200, Concurrency: 2,
			Late: 0.05, OutOfOrder: 0.05, Dups: 0.03, Invalid: 0.02, MaxFutureSkew: time.Hour,
		})
		require.NoError(t, err)
		path := filepath.Join(p.dir, fmt.Sprintf("truth-%d.ndjson", seed))
		tf, err := os.Create(path)
		require.NoError(t, err)
		_, err = g.Run(context.Background(), gen.RunOptions{Sink: sink, Truth: tf})
		require.NoError(t, err)
		require.NoError(t, tf.Close())
		evs, err := readTruthFile(path)
		require.NoError(t, err)
		truth = append(truth, evs...)
	}
	queries := func() []query {
		lo, hi := truth[0].TimeMs, truth[0].TimeMs
		for _, ev := range truth {
			lo, hi = min(lo, ev.TimeMs), max(hi, ev.TimeMs)
		}
		from := time.UnixMilli(lo).UTC().Truncate(time.Hour)
		to := time.UnixMilli(hi).UTC().Truncate(time.Hour).Add(time.Hour)
		return []query{
			{from: from, to: to},
			{from: from, to: to, groupBy: []string{"country", "device"}},
			{from: from, to: to, granularity: "1h", groupBy: []string{"country"}},
			{from: from, to: to, granularity: "all", groupBy: []string{"device"}, filters: []string{"country:US", "country:DE"}},
		}
	}
	checkSQL := func(stage string) {
		t.Helper()
		qs := queries()
		// Each server answers the merged views for both shards.
		ch0 := p.ch
		defer func() { p.ch = ch0 }()
		for i, s := range p.cluster.Servers {
			p.ch = s
			p.checkSketchSQL(fmt.Sprintf("%s, server %d", stage, i+1), truth, qs[0].from, qs[0].to)
			for _, c := range []struct {
				q       query
				granSec int64
			}{
				{qs[1], 0},
				{qs[2], 3600},
			} {
				got, err := readMergedView(context.Background(), s.AnalystConn(t), s.Database, c.q.from, c.q.to, c.granSec, c.q.groupBy)
				require.NoError(t, err)
				require.Empty(t, diffMergedView(expect(truth, c.q), got), "%s: merged view on server %d, %s", stage, i+1, c.q)
			}
		}
	}

	// Speed rows only.
	wave(6000, seed)
	p.waitExact(t, "speed only", truth, queries())
	checkSQL("speed only")
	// The speed rows are on both shards: partitions 0, 2, 4 on the first,
	// 1, 3, 5 on the second.
	for i, s := range p.cluster.Servers {
		var parts []uint32
		rows, err := s.Conn(t).Query(context.Background(), "SELECT DISTINCT kafka_partition FROM tandem."+clickhouse.LocalTable(clickhouse.SpeedTable(viewName))+" ORDER BY kafka_partition")
		require.NoError(t, err)
		for rows.Next() {
			var q uint32
			require.NoError(t, rows.Scan(&q))
			parts = append(parts, q)
		}
		rows.Close()
		require.NotEmpty(t, parts, "server %d holds speed rows", i+1)
		for _, q := range parts {
			require.EqualValues(t, i, q%2, "server %d holds partition %d", i+1, q)
		}
	}

	// A run, then more events: batch rows and speed rows mixed.
	require.Eventually(t, func() bool { return len(p.readMasterDataset(t).missing(truth)) == 0 },
		60*time.Second, time.Second, "the archiver did not archive every acknowledged event")
	out2, err := p.batchRun(context.Background())
	require.NoError(t, err, "batch run: %s", out2)
	wave(3000, seed+1)
	p.waitExact(t, "batch and speed", truth, queries())
	checkSQL("batch and speed")

	// A final run absorbs every whole chunk; a third drops the older runs
	// on both shards.
	require.Eventually(t, func() bool { return len(p.readMasterDataset(t).missing(truth)) == 0 },
		60*time.Second, time.Second, "the archiver did not archive every acknowledged event")
	for range 2 {
		out2, err = p.batchRun(context.Background())
		require.NoError(t, err, "batch run: %s", out2)
	}
	p.waitExact(t, "after the final runs", truth, queries())
	checkSQL("after the final runs")
	_, a, _, err := p.queryServing(queries()[0])
	require.NoError(t, err)
	require.NotNil(t, a.Freshness.BatchRun)
	for i, s := range p.cluster.Servers {
		var runs uint64
		require.NoError(t, s.Conn(t).QueryRow(context.Background(),
			"SELECT uniqExact(run_id) FROM tandem."+clickhouse.LocalTable(clickhouse.BatchTable(viewName))).Scan(&runs))
		require.LessOrEqual(t, runs, uint64(3), "server %d keeps at most batch.keep_runs runs", i+1)
		require.Positive(t, runs, "server %d holds batch rows", i+1)
	}

	// The view's definition changes on the cluster (issue 13): a measure
	// added, as a Kubernetes rollout does it. tandem migrate (the Job)
	// creates the pending version's tables on both servers while
	// everything runs, then speed and serve restart with the edited
	// configuration. REST and the merged SQL views on either server answer
	// from the old version exactly until a batch run computes the new one
	// and switches both; from then on from the new one, on both shards'
	// data.
	const latency = "      - { name: latency,     type: quantiles, field: latency_ms }\n"
	text, err := os.ReadFile(p.cfgPath)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(text), latency))
	require.NoError(t, os.WriteFile(p.cfgPath, []byte(strings.Replace(string(text), latency, latency+"      - { name: total_latency, type: sum, field: latency_ms }\n", 1)), 0o600))
	p.cfg, err = config.LoadFile(p.cfgPath)
	require.NoError(t, err)
	out, err = exec.Command(p.bin, "migrate", "--config", p.cfgPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	physical := viewName + "__v2"
	versions := func(s *testenv.ClickHouseServer) []string {
		return testenv.QueryStrings(t, s.Conn(t), "SELECT concat(toString(version), ' ', state) FROM "+s.Database+".view_versions FINAL WHERE view = ? ORDER BY version", viewName)
	}
	columns := func(s *testenv.ClickHouseServer, table string) []string {
		return testenv.QueryStrings(t, s.Conn(t), "SELECT name FROM system.columns WHERE database = ? AND table = ?", s.Database, table)
	}
	for i, s := range p.cluster.Servers {
		for _, table := range []string{clickhouse.SpeedTable(physical), clickhouse.BatchTable(physical), clickhouse.LevelsTable(physical)} {
			require.Contains(t, columns(s, table), "total_latency", "server %d: the pending version's Distributed table %s", i+1, table)
			require.Contains(t, columns(s, clickhouse.LocalTable(table)), "total_latency", "server %d: its local table", i+1)
		}
		require.Equal(t, []string{"1 current", "2 pending"}, versions(s), "server %d: the registry", i+1)
		require.NotContains(t, columns(s, viewName), "total_latency", "server %d: the logical SQL view is the old version's", i+1)
	}
	for _, name := range []string{"speed", "serve"} {
		require.NoError(t, p.proc(name).term(30*time.Second))
	}
	p.start("speed", "serve")
	wave(3000, seed+2)
	p.waitExact(t, "the old version while the new one is computed", truth, queries())
	checkSQL("the old version while the new one is computed")

	require.Eventually(t, func() bool { return len(p.readMasterDataset(t).missing(truth)) == 0 },
		60*time.Second, time.Second, "the archiver did not archive every acknowledged event")
	out2, err = p.batchRun(context.Background())
	require.NoError(t, err, "batch run: %s", out2)
	require.Contains(t, out2, "the new version of a view is exact and now answers REST and SQL")
	wave(2000, seed+3)
	p.waitExact(t, "the new version", truth, queries())
	checkSQL("the new version")
	qs := queries()
	byDevice := query{from: qs[0].from, to: qs[0].to, granularity: "all", groupBy: []string{"device"}}
	require.Eventually(t, func() bool { return len(p.diffTotalLatency(viewName, truth, byDevice)) == 0 }, 60*time.Second, 500*time.Millisecond,
		"REST's total_latency: %v", p.diffTotalLatency(viewName, truth, byDevice))
	want := map[string]float64{}
	for _, ev := range truth {
		if ev.Latency != nil {
			want[ev.Device] += *ev.Latency
		}
	}
	for i, s := range p.cluster.Servers {
		require.Equal(t, []string{"1 retired", "2 current"}, versions(s), "server %d: the registry", i+1)
		require.Contains(t, columns(s, viewName), "total_latency", "server %d: the logical SQL view is the new version's", i+1)
		require.Empty(t, columns(s, physical), "server %d: the pending version's own SQL view is dropped", i+1)
		// The new measure in SQL, over both shards' batch and speed rows.
		rows, err := s.AnalystConn(t).Query(context.Background(), "SELECT device, sum(total_latency) FROM "+s.Database+"."+viewName+" GROUP BY device")
		require.NoError(t, err)
		got := map[string]float64{}
		for rows.Next() {
			var d string
			var v float64
			require.NoError(t, rows.Scan(&d, &v))
			got[d] = v
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Equal(t, len(want), len(got), "server %d: devices", i+1)
		for d, w := range want {
			require.True(t, closeRel(got[d], w, 1e-9), "server %d: device %q: total_latency %v, want %v", i+1, d, got[d], w)
		}
	}
	// Migrating again changes nothing on either server: the switch
	// recorded what it made on both.
	out, err = exec.Command(p.bin, "migrate", "--config", p.cfgPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "up to date", "%s", out)
}
