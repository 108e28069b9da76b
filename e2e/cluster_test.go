package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
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
}
