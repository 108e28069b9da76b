package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// Environment of TestChaos.
const (
	// envChaos selects the run: "short" (CI, about 5 minutes) or "full".
	envChaos = "TANDEM_CHAOS"
	// envChaosDuration overrides how long faults are injected (Go duration).
	envChaosDuration = "TANDEM_CHAOS_DURATION"
)

// chaosConfig is the shape of one chaos run.
type chaosConfig struct {
	faults     time.Duration // how long faults are injected
	tail       time.Duration // load without faults afterwards
	gap        [2]time.Duration
	outage     [2]time.Duration // ClickHouse and S3 outages
	brokerDown [2]time.Duration
	rate       float64
}

func chaosSettings(t *testing.T) chaosConfig {
	var c chaosConfig
	switch mode := os.Getenv(envChaos); mode {
	case "short":
		c = chaosConfig{faults: 150 * time.Second, tail: 30 * time.Second,
			gap: [2]time.Duration{2 * time.Second, 6 * time.Second}, outage: [2]time.Duration{10 * time.Second, 15 * time.Second},
			brokerDown: [2]time.Duration{time.Second, 4 * time.Second}, rate: 300}
	case "full":
		c = chaosConfig{faults: 10 * time.Minute, tail: 40 * time.Second,
			gap: [2]time.Duration{3 * time.Second, 12 * time.Second}, outage: [2]time.Duration{20 * time.Second, 45 * time.Second},
			brokerDown: [2]time.Duration{2 * time.Second, 8 * time.Second}, rate: 400}
	default:
		t.Skipf("chaos soak run: set %s=short or %s=full (make chaos-short, make chaos)", envChaos, envChaos)
	}
	if s := os.Getenv(envChaosDuration); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "%s", envChaosDuration)
		c.faults = d
	}
	return c
}

// Fault kinds the driver injects.
const (
	faultKillIngest  = "kill -9 ingest"
	faultKillSpeed   = "kill -9 speed"
	faultKillArchive = "kill -9 archive"
	faultKillServe   = "kill -9 serve"
	faultKillBatch   = "kill -9 batch run mid-flight"
	faultClickHouse  = "ClickHouse down"
	faultS3          = "S3 (MinIO) down"
	faultBroker      = "Kafka broker restart"
)

// The definition change of the chaos run: a measure added to viewName,
// which makes it a new version (docs/architecture.md, "Versioned view
// definitions"). Which version answered shows in the answer itself: only
// the new one has the measure, in REST rows and as an SQL column.
const (
	changedMeasure = "total_latency"
	latencyMeasure = "      - { name: latency,     type: quantiles, field: latency_ms }\n"
	addedMeasure   = "      - { name: total_latency, type: sum, field: latency_ms }\n"
)

// Versions of viewName as the checker tells them apart (indexes of
// chaosRun.restOn and sqlOn).
const (
	versionUnknown = 0 // an answer without rows
	versionOld     = 1
	versionNew     = 2
)

// chaosRun is the state of one chaos test.
type chaosRun struct {
	t   *testing.T
	p   *platform
	cfg chaosConfig
	rng *rand.Rand // driver's only
	// recap gathers the summary and what failed, printed again at the very
	// end of a failed run.
	recap *strings.Builder

	opsMu sync.Mutex // one process replacement at a time (driver, supervisor)

	mu          sync.Mutex
	faults      map[string]int
	faultTime   map[string]time.Duration
	crashes     map[string]int
	crashTails  []string
	batchOK     int
	batchFailed int
	batchKilled int

	checks  checkStats
	closed  []event // the closed block's truth
	closedQ []query

	// The view added to the configuration during the faults.
	viewAdded                atomic.Bool
	viewAddedAfter           time.Duration
	addedExact, addedRefused atomic.Int64

	// The definition change of viewName during the faults, and its
	// answers checked per version (clean REST answers, exact SQL answers
	// about the closed block); switched* is when the new version first
	// answered, in nanoseconds since started (0: not yet).
	versionChanged                      atomic.Bool
	versionChangedAfter                 time.Duration
	restOn, sqlOn                       [3]atomic.Int64
	restSwitched, sqlSwitched           atomic.Int64
	sqlChecks, sqlUnavailable, sqlExact atomic.Int64

	started time.Time
	sql     driver.Conn // the analyst's connection, for the checker
}

type checkStats struct {
	mu                             sync.Mutex
	total, exact, bounded          int
	warned, unavailable, status503 int
	wrong                          []string
}

