package serving_test

import (
	"encoding/json"
	"fmt"
	"github.com/tandem-analytics/tandem/schemas"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/serving"
)

// stallProxy forwards TCP connections to a real server and can stall them:
// while stalled, no byte moves in either direction, on open connections
// and new ones alike — a server that hangs.
type stallProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	gate   chan struct{} // closed while traffic flows
}

func newStallProxy(t testing.TB, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallProxy{ln: ln, target: target, gate: make(chan struct{})}
	close(p.gate)
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, s)
			mu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); p.pipe(s, c) }()
			go func() { defer conns.Done(); p.pipe(c, s) }()
		}
	}()
	t.Cleanup(func() {
		p.Resume()
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	return p
}

func (p *stallProxy) Addr() string { return p.ln.Addr().String() }

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Stall stops all traffic until Resume.
func (p *stallProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate: // flowing: stall with a new gate
		p.gate = make(chan struct{})
	default: // already stalled: keep the gate the pipes wait on
	}
}

// Resume lets traffic flow again.
func (p *stallProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

type apiError struct {
	Error string `json:"error"`
}

func errorOf(t testing.TB, body []byte) string {
	t.Helper()
	var e apiError
	require.NoError(t, json.Unmarshal(body, &e), "body: %s", body)
	return e.Error
}

// TestQueryLimits runs the limits against the real services: an answer
// over serve.max_result_rows is refused with 400 naming the setting, from
// either half; one at the limit is answered in full; queries beyond
// serve.max_concurrent_queries wait in a queue of serve.max_queued_queries
// for at most serve.queue_timeout, and get 503 with Retry-After when it is
// full or the wait runs out, while the others are still answered.
func TestQueryLimits(t *testing.T) {
	const queueTimeout = 1500 * time.Millisecond
	cfg := loadConfig(t, configYAML(t))
	_, store, ch, db := newBackends(t, cfg.Config, false)
	// The service reaches ClickHouse through a proxy that can stall it.
	proxy := newStallProxy(t, ch.Addr)
	cfg.ClickHouse.Addr = proxy.Addr()
	d := genDataset(t, cfg.Config, 3000, 11)
	from, to := base, base.Add(4*time.Hour)
	atLimit := qcase{gran: "5m", from: from, to: to}
	limit := len(atLimit.truth(d, nil))
	require.Greater(t, limit, 20)
	cfg.Serve.MaxResultRows = limit
	cfg.Serve.MaxConcurrentQueries = 2
	cfg.Serve.MaxQueuedQueries = 1
	cfg.Serve.QueueTimeout = schemas.Duration(queueTimeout)
	// A top-1 per 5 minutes over every (country, device) merges more
	// groups than the answer may hold: exactly serve.max_merge_groups.
	top1 := shape{name: "top 1 per 5m", params: url.Values{"granularity": {"5m"}, "order_by": {"views"}, "limit": {"1"}},
		from: from, to: to, gran: 5 * time.Minute, groupBy: []string{"country", "device"}, order: "views", desc: true, limit: 1}
	merged := len(qcase{gran: "5m", groupBy: top1.groupBy, from: from, to: to}.truth(d, nil))
	require.Greater(t, merged, limit)
	cfg.Serve.MaxMergeGroups = merged
	_, baseURL, _ := startService(t, cfg)

	chunks := d.chunks()
	half := d.halfChunks()
	insertSpeed(t, db, d)
	over := qcase{gran: "1m", from: from, to: to} // one row per minute with events: more than per 5 minutes
	require.Greater(t, len(over.truth(d, nil)), limit)

	checkRefused := func(t *testing.T) {
		code, _, body := get(t, queryURL(baseURL, over.params()), nil)
		require.Equal(t, http.StatusBadRequest, code, "%s", body)
		msg := errorOf(t, body)
		require.Contains(t, msg, "more than "+strconv.Itoa(limit)+" rows (serve.max_result_rows)")
		for _, hint := range []string{"coarser granularity", "fewer group_by dimensions", "filter", "shorter from/to range"} {
			require.Contains(t, msg, hint)
		}
	}
	checkAtLimit := func(t *testing.T) {
		a := query(t, baseURL, atLimit.params())
		require.Empty(t, a.Warnings)
		checkAnswer(t, a.Rows, atLimit.truth(d, nil), nil, allMeasures)
		require.Len(t, a.Rows, limit)
	}
	// pushed: ClickHouse computes the top N (no run, or one ClickHouse
	// holds), so nothing merges every group and only the answer's size is
	// bounded; otherwise serving merges them, bounded by max_merge_groups.
	checkCut := func(t *testing.T, pushed bool) {
		// The answer of top1 holds limit rows; its merge, merged groups.
		checkShape(t, baseURL, d, nil, top1)
		// One group per minute merges more: refused, naming the setting
		// (computed in ClickHouse, its answer of a row per minute is too
		// long).
		p := url.Values{"granularity": {"1m"}, "group_by": {"country,device"}, "order_by": {"views"}, "limit": {"1"},
			"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
		code, _, body := get(t, queryURL(baseURL, p), nil)
		require.Equal(t, http.StatusBadRequest, code, "%s", body)
		if pushed {
			require.Contains(t, errorOf(t, body), "more than "+strconv.Itoa(limit)+" rows (serve.max_result_rows)")
		} else {
			require.Contains(t, errorOf(t, body), "more than "+strconv.Itoa(merged)+" groups before limit or having cuts them (serve.max_merge_groups)")
		}
		// A limit that leaves more rows than serve.max_result_rows.
		p.Set("limit", "2")
		p.Set("granularity", "5m")
		code, _, body = get(t, queryURL(baseURL, p), nil)
		require.Equal(t, http.StatusBadRequest, code, "%s", body)
		require.Contains(t, errorOf(t, body), "(serve.max_result_rows)")
	}
	t.Run("speed only", func(t *testing.T) { checkRefused(t); checkAtLimit(t); checkCut(t, true) })
	m := publish(t, store, cfg.Config, d, "run-all", chunks)
	waitRun(t, baseURL, m.RunID)
	// The runs are published in S3 only, not loaded into ClickHouse.
	t.Run("batch only", func(t *testing.T) { checkRefused(t); checkAtLimit(t); checkCut(t, false) })
	m = publish(t, store, cfg.Config, d, "run-half", half)
	waitRun(t, baseURL, m.RunID)
	t.Run("both halves", func(t *testing.T) { checkRefused(t); checkAtLimit(t); checkCut(t, false) })

	t.Run("concurrency full: a bounded queue, then 503 with Retry-After", func(t *testing.T) {
		proxy.Stall()
		type answer struct {
			code int
			hdr  http.Header
			body []byte
			took time.Duration
		}
		ask := func(p url.Values, into chan<- answer) {
			t0 := time.Now()
			code, hdr, body := get(t, queryURL(baseURL, p), nil)
			into <- answer{code, hdr, body, time.Since(t0)}
		}
		held := make(chan answer, 2)
		for i := 0; i < 2; i++ {
			go ask(atLimit.params(), held)
		}
		// Both slots are taken once both queries wait on the stalled
		// speed half.
		require.Eventually(t, func() bool {
			return strings.Contains(metricsText(t, baseURL), "tandem_serve_queries_in_flight 2\n")
		}, 10*time.Second, 10*time.Millisecond, "the two stalled queries never took the slots")
		// The third waits in the queue (its one place)...
		queued := make(chan answer, 1)
		go ask(over.params(), queued)
		require.Eventually(t, func() bool {
			return strings.Contains(metricsText(t, baseURL), "tandem_serve_queries_queued 1\n")
		}, 10*time.Second, 10*time.Millisecond, "the third query never stood in the queue")
		// ...the fourth finds the queue full: refused at once.
		t0 := time.Now()
		code, hdr, body := get(t, queryURL(baseURL, over.params()), nil)
		require.Equal(t, http.StatusServiceUnavailable, code, "%s", body)
		require.Less(t, time.Since(t0), time.Second, "refused at once when the queue is full")
		require.Equal(t, "1", hdr.Get("Retry-After"))
		require.Contains(t, errorOf(t, body), "2 queries are being answered by this replica (serve.max_concurrent_queries) and 1 more are waiting (serve.max_queued_queries)")
		// The queued one gives up after serve.queue_timeout, not before.
		a := <-queued
		require.Equal(t, http.StatusServiceUnavailable, a.code, "%s", a.body)
		require.GreaterOrEqual(t, a.took, queueTimeout)
		require.Equal(t, "1", a.hdr.Get("Retry-After"))
		require.Contains(t, errorOf(t, a.body), "waited 1.5s (serve.queue_timeout) for one of this replica's 2 query slots (serve.max_concurrent_queries)")
		require.Contains(t, metricsText(t, baseURL), "tandem_serve_queries_queued 0\n")
		proxy.Resume()
		for i := 0; i < 2; i++ {
			a := <-held
			require.Equal(t, http.StatusOK, a.code, "%s", a.body)
			var ans apiAnswer
			require.NoError(t, json.Unmarshal(a.body, &ans))
			require.Empty(t, ans.Warnings)
			checkAnswer(t, ans.Rows, atLimit.truth(d, nil), nil, allMeasures)
		}
		checkAtLimit(t) // the slots are free again
		m := metricsText(t, baseURL)
		require.Contains(t, m, `tandem_serve_overloaded_total{reason="queue_full",view="`+viewName+`"} 1`)
		require.Contains(t, m, `tandem_serve_overloaded_total{reason="queue_timeout",view="`+viewName+`"} 1`)
	})

	t.Run("speed half too slow on a live ClickHouse: 503, not a 200 without speed rows", func(t *testing.T) {
		restore := serving.SetSpeedTimeout(time.Microsecond)
		defer restore()
		code, hdr, body := get(t, queryURL(baseURL, atLimit.params()), nil)
		require.Equal(t, http.StatusServiceUnavailable, code, "%s", body)
		require.Equal(t, "5", hdr.Get("Retry-After"))
		require.Contains(t, errorOf(t, body), "the speed layer (ClickHouse) is up but could not answer the speed half in time")
	})

	t.Run("speed layer down: the batch answer with the warning", func(t *testing.T) {
		restore := serving.SetSpeedTimeout(300 * time.Millisecond)
		defer restore()
		proxy.Stall()
		defer proxy.Resume()
		a := query(t, baseURL, atLimit.params())
		require.Len(t, a.Warnings, 1)
		t.Log(a.Warnings[0])
		require.Contains(t, a.Warnings[0], "speed layer unavailable")
		checkAnswer(t, a.Rows, atLimit.truth(d, func(e event) bool { return e.offset < half[e.partition]*cfg.ChunkSize }), nil, allMeasures)
	})
}

// TestQueryQueueServesEveryClient: more clients than query slots, each
// asking again as soon as it is answered (a dashboard's panels, a few
// users at once), against the real services. Queries that find the slots
// taken wait their turn in the queue: every request of every client is
// answered exactly, none is refused, and the queue was used (so the
// clients did contend for the slots).
func TestQueryQueueServesEveryClient(t *testing.T) {
	const clients, rounds = 8, 6
	cfg := loadConfig(t, configYAML(t))
	_, store, _, db := newBackends(t, cfg.Config, false)
	cfg.Serve.MaxConcurrentQueries = 2
	cfg.Serve.MaxQueuedQueries = clients // more than the clients who can wait at once
	cfg.Serve.QueueTimeout = schemas.Duration(30 * time.Second)
	d := genDataset(t, cfg.Config, 3000, 12)
	insertSpeed(t, db, d)
	half := d.halfChunks()
	publish(t, store, cfg.Config, d, "run-half", half)
	_, baseURL, _ := startService(t, cfg)
	waitRun(t, baseURL, "run-half")

	qs := []qcase{
		{gran: "5m", from: base, to: base.Add(4 * time.Hour)},
		{gran: "1h", groupBy: []string{"country"}, from: base, to: base.Add(4 * time.Hour)},
		{gran: "1m", groupBy: []string{"device"}, from: base.Add(time.Hour), to: base.Add(3 * time.Hour)},
	}
	truths := make([][]*truthRow, len(qs))
	for i, q := range qs {
		truths[i] = q.truth(d, nil)
	}
	type answer struct {
		client, round, q int
		code             int
		body             []byte
		took             time.Duration
	}
	answers := make(chan answer, clients*rounds)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				i := (c + r) % len(qs)
				t0 := time.Now()
				code, _, body := get(t, queryURL(baseURL, qs[i].params()), nil)
				answers <- answer{c, r, i, code, body, time.Since(t0)}
			}
		}()
	}
	wg.Wait()
	close(answers)
	var slowest time.Duration
	for a := range answers {
		require.Equal(t, http.StatusOK, a.code, "client %d, request %d: %s", a.client, a.round, a.body)
		var ans apiAnswer
		require.NoError(t, json.Unmarshal(a.body, &ans))
		require.Empty(t, ans.Warnings)
		checkAnswer(t, ans.Rows, truths[a.q], qs[a.q].groupBy, allMeasures)
		slowest = max(slowest, a.took)
	}
	m := metricsText(t, baseURL)
	require.NotContains(t, m, "tandem_serve_overloaded_total{")
	waited := metricValue(t, baseURL, "tandem_serve_queue_wait_seconds_count")
	require.Positive(t, waited, "no query waited: the clients never contended for the two slots")
	t.Logf("%d clients × %d requests, 2 slots: all answered; %.0f waited in the queue; slowest answer %s",
		clients, rounds, waited, slowest.Round(time.Millisecond))
}

