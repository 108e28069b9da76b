package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// BenchmarkServingScale is issue 11's benchmark (`make bench-serving-scale`):
// the example view over a month of events, loaded through the gateway into
// the real services, measured only through the public interfaces (the REST
// API of a `tandem serve` process and ClickHouse's merged SQL view as the
// analyst user), so it keeps measuring the same thing whatever serving does
// inside.
//
// Two cases, each on fresh services:
//
//   - month: TANDEM_BENCH_SERVING_EVENTS events (default 3,000,000) spread
//     evenly over 30 days, 10 countries × 5 devices, 200,000 users; the
//     archiver archives them, one `tandem batch run` absorbs every whole
//     chunk and the speed layer holds the rest;
//   - speed24h: TANDEM_BENCH_SERVING_SPEED_EVENTS events (default
//     10,000,000) over 24 hours and no batch run: every answer comes from
//     the speed layer.
//
// Either size set to 0 skips its case. For each query shape a
// sub-benchmark reports: the first query after serve restarted, warm
// p50/p99 over TANDEM_BENCH_SERVING_REQUESTS (default 50) sequential
// requests with all six measures and with the exact measures only, p99
// with 8 concurrent clients, and ClickHouse's merged view answering the
// same exact-measure question TANDEM_BENCH_SERVING_PEER_REQUESTS times
// (default as many), with the ratio of the two medians. The
// exact measures of both must be equal (sums within float rounding), or
// the benchmark fails. Each case's "serve" sub-benchmark reports the data
// size and serve's RSS (its own process, read from /proc).
//
// Run with -benchtime 1x: each sub-benchmark measures a fixed number of
// requests whatever b.N is.
func BenchmarkServingScale(b *testing.B) {
	if testing.Short() {
		b.Skip("starts ClickHouse, Kafka, MinIO and tandem processes and loads millions of events")
	}
	reqs := envInt(b, "TANDEM_BENCH_SERVING_REQUESTS", 50)
	if reqs < 2 {
		b.Fatalf("TANDEM_BENCH_SERVING_REQUESTS must be at least 2; got %d", reqs)
	}
	// The merged view takes seconds a query at 30 M events: fewer requests
	// to it keep the run within the hour without touching tandem's sample.
	peerReqs := envInt(b, "TANDEM_BENCH_SERVING_PEER_REQUESTS", reqs)
	if peerReqs < 1 {
		b.Fatalf("TANDEM_BENCH_SERVING_PEER_REQUESTS must be at least 1; got %d", peerReqs)
	}
	// A fixed calendar month, so that a seed gives the same events and the
	// same answers on every run.
	end := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	cases := []scaleCase{
		{name: "month", env: "TANDEM_BENCH_SERVING_EVENTS", def: 3_000_000, span: 30 * 24 * time.Hour, end: end, batch: true},
		{name: "speed24h", env: "TANDEM_BENCH_SERVING_SPEED_EVENTS", def: 10_000_000, span: 24 * time.Hour, end: end},
	}
	for _, c := range cases {
		c.events = envInt(b, c.env, c.def)
		if c.events == 0 {
			continue
		}
		b.Run(fmt.Sprintf("%s/events=%d", c.name, c.events), func(b *testing.B) { runScaleCase(b, c, reqs, peerReqs) })
	}
}

// scaleCase is one data set of BenchmarkServingScale.
type scaleCase struct {
	name   string
	env    string // environment variable holding the size
	def    int    // default size
	events int
	span   time.Duration // events spread evenly over [end-span, end)
	end    time.Time
	batch  bool // archive and run one batch run before measuring
}

// scaleQuery is one query shape of the benchmark.
type scaleQuery struct {
	name     string
	q        query
	measures []string // nil: all of the view's
	// view is the view asked ("" is viewName); extra are parameters added
	// to q's; peer, when set, is ClickHouse's answer to the same exact
	// question (instead of mergedViewSQL's).
	view  string
	extra url.Values
	peer  func(db string) string
}

// userView is a second view of the benchmark's stream, by user_id: a
// dimension of up to scaleUsers values, for the top-N query.
const userView = "pageviews_by_user"

// userViewYAML is userView's definition, added to the example's views.
const userViewYAML = `  - name: ` + userView + `
    stream: pageviews
    granularity: 1d
    dimensions: [user_id]
    measures:
      - { name: views,   type: count }
      - { name: revenue, type: sum, field: amount }
`

// topUsersPeer is ClickHouse's top 10 users by views (ties by user_id, as
// tandem breaks them) among those starting with u1, from userView's
// merged view.
func topUsersPeer(from, to time.Time) func(db string) string {
	return func(db string) string {
		return fmt.Sprintf("SELECT toInt64(%d) AS w, toString(user_id) AS d, toInt64(sum(views)) AS v, sum(revenue) FROM %s.%s "+
			"WHERE window_start >= toDateTime(%d) AND window_start < toDateTime(%d) AND substring(user_id, 1, 2) = 'u1' "+
			"GROUP BY d ORDER BY v DESC, d ASC LIMIT 10", from.Unix(), db, userView, from.Unix(), to.Unix())
	}
}

