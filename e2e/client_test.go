package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/ingest/gen"
)

// queryServing asks serving q and decodes the answer. code is 0 when the
// request failed (connection refused while serve restarts, say).
func (p *platform) queryServing(q query) (code int, a *answer, body []byte, err error) {
	return p.queryServingView(viewName, q)
}

// queryServingView is queryServing for any view.
func (p *platform) queryServingView(view string, q query) (code int, a *answer, body []byte, err error) {
	code, body = httpGet(p.serveURL + "/v1/views/" + view + "/query?" + q.values().Encode())
	if code != http.StatusOK {
		return code, nil, body, nil
	}
	a = &answer{}
	if err := json.Unmarshal(body, a); err != nil {
		return code, nil, body, fmt.Errorf("answer is not JSON: %v: %.300s", err, body)
	}
	return code, a, body, nil
}

// waitExact waits up to 90 s until every query's answer equals the truth
// of events (compareServing), and fails naming the stage and the first
// differences of each query that still differs.
func (p *platform) waitExact(t *testing.T, stage string, events []event, queries []query) {
	t.Helper()
	if d := p.diffAll(events, queries, 90*time.Second, 500*time.Millisecond); len(d) > 0 {
		t.Fatalf("%s: answers differ from the truth:\n%s", stage, strings.Join(d, "\n"))
	}
}

// diffAll asks every query again, pause apart, until each answers the
// truth of events or within passes, and returns the last differences (the
// first 8 of each query).
func (p *platform) diffAll(events []event, queries []query, within, pause time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		var last []string
		for _, q := range queries {
			if d := p.compareServing(events, q); len(d) > 0 {
				last = append(last, q.String()+":\n  "+strings.Join(d[:min(len(d), 8)], "\n  "))
			}
		}
		if len(last) == 0 || time.Now().After(deadline) {
			return last
		}
		time.Sleep(pause)
	}
}

// compareServing asks q and diffs the answer with the truth of events. An
// answer with warnings is a difference too: the caller wants it complete.
func (p *platform) compareServing(events []event, q query) []string {
	return p.compareServingView(viewName, events, q)
}

// compareServingView is compareServing for any view with the measures of
// the test's view.
func (p *platform) compareServingView(view string, events []event, q query) []string {
	code, a, body, err := p.queryServingView(view, q)
	if err != nil {
		return []string{err.Error()}
	}
	if code != http.StatusOK {
		return []string{fmt.Sprintf("status %d: %.300s", code, body)}
	}
	if len(a.Warnings) > 0 {
		return []string{fmt.Sprintf("warnings: %v", a.Warnings)}
	}
	got, err := a.rows(q)
	if err != nil {
		return []string{err.Error()}
	}
	return diff(expect(events, q), got)
}

// chRow is one row of the merged SQL view with the exact measures.
type chRow struct {
	count    int64
	sum      float64
	min, max *float64
	// total is total_latency (the sum of latency_ms) when it was read: the
	// measure the chaos run adds to the view's definition.
	total *float64
}

// readMergedView reads ClickHouse's merged view <view> as the analyst user,
// rolled up with SQL to granularity (seconds; 0 keeps the view's windows)
// and grouped by groupBy.
func readMergedView(ctx context.Context, conn driver.Conn, db string, from, to time.Time, granSec int64, groupBy []string) (map[rowKey]*chRow, error) {
	return readMergedViewOf(ctx, conn, db, viewName, from, to, granSec, groupBy)
}

// readMergedViewOf is readMergedView for any view with the exact measures
// of the test's view.
func readMergedViewOf(ctx context.Context, conn driver.Conn, db, view string, from, to time.Time, granSec int64, groupBy []string) (map[rowKey]*chRow, error) {
	return readMergedViewCols(ctx, conn, db, view, from, to, granSec, groupBy, false)
}

