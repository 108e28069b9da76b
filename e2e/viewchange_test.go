package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// addedView is the view TestViewChanges adds to a running
// deployment: the test view's measures by device.
const addedView = "pageviews_by_device"

// TestViewChanges plays the view changes of a running deployment, each
// with traffic flowing — late events, duplicates of recent events, resends
// of events absorbed long ago (beyond the speed layer's duplicate horizon)
// and a batch run in the middle — and checks REST and the analyst's SQL
// against the truth computed here from the master dataset, before, during
// and after the change:
//
//   - a view added after batch runs absorbed the stream (backfilling:
//     REST 503 and an empty SQL view until its first run);
//   - a measure added to it, its granularity changed from 1m to 5m and a
//     dimension added: each a new version (tandem migrate while everything
//     runs, as the Kubernetes Job does, then speed and serve restarted),
//     the old version answering REST and SQL exactly until a batch run in
//     the middle of traffic computes the new one and switches both (for
//     the granularity a split run of two worker processes as a Kubernetes
//     Indexed Job runs it, for the dimension `batch run --workers 2`);
//   - a field added to the stream (no view backfills; the batch run
//     recomputes the stream, older raw files read through _raw);
//   - the view removed (tandem migrate --drop-removed).
//
// While a view backfills or a new version is computed, its speed rows
// over-count (checked); the other view answers exactly throughout.
func TestViewChanges(t *testing.T) {
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
	// gran is the granularity of the added view's base rows.
	gran := "1m"
	// exact waits until REST and SQL of each view equal the truth; with
	// totalLatency, the added view's total_latency measure too.
	totalLatency := false
	exact := func(stage string, truth []event, views ...string) {
		t.Helper()
		from, to := span(truth)
		conn := p.ch.AnalystConn(t)
		deadline := time.Now().Add(90 * time.Second)
		for {
			var last []string
			for _, v := range views {
				qs := []query{
					{from: from, to: to, granularity: gran, groupBy: []string{"device"}},
					{from: from, to: to, granularity: "1h", groupBy: []string{"device"}},
					{from: from, to: to, granularity: "all", groupBy: []string{"device"}},
				}
				for _, q := range qs {
					if d := p.compareServingView(v, truth, q); len(d) > 0 {
						last = append(last, v+" "+q.String()+":\n  "+strings.Join(d[:min(len(d), 6)], "\n  "))
					}
				}
				got, err := readMergedViewOf(context.Background(), conn, p.ch.Database, v, from, to, 3600, []string{"device"})
				require.NoError(t, err)
				if d := diffMergedView(expect(truth, qs[1]), got); len(d) > 0 {
					last = append(last, v+" SQL:\n  "+strings.Join(d[:min(len(d), 6)], "\n  "))
				}
				if v == addedView && totalLatency {
					if d := p.diffTotalLatency(addedView, truth, qs[2]); len(d) > 0 {
						last = append(last, v+" total_latency:\n  "+strings.Join(d[:min(len(d), 6)], "\n  "))
					}
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
	stop := func() {
		t.Helper()
		for _, name := range []string{"speed", "serve"} {
			require.NoError(t, p.proc(name).term(30*time.Second))
		}
	}
	restart := func() {
		t.Helper()
		stop()
		p.start("speed", "serve")
	}
	edit := func(f func(string) string) {
		t.Helper()
		text, err := os.ReadFile(p.cfgPath)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p.cfgPath, []byte(f(string(text))), 0o600))
		p.cfg, err = config.LoadFile(p.cfgPath)
		require.NoError(t, err)
	}
	migrate := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(p.bin, append([]string{"migrate", "--config", p.cfgPath}, args...)...).CombinedOutput()
		require.NoError(t, err, "tandem migrate %v: %s", args, out)
		return string(out)
	}
	admin := p.ch.Conn(t)
	seedN := seed

	// History: load, then a batch run absorbs it.
	truthPath := filepath.Join(p.dir, "truth1.ndjson")
	accepted += load(seedN, 3000, truthPath).Accepted
	truth := truthNow()
	out, err := p.batchRun(context.Background())
	require.NoError(t, err, "batch run: %s", out)
	exact("before any change", truth, viewName)
	old := readTruthRaws(t, truthPath)

	// resendAbsorbed resends 200 events of the older half of those absorbed
	// before the changes, waits until they are archived, and then until the
	// speed rows of physical (a view or version folded from the stream's
	// absorbed end) count more than the truth of the chunks they cover:
	// beyond the speed layer's duplicate horizon, they over-count. It
	// returns the truth and an answer of the view after the resends.
	resendAbsorbed := func(stage, physical string) ([]event, *answer) {
		t.Helper()
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
		now := truthNow()
		_, a, body, err := p.queryServing(query{from: time.Unix(0, 0), to: time.Unix(3600, 0)})
		require.NoError(t, err)
		require.NotNil(t, a, "%s", body)
		counted := countedFrom(p.readMasterMessages(t), a.Freshness.Absorbed)
		var speedViews int64
		require.Eventually(t, func() bool {
			require.NoError(t, admin.QueryRow(context.Background(), "SELECT toInt64(sum(views)) FROM "+p.ch.Database+"."+physical+"_speed FINAL").Scan(&speedViews))
			return speedViews > counted
		}, 60*time.Second, 250*time.Millisecond, "%s: the speed rows of %s never passed the truth of the unabsorbed chunks (%d events)", stage, physical, counted)
		t.Logf("%s: speed rows of %s count %d events, the truth of the chunks they cover %d", stage, physical, speedViews, counted)
		return now, a
	}

	// change is one change of the added view with traffic around it.
	change := func(stage string, others []string) {
		t.Helper()
		// Traffic: the other views answer it exactly.
		seedN++
		accepted += load(seedN, 1500, "").Accepted
		exact(stage+": while the view backfills", truthNow(), others...)

		// Resends of events absorbed long ago. The speed layer folded the
		// view's rows from where the other view's run ended (not from the
		// topic's start), and they over-count the resends; still the view
		// is not answered.
		_, a := resendAbsorbed(stage, addedView)
		var below uint64
		require.NoError(t, admin.QueryRow(context.Background(), "SELECT count() FROM "+p.ch.Database+"."+addedView+"_speed WHERE chunk < transform(kafka_partition, ?, ?, toUInt64(0))",
			absorbedArrays(a.Freshness.Absorbed, p.cfg.ChunkSize)...).Scan(&below))
		require.Zero(t, below, "%s: no speed rows below the chunks the other view's run absorbed", stage)
		from, to := span(truth)
		for i := 0; i < 3; i++ {
			code, hdr, body := httpGetHeader(p.serveURL + "/v1/views/" + addedView + "/query?" + query{from: from, to: to, granularity: "all"}.values().Encode())
			require.Equal(t, http.StatusServiceUnavailable, code, "%s: %s", stage, body)
			require.Equal(t, "30", hdr.Get("Retry-After"))
			var e struct{ Error, Reason string }
			require.NoError(t, json.Unmarshal(body, &e))
			require.Equal(t, "backfilling", e.Reason)
			var n uint64
			require.NoError(t, p.ch.AnalystConn(t).QueryRow(context.Background(), "SELECT count() FROM "+p.ch.Database+"."+addedView).Scan(&n))
			require.Zero(t, n, "%s: the merged SQL view of a backfilling view is empty", stage)
			for _, o := range others {
				code, _ = httpGet(p.serveURL + "/v1/views/" + o + "/query?" + query{from: from, to: to, granularity: "all"}.values().Encode())
				require.Equal(t, http.StatusOK, code, "%s: view %s keeps answering", stage, o)
			}
			time.Sleep(300 * time.Millisecond)
		}

		// A batch run in the middle of more traffic publishes the view.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(300 * time.Millisecond)
			out, err := p.batchRun(context.Background())
			if err != nil {
				t.Errorf("%s: batch run during the traffic: %v\n%s", stage, err, out)
			}
		}()
		seedN++
		accepted += load(seedN, 2000, "").Accepted
		wg.Wait()
		truth = truthNow()
		out, err := p.batchRun(context.Background())
		require.NoError(t, err, "%s: final batch run: %s", stage, out)
		exact(stage+": after the final batch run", truth, append([]string{addedView}, others...)...)
	}

	// 1. A view added; speed (which migrates) and serve restart with it.
	edit(func(text string) string {
		view := strings.Replace(text[strings.Index(text, "  - name: "+viewName):], viewName, addedView, 1)
		return text + strings.Replace(view, "dimensions: [country, device]", "dimensions: [device]", 1)
	})
	require.Contains(t, migrate("--dry-run"), "view   "+addedView)
	restart()
	change("view added", []string{viewName})

	// versionChange is one change of the added view's definition, with
	// traffic around it, as a Kubernetes rollout does it: tandem migrate
	// (the Job) registers the new version while everything runs, then
	// speed and serve restart with the edited configuration. The old
	// version answers REST and SQL exactly while the new one is computed
	// (its own speed rows over-count resends of long-absorbed events
	// meanwhile, and its own SQL view is empty); a batch run in the middle
	// of traffic computes it and switches both surfaces to it. batchRun is
	// that run and the final one: one process, or a split run's workers.
	versionChange := func(stage string, version int, batchRun func(context.Context) (string, error), editDef func(string) string, after func()) {
		t.Helper()
		physical := fmt.Sprintf("%s__v%d", addedView, version)
		edit(func(text string) string {
			at := strings.Index(text, "  - name: "+addedView)
			require.Positive(t, at)
			return text[:at] + editDef(text[at:])
		})
		plan := migrate("--dry-run")
		require.Contains(t, plan, fmt.Sprintf("view   %-28s new version %d (tables %s_speed", addedView, version, physical))
		require.Contains(t, plan, "serves REST and SQL until the new one is exact")
		out := migrate()
		require.Contains(t, out, "created    table    "+p.ch.Database+"."+physical+"_speed")
		restart()

		// Traffic: the old version answers it exactly, REST and SQL.
		seedN++
		accepted += load(seedN, 1500, "").Accepted
		exact(stage+": the old version answers while the new one is computed", truthNow(), addedView, viewName)

		// Resends of events absorbed long ago: the new version's speed
		// rows over-count them, the old version still answers exactly.
		now, _ := resendAbsorbed(stage, physical)
		// Resends of long-absorbed events are beyond the speed layer's
		// duplicate horizon: every view counts them until the next run
		// (the exactness contract), the old version like the other view.
		// It keeps answering: no 503, no gap.
		from, to := span(now)
		for _, v := range []string{addedView, viewName} {
			code, body := httpGet(p.serveURL + "/v1/views/" + v + "/query?" + query{from: from, to: to, granularity: "all"}.values().Encode())
			require.Equal(t, http.StatusOK, code, "%s: view %s keeps answering: %s", stage, v, body)
		}
		var n uint64
		require.NoError(t, p.ch.AnalystConn(t).QueryRow(context.Background(), "SELECT count() FROM "+p.ch.Database+"."+physical).Scan(&n))
		require.Zero(t, n, "%s: the new version's own SQL view is empty until it is exact", stage)

		// A batch run in the middle of more traffic computes the new
		// version and switches REST and SQL to it.
		var wg sync.WaitGroup
		var mid string
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(300 * time.Millisecond)
			var err error
			mid, err = batchRun(context.Background())
			if err != nil {
				t.Errorf("%s: batch run during the traffic: %v\n%s", stage, err, mid)
			}
		}()
		seedN++
		accepted += load(seedN, 2000, "").Accepted
		wg.Wait()
		require.Contains(t, mid, "the new version of a view is exact and now answers REST and SQL", stage)
		// Only what changed was recomputed: the other view's run continued
		// incrementally while the new version was computed over all history.
		require.Regexp(t, `view=`+viewName+` run_id=\S+ rows=\d+ files=\d+ events=\d+ duplicates=\d+ invalid=\d+ absorbed="[^"]*" incremental=true`, mid, stage)
		require.Regexp(t, `view=`+physical+` run_id=\S+ rows=\d+ files=\d+ events=\d+ duplicates=\d+ invalid=\d+ absorbed="[^"]*" incremental=false`, mid, stage)
		require.Equal(t, []string{fmt.Sprintf("%d current", version), fmt.Sprintf("%d retired", version-1)},
			testenv.QueryStrings(t, admin, "SELECT concat(toString(version), ' ', state) FROM "+p.ch.Database+".view_versions FINAL WHERE view = ? AND state IN ('current', 'retired') AND version >= ? ORDER BY version DESC", addedView, uint32(version-1)))
		// From the switch on, REST answers the new definition (the
		// resends in the unabsorbed chunks still count until the final
		// run absorbs them, as in every view).
		after()
		code, body := httpGet(p.serveURL + "/v1/views/" + addedView + "/query?" + query{from: time.Unix(0, 0), to: time.Unix(3600, 0), granularity: gran}.values().Encode())
		require.Equal(t, http.StatusOK, code, "%s: the new version answers at its granularity: %s", stage, body)
		truth = truthNow()
		// The pending version's own SQL view is gone; the logical one is
		// the new version's.
		require.NoError(t, admin.QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = ? AND name = ?", p.ch.Database, physical).Scan(&n))
		require.Zero(t, n, "%s: the pending version's own SQL view is dropped at the switch", stage)
		out, err = batchRun(context.Background())
		require.NoError(t, err, "%s: final batch run: %s", stage, out)
		exact(stage+": the new version after the final batch run", truth, addedView, viewName)
	}

	// 2. A measure added.
	const latency = "      - { name: latency,     type: quantiles, field: latency_ms }\n"
	versionChange("measure added", 2, p.batchRun, func(text string) string {
		at := strings.LastIndex(text, latency)
		require.Positive(t, at)
		return text[:at+len(latency)] + "      - { name: total_latency, type: sum, field: latency_ms }\n" + text[at+len(latency):]
	}, func() { totalLatency = true })
	require.Contains(t, sqlColumns(t, admin, p.ch.Database, addedView), "total_latency")

	// 3. Its granularity changed, the runs split over two worker
	// processes as a Kubernetes Indexed Job runs them (worker 0
	// publishes and switches).
	splits := 0
	splitRun := func(ctx context.Context) (string, error) {
		splits++
		return p.splitBatchRun(ctx, fmt.Sprintf("nightly-%d", splits), 2)
	}
	versionChange("granularity changed", 3, splitRun, func(text string) string {
		return strings.Replace(text, "granularity: 1m", "granularity: 5m", 1)
	}, func() { gran = "5m" })

	// 4. A dimension added, the runs split over two worker processes on
	// one machine (batch run --workers 2: this process publishes).
	localSplit := func(ctx context.Context) (string, error) {
		cmd := exec.CommandContext(ctx, p.bin, "batch", "run", "--config", p.cfgPath, "--tmp", p.dir, "--workers", "2")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	versionChange("dimension added", 4, localSplit, func(text string) string {
		return strings.Replace(text, "dimensions: [device]", "dimensions: [device, country]", 1)
	}, func() {})
	require.Contains(t, sqlColumns(t, admin, p.ch.Database, addedView), "country")

	// 5. A field added to the stream: nothing is refused or backfilling;
	// the next batch run recomputes the stream (its schema changed),
	// reading older raw files from _raw, and both views stay exact.
	edit(func(text string) string {
		const at = "      - { name: latency_ms, type: float64 }\n"
		require.Equal(t, 1, strings.Count(text, at))
		return strings.Replace(text, at, at+"      - { name: referrer,   type: string }\n", 1)
	})
	require.Regexp(t, `stream\s+`+streamName+`\s+unchanged\n`, migrate("--dry-run"))
	for _, name := range []string{"ingest", "archive", "speed", "serve"} {
		require.NoError(t, p.proc(name).term(30*time.Second))
	}
	p.start("ingest", "speed", "archive", "serve")
	seedN++
	accepted += load(seedN, 1500, "").Accepted
	truth = truthNow()
	exact("field added: before its batch run", truth, viewName, addedView)
	out, err = p.batchRun(context.Background())
	require.NoError(t, err, "batch run after the field was added: %s", out)
	require.Contains(t, out, "the stream's fields changed")
	exact("field added: after its batch run", truth, viewName, addedView)

	// 6. The view removed: 404; its SQL objects stay until --drop-removed.
	edit(func(text string) string { return text[:strings.Index(text, "  - name: "+addedView)] })
	require.Regexp(t, `view\s+`+addedView+`\s+removed from the configuration`, migrate("--dry-run"))
	restart()
	code, _ := httpGet(p.serveURL + "/v1/views/" + addedView + "/query?" + query{from: time.Unix(0, 0), to: time.Unix(3600, 0)}.values().Encode())
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, migrate("--drop-removed"), "dropped    the objects of "+addedView)
	var n uint64
	require.NoError(t, admin.QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = ? AND name LIKE ?", p.ch.Database, addedView+"%").Scan(&n))
	require.Zero(t, n)
	seedN++
	accepted += load(seedN, 1000, "").Accepted
	truth = truthNow()
	out, err = p.batchRun(context.Background())
	require.NoError(t, err, "batch run after the removal: %s", out)
	exact("after the removal", truth, viewName)
}

// countedFrom counts the events the duplicate rule (no window) counts at
// offsets at or above absorbed (partition → offset) of msgs, sorted by
// partition and offset.
func countedFrom(msgs []masterMsg, absorbed map[string]int64) int64 {
	var n int64
	seen := map[int32]map[string]bool{}
	for _, m := range msgs {
		ev, err := parseEvent(m.raw)
		if err != nil {
			continue
		}
		if seen[m.partition] == nil {
			seen[m.partition] = map[string]bool{}
		}
		if seen[m.partition][ev.ID] {
			continue
		}
		seen[m.partition][ev.ID] = true
		if m.offset >= absorbed[fmt.Sprint(m.partition)] {
			n++
		}
	}
	return n
}

// absorbedArrays are the two arrays of transform() mapping each partition
// to the chunks absorbed (partition → offset).
func absorbedArrays(absorbed map[string]int64, chunkSize int64) []any {
	ps, ks := []uint32{}, []uint64{}
	for p, off := range absorbed {
		var n uint32
		fmt.Sscan(p, &n)
		ps, ks = append(ps, n), append(ks, uint64(off/chunkSize))
	}
	return []any{ps, ks}
}

// diffTotalLatency compares the added view's total_latency (the sum of
// latency_ms) with the truth for q.
func (p *platform) diffTotalLatency(view string, truth []event, q query) []string {
	code, a, body, err := p.queryServingView(view, q)
	if err != nil {
		return []string{err.Error()}
	}
	if code != http.StatusOK {
		return []string{fmt.Sprintf("status %d: %.300s", code, body)}
	}
	want := expect(truth, q)
	var out []string
	for _, r := range a.Rows {
		dims := make([]string, len(q.groupBy))
		for i, d := range q.groupBy {
			dims[i] = r.Dimensions[d]
		}
		k := rowKey{windowMs: r.WindowStart.UnixMilli(), dims: strings.Join(dims, "|")}
		var got float64
		if err := json.Unmarshal(r.Measures["total_latency"], &got); err != nil {
			out = append(out, fmt.Sprintf("%s: total_latency %s: %v", k, r.Measures["total_latency"], err))
			continue
		}
		var sum float64
		if w := want[k]; w != nil {
			for _, l := range w.latencies {
				sum += l
			}
		}
		if !closeRel(got, sum, 1e-9) {
			out = append(out, fmt.Sprintf("%s: total_latency %v, want %v", k, got, sum))
		}
	}
	return out
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

// sqlColumns lists the columns of a SQL view or table.
func sqlColumns(t *testing.T, conn driver.Conn, db, name string) []string {
	return testenv.QueryStrings(t, conn, "SELECT name FROM system.columns WHERE database = ? AND table = ?", db, name)
}

// splitBatchRun runs split run name as a Kubernetes Indexed Job does: n
// `tandem batch run --run NAME --worker I/N` processes at once, worker 0
// publishing once every part is in. It returns their output, worker 0's
// first.
func (p *platform) splitBatchRun(ctx context.Context, name string, n int) (string, error) {
	outs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, p.bin, "batch", "run", "--config", p.cfgPath, "--tmp", p.dir,
				"--run", name, "--worker", fmt.Sprintf("%d/%d", i, n), "--wait", "2m")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			outs[i] = fmt.Sprintf("==== worker %d/%d\n%s", i, n, out)
			if err != nil {
				errs[i] = fmt.Errorf("worker %d/%d: %w", i, n, err)
			}
		}()
	}
	wg.Wait()
	return strings.Join(outs, "\n"), errors.Join(errs...)
}
