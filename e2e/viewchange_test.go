package e2e

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/schemas"
)

// addedView is the view TestAddViewBackfilling adds to a running
// deployment: the test view's measures by device.
const addedView = "pageviews_by_device"

// TestAddViewBackfilling: a view added to a running deployment is never
// answered inexactly. Batch runs have absorbed the stream's history; the
// configuration gains a view and speed and serve restart with it (speed
// migrates ClickHouse). While traffic flows — late events, duplicates of
// recent events, and resends of events absorbed long ago, beyond the
// speed layer's duplicate horizon — the new view answers REST with 503,
// Retry-After and reason "backfilling" and its merged SQL view is empty,
// though the speed layer has rows for it; the old view keeps answering
// exactly. A batch run in the middle of the traffic publishes the new
// view; from then on REST and SQL equal the truth for both, computed here
// from the master dataset, before and after the final run.
func TestAddViewBackfilling(t *testing.T) {
	p := newPlatform(t, platformOptions{chunkSize: 200})
	p.start("ingest", "speed", "archive", "serve")
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 3))
	t.Logf("seed %d", seed)

	load := func(seed uint64, events int64, truth string) gen.Report {
		t.Helper()
		g, err := gen.New(gen.Options{
			Stream: p.cfg.Stream(streamName), Seed: seed, Events: events, Rate: 2000,
			Spacing: 20 * time.Minute / time.Duration(events), Batch: 200, Concurrency: 2,
			Late: 0.05, OutOfOrder: 0.05, Dups: 0.03, Invalid: 0.02, MaxFutureSkew: time.Hour,
		})
		require.NoError(t, err)
		opts := gen.RunOptions{Sink: newRetrySink(p.ingestURL, newRecorder(), 2)}
		if truth != "" {
			f, err := os.Create(truth)
			require.NoError(t, err)
			defer func() { require.NoError(t, f.Close()) }()
			opts.Truth = f
		}
		rep, err := g.Run(context.Background(), opts)
		require.NoError(t, err)
		require.Equal(t, rep.Sent-rep.Invalid, rep.Accepted)
		return rep
	}
	var accepted int64
	// truthNow waits until the master dataset holds every accepted message
	// and returns the counted events under the duplicate rule.
	truthNow := func() []event {
		t.Helper()
		var msgs []masterMsg
		require.Eventually(t, func() bool {
			msgs = p.readMasterMessages(t)
			return int64(len(msgs)) == accepted
		}, 90*time.Second, time.Second, "the archiver did not archive every accepted message")
		return windowTruth(t, msgs, 0)
	}
	span := func(truth []event) (time.Time, time.Time) {
		lo, hi := truth[0].TimeMs, truth[0].TimeMs
		for _, ev := range truth {
			lo, hi = min(lo, ev.TimeMs), max(hi, ev.TimeMs)
		}
		return time.UnixMilli(lo).UTC().Truncate(time.Hour), time.UnixMilli(hi).UTC().Truncate(time.Hour).Add(time.Hour)
	}
	queriesOf := func(truth []event) []query {
		from, to := span(truth)
		return []query{
			{from: from, to: to, groupBy: []string{"device"}},
			{from: from, to: to, granularity: "1h", groupBy: []string{"device"}},
			{from: from, to: to, granularity: "all", groupBy: []string{"device"}},
		}
	}
	// exact waits until REST and SQL of each view equal the truth.
	exact := func(stage string, truth []event, views ...string) {
		t.Helper()
		from, to := span(truth)
		conn := p.ch.AnalystConn(t)
		deadline := time.Now().Add(90 * time.Second)
		for {
			var last []string
			for _, v := range views {
				for _, q := range queriesOf(truth) {
					if d := p.compareServingView(v, truth, q); len(d) > 0 {
						last = append(last, v+" "+q.String()+":\n  "+strings.Join(d[:min(len(d), 6)], "\n  "))
					}
				}
				got, err := readMergedViewOf(context.Background(), conn, p.ch.Database, v, from, to, 3600, []string{"device"})
				require.NoError(t, err)
				if d := diffMergedView(expect(truth, query{from: from, to: to, granularity: "1h", groupBy: []string{"device"}}), got); len(d) > 0 {
					last = append(last, v+" SQL:\n  "+strings.Join(d[:min(len(d), 6)], "\n  "))
				}
			}
			if len(last) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: answers differ from the truth:\n%s", stage, strings.Join(last, "\n"))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	// History: load, then batch runs absorb it.
	truthPath := filepath.Join(p.dir, "truth1.ndjson")
	rep := load(seed, 3000, truthPath)
	accepted += rep.Accepted
	truth := truthNow()
	out, err := p.batchRun(context.Background())
	require.NoError(t, err, "batch run: %s", out)
	exact("before the change", truth, viewName)
	old := readTruthRaws(t, truthPath)

	// The view is added; speed (which migrates) and serve restart with it.
	text, err := os.ReadFile(p.cfgPath)
	require.NoError(t, err)
	view := strings.Replace(string(text)[strings.Index(string(text), "  - name: "+viewName):], viewName, addedView, 1)
	view = strings.Replace(view, "dimensions: [country, device]", "dimensions: [device]", 1)
	require.NoError(t, os.WriteFile(p.cfgPath, append(text, view...), 0o600))
	p.cfg, err = schemas.LoadFile(p.cfgPath)
	require.NoError(t, err)
	require.NotNil(t, p.cfg.View(addedView))
	for _, name := range []string{"speed", "serve"} {
		require.NoError(t, p.proc(name).term(30*time.Second))
		p.restart(name)
		p.waitReady(name, 60*time.Second)
	}

	// Traffic: more events; the old view answers them exactly.
	rep = load(seed+1, 1500, "")
	accepted += rep.Accepted
	exact("while the added view backfills", truthNow(), viewName)

	// Resends of events absorbed long ago, beyond the speed layer's
	// duplicate horizon.
	sink := &gen.HTTPSink{URL: p.ingestURL, Stream: streamName, Client: &http.Client{Timeout: 30 * time.Second}}
	resend := make([]gen.Event, 200)
	for i := range resend {
		resend[i] = gen.Event{Raw: old[rng.IntN(len(old)/2)]} // the older half
	}
	acc, err := sink.Send(context.Background(), resend)
	require.NoError(t, err)
	for _, a := range acc {
		require.True(t, a, "a resent valid event is accepted")
	}
	accepted += int64(len(resend))

	// The speed layer has folded the new view's rows, and still it is
	// not answered: REST 503 backfilling, SQL empty.
	admin := p.ch.Conn(t)
	require.Eventually(t, func() bool {
		var n uint64
		require.NoError(t, admin.QueryRow(context.Background(), "SELECT count() FROM "+p.ch.Database+"."+addedView+"_speed").Scan(&n))
		return n > 0
	}, 60*time.Second, 250*time.Millisecond, "the speed layer wrote no rows for the added view")
	// Its speed rows alone over-count: the speed layer folded all of Kafka
	// for it, and the resends lie beyond its duplicate horizon.
	counted := int64(len(truthNow()))
	var speedViews int64
	require.Eventually(t, func() bool {
		require.NoError(t, admin.QueryRow(context.Background(), "SELECT toInt64(sum(views)) FROM "+p.ch.Database+"."+addedView+"_speed FINAL").Scan(&speedViews))
		return speedViews > counted
	}, 60*time.Second, 250*time.Millisecond, "the speed rows of the added view never passed the truth (%d events)", counted)
	t.Logf("speed rows of %s count %d events, the truth %d", addedView, speedViews, counted)
	from, to := span(truth)
	for i := 0; i < 3; i++ {
		code, hdr, body := httpGetHeader(p.serveURL + "/v1/views/" + addedView + "/query?" + query{from: from, to: to, granularity: "all"}.values().Encode())
		require.Equal(t, http.StatusServiceUnavailable, code, "%s", body)
		require.Equal(t, "30", hdr.Get("Retry-After"))
		var e struct{ Error, Reason string }
		require.NoError(t, json.Unmarshal(body, &e))
		require.Equal(t, "backfilling", e.Reason)
		var n uint64
		require.NoError(t, p.ch.AnalystConn(t).QueryRow(context.Background(), "SELECT count() FROM "+p.ch.Database+"."+addedView).Scan(&n))
		require.Zero(t, n, "the merged SQL view of a backfilling view is empty")
		code, _ = httpGet(p.serveURL + "/v1/views/" + viewName + "/query?" + query{from: from, to: to, granularity: "all"}.values().Encode())
		require.Equal(t, http.StatusOK, code, "the other view keeps answering")
		time.Sleep(300 * time.Millisecond)
	}

	// A batch run in the middle of more traffic publishes the new view.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(300 * time.Millisecond)
		out, err := p.batchRun(context.Background())
		if err != nil {
			t.Errorf("batch run during the traffic: %v\n%s", err, out)
		}
	}()
	rep = load(seed+2, 2000, "")
	accepted += rep.Accepted
	wg.Wait()
	truth = truthNow()
	out, err = p.batchRun(context.Background())
	require.NoError(t, err, "final batch run: %s", out)
	exact("after the final batch run", truth, viewName, addedView)
}

// httpGetHeader is httpGet with the answer's headers.
func httpGetHeader(url string) (int, http.Header, []byte) {
	res, err := httpClient.Get(url)
	if err != nil {
		return 0, nil, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	return res.StatusCode, res.Header, b
}
