package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// hostileCase is one hostile request and what it must get.
type hostileCase struct {
	name string
	// Either req (sent with a client that follows no redirects) or raw
	// bytes written to the server's socket.
	req  func(p *platform) *http.Request
	raw  func(p *platform) (addr string, data []byte)
	want []int // acceptable statuses
	// emptyOK: a 200 query answer must have no rows (an injected filter
	// value is a value, never SQL).
	emptyOK bool
}

// TestHostileInput sends hostile requests to the running platform: huge
// bodies, deep nesting, invalid UTF-8, NUL bytes, path traversal in stream
// and view names, SQL injection in every query parameter and header abuse.
// Each gets a clear 4xx (or, for a hostile filter value, an empty answer),
// and nothing changes: the Kafka topic, ClickHouse's tables and rows and
// the API's answers are the same before and after.
func TestHostileInput(t *testing.T) {
	p := newPlatform(t, platformOptions{maxBodyBytes: 1 << 20, maxInflightBytes: 4 << 20})
	p.start("ingest", "speed", "serve")

	// Some data to protect.
	rec := newRecorder()
	g, err := gen.New(gen.Options{Stream: p.cfg.Stream(streamName), Seed: 7, Events: 2000, Spacing: 500 * time.Millisecond,
		Batch: 200, Concurrency: 2, MaxFutureSkew: time.Hour})
	require.NoError(t, err)
	_, err = g.Run(context.Background(), gen.RunOptions{Sink: newRetrySink(p.ingestURL, rec, 2)})
	require.NoError(t, err)
	truth := rec.ackedEvents()
	now := time.Now().UTC()
	whole := query{from: now.Add(-24 * time.Hour).Truncate(time.Hour), to: now.Add(2 * time.Hour).Truncate(time.Hour), granularity: "1h", groupBy: []string{"country", "device"}}
	require.Eventually(t, func() bool { return len(p.compareServing(truth, whole)) == 0 }, 60*time.Second, 300*time.Millisecond,
		"the speed layer did not catch up")
	before := p.snapshot(t, whole)

	ts := now.Add(-time.Minute).Format(time.RFC3339Nano)
	ev := func(id string) string { return fmt.Sprintf(`{"event_id":%q,"ts":%q,"country":"US"}`, id, ts) }
	post := func(path, ctype string, body []byte) func(p *platform) *http.Request {
		return func(p *platform) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, p.ingestURL+path, bytes.NewReader(body))
			if ctype != "" {
				r.Header.Set("Content-Type", ctype)
			}
			return r
		}
	}
	events := "/v1/streams/" + streamName + "/events"
	get := func(path string, hdr ...string) func(p *platform) *http.Request {
		return func(p *platform) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, p.serveURL+path, nil)
			for i := 0; i+1 < len(hdr); i += 2 {
				r.Header.Set(hdr[i], hdr[i+1])
			}
			return r
		}
	}
	base := url.Values{"from": {whole.from.Format(time.RFC3339)}, "to": {whole.to.Format(time.RFC3339)}}
	qpath := func(set ...string) string {
		v := url.Values{}
		for k, vs := range base {
			v[k] = vs
		}
		for i := 0; i+1 < len(set); i += 2 {
			if set[i] == "filter" {
				v.Add("filter", set[i+1])
			} else {
				v.Set(set[i], set[i+1])
			}
		}
		return "/v1/views/" + viewName + "/query?" + v.Encode()
	}
	deep := func(n int, open, close string) []byte {
		return []byte(strings.Repeat(open, n) + strings.Repeat(close, n))
	}
	rawReq := func(addrOf func(p *platform) string, data string) func(p *platform) (string, []byte) {
		return func(p *platform) (string, []byte) { return addrOf(p), []byte(data) }
	}
	ingestAddr := func(p *platform) string { return strings.TrimPrefix(p.ingestURL, "http://") }
	serveAddr := func(p *platform) string { return strings.TrimPrefix(p.serveURL, "http://") }
	sqlish := []string{
		`' OR 1=1 --`,
		`'; DROP TABLE tandem.pageviews_by_country_speed; --`,
		`\' OR \'1\'=\'1`,
		`US') UNION ALL SELECT * FROM system.users --`,
		"US`; SELECT 1; --",
	}

	cases := []hostileCase{
		// Bodies.
		{name: "body over max_body_bytes (Content-Length)", req: post(events, "application/x-ndjson", bytes.Repeat([]byte(ev("big")+"\n"), (2<<20)/len(ev("big")))), want: []int{413}},
		{name: "body over max_body_bytes (chunked)", req: func(p *platform) *http.Request {
			r := post(events, "application/x-ndjson", nil)(p)
			r.Body = io.NopCloser(io.LimitReader(repeatReader(ev("chunked")+"\n"), 3<<20))
			r.ContentLength = -1
			return r
		}, want: []int{413}},
		{name: "deeply nested JSON array body", req: post(events, "application/json", deep(200000, "[", "]")), want: []int{400}},
		{name: "deeply nested object in an NDJSON event", req: post(events, "application/x-ndjson",
			[]byte(fmt.Sprintf(`{"event_id":"deep","ts":%q,"x":%s}`, ts, deep(100000, `{"a":`, "}")))), want: []int{200}},
		{name: "invalid UTF-8 in an event id", req: post(events, "application/x-ndjson", []byte("{\"event_id\":\"bad\xff\xfe\",\"ts\":\""+ts+"\"}")), want: []int{200}},
		{name: "invalid UTF-8 in a dimension", req: post(events, "application/x-ndjson", []byte("{\"event_id\":\"utf\",\"ts\":\""+ts+"\",\"country\":\"U\xc3\"}")), want: []int{200}},
		{name: "raw NUL byte inside an event", req: post(events, "application/x-ndjson", []byte("{\"event_id\":\"nul\x00\",\"ts\":\""+ts+"\"}")), want: []int{200}},
		{name: "NUL bytes as the body", req: post(events, "application/json", bytes.Repeat([]byte{0}, 4096)), want: []int{400}},
		{name: "JSON array of non-objects", req: post(events, "application/json", []byte(`[1, "two", null, true, [3]]`)), want: []int{200}},
		{name: "empty JSON body", req: post(events, "application/json", nil), want: []int{400}},
		{name: "future event time", req: post(events, "application/x-ndjson", []byte(`{"event_id":"future","ts":"2099-01-01T00:00:00Z"}`)), want: []int{200}},
		{name: "timestamp overflow", req: post(events, "application/x-ndjson", []byte(`{"event_id":"overflow","ts":99999999999999999999999}`)), want: []int{200}},

		// Names.
		{name: "path traversal in the stream name (encoded)", req: post("/v1/streams/..%2F..%2F..%2Fetc%2Fpasswd/events", "application/x-ndjson", []byte(ev("t1"))), want: []int{404}},
		{name: "path traversal in the stream name (dots)", req: post("/v1/streams/../../etc/passwd/events", "application/x-ndjson", []byte(ev("t2"))), want: []int{301, 307, 308, 404, 405}},
		{name: "NUL in the stream name", req: post("/v1/streams/"+streamName+"%00/events", "application/x-ndjson", []byte(ev("t3"))), want: []int{404}},
		{name: "SQL in the stream name", req: post("/v1/streams/"+url.PathEscape(streamName+"'; DROP TABLE x; --")+"/events", "application/x-ndjson", []byte(ev("t4"))), want: []int{404}},
		{name: "path traversal in the view name", req: get("/v1/views/..%2F..%2Fviews%2F" + viewName + "%2F_current.json/query?" + base.Encode()), want: []int{404}},
		{name: "SQL in the view name", req: get("/v1/views/" + url.PathEscape(viewName+" UNION SELECT name FROM system.tables") + "/query?" + base.Encode()), want: []int{404}},
		{name: "huge view name", req: get("/v1/views/" + strings.Repeat("v", 100000) + "/query?" + base.Encode()), want: []int{404, 414, 431}},

		// Headers.
		{name: "missing content type", req: post(events, "", []byte(ev("h1"))), want: []int{415}},
		{name: "content type with NUL parameter", raw: rawReq(ingestAddr, "POST "+events+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson; charset=\"\x00\"\r\nContent-Length: 2\r\n\r\n{}"), want: []int{400, 415}},
		{name: "negative Content-Length", raw: rawReq(ingestAddr, "POST "+events+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: -5\r\n\r\n{}"), want: []int{400}},
		{name: "two different Content-Lengths", raw: rawReq(ingestAddr, "POST "+events+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}"), want: []int{400}},
		{name: "Content-Length and chunked together", raw: rawReq(ingestAddr, "POST "+events+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
			// RFC 9112 6.3: chunked overrides Content-Length (net/http reads
			// the chunked body); either refusing or reading it is fine as
			// long as nothing is smuggled: the "{}" event is then rejected.
			want: []int{200, 400}},
		{name: "Content-Length over the limit with a short body", raw: rawReq(ingestAddr, "POST "+events+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 999999999999\r\n\r\n{}"), want: []int{413}},
		{name: "header of 2 MB", req: func(p *platform) *http.Request {
			r := post(events, "application/x-ndjson", []byte(ev("h2")))(p)
			r.Header.Set("X-Junk", strings.Repeat("a", 2<<20))
			return r
		}, want: []int{431}},
		{name: "CR LF injection in a header value", raw: rawReq(serveAddr, "GET /v1/views/"+viewName+"/query?"+base.Encode()+" HTTP/1.1\r\nHost: x\r\nX-A: a\rSet-Cookie: x\r\n\r\n"), want: []int{400}},
		{name: "bad Host header", raw: rawReq(serveAddr, "GET /v1/views HTTP/1.1\r\nHost: a b\r\n\r\n"), want: []int{400}},
		{name: "absurd Accept header", req: get(qpath("granularity", "1h"), "Accept", strings.Repeat("text/csv;q=0.5, ", 2000)+"application/x-evil"), want: []int{200, 406, 431}},
		{name: "wrong method on events", req: func(p *platform) *http.Request {
			r, _ := http.NewRequest(http.MethodDelete, p.ingestURL+events, nil)
			return r
		}, want: []int{405}},
		{name: "wrong method on query", req: func(p *platform) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, p.serveURL+qpath(), strings.NewReader("x"))
			return r
		}, want: []int{405}},

		// Query parameters.
		{name: "unknown parameter", req: get(qpath("nope", "1")), want: []int{400}},
		{name: "query string over the limit", req: get(qpath("filter", "country:"+strings.Repeat("x", 20000))), want: []int{400}},
		{name: "4000 filters", req: func(p *platform) *http.Request {
			v := url.Values{"from": base["from"], "to": base["to"]}
			for i := 0; i < 4000; i++ {
				v.Add("filter", fmt.Sprintf("country:c%d", i))
			}
			r, _ := http.NewRequest(http.MethodGet, p.serveURL+"/v1/views/"+viewName+"/query?"+v.Encode(), nil)
			return r
		}, want: []int{400}},
		{name: "malformed percent-encoding", req: get("/v1/views/" + viewName + "/query?from=%zz&to=%"), want: []int{400}},
		{name: "invalid UTF-8 in a parameter", req: get("/v1/views/" + viewName + "/query?" + base.Encode() + "&group_by=%ff%fe"), want: []int{400}},
		{name: "year 10000", req: get(qpath("to", "10000-01-01T00:00:00Z")), want: []int{400}},
		{name: "range over max_query_range", req: get(qpath("from", "1970-01-01T00:00:00Z", "to", "9998-01-01T00:00:00Z")), want: []int{400}},
		{name: "granularity of nanoseconds", req: get(qpath("granularity", "1ns")), want: []int{400}},
		{name: "granularity of years", req: get(qpath("granularity", "876000h")), want: []int{200, 400}},
	}
	for _, s := range sqlish {
		cases = append(cases,
			hostileCase{name: "SQL in from: " + s, req: get(qpath("from", "2026-01-01T00:00:00Z"+s)), want: []int{400}},
			hostileCase{name: "SQL in to: " + s, req: get(qpath("to", s)), want: []int{400}},
			hostileCase{name: "SQL in granularity: " + s, req: get(qpath("granularity", "1m"+s)), want: []int{400}},
			hostileCase{name: "SQL in group_by: " + s, req: get(qpath("group_by", "country"+s)), want: []int{400}},
			hostileCase{name: "SQL in measures: " + s, req: get(qpath("measures", "views"+s)), want: []int{400}},
			hostileCase{name: "SQL in a filter dimension: " + s, req: get(qpath("filter", "country"+s+":US")), want: []int{400}},
			hostileCase{name: "SQL in a filter value: " + s, req: get(qpath("filter", "country:"+s)), want: []int{200}, emptyOK: true},
			hostileCase{name: "SQL in a filter value, grouped: " + s, req: get(qpath("filter", "device:"+s, "group_by", "country,device", "granularity", "all")), want: []int{200}, emptyOK: true},
		)
	}

	noRedirect := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var body []byte
			if tc.raw != nil {
				addr, data := tc.raw(p)
				code, body = rawStatus(t, addr, data)
			} else {
				res, err := noRedirect.Do(tc.req(p))
				if err != nil {
					// The server may close on a request it refuses to read;
					// that is a refusal too, but say so.
					t.Fatalf("no answer: %v", err)
				}
				body, _ = io.ReadAll(io.LimitReader(res.Body, 1<<20))
				res.Body.Close()
				code = res.StatusCode
			}
			require.Contains(t, tc.want, code, "status; body: %.300s", body)
			switch {
			case code == http.StatusOK && tc.emptyOK:
				var a answer
				require.NoError(t, json.Unmarshal(body, &a), "%.300s", body)
				require.Empty(t, a.Rows, "a hostile filter value matched rows: it was not taken as a plain value")
			case code == http.StatusOK && strings.Contains(string(body), `"accepted"`):
				// Per-event rejections: nothing of it may be accepted.
				var r struct{ Accepted, Rejected int }
				require.NoError(t, json.Unmarshal(body, &r), "%.300s", body)
				require.Zero(t, r.Accepted, "a hostile event was accepted: %.300s", body)
				require.Positive(t, r.Rejected, "%.300s", body)
			case code >= 400 && code < 500 && code != 431 && code != 414 && len(body) > 0 && tc.raw == nil:
				// A clear error: JSON with an "error" sentence.
				var e struct{ Error string }
				if json.Unmarshal(body, &e) == nil {
					require.NotEmpty(t, e.Error, "%.300s", body)
				}
			}
		})
	}

	// Nothing changed.
	time.Sleep(2 * time.Second) // a few speed flushes, had anything got in
	after := p.snapshot(t, whole)
	require.Equal(t, before, after, "hostile requests changed the platform's data")
	require.Empty(t, p.compareServing(truth, whole))
	require.False(t, p.proc("ingest").exited() || p.proc("serve").exited() || p.proc("speed").exited(), "a component died")
}