// exactMeasures are the view's measures ClickHouse's merged view has.
var exactMeasures = []string{"views", "revenue", "min_latency", "max_latency"}

func (c scaleCase) queries() []scaleQuery {
	start := c.end.Add(-c.span)
	last := func(d time.Duration) time.Time { return c.end.Add(-d) }
	if !c.batch {
		day := last(24 * time.Hour)
		return []scaleQuery{
			{name: "24h_1h_by_country", q: query{from: day, to: c.end, granularity: "1h", groupBy: []string{"country"}}},
			{name: "24h_all_by_device", q: query{from: day, to: c.end, granularity: "all", groupBy: []string{"device"}}},
			{name: "24h_1m_country_NL", q: query{from: day, to: c.end, granularity: "1m", filters: []string{"country:NL"}}},
		}
	}
	return []scaleQuery{
		{name: "7d_1h_by_country", q: query{from: last(7 * 24 * time.Hour), to: c.end, granularity: "1h", groupBy: []string{"country"}}},
		{name: "30d_1d_by_country", q: query{from: start, to: c.end, granularity: "1d", groupBy: []string{"country"}}},
		{name: "30d_all_by_device", q: query{from: start, to: c.end, granularity: "all", groupBy: []string{"device"}}},
		{name: "24h_1m_country_NL", q: query{from: last(24 * time.Hour), to: c.end, granularity: "1m", filters: []string{"country:NL"}}},
		{name: "7d_1h_by_country_views_revenue", q: query{from: last(7 * 24 * time.Hour), to: c.end, granularity: "1h", groupBy: []string{"country"}},
			measures: []string{"views", "revenue"}},
		// The top 10 of the 111,111 user ids starting with u1 (u1, u10…u19,
		// …, u100000…u199999): every one is merged, ten are answered.
		{name: "30d_top10_of_100k_users", view: userView, q: query{from: start, to: c.end, granularity: "all", groupBy: []string{"user_id"}},
			measures: []string{"views", "revenue"}, extra: url.Values{"filter": {"user_id^:u1"}, "order_by": {"views"}, "limit": {"10"}},
			peer: topUsersPeer(start, c.end)},
	}
}

func runScaleCase(b *testing.B, c scaleCase, reqs, peerReqs int) {
	sp := newScalePlatform(b)
	components := []string{"ingest", "speed", "serve"}
	if c.batch {
		components = append(components, "archive")
	}
	sp.start(components...)

	t0 := time.Now()
	loadScaleEvents(b, sp.ingestURL, c)
	loadSecs := time.Since(t0).Seconds()
	progress(b, "%s: %d events through the gateway in %.1f s (%.0f events/s)", c.name, c.events, loadSecs, float64(c.events)/loadSecs)
	analyst := sp.ch.AnalystConn(b)
	sp.waitMergedTotal(analyst, int64(c.events))
	visibleSecs := time.Since(t0).Seconds()
	progress(b, "%s: every event visible in ClickHouse's merged view %.1f s after the load began", c.name, visibleSecs)

	var batchSecs float64
	if c.batch {
		sp.waitArchived(int64(c.events))
		t1 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		out, err := runTandem(ctx, sp.bin, "batch", "run", "--config", sp.cfgPath, "--tmp", sp.dir)
		cancel()
		if err != nil {
			b.Fatalf("tandem batch run: %v\n%s", err, out)
		}
		batchSecs = time.Since(t1).Seconds()
		progress(b, "%s: batch run in %.1f s: %s", c.name, batchSecs, lastLine(out))
	}
	// Every component keeps running, idle, as in production: whatever
	// serving needs from them (the speed layer cleaning up absorbed rows,
	// say) happens as it would for a user.
	qs := c.queries()
	whole := query{from: c.end.Add(-c.span), to: c.end, granularity: "all"}
	absorbed := sp.waitServed(whole, int64(c.events), c.batch)
	var viewRows int64
	if err := analyst.QueryRow(context.Background(), fmt.Sprintf("SELECT toInt64(count()) FROM %s.%s", sp.ch.Database, viewName)).Scan(&viewRows); err != nil {
		b.Fatalf("counting the merged view's rows: %v", err)
	}
	progress(b, "%s: %d merged-view rows (window × country × device); batch run absorbed %d events, the speed layer holds %d",
		c.name, viewRows, absorbed, int64(c.events)-absorbed)

	var peakRSS, endRSS int64
	load0 := loadAverage()
	for _, sq := range qs {
		b.Run(sq.name, func(b *testing.B) {
			m := sp.measure(b, analyst, sq, reqs, peerReqs)
			peakRSS, endRSS = max(peakRSS, m.peakRSS), max(endRSS, m.rss)
		})
	}
	b.Run("serve", func(b *testing.B) {
		b.ReportMetric(float64(c.events), "events")
		b.ReportMetric(float64(viewRows), "view_rows")
		b.ReportMetric(float64(absorbed), "absorbed_events")
		b.ReportMetric(float64(c.events)/loadSecs, "gateway_events/s")
		b.ReportMetric(visibleSecs, "visible_s")
		if c.batch {
			b.ReportMetric(batchSecs, "batch_run_s")
		}
		b.ReportMetric(load0, "load1_start")
		b.ReportMetric(loadAverage(), "load1_end")
		b.ReportMetric(float64(endRSS)/(1<<20), "serve_rss_MiB")
		b.ReportMetric(float64(peakRSS)/(1<<20), "serve_peak_rss_MiB")
		b.ReportMetric(0, "ns/op")
	})
}