func (s *checkStats) add(f func(s *checkStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// TestChaos is the soak run of issue 7: load through the gateway while a
// driver kill -9s and restarts every component, kills batch runs
// mid-flight, takes ClickHouse and S3 down for tens of seconds and restarts
// the broker. A third of the way through, the checked view's definition
// changes (a measure added: a new version; migrate, then speed and serve
// restarted with it, as a rollout does): REST and the analyst SQL answer
// from the old version, exactly, until a batch run publishes the new one,
// then from the new one, never back. Halfway through, a view is added the
// same way, and its answers about the closed block are refused or exact,
// never wrong (issue 13). Afterwards every acknowledged event is in the
// master dataset exactly once, every answer equals the truth, and the
// checker that queried REST and SQL throughout never saw a wrong number
// without a warning.
func TestChaos(t *testing.T) {
	cc := chaosSettings(t)
	// The components' logs are printed when the platform stops, after the
	// verdicts; this cleanup, registered first, runs last, so a failed run
	// ends with its summary and what failed rather than with log lines.
	recap := &strings.Builder{}
	t.Cleanup(func() {
		if t.Failed() && recap.Len() > 0 {
			t.Logf("chaos recap (component logs above):%s", recap.String())
		}
	})
	p := newPlatform(t, platformOptions{chunkSize: 500, lockTTL: "10s", produceTimeout: "5s"})
	p.start("ingest", "speed", "archive", "serve")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d; faults for %s, then %s of load without faults", seed, cc.faults, cc.tail)
	c := &chaosRun{t: t, p: p, cfg: cc, rng: rand.New(rand.NewPCG(seed, 2)),
		faults: map[string]int{}, faultTime: map[string]time.Duration{}, crashes: map[string]int{}, recap: recap}
	started := time.Now()
	c.started = started

	// 1. A closed block: events two days ago, acknowledged and absorbed
	// before any fault. No later event falls on that day, so every answer
	// about it must equal its truth, whatever happens.
	closedRec := newRecorder()
	d0 := time.Now().UTC().Truncate(24 * time.Hour).Add(-48 * time.Hour)
	g0, err := gen.New(gen.Options{Stream: p.cfg.Stream(streamName), Seed: seed ^ 0xc105ed, Events: 3000,
		Start: d0.Add(10 * time.Hour), Spacing: 200 * time.Millisecond, Batch: 100, Concurrency: 2,
		Late: 0.05, OutOfOrder: 0.05, Dups: 0.03, Invalid: 0.02, MaxFutureSkew: time.Hour})
	require.NoError(t, err)
	_, err = g0.Run(context.Background(), gen.RunOptions{Sink: newRetrySink(p.ingestURL, closedRec, 2)})
	require.NoError(t, err)
	c.closed = closedRec.ackedEvents()
	day := query{from: d0, to: d0.Add(24 * time.Hour)}
	c.closedQ = []query{
		{from: day.from, to: day.to, granularity: "all"},
		{from: day.from, to: day.to, granularity: "1h", groupBy: []string{"country"}},
		{from: day.from, to: day.to, groupBy: []string{"device"}, filters: []string{"country:US"}},
		{from: day.from, to: day.to, granularity: "all", groupBy: []string{"country", "device"}},
	}
	c.waitExact(c.closed, c.closedQ, 90*time.Second, "closed block before the faults")
	out, err := p.batchRun(context.Background())
	require.NoError(t, err, "batch run before the faults: %s", out)
	c.waitExact(c.closed, c.closedQ, 30*time.Second, "closed block after its batch run")

	// 2. Load for the whole run; the generator retries every batch until
	// the gateway answers it, so nothing sent stays in doubt.
	rec := newRecorder()
	sink := newRetrySink(p.ingestURL, rec, 4)
	g, err := gen.New(gen.Options{Stream: p.cfg.Stream(streamName), Seed: seed, Rate: cc.rate,
		Duration: cc.faults + cc.tail, Batch: 50, Concurrency: 4,
		Late: 0.05, OutOfOrder: 0.05, Dups: 0.03, Invalid: 0.02, MaxFutureSkew: time.Hour})
	require.NoError(t, err)
	var (
		genRep gen.Report
		genErr error
		genWG  sync.WaitGroup
	)
	genWG.Add(1)
	go func() {
		defer genWG.Done()
		genRep, genErr = g.Run(context.Background(), gen.RunOptions{Sink: sink})
	}()
	liveFrom := time.Now().UTC().Add(-7 * time.Hour).Truncate(time.Hour)
	liveQ := query{from: liveFrom, to: time.Now().UTC().Add(2 * time.Hour).Truncate(time.Hour), granularity: "1h"}

	// 3. The checker, the supervisor, periodic batch runs and the fault
	// driver run until the faults end.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := func(f func(ctx context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	c.sql = p.ch.AnalystConn(t)
	run(func(ctx context.Context) { c.checker(ctx, rec, liveQ) })
	run(c.supervise)
	run(c.batchLoop)
	run(func(ctx context.Context) { c.changeMidway(ctx, cc.faults/3, cc.faults/2) })
	faultsCtx, stopFaults := context.WithTimeout(ctx, cc.faults)
	c.drive(faultsCtx)
	stopFaults()
	t.Logf("faults over after %s; load continues for %s", time.Since(started).Round(time.Second), cc.tail)

	// 4. Load ends; wait until the archiver has every acknowledged event.
	genWG.Wait()
	require.NoError(t, genErr, "the generator must get every batch acknowledged")
	stop()
	wg.Wait()
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	c.supervise(done) // one last pass: restart anything that crashed
	for _, name := range []string{"ingest", "speed", "archive", "serve"} {
		p.waitReady(name, 2*time.Minute)
	}
	t.Logf("load over after %s (%s); checking the master dataset", time.Since(started).Round(time.Second), genRep)
	acked := append(append([]event(nil), c.closed...), rec.ackedEvents()...)
	var md *masterDataset
	var lost []string
	deadline := time.Now().Add(3 * time.Minute)
	for {
		md = p.readMasterDataset(t)
		if lost = md.missing(acked); len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}

	// 5. A final batch run, then every answer equals the truth.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		out, err := p.batchRun(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.fatalf("the final batch run did not succeed: %v\n%s", err, out)
		}
	}
	t.Logf("final batch run done after %s; comparing answers with the truth", time.Since(started).Round(time.Second))
	now := time.Now().UTC()
	finalQ := append([]query{
		{from: d0, to: now.Add(2 * time.Hour).Truncate(time.Hour), granularity: "all", groupBy: []string{"country"}},
		{from: liveFrom, to: liveQ.to, granularity: "1h", groupBy: []string{"country"}},
		{from: liveFrom, to: liveQ.to, groupBy: []string{"country", "device"}},
		{from: liveFrom, to: liveQ.to, granularity: "all", filters: []string{"device:mobile", "device:tv"}},
		{from: liveFrom, to: liveQ.to, granularity: "15m", groupBy: []string{"device"}, filters: []string{"country:US", "country:IN"}},
	}, c.closedQ...)
	finalDiffs := c.diffAll(acked, finalQ, 2*time.Minute)
	if len(finalDiffs) > 0 {
		c.drillDown(acked, finalQ[1])
	}
	// The view added during the faults: exact too, REST and SQL.
	if !c.viewAdded.Load() {
		c.fatalf("the view was never added; run longer")
	}
	addedQ := []query{
		{from: d0, to: now.Add(2 * time.Hour).Truncate(time.Hour), granularity: "all", groupBy: []string{"device"}},
		{from: liveFrom, to: liveQ.to, granularity: "1h", groupBy: []string{"device"}},
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		var d []string
		for _, q := range addedQ {
			d = append(d, p.compareServingView(addedView, acked, q)...)
		}
		if len(d) == 0 || time.Now().After(deadline) {
			finalDiffs = append(finalDiffs, d...)
			break
		}
	}
	// The changed view: the final run switched it; REST answers the new
	// version, its added measure exact too.
	if !c.versionChanged.Load() {
		c.fatalf("the view's definition was never changed; run longer")
	}
	registry := testenv.QueryStrings(t, p.ch.Conn(t), "SELECT concat(toString(version), ' ', state) FROM "+p.ch.Database+".view_versions FINAL WHERE view = ? ORDER BY version DESC", viewName)
	for _, q := range finalQ[:2] {
		code, a, body, err := p.queryServing(q)
		if err != nil || code != http.StatusOK {
			finalDiffs = append(finalDiffs, fmt.Sprintf("%s: status %d: %v %.300s", q, code, err, body))
			continue
		}
		if v, err := answerVersion(a); err != nil || v != versionNew {
			finalDiffs = append(finalDiffs, fmt.Sprintf("%s: answered by version %d after the switch (%v)", q, v, err))
			continue
		}
		finalDiffs = append(finalDiffs, diffAnswerTotals(expect(acked, q), a, q)...)
	}
	chDiffs := []string{}
	if len(finalDiffs) == 0 {
		q := query{from: d0, to: liveQ.to, granularity: "1h", groupBy: []string{"country"}}
		got, err := readMergedViewCols(context.Background(), p.ch.AnalystConn(t), p.ch.Database, viewName, q.from, q.to, 3600, q.groupBy, true)
		require.NoError(t, err, "the analyst SQL view has the new version's columns after the switch")
		chDiffs = diffMergedView(expect(acked, q), got)
		q = query{from: d0, to: liveQ.to, granularity: "1h", groupBy: []string{"device"}}
		got, err = readMergedViewOf(context.Background(), p.ch.AnalystConn(t), p.ch.Database, addedView, q.from, q.to, 3600, q.groupBy)
		require.NoError(t, err)
		chDiffs = append(chDiffs, diffMergedView(expect(acked, q), got)...)
	}

	// 6. The summary, then the verdicts.
	c.checks.mu.Lock()
	checks := struct {
		total, exact, bounded, warned, unavailable, status503 int
		wrong                                                 []string
	}{c.checks.total, c.checks.exact, c.checks.bounded, c.checks.warned, c.checks.unavailable, c.checks.status503, c.checks.wrong}
	c.checks.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\n==== chaos summary (%s run, %s, seed %d) ====\n", os.Getenv(envChaos), time.Since(started).Round(time.Second), seed)
	fmt.Fprintf(&b, "events sent %d, acknowledged %d (+%d closed block), rejected invalid %d; retries: 429 %d, 503 %d, connection %d\n",
		genRep.Sent, genRep.Accepted, len(c.closed), genRep.Rejected, sink.retries429.Load(), sink.retries503.Load(), sink.retriesConn.Load())
	fmt.Fprintf(&b, "distinct events acknowledged %d; in doubt and re-sent %d\n", len(acked), len(rec.retriedEvents()))
	fmt.Fprintf(&b, "faults injected:\n")
	kinds := make([]string, 0, len(c.faults))
	for k := range c.faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-30s %3d  (%s down in total)\n", k, c.faults[k], c.faultTime[k].Round(time.Second))
	}
	fmt.Fprintf(&b, "batch runs: %d succeeded, %d failed (allowed during faults: outages, lock of a killed run), %d killed mid-flight (of %d kill attempts; the others ended first)\n",
		c.batchOK, c.batchFailed, c.batchKilled, c.faults[faultKillBatch])
	fmt.Fprintf(&b, "unexpected component exits (restarted by the supervisor): %v\n", c.crashes)
	fmt.Fprintf(&b, "master dataset: %d objects, %d records; acknowledged events missing: %d (must be 0); offsets archived twice: %d (must be 0)\n",
		md.objects, md.records, len(lost), len(md.twice))
	fmt.Fprintf(&b, "answers checked %d: %d exact (closed block), %d within bounds (live), %d with warnings, %d 503, %d no answer (serve down)\n",
		checks.total, checks.exact, checks.bounded, checks.warned, checks.status503, checks.unavailable)
	fmt.Fprintf(&b, "view %s changed after %s (measure %s added, version 2): clean REST answers checked on version 1 %d, version 2 %d (%d without rows); switch seen by REST %s, by SQL %s; registry %v\n",
		viewName, c.versionChangedAfter.Round(time.Second), changedMeasure, c.restOn[versionOld].Load(), c.restOn[versionNew].Load(), c.restOn[versionUnknown].Load(),
		sinceStart(c.restSwitched.Load()), sinceStart(c.sqlSwitched.Load()), registry)
	fmt.Fprintf(&b, "analyst SQL of %s (closed block) checked %d times: %d exact (version 1 %d, version 2 %d), %d no answer (ClickHouse down)\n",
		viewName, c.sqlChecks.Load(), c.sqlExact.Load(), c.sqlOn[versionOld].Load(), c.sqlOn[versionNew].Load(), c.sqlUnavailable.Load())
	fmt.Fprintf(&b, "view %s added after %s: its closed block answered %d times exactly, %d times not (backfilling, not yet known, down)\n",
		addedView, c.viewAddedAfter.Round(time.Second), c.addedExact.Load(), c.addedRefused.Load())
	fmt.Fprintf(&b, "answers wrong: %d (must be 0)\n", len(checks.wrong))
	fmt.Fprintf(&b, "final answers differing from the truth: %d REST, %d ClickHouse (must be 0)\n", len(finalDiffs), len(chDiffs))
	t.Log(b.String())
	for _, s := range c.crashTails {
		t.Logf("crash: %s", s)
	}

	recap.WriteString(b.String())
	verdict := func(ok bool, format string, args ...any) {
		if !ok {
			msg := fmt.Sprintf(format, args...)
			recap.WriteString("FAILED: " + msg + "\n")
			t.Error(msg)
		}
	}
	first := func(s []string) string { return strings.Join(s[:min(len(s), 20)], "\n  ") }
	verdict(len(lost) == 0, "acknowledged events missing from the master dataset (%d):\n  %s", len(lost), first(lost))
	verdict(len(md.twice) == 0, "offsets archived twice (%d):\n  %s", len(md.twice), first(md.twice))
	verdict(len(checks.wrong) == 0, "answers wrong during the run (%d):\n  %s", len(checks.wrong), first(checks.wrong))
	verdict(len(finalDiffs) == 0, "final answers differ from the truth (%d):\n  %s", len(finalDiffs), first(finalDiffs))
	verdict(slices.Equal([]string{"2 current", "1 retired"}, registry), "the registry of %s's versions after the final batch run is %v, want [2 current 1 retired]", viewName, registry)
	verdict(len(chDiffs) == 0, "the final ClickHouse merged view differs from the truth (%d):\n  %s", len(chDiffs), first(chDiffs))
	for _, k := range []string{faultKillIngest, faultKillSpeed, faultKillArchive, faultKillServe, faultKillBatch, faultClickHouse, faultS3} {
		verdict(c.faults[k] > 0, "fault %q was never injected; run longer", k)
	}
}