// platformState is what hostile requests must not change.
type platformState struct {
	TopicEnd    int64             // messages in the stream's topic
	Tables      string            // ClickHouse tables of the database
	SpeedRows   uint64            // rows of <view>_speed (FINAL)
	MergedViews int64             // sum(views) of the merged view
	Answer      map[string]string // the REST answer's rows, by key
}

func (p *platform) snapshot(t *testing.T, q query) platformState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s platformState
	for _, end := range testenv.TopicEnds(t, p.kafka.Brokers, p.topic, partitions) {
		s.TopicEnd += end
	}
	conn := p.ch.Conn(t)
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", p.ch.Database)
	require.NoError(t, err)
	var names []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	rows.Close()
	s.Tables = strings.Join(names, ",")
	require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s_speed FINAL", p.ch.Database, viewName)).Scan(&s.SpeedRows))
	require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("SELECT toInt64(sum(views)) FROM %s.%s", p.ch.Database, viewName)).Scan(&s.MergedViews))
	code, a, body, err := p.queryServing(q)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, "%s", body)
	s.Answer = map[string]string{}
	for _, r := range a.Rows {
		m, _ := json.Marshal(r.Measures)
		s.Answer[fmt.Sprint(r.WindowStart.Unix(), r.Dimensions)] = string(m)
	}
	return s
}