// scalePlatform is the deployment of one case: ClickHouse, MinIO and the
// broker from internal/testenv, and each component a `tandem` process
// configured by tandem.example.yaml with only addresses, the topic and the
// archiver's file age changed.
type scalePlatform struct {
	b       *testing.B
	bin     string
	dir     string
	cfgPath string
	ch      *testenv.ClickHouseServer
	s3      *testenv.S3Server
	urls    map[string]string
	procs   map[string]*proc
	serving *http.Client

	ingestURL, serveURL string
}

func newScalePlatform(b *testing.B) *scalePlatform {
	b.Helper()
	sp := &scalePlatform{b: b, dir: b.TempDir(), urls: map[string]string{}, procs: map[string]*proc{}}
	sp.bin = testenv.BuildTandem(b)
	sp.ch = testenv.ClickHouse(b)
	// In memory: the broker lives in this process and is never restarted.
	kafka := testenv.KafkaWith(b, testenv.KafkaOptions{InMemory: true})
	sp.s3 = testenv.MinIO(b)
	for _, name := range []string{"ingest", "serve", "speed", "archive"} {
		sp.urls[name] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	}
	sp.ingestURL, sp.serveURL = "http://"+sp.urls["ingest"], "http://"+sp.urls["serve"]
	text := testenv.ExampleConfigYAML(b,
		`brokers: ["127.0.0.1:9092"]`, fmt.Sprintf("brokers: [%s], group_prefix: %q", quoteList(kafka.Brokers), testenv.UniqueName(b, "tandem")),
		`addr: "127.0.0.1:9000", database: tandem, username: default, password: "${CLICKHOUSE_PASSWORD:-}"`,
		fmt.Sprintf("addr: %q, database: %s, username: %s, password: %q, analyst_user: %s", sp.ch.Addr, sp.ch.Database, sp.ch.Username, sp.ch.Password, sp.ch.AnalystUser),
		`endpoint: "127.0.0.1:9100", bucket: tandem, access_key: "${S3_ACCESS_KEY:-tandem}", secret_key: "${S3_SECRET_KEY:-tandem-dev-secret}"`,
		fmt.Sprintf("endpoint: %q, bucket: %s, access_key: %q, secret_key: %q", sp.s3.Endpoint, sp.s3.Bucket, sp.s3.AccessKey, sp.s3.SecretKey),
		`listen: "127.0.0.1:8080"`, fmt.Sprintf("listen: %q", sp.urls["ingest"]),
		`listen: "127.0.0.1:8081"`, serveListen(b, sp.urls["serve"]),
		`listen: "127.0.0.1:8082"`, fmt.Sprintf("listen: %q", sp.urls["speed"]),
		// The example rolls a raw file after 5 minutes; the benchmark would
		// wait that long for the last files before its batch run.
		`listen: "127.0.0.1:8083", max_file_bytes: 134217728, max_file_age: 5m`,
		fmt.Sprintf("listen: %q, max_file_bytes: 134217728, max_file_age: 2s", sp.urls["archive"]),
		`batch:      { every: 10m }`, `batch:      { every: 0 }`,
		"topic: tandem.pageviews", "topic: "+testenv.UniqueName(b, "tandem.pageviews"),
		"views:\n", "views:\n"+userViewYAML,
	)
	sp.cfgPath = filepath.Join(sp.dir, "tandem.yaml")
	if err := os.WriteFile(sp.cfgPath, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := config.LoadFile(sp.cfgPath); err != nil {
		b.Fatalf("the benchmark's configuration is invalid: %v", err)
	}
	sp.serving = &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	b.Cleanup(func() {
		for name, pr := range sp.procs {
			pr.kill()
			if b.Failed() {
				b.Logf("log of tandem %s (last lines):\n%s", name, pr.tail(20))
			}
		}
	})
	return sp
}

// start runs the components and waits until each answers /readyz.
func (sp *scalePlatform) start(names ...string) time.Duration {
	sp.b.Helper()
	t0 := time.Now()
	for _, name := range names {
		args := []string{name, "--config", sp.cfgPath}
		if name == "archive" {
			args = append(args, "--tmp-dir", filepath.Join(sp.dir, "archive-tmp"))
		}
		pr, err := startProc(sp.bin, name, args, nil, filepath.Join(sp.dir, name+".log"))
		if err != nil {
			sp.b.Fatal(err)
		}
		sp.procs[name] = pr
	}
	for _, name := range names {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if code, _ := httpGet("http://" + sp.urls[name] + "/readyz"); code == http.StatusOK {
				break
			}
			if sp.procs[name].exited() {
				sp.b.Fatalf("tandem %s exited during start-up:\n%s", name, sp.procs[name].tail(30))
			}
			if time.Now().After(deadline) {
				sp.b.Fatalf("tandem %s was not ready within 2 minutes:\n%s", name, sp.procs[name].tail(30))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(t0)
}

// restartServe stops serve cleanly and starts it again; it returns how
// long the new process took to answer /readyz.
func (sp *scalePlatform) restartServe() time.Duration {
	sp.b.Helper()
	if err := sp.procs["serve"].term(30 * time.Second); err != nil {
		sp.b.Fatal(err)
	}
	delete(sp.procs, "serve")
	sp.serving.CloseIdleConnections()
	return sp.start("serve")
}

// waitMergedTotal waits until ClickHouse's merged view counts want events:
// the speed layer has made every event visible.
func (sp *scalePlatform) waitMergedTotal(conn driver.Conn, want int64) {
	sp.b.Helper()
	limit := 5*time.Minute + time.Duration(want/20_000)*time.Second
	deadline := time.Now().Add(limit)
	sql := fmt.Sprintf("SELECT toInt64(sum(views)) FROM %s.%s", sp.ch.Database, viewName)
	var got int64
	for {
		err := conn.QueryRow(context.Background(), sql).Scan(&got)
		if err == nil && got == want {
			return
		}
		if err == nil && got > want {
			sp.b.Fatalf("ClickHouse's merged view counts %d events; %d were sent", got, want)
		}
		if time.Now().After(deadline) {
			sp.b.Fatalf("ClickHouse's merged view counts %d of %d events after %s (err %v):\n%s", got, want, limit, err, sp.procs["speed"].tail(20))
		}
		time.Sleep(time.Second)
	}
}

// waitArchived waits until the archiver has uploaded want records (its
// tandem_archive_next_offset gauges add up to the records written).
func (sp *scalePlatform) waitArchived(want int64) {
	sp.b.Helper()
	limit := 5*time.Minute + time.Duration(want/20_000)*time.Second
	deadline := time.Now().Add(limit)
	var got float64
	for {
		got = 0
		_, body := httpGet("http://" + sp.urls["archive"] + "/metrics")
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "tandem_archive_next_offset{") {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				got += v
			}
		}
		if int64(got) >= want {
			return
		}
		if time.Now().After(deadline) {
			sp.b.Fatalf("the archiver uploaded %.0f of %d records within %s:\n%s", got, want, limit, sp.procs["archive"].tail(20))
		}
		time.Sleep(time.Second)
	}
}

// waitServed waits until serve answers whole (the data's whole range) with
// want events, from a batch run when withRun; it returns the events the run
// absorbed (the sum of batch_absorbed_offsets).
func (sp *scalePlatform) waitServed(whole query, want int64, withRun bool) int64 {
	sp.b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, body := sp.get(viewName + "/query?" + whole.values().Encode())
		var a answer
		if code == http.StatusOK && json.Unmarshal(body, &a) == nil {
			var n, absorbed int64
			for _, r := range a.Rows {
				var c int64
				_ = json.Unmarshal(r.Measures["views"], &c)
				n += c
			}
			for _, o := range a.Freshness.Absorbed {
				absorbed += o
			}
			if n == want && len(a.Warnings) == 0 && (a.Freshness.BatchRun != nil) == withRun {
				if withRun && absorbed == 0 {
					sp.b.Fatalf("the batch run absorbed nothing: %s", body)
				}
				return absorbed
			}
		}
		if time.Now().After(deadline) {
			sp.b.Fatalf("serve did not answer %d events%s within 2 minutes; last answer %d: %.500s",
				want, map[bool]string{true: " from a batch run"}[withRun], code, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// get asks serve for the view with the query string and returns the status
// and the whole body.
func (sp *scalePlatform) get(rel string) (int, []byte) {
	code, body, _ := sp.getOnce(rel)
	return code, body
}

// getOnce is get that also returns the answer's Retry-After (0 when none).
func (sp *scalePlatform) getOnce(rel string) (int, []byte, time.Duration) {
	res, err := sp.serving.Get(sp.serveURL + "/v1/views/" + rel)
	if err != nil {
		return 0, []byte(err.Error()), 0
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, []byte(err.Error()), 0
	}
	secs, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	return res.StatusCode, body, time.Duration(secs) * time.Second
}

// measured is what one query shape's measurement leaves for the case.
type measured struct{ rss, peakRSS int64 }

// measure runs one query shape's measurements and reports them.
func (sp *scalePlatform) measure(b *testing.B, conn driver.Conn, sq scaleQuery, reqs, peerReqs int) measured {
	v := sq.q.values()
	for k, vs := range sq.extra {
		v[k] = vs
	}
	if sq.measures != nil {
		v.Set("measures", strings.Join(sq.measures, ","))
	}
	view := viewName
	if sq.view != "" {
		view = sq.view
	}
	rawAll := view + "/query?" + v.Encode()
	exact := sq.measures
	if exact == nil {
		exact = exactMeasures
	}
	v.Set("measures", strings.Join(exact, ","))
	rawExact := view + "/query?" + v.Encode()

	timed := func(raw string) (time.Duration, []byte) {
		t := time.Now()
		code, body := sp.get(raw)
		d := time.Since(t)
		if code != http.StatusOK {
			b.Fatalf("%s: status %d: %.500s", sq.name, code, body)
		}
		if bytes.Contains(body, []byte(`"warnings"`)) {
			b.Fatalf("%s: an incomplete answer: %.500s", sq.name, body)
		}
		return d, body
	}
	ready := sp.restartServe()
	// Serve's peak so far: its start-up and cache warm-up, before any query.
	readyPeak := procStatusBytes(sp.procs["serve"].pid(), "VmHWM:")
	first, body := timed(rawAll)
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		b.Fatalf("%s: answer is not JSON: %v", sq.name, err)
	}
	rows := len(a.Rows)

	seq := func(raw string) []time.Duration {
		out := make([]time.Duration, reqs)
		for i := range out {
			out[i], _ = timed(raw)
		}
		sortDur(out)
		return out
	}
	pid := sp.procs["serve"].pid()
	cpu0 := procCPU(pid)
	all := seq(rawAll)
	cpuAll := procCPU(pid) - cpu0
	ex := seq(rawExact)
	if dir := os.Getenv("TANDEM_BENCH_SERVING_PPROF"); dir != "" {
		sp.profile(b, dir, sq.name, func() { timed(rawAll) })
	}

	// 8 concurrent clients, as many requests in all as the sequential run
	// (rounded up to whole rounds).
	const clients = 8
	perClient := (reqs + clients - 1) / clients
	conc := make([]time.Duration, clients*perClient)
	var wg sync.WaitGroup
	var failure atomic.Value
	var rejected atomic.Int64
	t0 := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; i < perClient; i++ {
				t := time.Now()
				code, body, after := sp.getOnce(rawAll)
				// A 503 with Retry-After is serve's full queue or a wait
				// past serve.queue_timeout (issue 11): the client waits as
				// told and asks again, as a dashboard would; the latency is
				// until the answer.
				for tries := 0; code == http.StatusServiceUnavailable && after > 0 && tries < 20; tries++ {
					rejected.Add(1)
					time.Sleep(min(after, 5*time.Second))
					code, body, after = sp.getOnce(rawAll)
				}
				conc[c*perClient+i] = time.Since(t)
				if code != http.StatusOK {
					failure.CompareAndSwap(nil, fmt.Sprintf("status %d: %.300s", code, body))
					return
				}
			}
		}(c)
	}
	wg.Wait()
	concSecs := time.Since(t0).Seconds()
	if f := failure.Load(); f != nil {
		b.Fatalf("%s with %d concurrent clients: %s", sq.name, clients, f)
	}
	sortDur(conc)
	m := measured{rss: procStatusBytes(sp.procs["serve"].pid(), "VmRSS:"), peakRSS: procStatusBytes(sp.procs["serve"].pid(), "VmHWM:")}

	// The peer: ClickHouse's merged view, the same exact-measure question.
	sql := mergedViewSQL(sp.ch.Database, sq.q, exact)
	if sq.peer != nil {
		sql = sq.peer(sp.ch.Database)
	}
	chLat := make([]time.Duration, peerReqs)
	var chRows map[rowKey]exactRow
	for i := range chLat {
		t := time.Now()
		got, err := readExactRows(conn, sql, exact)
		chLat[i] = time.Since(t)
		if err != nil {
			b.Fatalf("%s: %v\n%s", sq.name, err, sql)
		}
		chRows = got
	}
	sortDur(chLat)

	// Correctness: tandem's exact measures equal the merged view's.
	_, body = timed(rawExact)
	got, err := decodeExactRows(body, sq.q.groupBy, exact)
	if err != nil {
		b.Fatalf("%s: %v", sq.name, err)
	}
	if len(chRows) == 0 {
		b.Fatalf("%s: ClickHouse's merged view has no rows for the query; nothing to compare", sq.name)
	}
	if d := diffExactRows(got, chRows); len(d) > 0 {
		b.Fatalf("%s: tandem and ClickHouse's merged view differ in %d rows (of %d), e.g.:\n  %s",
			sq.name, len(d), len(chRows), strings.Join(d[:min(len(d), 8)], "\n  "))
	}
	if len(got) != rows {
		b.Fatalf("%s: %d rows with all measures, %d with the exact measures", sq.name, rows, len(got))
	}

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	progress(b, "%d rows; first %.0f ms; p50/p99 %.0f/%.0f ms, exact %.0f/%.0f ms, 8 clients p99 %.0f ms; ClickHouse %.0f/%.0f ms; equal answers",
		rows, ms(first), ms(pct(all, 0.5)), ms(pct(all, 0.99)), ms(pct(ex, 0.5)), ms(pct(ex, 0.99)), ms(pct(conc, 0.99)), ms(pct(chLat, 0.5)), ms(pct(chLat, 0.99)))
	b.ReportMetric(float64(rows), "rows")
	b.ReportMetric(float64(reqs), "requests")
	b.ReportMetric(float64(peerReqs), "ch_requests")
	b.ReportMetric(ms(pct(all, 0.5)), "p50_ms")
	b.ReportMetric(ms(pct(all, 0.99)), "p99_ms")
	b.ReportMetric(ms(cpuAll)/float64(len(all)), "serve_cpu_ms/op")
	b.ReportMetric(ms(pct(ex, 0.5)), "exact_p50_ms")
	b.ReportMetric(ms(pct(ex, 0.99)), "exact_p99_ms")
	b.ReportMetric(ms(pct(conc, 0.99)), "c8_p99_ms")
	b.ReportMetric(float64(len(conc))/concSecs, "c8_req/s")
	b.ReportMetric(float64(rejected.Load()), "c8_rejected")
	b.ReportMetric(ms(first), "first_after_restart_ms")
	b.ReportMetric(ready.Seconds(), "restart_ready_s")
	b.ReportMetric(ms(pct(chLat, 0.5)), "ch_p50_ms")
	b.ReportMetric(ms(pct(chLat, 0.99)), "ch_p99_ms")
	b.ReportMetric(float64(pct(chLat, 0.5))/float64(pct(ex, 0.5)), "ch/tandem")
	b.ReportMetric(float64(m.rss)/(1<<20), "serve_rss_MiB")
	b.ReportMetric(float64(m.peakRSS)/(1<<20), "serve_peak_rss_MiB")
	b.ReportMetric(float64(readyPeak)/(1<<20), "serve_ready_peak_rss_MiB")
	b.ReportMetric(0, "ns/op")
	return m
}

// exactRow holds the exact measures of one answer row; a measure not asked
// stays zero or nil on both sides.
type exactRow struct {
	count    int64
	sum      float64
	min, max *float64
}

// mergedViewSQL asks the merged view the question q asks serve, rolled up
// the way each measure merges (docs/analysts.md), with buckets aligned to
// the Unix epoch like serve's.
func mergedViewSQL(db string, q query, measures []string) string {
	win := fmt.Sprintf("toInt64(%d)", q.from.Unix())
	switch q.granularity {
	case "all":
	case "", "1m":
		win = "toInt64(toUnixTimestamp(window_start))"
	default:
		g, err := schemas.ParseGranularity(q.granularity)
		if err != nil {
			panic(err)
		}
		s := int64(time.Duration(g) / time.Second)
		win = fmt.Sprintf("toInt64(intDiv(toUnixTimestamp(window_start), %d) * %d)", s, s)
	}
	dims := "''"
	if len(q.groupBy) > 0 {
		parts := make([]string, len(q.groupBy))
		for i, g := range q.groupBy {
			parts[i] = "toString(" + g + ")"
		}
		dims = parts[0]
		if len(parts) > 1 {
			dims = "concat(" + strings.Join(parts, ", '|', ") + ")"
		}
	}
	cols := make([]string, len(measures))
	for i, m := range measures {
		switch m {
		case "views":
			cols[i] = "toInt64(sum(views))"
		case "revenue":
			cols[i] = "sum(revenue)"
		case "min_latency":
			cols[i] = "min(min_latency)"
		case "max_latency":
			cols[i] = "max(max_latency)"
		default:
			panic("no exact measure " + m)
		}
	}
	where := fmt.Sprintf("window_start >= toDateTime(%d) AND window_start < toDateTime(%d)", q.from.Unix(), q.to.Unix())
	byDim := map[string][]string{}
	var order []string
	for _, f := range q.filters {
		dim, val, _ := strings.Cut(f, ":")
		if byDim[dim] == nil {
			order = append(order, dim)
		}
		byDim[dim] = append(byDim[dim], "'"+strings.ReplaceAll(val, "'", "\\'")+"'")
	}
	for _, dim := range order {
		where += fmt.Sprintf(" AND %s IN (%s)", dim, strings.Join(byDim[dim], ", "))
	}
	return fmt.Sprintf("SELECT %s AS w, %s AS d, %s FROM %s.%s WHERE %s GROUP BY w, d",
		win, dims, strings.Join(cols, ", "), db, viewName, where)
}

// readExactRows runs sql (from mergedViewSQL) and reads every row.
func readExactRows(conn driver.Conn, sql string, measures []string) (map[rowKey]exactRow, error) {
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		return nil, fmt.Errorf("querying the merged view: %w", err)
	}
	defer rows.Close()
	out := map[rowKey]exactRow{}
	for rows.Next() {
		var (
			w int64
			d string
			r exactRow
		)
		dest := []any{&w, &d}
		for _, m := range measures {
			switch m {
			case "views":
				dest = append(dest, &r.count)
			case "revenue":
				dest = append(dest, &r.sum)
			case "min_latency":
				dest = append(dest, &r.min)
			case "max_latency":
				dest = append(dest, &r.max)
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out[rowKey{windowMs: w * 1000, dims: d}] = r
	}
	return out, rows.Err()
}

// decodeExactRows reads the exact measures of serve's answer body.
func decodeExactRows(body []byte, groupBy, measures []string) (map[rowKey]exactRow, error) {
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("answer is not JSON: %v", err)
	}
	out := make(map[rowKey]exactRow, len(a.Rows))
	for _, r := range a.Rows {
		dims := make([]string, len(groupBy))
		for i, g := range groupBy {
			dims[i] = r.Dimensions[g]
		}
		k := rowKey{windowMs: r.WindowStart.UnixMilli(), dims: strings.Join(dims, "|")}
		var e exactRow
		for _, m := range measures {
			var dst any
			switch m {
			case "views":
				dst = &e.count
			case "revenue":
				dst = &e.sum
			case "min_latency":
				dst = &e.min
			case "max_latency":
				dst = &e.max
			}
			if err := json.Unmarshal(r.Measures[m], dst); err != nil {
				return nil, fmt.Errorf("row %s: %s %s: %v", k, m, r.Measures[m], err)
			}
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("row %s appears twice", k)
		}
		out[k] = e
	}
	return out, nil
}

// diffExactRows lists the rows where serve and the merged view differ:
// counts, mins and maxes must be equal, sums equal up to the rounding of
// adding floats in another order (docs/analysts.md).
func diffExactRows(got, want map[rowKey]exactRow) []string {
	var out []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing in tandem's answer (ClickHouse count %d)", k, w.count))
		case g.count != w.count || !closeRel(g.sum, w.sum, 1e-9) || !eqPtr(g.min, w.min) || !eqPtr(g.max, w.max):
			out = append(out, fmt.Sprintf("%s: tandem count/sum/min/max %d/%v/%s/%s, ClickHouse %d/%v/%s/%s",
				k, g.count, g.sum, show(g.min), show(g.max), w.count, w.sum, show(w.min), show(w.max)))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s: not in ClickHouse's merged view (tandem count %d)", k, g.count))
		}
	}
	sort.Strings(out)
	return out
}