// waitExact waits until every query of qs answers the truth of events.
func (c *chaosRun) waitExact(events []event, qs []query, within time.Duration, stage string) {
	c.t.Helper()
	if d := c.diffAll(events, qs, within); len(d) > 0 {
		c.fatalf("%s: answers differ from the truth:\n%s", stage, strings.Join(d, "\n"))
	}
}

// fatalf ends the test with a message that the recap repeats after the
// components' logs.
func (c *chaosRun) fatalf(format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	c.recap.WriteString("\nFAILED: " + msg + "\n")
	c.t.Fatal(msg)
}

// diffAll is platform.diffAll, asking again every second.
func (c *chaosRun) diffAll(events []event, qs []query, within time.Duration) []string {
	return c.p.diffAll(events, qs, within, time.Second)
}

// drillDown logs, for each row of q (1h buckets by country) whose
// distinct count differs from the truth, the same hour asked at the view's
// 1m windows and as one "all" bucket: it tells a wrong stored row from a
// wrong roll-up.
func (c *chaosRun) drillDown(events []event, q query) {
	_, a, _, err := c.p.queryServing(q)
	if err != nil || a == nil {
		return
	}
	got, err := a.rows(q)
	if err != nil {
		return
	}
	want := expect(events, q)
	for k, w := range want {
		g := got[k]
		if g == nil || g.users == uint64(len(w.users)) {
			continue
		}
		hour := time.UnixMilli(k.windowMs).UTC()
		for _, dq := range []query{
			{from: hour, to: hour.Add(time.Hour), granularity: "all", filters: []string{"country:" + k.dims}},
			{from: hour, to: hour.Add(time.Hour), granularity: "1m", filters: []string{"country:" + k.dims}},
			{from: hour, to: hour.Add(time.Hour), granularity: "5m", filters: []string{"country:" + k.dims}},
		} {
			d := c.p.compareServing(events, dq)
			c.t.Logf("drill-down of %s (users %d, want %d; count %d, want %d): %s: %d differences %v",
				k, g.users, len(w.users), g.count, w.count, dq, len(d), d[:min(len(d), 5)])
		}
	}
}