// readMergedViewCols is readMergedViewOf, reading total_latency too when
// withTotal (an error when the view has no such column).
func readMergedViewCols(ctx context.Context, conn driver.Conn, db, view string, from, to time.Time, granSec int64, groupBy []string, withTotal bool) (map[rowKey]*chRow, error) {
	win := "toUnixTimestamp(window_start)"
	if granSec > 0 {
		win = fmt.Sprintf("intDiv(toUnixTimestamp(window_start), %d) * %d", granSec, granSec)
	}
	dims := "''"
	if len(groupBy) > 0 {
		dims = "concat(" + strings.Join(groupBy, ", '|', ") + ")"
		if len(groupBy) == 1 {
			dims = "toString(" + groupBy[0] + ")"
		}
	}
	total := ""
	if withTotal {
		total = ", sum(total_latency)"
	}
	sql := fmt.Sprintf(`SELECT toInt64(%s) AS w, %s AS d, toInt64(sum(views)), sum(revenue), min(min_latency), max(max_latency)%s
FROM %s.%s
WHERE window_start >= toDateTime(%d) AND window_start < toDateTime(%d)
GROUP BY w, d`, win, dims, total, db, view, from.Unix(), to.Unix())
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("querying the merged view: %w\n%s", err, sql)
	}
	defer rows.Close()
	out := map[rowKey]*chRow{}
	for rows.Next() {
		var (
			w int64
			d string
			r chRow
		)
		dest := []any{&w, &d, &r.count, &r.sum, &r.min, &r.max}
		if withTotal {
			dest = append(dest, &r.total)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out[rowKey{windowMs: w * 1000, dims: d}] = &r
	}
	return out, rows.Err()
}

// diffMergedView compares the merged view's exact measures with the truth.
func diffMergedView(want map[rowKey]*truthRow, got map[rowKey]*chRow) []string {
	var out []string
	for k, w := range want {
		g := got[k]
		if g == nil {
			out = append(out, fmt.Sprintf("%s: missing in ClickHouse (want count %d)", k, w.count))
			continue
		}
		if g.count != w.count || !closeRel(g.sum, w.sum, 1e-9) || !eqPtr(g.min, w.min) || !eqPtr(g.max, w.max) {
			out = append(out, fmt.Sprintf("%s: ClickHouse count/sum/min/max %d/%v/%s/%s, want %d/%v/%s/%s",
				k, g.count, g.sum, show(g.min), show(g.max), w.count, w.sum, show(w.min), show(w.max)))
		}
		if g.total != nil && !closeRel(*g.total, w.totalLatency(), 1e-9) {
			out = append(out, fmt.Sprintf("%s: ClickHouse total_latency %v, want %v", k, *g.total, w.totalLatency()))
		}
	}
	for k, g := range got {
		if want[k] == nil {
			out = append(out, fmt.Sprintf("%s: unexpected row in ClickHouse (count %d)", k, g.count))
		}
	}
	sort.Strings(out)
	return out
}

// recorder keeps what the load generator sent and what the gateway
// acknowledged, by event id, as the ground truth of a run.
type recorder struct {
	mu    sync.Mutex
	sent  map[string]event // every valid event handed to the gateway
	acked map[string]event // valid events of 200 answers, first by id
	order []string         // acked ids in acknowledgement order
	// retried holds ids of events in a request whose outcome was unknown
	// (connection error, 503) and that was sent again: Kafka may hold them
	// twice, at offsets further apart than the speed layer's dedup reach.
	retried map[string]bool
	// Per hour of event time (Unix ms of the hour's start): distinct ids
	// sent, and distinct ids retried, for cheap bounds while load runs.
	sentPerHour, retriedPerHour map[int64]int64
}

func newRecorder() *recorder {
	return &recorder{sent: map[string]event{}, acked: map[string]event{}, retried: map[string]bool{},
		sentPerHour: map[int64]int64{}, retriedPerHour: map[int64]int64{}}
}

func hourOf(ms int64) int64 { return floorDiv(ms, 3_600_000) * 3_600_000 }

// hourly returns copies of the per-hour counters.
func (r *recorder) hourly() (sent, retried map[int64]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent, retried = make(map[int64]int64, len(r.sentPerHour)), make(map[int64]int64, len(r.retriedPerHour))
	for h, n := range r.sentPerHour {
		sent[h] = n
	}
	for h, n := range r.retriedPerHour {
		retried[h] = n
	}
	return sent, retried
}

func (r *recorder) ackedEvents() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]event, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, r.acked[id])
	}
	return out
}

func (r *recorder) sentEvents() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]event, 0, len(r.sent))
	for _, ev := range r.sent {
		out = append(out, ev)
	}
	return out
}

func (r *recorder) retriedEvents() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]event, 0, len(r.retried))
	for id := range r.retried {
		out = append(out, r.sent[id])
	}
	return out
}

func (r *recorder) ackedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

