package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest/gen"
)

// TestExactness is issue 5's "done when": the platform as separate
// processes (ingest, speed, archive, serve) on real ClickHouse, Kafka and
// MinIO; load through the gateway with late, out-of-order, duplicate and
// invalid events; `tandem batch run` at random moments while events flow;
// then every answer, through the REST API and ClickHouse's merged view,
// equals the truth computed here from the truth file.
func TestExactness(t *testing.T) {
	p := newPlatform(t, platformOptions{chunkSize: 500})
	p.start("ingest", "speed", "archive", "serve")

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)

	// 30 minutes of event time (plus late events up to 6 h back) in ~12 s,
	// so the view's 1-minute windows, hours and days all have rows.
	const events = 24000
	g, err := gen.New(gen.Options{
		Stream: p.cfg.Stream(streamName), Seed: seed, Events: events, Rate: 2000,
		Spacing: 30 * time.Minute / events, Batch: 200, Concurrency: 3,
		Late: 0.05, OutOfOrder: 0.05, Dups: 0.03, Invalid: 0.02, MaxFutureSkew: time.Hour,
	})
	require.NoError(t, err)
	truthPath := filepath.Join(p.dir, "truth.ndjson")
	tf, err := os.Create(truthPath)
	require.NoError(t, err)
	rec := newRecorder()
	sink := newRetrySink(p.ingestURL, rec, 3)

	// Batch runs at random moments while the generator runs.
	ctx, stopBatches := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runs []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(500+rng.IntN(2500)) * time.Millisecond):
			}
			out, err := p.batchRun(context.Background())
			if err != nil {
				t.Errorf("tandem batch run during load failed: %v\n%s", err, out)
				return
			}
			runs = append(runs, lastLine(out))
		}
	}()
	rep, err := g.Run(context.Background(), gen.RunOptions{Sink: sink, Truth: tf})
	require.NoError(t, err)
	require.NoError(t, tf.Close())
	stopBatches()
	wg.Wait()
	t.Logf("gen: %s", rep)
	t.Logf("%d batch runs during the load", len(runs))
	require.Positive(t, rep.Duplicates)
	require.Positive(t, rep.Late)
	require.Positive(t, rep.Invalid)
	require.Equal(t, rep.Sent-rep.Invalid, rep.Accepted, "the gateway accepts exactly the valid events")

	truth, err := readTruthFile(truthPath)
	require.NoError(t, err)
	require.Len(t, truth, rec.ackedCount(), "truth file and acknowledged events agree")
	require.Equal(t, int64(len(truth)), rep.Accepted-rep.Duplicates, "duplicates repeat an id")

	lo, hi := truth[0].TimeMs, truth[0].TimeMs
	for _, ev := range truth {
		lo, hi = min(lo, ev.TimeMs), max(hi, ev.TimeMs)
	}
	from := time.UnixMilli(lo).UTC().Truncate(time.Hour)
	to := time.UnixMilli(hi).UTC().Truncate(time.Hour).Add(time.Hour)
	mid := time.UnixMilli(hi).UTC().Add(-10 * time.Minute).Truncate(time.Minute)
	queries := []query{
		{from: from, to: to},
		{from: from, to: to, groupBy: []string{"country", "device"}},
		{from: from, to: to, granularity: "1h", groupBy: []string{"country"}},
		{from: from, to: to, granularity: "1h", filters: []string{"country:US", "country:DE"}},
		{from: from, to: to, granularity: "5m", groupBy: []string{"country"}, filters: []string{"country:US", "device:desktop"}},
		{from: from, to: to, granularity: "1h", groupBy: []string{"device"}, filters: []string{"country:"}},
		{from: from, to: to, granularity: "all"},
		{from: from, to: to, granularity: "all", groupBy: []string{"country"}},
		{from: from, to: to, granularity: "all", groupBy: []string{"country", "device"}, filters: []string{"device:mobile"}},
		{from: mid, to: mid.Add(7 * time.Minute), groupBy: []string{"device"}},
	}

	// Speed caught up: batch (whatever runs published) + speed is exact.
	p.waitExact(t, "after the load", truth, queries)
	// Batch runs during the load and speed rows: the states mixed.
	p.checkSketchSQL("after the load", truth, from, to)

	// Every acknowledged event is in the master dataset exactly once by
	// offset; then a final run absorbs every whole chunk.
	require.Eventually(t, func() bool { return len(p.readMasterDataset(t).missing(truth)) == 0 },
		60*time.Second, time.Second, "the archiver did not archive every acknowledged event")
	md := p.readMasterDataset(t)
	require.Empty(t, md.twice, "an offset archived twice")
	out, err := p.batchRun(context.Background())
	require.NoError(t, err, "final batch run: %s", out)
	p.waitExact(t, "after the final batch run", truth, queries)
	p.checkSketchSQL("after the final batch run", truth, from, to)

	// The final run absorbed every whole chunk the archive holds.
	_, a, _, err := p.queryServing(queries[0])
	require.NoError(t, err)
	require.NotNil(t, a)
	require.NotNil(t, a.Freshness.BatchRun, "a batch run is published")
	var absorbed int64
	for part, end := range md.ends {
		got := a.Freshness.Absorbed[itoa(part)]
		require.Equal(t, end/p.cfg.ChunkSize*p.cfg.ChunkSize, got, "partition %d: absorbed offsets", part)
		absorbed += got
	}
	require.Positive(t, absorbed)
	t.Logf("final run absorbed %d of %d archived records", absorbed, md.records)

	// The same numbers through ClickHouse's merged view, as the analyst.
	conn := p.ch.AnalystConn(t)
	for _, c := range []struct {
		q       query
		granSec int64
	}{
		{query{from: from, to: to, groupBy: []string{"country", "device"}}, 0},
		{query{from: from, to: to, granularity: "1h", groupBy: []string{"country"}}, 3600},
		{query{from: from, to: to, granularity: "1h"}, 3600},
	} {
		got, err := readMergedView(context.Background(), conn, p.ch.Database, c.q.from, c.q.to, c.granSec, c.q.groupBy)
		require.NoError(t, err)
		d := diffMergedView(expect(truth, c.q), got)
		require.Empty(t, d, "ClickHouse merged view, %s", c.q)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func itoa(p int32) string { return strconv.Itoa(int(p)) }