// checker queries serving continuously. What counts as wrong:
//
//   - any status but 200 and 503 (a connection error is no answer: serve
//     is down), or a 200 that is not a well-formed answer;
//   - for the closed block (acknowledged and absorbed before the faults,
//     no later event in its range): a 200 without warnings that differs
//     from its truth in any way;
//   - for the live range (1h buckets): a 200 without warnings where a
//     bucket counts more events than were ever sent for it (plus those
//     sent twice because their first attempt's outcome was unknown), or
//     fewer than an earlier answer without warnings did (rows vanished),
//     beyond what such re-sent events explain.
//
// Lower counts than the final truth are lag, not wrong: the speed layer
// may be down or catching up, and serving cannot know it.
func (c *chaosRun) checker(ctx context.Context, rec *recorder, liveQ query) {
	closedWant := make([]map[rowKey]*truthRow, len(c.closedQ))
	for i, q := range c.closedQ {
		closedWant[i] = expect(c.closed, q)
	}
	sqlQ := c.closedQ[1] // 1h by country: the analyst SQL view rolled up
	sqlWant := expect(c.closed, sqlQ)
	prev := map[int64]int64{} // live bucket → count of the last clean answer
	for i := 0; ctx.Err() == nil; i++ {
		time.Sleep(150 * time.Millisecond)
		var q query
		live := i%2 == 0
		if live {
			q = liveQ
		} else {
			q = c.closedQ[(i/2)%len(c.closedQ)]
		}
		if c.viewAdded.Load() && i%4 == 1 {
			c.checkAddedView()
		}
		if i%4 == 3 {
			c.checkSQL(sqlQ, sqlWant)
		}
		code, a, body, err := c.p.queryServing(q)
		wrong := func(format string, args ...any) {
			msg := fmt.Sprintf("%s %s: ", time.Now().Format("15:04:05.000"), q) + fmt.Sprintf(format, args...)
			c.t.Log("WRONG ANSWER: " + msg)
			c.checks.add(func(s *checkStats) { s.wrong = append(s.wrong, msg) })
		}
		c.checks.add(func(s *checkStats) { s.total++ })
		switch {
		case code == 0:
			c.checks.add(func(s *checkStats) { s.unavailable++ })
			continue
		case code == http.StatusServiceUnavailable:
			c.checks.add(func(s *checkStats) { s.status503++ })
			continue
		case code != http.StatusOK:
			wrong("status %d: %.300s", code, body)
			continue
		case err != nil:
			wrong("%v", err)
			continue
		case len(a.Warnings) > 0:
			c.checks.add(func(s *checkStats) { s.warned++ })
			continue
		}
		got, err := a.rows(q)
		if err != nil {
			wrong("%v", err)
			continue
		}
		v, err := answerVersion(a)
		if err != nil {
			wrong("%v", err)
			continue
		}
		if msg := c.sawVersion(&c.restOn, &c.restSwitched, v); msg != "" {
			wrong("%s", msg)
			continue
		}
		if !live {
			want := closedWant[(i/2)%len(c.closedQ)]
			d := diff(want, got)
			if v == versionNew {
				d = append(d, diffAnswerTotals(want, a, q)...)
			}
			if len(d) > 0 {
				wrong("closed block differs without a warning (version %d): %s", v, strings.Join(d[:min(len(d), 5)], "; "))
				continue
			}
			c.checks.add(func(s *checkStats) { s.exact++ })
			continue
		}
		sent, retried := rec.hourly()
		bad := false
		for k, r := range got {
			h := k.windowMs
			if r.count > sent[h]+retried[h] {
				wrong("hour %s counts %d events; only %d were ever sent (+%d re-sent)", k, r.count, sent[h], retried[h])
				bad = true
			}
			if p, ok := prev[h]; ok && r.count < p-retried[h] {
				wrong("hour %s counts %d events; an earlier answer without warnings counted %d (re-sent: %d)", k, r.count, p, retried[h])
				bad = true
			}
		}
		for h, p := range prev {
			if got[rowKey{windowMs: h}] == nil && p > retried[h] {
				wrong("hour %s vanished; an earlier answer without warnings counted %d", time.UnixMilli(h).UTC().Format(time.RFC3339), p)
				bad = true
			}
		}
		if bad {
			continue
		}
		for k, r := range got {
			prev[k.windowMs] = r.count
		}
		c.checks.add(func(s *checkStats) { s.bounded++ })
	}
}