// retrySink posts batches through gen.HTTPSink and retries a batch until
// the gateway answers it: after 429 and 503 (which promise nothing) and
// after connection errors (the gateway died mid-request). Only a 200
// answer's accepted events are recorded as acknowledged. A retry may put
// an event in Kafka twice; consumers keep the first occurrence of an id.
type retrySink struct {
	inner   *gen.HTTPSink
	rec     *recorder
	maxWait time.Duration // give up on one batch after this long
	// pauses between attempts: the first, doubling up to the last
	minPause, maxPause time.Duration

	retries429, retries503, retriesConn atomic.Int64
	maxRejectLatency                    atomic.Int64 // ns, of 429/503 answers

	latMu           sync.Mutex
	rejectLatencies []time.Duration // of every 429/503 answer
	acceptLatencies []time.Duration // of every 200 answer
}

func (s *retrySink) latencies() (rejected, accepted []time.Duration) {
	s.latMu.Lock()
	defer s.latMu.Unlock()
	return append([]time.Duration(nil), s.rejectLatencies...), append([]time.Duration(nil), s.acceptLatencies...)
}

func (s *retrySink) observe(reject bool, d time.Duration) {
	s.latMu.Lock()
	defer s.latMu.Unlock()
	if reject {
		s.rejectLatencies = append(s.rejectLatencies, d)
	} else {
		s.acceptLatencies = append(s.acceptLatencies, d)
	}
}

func newRetrySink(url string, rec *recorder, conns int) *retrySink {
	return &retrySink{
		inner: &gen.HTTPSink{URL: url, Stream: streamName, Client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: conns + 1},
		}},
		rec:      rec,
		maxWait:  3 * time.Minute,
		minPause: 100 * time.Millisecond,
		maxPause: time.Second,
	}
}

func (s *retrySink) Send(ctx context.Context, evs []gen.Event) ([]bool, error) {
	parsed := make([]*event, len(evs))
	s.rec.mu.Lock()
	for i, e := range evs {
		if e.Invalid != "" {
			continue
		}
		ev, err := parseEvent(e.Raw)
		if err != nil {
			s.rec.mu.Unlock()
			return nil, fmt.Errorf("e2e: a valid generated event does not parse: %v", err)
		}
		parsed[i] = &ev
		if _, ok := s.rec.sent[ev.ID]; !ok {
			s.rec.sent[ev.ID] = ev
			s.rec.sentPerHour[hourOf(ev.TimeMs)]++
		}
	}
	s.rec.mu.Unlock()

	deadline := time.Now().Add(s.maxWait)
	pause := s.minPause
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		acc, err := s.inner.Send(context.WithoutCancel(ctx), evs)
		if err == nil {
			s.observe(false, time.Since(t0))
			s.rec.mu.Lock()
			for i, ok := range acc {
				if !ok || parsed[i] == nil {
					continue
				}
				if _, dup := s.rec.acked[parsed[i].ID]; !dup {
					s.rec.acked[parsed[i].ID] = *parsed[i]
					s.rec.order = append(s.rec.order, parsed[i].ID)
				}
			}
			s.rec.mu.Unlock()
			return acc, nil
		}
		var re *gen.RetryableError
		switch {
		case errors.As(err, &re) && re.Status == http.StatusTooManyRequests:
			s.retries429.Add(1)
			storeMax(&s.maxRejectLatency, int64(time.Since(t0)))
			s.observe(true, time.Since(t0))
		case errors.As(err, &re):
			s.retries503.Add(1)
			storeMax(&s.maxRejectLatency, int64(time.Since(t0)))
			s.observe(true, time.Since(t0))
			s.markRetried(parsed)
		case isConnError(err):
			s.retriesConn.Add(1)
			s.markRetried(parsed)
		default:
			return nil, err // a 4xx/5xx the client must not retry: a bug
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("e2e: the gateway did not take a batch within %s (%d attempts): %w", s.maxWait, attempt+1, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, s.maxPause)
	}
}

func (s *retrySink) markRetried(parsed []*event) {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	for _, ev := range parsed {
		if ev != nil && !s.rec.retried[ev.ID] {
			s.rec.retried[ev.ID] = true
			s.rec.retriedPerHour[hourOf(ev.TimeMs)]++
		}
	}
}

// isConnError reports a transport failure (refused, reset, EOF, timeout):
// whatever the gateway did with the request is unknown.
func isConnError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "gen: posting to") || strings.Contains(msg, "gen: reading the answer")
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