// rssBytes is the process's resident set size now.
func rssBytes(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// genHostile is a dataset shaped like issue 12's attack: every event has
// its own country (so group_by=country,device has as many groups as
// events), spread over most of 400 days before base.
func genHostile(t testing.TB, cfg *schemas.Config, n int, seed uint64) *dataset {
	t.Helper()
	v := cfg.View(viewName)
	dec := schemas.NewDecoder(v.StreamDef(), 0)
	rng := rand.New(rand.NewPCG(seed, seed^0x51ed2701))
	d := &dataset{view: v, next: map[int32]int64{}, chunk: cfg.ChunkSize}
	span := int64(390 * 24 * time.Hour)
	for i := 0; i < n; i++ {
		ts := base.Add(-time.Duration(rng.Int64N(span))).Truncate(time.Millisecond)
		obj := map[string]any{"event_id": fmt.Sprintf("h-%d", i), "ts": ts.Format(time.RFC3339Nano),
			"country": fmt.Sprintf("c%06d", i), "device": devices[rng.IntN(len(devices))],
			"user_id": fmt.Sprintf("u%d", rng.IntN(5000)), "amount": float64(rng.IntN(100000)) / 100,
			"latency_ms": float64(rng.IntN(500000)) / 1000}
		raw, err := json.Marshal(obj)
		require.NoError(t, err)
		ev, err := dec.Decode(raw, time.Time{})
		require.NoError(t, err)
		p := int32(rng.IntN(2))
		d.events = append(d.events, event{ev: ev, partition: p, offset: d.next[p]})
		d.next[p]++
	}
	return d
}

// TestHostileQueries plays issue 12's unbounded-answer attack against the
// real services: answers of one row per minute and per distinct dimension
// value over 399 days, from 12 clients at once, mixed with ordinary
// queries. Every answer must be complete and exact (200) or refused (400
// for the size, 503 for the load) — never a 200 with rows missing — and the
// service's memory must stay bounded.
func TestHostileQueries(t *testing.T) {
	const (
		events     = 30000
		limit      = 5000
		clients    = 12
		rounds     = 4
		cacheBytes = 32 << 20
		// rssBound is what the attack may add to the test process's
		// resident memory: the batch row cache (cacheBytes) plus
		// serve.max_concurrent_queries (4) queries, each holding at most
		// `limit` groups in each of its mergers, the ClickHouse driver's
		// blocks and HTTP buffers — and the garbage Go keeps between
		// collections (GOGC=100 lets the heap reach twice what is live: the
		// sketches decoded per speed row and batch row groups read past
		// the cache are such garbage; on a starved machine the collector
		// runs later, so more of it is resident at the peak). Measured:
		// +177 to +201 MiB alone, +233 MiB inside a loaded make test. The
		// same attack without the limits takes gigabytes.
		rssBound = 288 << 20
	)
	cfg := loadConfig(t, configYAML(t))
	_, store, _, db := newBackends(t, cfg.Config, false)
	cfg.Serve.MaxQueryRange = schemas.Duration(400 * 24 * time.Hour)
	cfg.Serve.MaxResultRows = limit
	cfg.Serve.MaxConcurrentQueries = 4
	cfg.Serve.CacheBytes = cacheBytes
	cfg.Serve.MaxMergeGroups = 20000 // below the 30,000 countries
	d := genHostile(t, cfg.Config, events, 7)
	insertSpeed(t, db, d)
	half := d.halfChunks()
	publish(t, store, cfg.Config, d, "run-half", half)
	_, baseURL, _ := startService(t, cfg)
	waitRun(t, baseURL, "run-half")

	from, to := base.Add(-399*24*time.Hour), base.Add(time.Minute)
	hostile := qcase{gran: "1m", groupBy: []string{"country", "device"}, from: from, to: to}
	require.Greater(t, len(hostile.truth(d, nil)), limit)
	ordinary := []qcase{
		{gran: "1d", groupBy: []string{"device"}, from: from, to: to},
		{gran: "all", groupBy: []string{"device"}, from: from, to: to},
		{gran: "1m", groupBy: []string{"country", "device"}, filters: map[string][]string{"device": {"tablet"}}, from: base.Add(-20 * 24 * time.Hour), to: to},
	}
	wants := make([][]*truthRow, len(ordinary))
	for i, c := range ordinary {
		wants[i] = c.truth(d, nil)
		require.LessOrEqual(t, len(wants[i]), limit)
		require.NotEmpty(t, wants[i])
	}

	runtime.GC()
	baseline := rssBytes(t)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r := rssBytes(t); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Minute)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds && time.Now().Before(deadline); r++ {
				qc, want := hostile, []*truthRow(nil)
				if (c+r)%2 == 1 {
					i := (c + r) % len(ordinary)
					qc, want = ordinary[i], wants[i]
				}
				code, hdr, body := get(t, queryURL(baseURL, qc.params()), nil)
				mu.Lock()
				codes[code]++
				mu.Unlock()
				switch code {
				case http.StatusOK:
					require.NotNil(t, want, "the hostile query was answered: %.200s", body)
					var a apiAnswer
					require.NoError(t, json.Unmarshal(body, &a))
					require.Empty(t, a.Warnings, "an answer with a warning is partial")
					checkAnswer(t, a.Rows, want, qc.groupBy, allMeasures)
				case http.StatusBadRequest:
					require.Nil(t, want, "an ordinary query was refused: %s", body)
					require.Contains(t, errorOf(t, body), "serve.max_result_rows")
				case http.StatusServiceUnavailable:
					require.NotEmpty(t, hdr.Get("Retry-After"), "%s", body)
				default:
					t.Errorf("status %d: %s", code, body)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	grew := peak.Load() - baseline
	t.Logf("answers by status %v; RSS %d MiB before, peak %d MiB (+%d MiB, bound +%d MiB)",
		codes, baseline>>20, peak.Load()>>20, grew>>20, rssBound>>20)
	require.Positive(t, codes[http.StatusOK], "no ordinary query was answered")
	require.Positive(t, codes[http.StatusBadRequest], "no hostile query was refused for its size")
	require.LessOrEqual(t, grew, int64(rssBound), "peak RSS grew by %d MiB", grew>>20)

	// Top N over a dimension with a value per event: the full answer is
	// refused, the top 10 is not; a cut that would merge more than
	// serve.max_merge_groups is refused naming it.
	t.Run("top N over 30,000 countries", func(t *testing.T) {
		c00 := func(dim func(string) string) bool { return strings.HasPrefix(dim("country"), "c00") } // 10,000 countries
		checkShape(t, baseURL, d, nil, shape{name: "top 10 by revenue", from: from, to: to, all: true, groupBy: []string{"country"},
			params: url.Values{"granularity": {"all"}, "filter": {"country^:c00"}, "order_by": {"revenue"}, "limit": {"10"}},
			keep:   c00, order: "revenue", desc: true, limit: 10})
		checkShape(t, baseURL, d, nil, shape{name: "having, bottom 5 by p99 latency", from: from, to: to, all: true, groupBy: []string{"country"},
			params: url.Values{"granularity": {"all"}, "filter": {"country^:c00", "device!:x') OR 1=1 --"}, "having": {"revenue>990"},
				"order_by": {"latency.p99:asc"}, "limit": {"5"}},
			keep: c00, having: func(r *truthRow) bool { return r.sum > 990 }, order: "latency.p99", limit: 5})
		for _, tc := range []struct{ params, want string }{
			{"granularity=all&group_by=country&order_by=views&limit=10", "more than 20000 groups before limit or having cuts them (serve.max_merge_groups)"},
			{"granularity=1m&group_by=country&filter=country^:c00&order_by=views&limit=1", "(serve.max_result_rows)"},
			{"granularity=all&group_by=country,device&having=views>0", "(serve.max_merge_groups)"},
		} {
			code, _, body := get(t, baseURL+"/v1/views/"+viewName+"/query?from="+from.Format(time.RFC3339)+"&to="+to.Format(time.RFC3339)+"&"+tc.params, nil)
			require.Equal(t, http.StatusBadRequest, code, "%s: %s", tc.params, body)
			require.Contains(t, errorOf(t, body), tc.want, tc.params)
		}
	})
}