// answerVersion tells which version of viewName answered a REST query:
// the new one when its rows carry the added measure, the old one when none
// does, versionUnknown without rows; rows of both are an error.
func answerVersion(a *answer) (int, error) {
	with := 0
	for _, r := range a.Rows {
		if _, ok := r.Measures[changedMeasure]; ok {
			with++
		}
	}
	switch {
	case len(a.Rows) == 0:
		return versionUnknown, nil
	case with == 0:
		return versionOld, nil
	case with == len(a.Rows):
		return versionNew, nil
	}
	return versionUnknown, fmt.Errorf("%d of %d rows carry %s: two versions in one answer", with, len(a.Rows), changedMeasure)
}

// diffAnswerTotals compares the added measure (the sum of latency_ms) of
// each row of a, an answer to q, with the truth.
func diffAnswerTotals(want map[rowKey]*truthRow, a *answer, q query) []string {
	var out []string
	for _, r := range a.Rows {
		dims := make([]string, len(q.groupBy))
		for j, d := range q.groupBy {
			dims[j] = r.Dimensions[d]
		}
		k := rowKey{windowMs: r.WindowStart.UnixMilli(), dims: strings.Join(dims, "|")}
		var got float64
		if err := json.Unmarshal(r.Measures[changedMeasure], &got); err != nil {
			out = append(out, fmt.Sprintf("%s: %s %s: %v", k, changedMeasure, r.Measures[changedMeasure], err))
			continue
		}
		var w float64
		if t := want[k]; t != nil {
			w = t.totalLatency()
		}
		if !closeRel(got, w, 1e-9) {
			out = append(out, fmt.Sprintf("%s: %s %v, want %v", k, changedMeasure, got, w))
		}
	}
	return out
}