// Data of the benchmark: 10 countries × 5 devices, 200,000 users.
var (
	scaleCountries = []string{"US", "DE", "FR", "GB", "JP", "BR", "IN", "NL", "ES", "CA"}
	scaleDevices   = []string{"mobile", "desktop", "tablet", "tv", "bot"}
)

const (
	scaleUsers     = 200_000
	scaleBatch     = 5000 // events per request (~0.8 MiB, under ingest.max_body_bytes)
	scalePosters   = 4    // requests in flight
	scaleSeed      = 11
	scaleTimeField = "2006-01-02T15:04:05.000Z07:00"
)

// loadScaleEvents posts c.events events to the gateway, event i at
// end-span + i·span/events, so they spread evenly over the span. Batch k's
// values come from its own seeded generator, so the events are the same on
// every run whatever order the posters take the batches in. Generating is
// cheaper than reading a cached copy would be (~1 µs an event), so nothing
// is cached.
func loadScaleEvents(b *testing.B, ingestURL string, c scaleCase) {
	b.Helper()
	url := ingestURL + "/v1/streams/" + streamName + "/events"
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: scalePosters}}
	start := c.end.Add(-c.span)
	step := float64(c.span) / float64(c.events)
	batches := (c.events + scaleBatch - 1) / scaleBatch
	var next atomic.Int64
	var failure atomic.Value
	var retries atomic.Int64
	var wg sync.WaitGroup
	for p := 0; p < scalePosters; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for failure.Load() == nil {
				k := int(next.Add(1) - 1)
				if k >= batches {
					return
				}
				lo, hi := k*scaleBatch, min((k+1)*scaleBatch, c.events)
				body = scaleBatchBody(body[:0], k, lo, hi, start, step)
				if err := postScaleBatch(client, url, body, hi-lo, &retries); err != nil {
					failure.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if f := failure.Load(); f != nil {
		b.Fatalf("loading events: %v", f)
	}
	if n := retries.Load(); n > 0 {
		progress(b, "%d requests retried after 429 (the gateway's in-flight limit)", n)
	}
}

// scaleBatchBody appends the NDJSON of events [lo, hi) of batch k.
func scaleBatchBody(buf []byte, k, lo, hi int, start time.Time, step float64) []byte {
	rng := rand.New(rand.NewPCG(scaleSeed, uint64(k)))
	for i := lo; i < hi; i++ {
		ts := start.Add(time.Duration(float64(i) * step))
		buf = append(buf, `{"event_id":"e`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `","ts":"`...)
		buf = ts.AppendFormat(buf, scaleTimeField)
		buf = append(buf, `","country":"`...)
		buf = append(buf, scaleCountries[rng.IntN(len(scaleCountries))]...)
		buf = append(buf, `","device":"`...)
		buf = append(buf, scaleDevices[rng.IntN(len(scaleDevices))]...)
		buf = append(buf, `","user_id":"u`...)
		buf = strconv.AppendInt(buf, int64(rng.IntN(scaleUsers)), 10)
		buf = append(buf, '"')
		if rng.IntN(4) == 0 { // a quarter of the views buy something
			buf = append(buf, `,"amount":`...)
			buf = strconv.AppendFloat(buf, float64(1+rng.IntN(20000))/100, 'f', -1, 64)
		}
		if rng.IntN(32) != 0 { // a few have no latency: min/max see nulls
			buf = append(buf, `,"latency_ms":`...)
			buf = strconv.AppendFloat(buf, math.Round(math.Exp(3.7+0.8*rng.NormFloat64())*10)/10, 'f', -1, 64)
		}
		buf = append(buf, "}\n"...)
	}
	return buf
}

// postScaleBatch posts one batch; it retries only after 429, which writes
// nothing, so that every event is in Kafka exactly once.
func postScaleBatch(client *http.Client, url string, body []byte, n int, retries *atomic.Int64) error {
	for {
		res, err := client.Post(url, "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		if res.StatusCode == http.StatusTooManyRequests {
			retries.Add(1)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var ans ingest.Response
		if res.StatusCode != http.StatusOK || json.Unmarshal(raw, &ans) != nil || ans.Accepted != n {
			return fmt.Errorf("the gateway answered %d to a batch of %d events: %.300s", res.StatusCode, n, raw)
		}
		return nil
	}
}

// procStatusBytes reads a kB field of /proc/<pid>/status (VmRSS:, VmHWM:).
func procStatusBytes(pid int, field string) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// progress logs a line at once on stderr: a benchmark's own log shows only
// at its end, and this one runs for many minutes.
func progress(b *testing.B, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s: %s\n", time.Now().UTC().Format("15:04:05"), b.Name(), fmt.Sprintf(format, args...))
}

// loadAverage is the machine's 1-minute load average (/proc/loadavg): the
// figures depend on what else runs on the machine.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// procCPU is the user+system CPU time a process has used, from
// /proc/<pid>/stat (in clock ticks of 10 ms): a figure that depends less
// than wall time on other work sharing the machine.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from after it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// runTandem runs the tandem binary to completion, killed with the benchmark.
func runTandem(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := osexec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// serveListen is the serve section's settings: its address, and
// serve.cache_bytes from TANDEM_BENCH_SERVING_CACHE_BYTES when set (a small
// cache reproduces, at a few million events, the closed-chunk rollups of a
// larger day not fitting the cache).
func serveListen(b *testing.B, addr string) string {
	extra := ""
	if os.Getenv("TANDEM_BENCH_SERVING_PPROF") != "" {
		extra = ", pprof: true"
	}
	if n := envInt(b, "TANDEM_BENCH_SERVING_CACHE_BYTES", 0); n > 0 {
		return fmt.Sprintf("listen: %q, cache_bytes: %d%s", addr, n, extra)
	}
	return fmt.Sprintf("listen: %q%s", addr, extra)
}

// profile takes serve's CPU profile (serve.pprof) over 10 s of warm
// requests (request, after the measured ones, so the figures are not
// affected) and then its heap, into dir as <query>.cpu.pprof and
// <query>.heap.pprof, for `go tool pprof`.
func (sp *scalePlatform) profile(b *testing.B, dir, name string, request func()) {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	fetch := func(path, file string) error {
		resp, err := sp.serving.Get(sp.serveURL + path)
		if err != nil {
			return fmt.Errorf("profile %s: %w", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("profile %s: status %d, %v: %.300s", path, resp.StatusCode, err, body)
		}
		return os.WriteFile(filepath.Join(dir, file), body, 0o644)
	}
	done := make(chan error, 1)
	go func() { done <- fetch("/debug/pprof/profile?seconds=10", name+".cpu.pprof") }()
	for n := 0; ; n++ {
		select {
		case err := <-done:
			if err == nil {
				err = fetch("/debug/pprof/heap", name+".heap.pprof")
			}
			if err != nil {
				b.Fatal(err)
			}
			progress(b, "%s: profiles of %d requests in %s", name, n, dir)
			return
		default:
			request()
		}
	}
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a whole number of at least 0", name, s)
	}
	return n
}