// rawStatus writes data to addr and returns the status of the first
// answer, or fails when the server closes without one.
func rawStatus(t *testing.T, addr string, data []byte) (int, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	_, err = c.Write(data)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err, "the server closed the connection without an answer")
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, body
}

// repeatReader repeats s forever.
func repeatReader(s string) io.Reader {
	return readerFunc(func(b []byte) (int, error) {
		n := 0
		for n < len(b) {
			n += copy(b[n:], s)
		}
		return n, nil
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// hostileClientsBudget is the ingest in-flight budget of TestHostileClients,
// one client allowed all of it (the worst case for memory).
const hostileClientsBudget = 64 << 20

// TestHostileClients plays the hostile clients of issue 12 against the
// running gateway and query API, each attack bounded in count and time, on
// loopback: stalled uploads (1), memory amplification (2), answers never
// read (4), formula injection into CSV (8), bearer parsing and /metrics
// tokens (9), an overflowing granularity (10) and a body sent whole before
// reading (13). Throughout, legitimate requests keep being answered, the
// gateway's peak RSS stays within the stated bound, refusals carry the
// right codes and name their limit, and nothing is silently partial.
func TestHostileClients(t *testing.T) {
	const readTimeout, writeTimeout = 3 * time.Second, 8 * time.Second
	p := newPlatform(t, platformOptions{maxBodyBytes: 8 << 20, maxInflightBytes: hostileClientsBudget,
		ingestExtra: fmt.Sprintf(", read_timeout: %s, read_header_timeout: 2s, write_timeout: 20s, max_inflight_bytes_per_client: %d", readTimeout, hostileClientsBudget),
		serveExtra:  fmt.Sprintf(", read_timeout: %s, read_header_timeout: 2s, write_timeout: %s", readTimeout, writeTimeout),
		auth:        `{ ingest_tokens: ["good-ingest", "attacker-ingest"], query_tokens: ["good-query"], metrics_tokens: ["scrape-token"] }`})
	p.start("ingest", "speed", "serve")
	ingestAddr := strings.TrimPrefix(p.ingestURL, "http://")
	serveAddr := strings.TrimPrefix(p.serveURL, "http://")
	events := "/v1/streams/" + streamName + "/events"
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, url, auth, ctype string, body io.Reader, hdr ...string) (int, []byte, time.Duration) {
		req, err := http.NewRequest(method, url, body)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		t0 := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return 0, []byte(err.Error()), time.Since(t0)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		return res.StatusCode, b, time.Since(t0)
	}
	now := time.Now().UTC()
	ts := now.Add(-time.Minute).Format(time.RFC3339Nano)
	var seq atomic.Int64
	legitPost := func() (int, []byte, time.Duration) {
		id := fmt.Sprintf("legit-%d", seq.Add(1))
		return do("POST", p.ingestURL+events, "Bearer good-ingest", "application/x-ndjson",
			strings.NewReader(fmt.Sprintf(`{"event_id":%q,"ts":%q,"country":"LEGIT","device":"d"}`, id, ts)))
	}
	qv := url.Values{"from": {now.Add(-24 * time.Hour).Truncate(time.Hour).Format(time.RFC3339)},
		"to": {now.Add(2 * time.Hour).Truncate(time.Hour).Format(time.RFC3339)}, "granularity": {"all"}, "group_by": {"country"}}
	queryURL := func(v url.Values) string { return p.serveURL + "/v1/views/" + viewName + "/query?" + v.Encode() }
	// A legitimate query asks for a small answer: one country.
	legitQuery := func() (int, []byte, time.Duration) {
		v := url.Values{"filter": {"country:LEGIT"}}
		for k, vs := range qv {
			v[k] = vs
		}
		return do("GET", queryURL(v), "Bearer good-query", "", nil)
	}
	// metric reads one value of a component's /metrics (with the token).
	// Without keep-alive, so reading a metric leaves no connection (and no
	// server goroutine) behind.
	scraper := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	metric := func(base, name string) float64 {
		req, err := http.NewRequest("GET", base+"/metrics", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer scrape-token")
		res, err := scraper.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				return f
			}
		}
		t.Fatalf("%s has no %s", base, name)
		return 0
	}
	// keepAnswering checks legitimate requests every 250 ms for d: each
	// must succeed, and within the read timeout.
	keepAnswering := func(what string, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			code, body, took := legitPost()
			require.Equal(t, http.StatusOK, code, "%s: a legitimate POST: %.300s", what, body)
			require.Less(t, took, readTimeout, "%s: a legitimate POST took %s", what, took)
			code, body, took = legitQuery()
			require.Equal(t, http.StatusOK, code, "%s: a legitimate query: %.300s", what, body)
			require.Less(t, took, readTimeout, "%s: a legitimate query took %s", what, took)
		}
	}
	dial := func(addr string) net.Conn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	readAnswer := func(c net.Conn, within time.Duration) (int, string) {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err, "the connection ended without an answer")
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		return res.StatusCode, string(b)
	}

	// Data: a formula in a dimension (item 8) and a legitimate event.
	formula := `=HYPERLINK("http://evil.example/","click")`
	code, body, _ := do("POST", p.ingestURL+events, "bearer good-ingest", "application/x-ndjson", strings.NewReader(
		fmt.Sprintf(`{"event_id":"f1","ts":%q,"country":%q,"device":"d"}`+"\n"+`{"event_id":"f2","ts":%q,"country":"-1+2","device":"d"}`, ts, formula, ts)))
	require.Equal(t, http.StatusOK, code, "the scheme is case-insensitive at ingest: %s", body)
	require.Eventually(t, func() bool {
		code, body, _ := do("GET", queryURL(qv), "Bearer good-query", "", nil)
		return code == http.StatusOK && strings.Contains(string(body), "HYPERLINK")
	}, 60*time.Second, 300*time.Millisecond, "the speed layer did not catch up")

	t.Run("1 stalled uploads", func(t *testing.T) {
		start := time.Now()
		var conns []net.Conn
		for range 32 {
			c := dial(ingestAddr)
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer attacker-ingest\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n{\"event", events, 8<<20)
			conns = append(conns, c)
		}
		keepAnswering("during 32 stalled uploads", readTimeout)
		for _, c := range conns {
			code, body := readAnswer(c, readTimeout+5*time.Second)
			require.Equal(t, http.StatusRequestTimeout, code, body)
			require.Contains(t, body, "ingest.read_timeout")
		}
		require.Less(t, time.Since(start), 2*readTimeout+5*time.Second)
		require.Equal(t, 0.0, metric(p.ingestURL, "tandem_ingest_inflight_bytes"), "the stalled uploads gave everything back")
	})

	t.Run("2 memory amplification", func(t *testing.T) {
		pid := p.proc("ingest").pid()
		idle := rssBytes(t, pid)
		var peak atomic.Int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				peak.Store(max(peak.Load(), rssBytes(t, pid)))
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		ones := []byte("[" + strings.Repeat("1,", 4<<20-2) + "1]") // 4.2 M elements in 8 MiB
		newlines := bytes.Repeat([]byte("\n"), 8<<20)
		type result struct {
			code  int
			body  string
			array bool
		}
		results := make(chan result, 24)
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctype, b := "application/json", ones
				if i >= 8 {
					ctype, b = "application/x-ndjson", newlines
				}
				code, body, _ := do("POST", p.ingestURL+events, "Bearer attacker-ingest", ctype, bytes.NewReader(b))
				results <- result{code, string(body), i < 8}
			}()
		}
		wg.Wait()
		close(stop)
		<-sampled
		close(results)
		counts := map[int]int{}
		for r := range results {
			counts[r.code]++
			switch r.code {
			case http.StatusRequestEntityTooLarge:
				require.Contains(t, r.body, "ingest.max_events_per_request")
			case http.StatusOK:
				require.False(t, r.array, "a 4.2 M-element array was accepted: %.300s", r.body)
				require.Contains(t, r.body, `"accepted":0`, "a body of newlines holds no event")
			case http.StatusTooManyRequests:
				require.Contains(t, r.body, "ingest.max_inflight_bytes")
			default:
				t.Fatalf("unexpected answer %d: %.300s", r.code, r.body)
			}
		}
		t.Logf("answers %v; gateway RSS %.1f MiB idle, %.1f MiB peak (bound %.0f MiB)", counts,
			float64(idle)/(1<<20), float64(peak.Load())/(1<<20), float64(idle+4*hostileClientsBudget)/(1<<20))
		// Which refusal each array got depends on who took the in-flight
		// budget first (413 for its size, or 429 while the budget is
		// taken); alone, an array is refused for its size.
		code, body, _ := do("POST", p.ingestURL+events, "Bearer attacker-ingest", "application/json", bytes.NewReader(ones))
		require.Equal(t, http.StatusRequestEntityTooLarge, code, "%.300s", body)
		require.Contains(t, string(body), "ingest.max_events_per_request")
		// The bound of docs/operations.md: at most 4 bytes of RSS per byte
		// of ingest.max_inflight_bytes over the idle process (the buffers,
		// the garbage their growth leaves, and Go's GC headroom).
		require.Less(t, peak.Load(), idle+4*hostileClientsBudget, "peak RSS")
		keepAnswering("after the amplification", time.Second)
	})

	t.Run("13 body sent whole before reading", func(t *testing.T) {
		c := dial(ingestAddr)
		body := bytes.Repeat([]byte(`{"event_id":"big","ts":"`+ts+`"}`+"\n"), (12<<20)/60)
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(20*time.Second)))
		_, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer attacker-ingest\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s", events, len(body), body)
		require.NoError(t, err, "the gateway reads the body it refuses (no reset)")
		code, answer := readAnswer(c, 10*time.Second)
		require.Equal(t, http.StatusRequestEntityTooLarge, code)
		require.Contains(t, answer, "ingest.max_body_bytes")
	})

	t.Run("9 bearer tokens and metrics", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, url, auth, ctype string
			body                           string
			want                           int
		}{
			{"ingest lower-case scheme", "POST", p.ingestURL + events, "bearer good-ingest", "application/x-ndjson", fmt.Sprintf(`{"event_id":"b1","ts":%q}`, ts), 200},
			{"ingest wrong token", "POST", p.ingestURL + events, "Bearer nope", "application/x-ndjson", "{}", 401},
			{"query lower-case scheme", "GET", queryURL(qv), "bearer good-query", "", "", 200},
			{"query upper-case scheme", "GET", queryURL(qv), "BEARER good-query", "", "", 200},
			{"query ingest token", "GET", queryURL(qv), "Bearer good-ingest", "", "", 401},
			{"status lower-case scheme", "GET", p.serveURL + "/v1/status", "bearer good-query", "", "", 200},
			{"status no token", "GET", p.serveURL + "/v1/status", "", "", "", 401},
			{"ingest metrics no token", "GET", p.ingestURL + "/metrics", "", "", "", 401},
			{"serve metrics no token", "GET", p.serveURL + "/metrics", "", "", "", 401},
			{"speed metrics no token", "GET", p.speedURL + "/metrics", "", "", "", 401},
			{"speed metrics query token", "GET", p.speedURL + "/metrics", "Bearer good-query", "", "", 401},
			{"speed metrics token", "GET", p.speedURL + "/metrics", "bearer scrape-token", "", "", 200},
			{"probes stay open", "GET", p.speedURL + "/readyz", "", "", "", 200},
		} {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			code, answer, _ := do(tc.method, tc.url, tc.auth, tc.ctype, body)
			require.Equal(t, tc.want, code, "%s: %.300s", tc.name, answer)
			if code == 401 {
				require.NotContains(t, string(answer), "good-", tc.name)
			}
		}
		// The health report scrapes the components with the metrics token.
		code, body, _ := do("GET", p.serveURL+"/v1/status", "Bearer good-query", "", nil)
		require.Equal(t, http.StatusOK, code)
		require.NotContains(t, string(body), "answered 401", "the health report could not scrape a component")
	})

	t.Run("8 CSV formula injection", func(t *testing.T) {
		code, body, _ := do("GET", queryURL(qv), "Bearer good-query", "", nil, "Accept", "text/csv")
		require.Equal(t, http.StatusOK, code)
		recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		require.NoError(t, err)
		var cells []string
		for _, r := range recs[1:] {
			cells = append(cells, r[1]) // window_start, country, ...
		}
		require.Contains(t, cells, "'"+formula, "the formula is written as text")
		require.Contains(t, cells, "'-1+2")
		require.Contains(t, cells, "LEGIT")
		for _, c := range cells {
			if c != "" {
				require.NotContains(t, "=+-@\t\r", c[:1], "a cell a spreadsheet would run: %q", c)
			}
		}
	})

	t.Run("10 granularity overflow", func(t *testing.T) {
		v := url.Values{}
		for k, vs := range qv {
			v[k] = vs
		}
		v.Set("granularity", "9999999d")
		code, body, _ := do("GET", queryURL(v), "Bearer good-query", "", nil)
		require.Equal(t, http.StatusBadRequest, code)
		require.Contains(t, string(body), "longer than the longest granularity, 36500d")
	})

	t.Run("4 answers never read", func(t *testing.T) {
		// 30,000 groups: an answer of several MiB, more than the sockets'
		// buffers hold, so a writer blocks on a client that does not read.
		const groups = 30000
		for b := 0; b < groups/1000; b++ {
			var body strings.Builder
			for i := range 1000 {
				fmt.Fprintf(&body, `{"event_id":"g%d-%d","ts":%q,"country":"country-%06d","device":"device-with-a-long-name-%d","amount":1.5,"latency_ms":%d,"user_id":"u%d"}`+"\n",
					b, i, ts, b*1000+i, i%7, i, i)
			}
			code, answer, _ := do("POST", p.ingestURL+events, "Bearer good-ingest", "application/x-ndjson", strings.NewReader(body.String()))
			require.Equal(t, http.StatusOK, code, "%.300s", answer)
		}
		big := url.Values{}
		for k, vs := range qv {
			big[k] = vs
		}
		big.Set("group_by", "country,device")
		var size int
		var took time.Duration
		require.Eventually(t, func() bool {
			code, body, d := do("GET", queryURL(big), "Bearer good-query", "", nil)
			size, took = len(body), d
			return code == http.StatusOK && bytes.Count(body, []byte(`"country-`)) == groups
		}, 90*time.Second, time.Second, "the speed layer did not take the 30,000 groups")
		t.Logf("the answer is %.1f MiB, read in %s", float64(size)/(1<<20), took.Round(time.Millisecond))
		// Count the serve goroutines with none of this test's kept-alive
		// connections open (each holds one on the server).
		client.CloseIdleConnections()
		time.Sleep(200 * time.Millisecond)
		baseline := metric(p.serveURL, "go_goroutines")

		start := time.Now()
		path := "/v1/views/" + viewName + "/query?" + big.Encode()
		const unread = 3
		var attackers []net.Conn
		for range unread {
			c := dial(serveAddr)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-query\r\n\r\n", path)
			attackers = append(attackers, c) // and not read, for now
		}
		// Computing the answers takes the CPU for a while (bounding that is
		// serve.max_concurrent_queries' job); once they are computed, their
		// handlers only wait on the unread sockets.
		time.Sleep(writeTimeout / 2)
		held := metric(p.serveURL, "go_goroutines")
		require.GreaterOrEqual(t, held, baseline+unread, "the unread answers hold handlers (the attack took effect)")
		keepAnswering("while the answers are not read", writeTimeout/2)
		// Past the write timeout (with slack for a loaded machine), each
		// handler has given up and its connection is closed: reading now
		// gets what the sockets held and then the end of the connection,
		// before the answer's end — or no answer at all when
		// computing it outlasted the timeout — never an answer that looks
		// complete.
		time.Sleep(time.Until(start.Add(writeTimeout + 3*time.Second)))
		cut := map[string]int{}
		for i, c := range attackers {
			require.NoError(t, c.SetReadDeadline(time.Now().Add(15*time.Second)))
			var ne net.Error
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				require.False(t, errors.As(err, &ne) && ne.Timeout(), "attacker %d: the connection was still open past serve.write_timeout", i)
				cut["closed before the headers"]++
				continue
			}
			require.Equal(t, http.StatusOK, res.StatusCode)
			// Answers are streamed (chunked, no Content-Length) or, when
			// small, sent with a length: either way a cut handler shows as
			// the connection ending before the answer's end.
			n, err := io.Copy(io.Discard, res.Body)
			require.Error(t, err, "attacker %d read the whole answer: the handler was not cut", i)
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "attacker %d: the connection was still open past serve.write_timeout", i)
			if res.ContentLength > 0 {
				require.Less(t, n, res.ContentLength, "attacker %d", i)
			}
			cut["closed mid-body"]++
		}
		t.Logf("unread answers after serve.write_timeout: %v", cut)
		client.CloseIdleConnections()
		t.Logf("serve goroutines: %.0f before, %.0f with %d unread answers, %.0f once they were cut (write_timeout %s)",
			baseline, held, unread, metric(p.serveURL, "go_goroutines"), writeTimeout)
	})

	require.False(t, p.proc("ingest").exited() || p.proc("serve").exited() || p.proc("speed").exited(), "a component died")
}