// sawVersion counts an answer of viewName from version v on one surface
// (its counts and the time the new version first answered there) and says
// what is wrong with it: the new version before the change was rolled
// out, or the old one once the new one answered (the choice only moves
// forward).
func (c *chaosRun) sawVersion(counts *[3]atomic.Int64, switched *atomic.Int64, v int) string {
	counts[v].Add(1)
	switch {
	case v == versionNew && !c.versionChanged.Load():
		return "answered by the new version before the change was rolled out"
	case v == versionNew:
		switched.CompareAndSwap(0, int64(time.Since(c.started)))
	case v == versionOld && switched.Load() != 0:
		return fmt.Sprintf("answered by the old version after the new one had (from %s on)", sinceStart(switched.Load()))
	}
	return ""
}

// sinceStart shows a switched* time.
func sinceStart(ns int64) string {
	if ns == 0 {
		return "never"
	}
	return "after " + time.Duration(ns).Round(time.Second).String()
}

// checkSQL reads the closed block from the analyst SQL view of viewName,
// as an analyst would, and compares it with the truth: exact from
// whichever version the SQL view is (the new one has the added measure's
// column, which is compared too). An error is no answer: ClickHouse down
// or restarting (the switch itself leaves no gap: TestReplaceViewLeavesNoGap).
func (c *chaosRun) checkSQL(q query, want map[rowKey]*truthRow) {
	c.sqlChecks.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v := versionNew
	got, err := readMergedViewCols(ctx, c.sql, c.p.ch.Database, viewName, q.from, q.to, 3600, q.groupBy, true)
	var ex *proto.Exception
	if errors.As(err, &ex) && strings.Contains(ex.Message, changedMeasure) {
		v = versionOld
		got, err = readMergedViewCols(ctx, c.sql, c.p.ch.Database, viewName, q.from, q.to, 3600, q.groupBy, false)
	}
	if err != nil {
		c.sqlUnavailable.Add(1)
		return
	}
	stamp := time.Now().Format("15:04:05.000")
	if msg := c.sawVersion(&c.sqlOn, &c.sqlSwitched, v); msg != "" {
		c.wrong(fmt.Sprintf("%s SQL %s: %s", stamp, q, msg))
		return
	}
	if d := diffMergedView(want, got); len(d) > 0 {
		c.wrong(fmt.Sprintf("%s SQL %s (version %d): closed block differs: %s", stamp, q, v, strings.Join(d[:min(len(d), 5)], "; ")))
		return
	}
	c.sqlExact.Add(1)
}

// addedClosedQ is the closed-block query of the view added midway.
func (c *chaosRun) addedClosedQ() query {
	d := c.closedQ[0]
	return query{from: d.from, to: d.to, granularity: "1h", groupBy: []string{"device"}}
}

// checkAddedView asks the added view about the closed block: it is either
// not answered (backfilling until its first batch run, or not yet known
// to a serve started before the change, or down) or answered exactly.
func (c *chaosRun) checkAddedView() {
	q := c.addedClosedQ()
	code, a, body, err := c.p.queryServingView(addedView, q)
	switch {
	case code == 0 || code == http.StatusServiceUnavailable || code == http.StatusNotFound:
		c.addedRefused.Add(1)
		return
	case code != http.StatusOK || err != nil:
		c.wrong(fmt.Sprintf("%s %s of the added view: status %d: %v %.300s", time.Now().Format("15:04:05.000"), q, code, err, body))
		return
	case len(a.Warnings) > 0:
		c.addedRefused.Add(1)
		return
	}
	got, err := a.rows(q)
	if err != nil {
		c.wrong(fmt.Sprintf("%s of the added view: %v", q, err))
		return
	}
	if d := diff(expect(c.closed, q), got); len(d) > 0 {
		c.wrong(fmt.Sprintf("%s %s of the added view: closed block differs: %s", time.Now().Format("15:04:05.000"), q, strings.Join(d[:min(len(d), 5)], "; ")))
		return
	}
	c.addedExact.Add(1)
}

func (c *chaosRun) wrong(msg string) {
	c.t.Log("WRONG ANSWER: " + msg)
	c.checks.add(func(s *checkStats) { s.wrong = append(s.wrong, msg) })
}

// changeMidway changes the configuration twice while the faults go on:
// after changeAt, viewName gets a measure (a new version of it); after
// addAt (both from its start), a view is added.
func (c *chaosRun) changeMidway(ctx context.Context, changeAt, addAt time.Duration) {
	t0 := time.Now()
	if !c.sleep(ctx, changeAt) {
		return
	}
	ok := c.rollOut(ctx, "measure "+changedMeasure+" added to view "+viewName, func(s string) (string, error) {
		at := strings.Index(s, "  - name: "+viewName+"\n")
		if at < 0 {
			return "", fmt.Errorf("view %s is not in the configuration", viewName)
		}
		m := strings.Index(s[at:], latencyMeasure)
		if m < 0 {
			return "", fmt.Errorf("view %s has no measure %q", viewName, latencyMeasure)
		}
		m += at + len(latencyMeasure)
		return s[:m] + addedMeasure + s[m:], nil
	}, func() {
		c.versionChangedAfter = time.Since(c.started)
		c.versionChanged.Store(true)
	})
	if !ok {
		return
	}

	if !c.sleep(ctx, addAt-time.Since(t0)) {
		return
	}
	c.rollOut(ctx, "view "+addedView+" added", func(s string) (string, error) {
		at := strings.Index(s, "  - name: "+viewName+"\n")
		if at < 0 {
			return "", fmt.Errorf("view %s is not in the configuration", viewName)
		}
		view := strings.Replace(s[at:], viewName, addedView, 1)
		view = strings.Replace(view, "dimensions: [country, device]", "dimensions: [device]", 1)
		return s + view, nil
	}, func() {
		c.viewAddedAfter = time.Since(c.started)
		c.viewAdded.Store(true)
	})
}

// rollOut changes the configuration as a deployment does: the edited
// configuration is migrated first (the migration Job, retried while
// ClickHouse is down), then it replaces the running one and speed and
// serve restart with it (the rollout); faults go on meanwhile. Batch runs
// and restarts by the fault driver take the new configuration from then
// on; rolled is called as the configuration is replaced, before any
// component or batch run can use it. It reports whether the change was
// rolled out.
func (c *chaosRun) rollOut(ctx context.Context, what string, edit func(string) (string, error), rolled func()) bool {
	text, err := os.ReadFile(c.p.cfgPath)
	if err != nil {
		c.t.Errorf("reading the configuration: %v", err)
		return false
	}
	edited, err := edit(string(text))
	if err != nil {
		c.t.Errorf("%s: %v", what, err)
		return false
	}
	next := c.p.cfgPath + ".next"
	if err := os.WriteFile(next, []byte(edited), 0o600); err != nil {
		c.t.Errorf("writing the configuration: %v", err)
		return false
	}
	c.t.Logf("change: %s; migrating", what)
	for deadline := time.Now().Add(3 * time.Minute); ; {
		out, err := exec.Command(c.p.bin, "migrate", "--config", next).CombinedOutput()
		if err == nil {
			c.t.Logf("change: %s: tandem migrate:\n%s", what, out)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.t.Errorf("tandem migrate (%s): %v\n%s", what, err, out)
			return false
		}
		time.Sleep(2 * time.Second)
	}
	c.opsMu.Lock()
	defer c.opsMu.Unlock()
	rolled()
	if err := os.Rename(next, c.p.cfgPath); err != nil {
		c.t.Errorf("replacing the configuration: %v", err)
		return false
	}
	for _, name := range []string{"speed", "serve"} {
		c.p.proc(name).kill()
		c.p.restart(name)
	}
	c.t.Logf("change: %s; speed and serve restarted with it", what)
	return true
}

// supervise restarts a component that exited without being killed by the
// test (as Kubernetes would) and records the crash. It runs until ctx
// ends; with a finished ctx it makes one pass.
func (c *chaosRun) supervise(ctx context.Context) {
	for {
		c.opsMu.Lock()
		for _, name := range []string{"ingest", "speed", "archive", "serve"} {
			pr := c.p.proc(name)
			if pr == nil || !pr.exited() || pr.expected.Load() {
				continue
			}
			c.mu.Lock()
			c.crashes[name]++
			c.crashTails = append(c.crashTails, fmt.Sprintf("tandem %s exited (%v):\n%s", name, pr.err, pr.tail(8)))
			c.mu.Unlock()
			c.t.Logf("tandem %s exited on its own (%v); restarting it", name, pr.err)
			time.Sleep(time.Second)
			c.p.restart(name)
		}
		c.opsMu.Unlock()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// batchLoop runs `tandem batch run` every 10–25 s, as a CronJob would.
// Failures are allowed while a fault lasts (the next run repairs).
func (c *chaosRun) batchLoop(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(10+rng.IntN(15)) * time.Second):
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		_, err := c.p.batchRun(rctx)
		cancel()
		c.mu.Lock()
		if err == nil {
			c.batchOK++
		} else if ctx.Err() == nil {
			c.batchFailed++
		}
		c.mu.Unlock()
	}
}

// drive injects faults until ctx ends: rounds of every kind in random
// order, a random pause between two.
func (c *chaosRun) drive(ctx context.Context) {
	kinds := []string{faultKillIngest, faultKillSpeed, faultKillArchive, faultKillServe, faultKillBatch, faultClickHouse, faultS3}
	if !c.p.kafka.External {
		kinds = append(kinds, faultBroker)
	}
	for {
		order := append([]string(nil), kinds...)
		c.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			if !c.sleep(ctx, c.between(c.cfg.gap)) {
				return
			}
			t0 := time.Now()
			c.inject(k)
			c.mu.Lock()
			c.faults[k]++
			c.faultTime[k] += time.Since(t0)
			c.mu.Unlock()
		}
	}
}

func (c *chaosRun) between(r [2]time.Duration) time.Duration {
	return r[0] + time.Duration(c.rng.Int64N(int64(r[1]-r[0])+1))
}

func (c *chaosRun) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (c *chaosRun) inject(kind string) {
	c.t.Logf("fault: %s", kind)
	switch kind {
	case faultKillIngest, faultKillSpeed, faultKillArchive, faultKillServe:
		name := strings.TrimPrefix(kind, "kill -9 ")
		c.opsMu.Lock()
		c.p.proc(name).kill()
		time.Sleep(c.between([2]time.Duration{300 * time.Millisecond, 3 * time.Second}))
		c.p.restart(name)
		c.opsMu.Unlock()
	case faultKillBatch:
		cmd := exec.Command(c.p.bin, "batch", "run", "--config", c.p.cfgPath, "--tmp", c.p.dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			c.t.Errorf("starting a batch run: %v", err)
			return
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			c.mu.Lock()
			if err == nil {
				c.batchOK++
			} else {
				c.batchFailed++
			}
			c.mu.Unlock()
		case <-time.After(c.between([2]time.Duration{100 * time.Millisecond, 2 * time.Second})):
			_ = cmd.Process.Kill()
			<-done
			c.mu.Lock()
			c.batchKilled++
			c.mu.Unlock()
		}
	case faultClickHouse:
		c.p.ch.Stop()
		time.Sleep(c.between(c.cfg.outage))
		c.p.ch.Start()
	case faultS3:
		c.p.s3.Stop()
		time.Sleep(c.between(c.cfg.outage))
		c.p.s3.Start()
	case faultBroker:
		c.p.kafka.Stop()
		time.Sleep(c.between(c.cfg.brokerDown))
		c.p.kafka.Start()
	}
}
