package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// testHeaderYAML is the gateway's settings; the stream is the example's
// (testenv.ExampleStreamsYAML) on the test's topic with 3 partitions.
const testHeaderYAML = `
kafka: { brokers: ["%s"] }
ingest: { listen: "127.0.0.1:0", max_body_bytes: %d, max_inflight_bytes: %d, max_future_skew: 1h, produce_timeout: %s%s }
auth: { ingest_tokens: [%s] }
`

type gwOpts struct {
	brokers        string // default: the test's broker
	maxBody        int64
	maxInflight    int64
	produceTimeout string
	tokens         string // YAML list items
	ingestExtra    string // more ingest keys, each with a leading ", "
	wrap           func(Log) Log
}

type gwEnv struct {
	k      *testenv.KafkaCluster
	cfg    *schemas.Config
	gw     *Gateway
	reg    *prometheus.Registry
	url    string
	topic  string
	now    time.Time
	cancel context.CancelFunc
	done   chan error
}

func startGateway(t *testing.T, o gwOpts) *gwEnv {
	t.Helper()
	e := &gwEnv{k: testenv.Kafka(t), topic: testenv.UniqueName(t, "tandem.pv")}
	if o.brokers == "" {
		o.brokers = e.k.Brokers[0]
	}
	if o.maxBody == 0 {
		o.maxBody = 1 << 20
	}
	if o.maxInflight == 0 {
		o.maxInflight = 64 << 20
	}
	if o.produceTimeout == "" {
		o.produceTimeout = "5s"
	}
	text := fmt.Sprintf(testHeaderYAML, o.brokers, o.maxBody, o.maxInflight, o.produceTimeout, o.ingestExtra, o.tokens) +
		testenv.ExampleStreamsYAML(t, "topic: tandem.pageviews", "topic: "+e.topic, "partitions: 6", "partitions: 3")
	cfg, err := schemas.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	e.cfg = cfg
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if o.brokers == e.k.Brokers[0] {
		require.NoError(t, kafka.EnsureTopics(ctx, e.k.Brokers, cfg))
	}
	p, err := kafka.NewProducer(cfg.Kafka.Brokers, kafka.ProducerOptions{})
	require.NoError(t, err)
	var lg Log = p
	if o.wrap != nil {
		lg = o.wrap(p)
	}
	e.now = time.Now().UTC().Truncate(time.Millisecond)
	e.reg = prometheus.NewRegistry()
	conf, err := ConfigFrom(cfg)
	require.NoError(t, err)
	e.gw, err = New(conf, Deps{Schema: cfg, Log: lg, Registry: e.reg, Logger: slog.New(slog.DiscardHandler), MaxMessageBytes: p.MaxMessageBytes(), Now: func() time.Time { return e.now }})
	require.NoError(t, err)
	require.NoError(t, e.gw.Listen())
	e.url = "http://" + e.gw.Addr()
	runCtx, runCancel := context.WithCancel(context.Background())
	e.cancel = runCancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.gw.Run(runCtx); p.Close() }()
	t.Cleanup(func() { runCancel(); <-e.done })
	return e
}

// post sends body and decodes the response.
func (e *gwEnv) post(t *testing.T, stream, contentType, body string, header ...string) (int, Response, http.Header) {
	t.Helper()
	req, err := http.NewRequest("POST", e.url+"/v1/streams/"+stream+"/events", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, Response, http.Header) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var r Response
	require.NoError(t, json.Unmarshal(b, &r), "body %q", b)
	return res.StatusCode, r, res.Header
}

// readTopic returns every record of the test topic (all 3 partitions).
func (e *gwEnv) readTopic(t *testing.T) []kgo.Message {
	t.Helper()
	return testenv.ReadTopic(t, e.k.Brokers, e.topic, 3)
}

func (e *gwEnv) event(id string, extra string) string {
	return fmt.Sprintf(`{"event_id":%q,"ts":%q%s}`, id, e.now.Add(-time.Minute).Format(time.RFC3339Nano), extra)
}

func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func TestAcceptsNDJSONAndArrayBodiesExactly(t *testing.T) {
	e := startGateway(t, gwOpts{})
	// Undeclared fields, odd spacing and escapes must reach Kafka byte for byte.
	ev := []string{
		e.event("a1", `,"country":"US","amount":1.50,"extra":{"nested":[1,2,{"x":null}]}`),
		`  {"ts": ` + fmt.Sprint(e.now.Add(-time.Hour).UnixMilli()) + `, "event_id": "a2", "note": "caf\u00e9 \"q\""}`,
		e.event("a3", ""),
	}
	nd := ev[0] + "\n" + ev[1] + "\r\n\n" + ev[2]
	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", nd)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, Response{Accepted: 3, Errors: []EventError{}}, res)

	arr := "[" + e.event("b1", `,"country":"DE"`) + " ,\n " + e.event("b2", "") + "]"
	code, res, _ = e.post(t, "pageviews", "application/json; charset=utf-8", arr)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 2, res.Accepted)

	want := map[string]string{
		"a1": ev[0], "a2": strings.TrimSpace(ev[1]), "a3": ev[2],
		"b1": e.event("b1", `,"country":"DE"`), "b2": e.event("b2", ""),
	}
	got := e.readTopic(t)
	require.Len(t, got, len(want))
	for _, m := range got {
		w, ok := want[string(m.Key)]
		require.True(t, ok, "unexpected key %q", m.Key)
		require.Equal(t, w, string(m.Value))
		require.True(t, e.now.Equal(m.Time), "record time %v, want ingest time %v", m.Time, e.now)
		require.Equal(t, map[string]string{HeaderStream: "pageviews", HeaderSchema: e.cfg.Streams[0].SchemaVersion()}, headers(m))
		require.Equal(t, kgo.Murmur2Balancer{}.Balance(kgo.Message{Key: m.Key}, 0, 1, 2), m.Partition)
	}
	require.Equal(t, 5.0, metricValue(t, e.reg, "tandem_ingest_events_accepted_total", map[string]string{"stream": "pageviews"}))
	require.Equal(t, float64(len(nd)+len(arr)), metricValue(t, e.reg, "tandem_ingest_bytes_received_total", nil))
	require.Equal(t, 2.0, metricValue(t, e.reg, "tandem_ingest_produce_duration_seconds", nil))
	require.Equal(t, 2.0, metricValue(t, e.reg, "tandem_ingest_request_duration_seconds", map[string]string{"code": "200"}))
}

func headers(m kgo.Message) map[string]string {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

func TestMixedValidAndInvalidEventsReportExactIndexes(t *testing.T) {
	e := startGateway(t, gwOpts{})
	lines := []string{
		e.event("ok0", ""),                                   // 0
		`{"event_id":"x1","ts":"yesterday"}`,                 // 1
		fmt.Sprintf(`{"ts":%q}`, e.now.Format(time.RFC3339)), // 2
		`{"event_id":"x3",`,                                  // 3
		e.event("ok4", `,"amount":"12"`),                     // 4 amount not a number
		e.event("ok5", ""),                                   // 5
		fmt.Sprintf(`{"event_id":"x6","ts":%q}`, e.now.Add(2*time.Hour).Format(time.RFC3339)), // 6 future
		`[1,2]`,                  // 7
		`{"event_id":"","ts":1}`, // 8
	}
	for _, ct := range []string{"application/x-ndjson", "application/json"} {
		t.Run(ct, func(t *testing.T) {
			body := strings.Join(lines, "\n")
			if ct == "application/json" {
				lines := append([]string(nil), lines...)
				lines[3] = `"not an object"` // an array body must be valid JSON as a whole
				body = "[" + strings.Join(lines, ",") + "]"
			}
			code, res, _ := e.post(t, "pageviews", ct, body)
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, 2, res.Accepted)
			require.Equal(t, 7, res.Rejected)
			idx := []int{}
			for _, er := range res.Errors {
				idx = append(idx, er.Index)
			}
			require.Equal(t, []int{1, 2, 3, 4, 6, 7, 8}, idx)
			require.Equal(t, `field "ts": not a timestamp (want RFC 3339 or epoch milliseconds)`, res.Errors[0].Error)
			require.Equal(t, `field "event_id": required field is missing`, res.Errors[1].Error)
			require.Equal(t, `field "amount": not a number`, res.Errors[3].Error)
			require.Contains(t, res.Errors[4].Error, "too far in the future")
			require.Equal(t, `field "event_id": id must not be empty`, res.Errors[6].Error)
		})
	}
	got := e.readTopic(t)
	keys := map[string]int{}
	for _, m := range got {
		keys[string(m.Key)]++
	}
	require.Equal(t, map[string]int{"ok0": 2, "ok5": 2}, keys, "only valid events are produced")
	require.Equal(t, 2.0, metricValue(t, e.reg, "tandem_ingest_events_rejected_total", map[string]string{"reason": "future_time"}))
	require.Equal(t, 2.0, metricValue(t, e.reg, "tandem_ingest_events_rejected_total", map[string]string{"reason": "missing_field"}))
}

func TestErrorsAreCapped(t *testing.T) {
	e := startGateway(t, gwOpts{})
	var b strings.Builder
	for i := 0; i < 250; i++ {
		if i%50 == 7 {
			b.WriteString(e.event(fmt.Sprintf("v%d", i), "") + "\n")
		} else {
			b.WriteString(`{"event_id":"bad","ts":true}` + "\n")
		}
	}
	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", b.String())
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 5, res.Accepted)
	require.Equal(t, 245, res.Rejected)
	require.Len(t, res.Errors, MaxErrors)
	require.Equal(t, 0, res.Errors[0].Index)
	require.Equal(t, 101, res.Errors[99].Index, "the first 100 errors in index order (7 and 57 are valid)")
	require.Len(t, e.readTopic(t), 5)
}

func TestStatusCodes(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 64 << 10, maxInflight: 1 << 20})
	ok := e.event("s1", "")
	cases := []struct {
		name, stream, ct, body string
		chunked                bool
		code                   int
	}{
		{"unknown stream", "nope", "application/x-ndjson", ok, false, 404},
		{"traversal in stream name", "..%2F..%2Fetc", "application/x-ndjson", ok, false, 404},
		{"unknown content type", "pageviews", "text/plain", ok, false, 415},
		{"no content type", "pageviews", "", ok, false, 415},
		{"body over limit", "pageviews", "application/x-ndjson", strings.Repeat(ok+"\n", 2000), false, 413},
		{"chunked body over limit", "pageviews", "application/x-ndjson", strings.Repeat(ok+"\n", 2000), true, 413},
		{"array that is not JSON", "pageviews", "application/json", "[" + ok + ",", false, 400},
		{"array body of a number", "pageviews", "application/json", "42", false, 400},
		{"empty array body", "pageviews", "application/json", "  ", false, 400},
		{"deeply nested array body", "pageviews", "application/json", strings.Repeat("[", 2000) + strings.Repeat("]", 2000), false, 200},
		{"array body nested past the JSON parser's limit", "pageviews", "application/json", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), false, 400},
		{"empty NDJSON body", "pageviews", "application/x-ndjson", "", false, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, err := http.NewRequest("POST", e.url+"/v1/streams/"+tc.stream+"/events", body)
			require.NoError(t, err)
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			code, res, _ := do(t, req)
			require.Equal(t, tc.code, code, "response %+v", res)
			if code != 200 {
				require.NotEmpty(t, res.Error)
			}
		})
	}
	// Path traversal that the router cleans never reaches a stream either.
	req, _ := http.NewRequest("POST", e.url+"/v1/streams/../../events", strings.NewReader(ok))
	req.Header.Set("Content-Type", "application/x-ndjson")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.NotEqual(t, 200, res.StatusCode)
	require.Equal(t, 0, len(e.readTopic(t)), "nothing may be produced by refused requests")
	require.Equal(t, 0.0, metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil), "every reservation is given back")
}

func TestHostileEventsAreRejectedOneByOne(t *testing.T) {
	e := startGateway(t, gwOpts{maxBody: 4 << 20, maxInflight: 8 << 20})
	huge := `{"event_id":"h","ts":1,"pad":"` + strings.Repeat("x", schemas.MaxEventBytes) + `"}`
	deep := `{"event_id":"d","ts":1,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "}"
	lines := []string{
		huge,
		deep,
		`{"event_id":"u","ts":1,"country":"` + "\xff\xfe" + `"}`,
		`{"event_id":"n","ts":1,` + "\x00" + `"country":"x"}`,
		`{"event_id":"n2","ts":1,"country":"a` + "\x00" + `b"}`,
		e.event("good", ""),
	}
	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", strings.Join(lines, "\n"))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 1, res.Accepted)
	require.Equal(t, 5, res.Rejected)
	require.Contains(t, res.Errors[0].Error, "over the limit")
	require.Contains(t, res.Errors[1].Error, "nests")
	require.Contains(t, res.Errors[2].Error, "UTF-8")
	require.Equal(t, 3, res.Errors[3].Index)
	require.Equal(t, 4, res.Errors[4].Index)
	got := e.readTopic(t)
	require.Len(t, got, 1)
	require.Equal(t, "good", string(got[0].Key))
}

func TestBearerTokens(t *testing.T) {
	e := startGateway(t, gwOpts{tokens: `"tok-one-secret", "tok-two-secret"`})
	ok := e.event("t1", "")
	for _, h := range []string{"", "Bearer", "Bearer ", "Bearer tok-one", "Bearer tok-one-secretX", "Basic tok-one-secret", "tok-one-secret"} {
		code, res, hdr := e.post(t, "pageviews", "application/x-ndjson", ok, "Authorization", h)
		require.Equal(t, http.StatusUnauthorized, code, "Authorization %q", h)
		require.NotContains(t, res.Error, "tok-")
		require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer")
	}
	require.Equal(t, 7.0, metricValue(t, e.reg, "tandem_auth_failures_total", map[string]string{"endpoint": "ingest"}))
	// An unknown stream with a bad token is still 401: no probing of names.
	code, _, _ := e.post(t, "nope", "application/x-ndjson", ok, "Authorization", "Bearer wrong")
	require.Equal(t, http.StatusUnauthorized, code)
	for _, tok := range []string{"Bearer tok-one-secret", "bearer tok-two-secret"} {
		code, res, _ := e.post(t, "pageviews", "application/x-ndjson", ok, "Authorization", tok)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, 1, res.Accepted)
	}
	require.Len(t, e.readTopic(t), 2)
	// The metrics endpoint never shows a token.
	res, err := http.Get(e.url + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.NotContains(t, string(b), "secret")
}

func TestKafkaDownIs503WithRetryAfter(t *testing.T) {
	t.Run("dead port", func(t *testing.T) {
		dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		e := startGateway(t, gwOpts{brokers: dead, produceTimeout: "300ms"})
		start := time.Now()
		code, res, hdr := e.post(t, "pageviews", "application/x-ndjson", e.event("d1", "")+"\n{}")
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Less(t, time.Since(start), 3*time.Second)
		require.NotEmpty(t, hdr.Get("Retry-After"))
		require.Equal(t, 0, res.Accepted)
		require.Equal(t, 1, res.Rejected, "validation errors are still reported")
		require.Contains(t, res.Error, "retry")
		ready, err := http.Get(e.url + "/readyz")
		require.NoError(t, err)
		ready.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, ready.StatusCode)
	})
	t.Run("broker stopped", func(t *testing.T) {
		e := startGateway(t, gwOpts{produceTimeout: "500ms"})
		code, _, _ := e.post(t, "pageviews", "application/x-ndjson", e.event("before", ""))
		require.Equal(t, http.StatusOK, code)
		ready, err := http.Get(e.url + "/readyz")
		require.NoError(t, err)
		ready.Body.Close()
		require.Equal(t, http.StatusOK, ready.StatusCode)

		e.k.Stop()
		code, res, hdr := e.post(t, "pageviews", "application/x-ndjson", e.event("during", ""))
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Equal(t, "1", hdr.Get("Retry-After"))
		require.Equal(t, 0, res.Accepted)
		require.Equal(t, 1.0, metricValue(t, e.reg, "tandem_ingest_produce_failed_events_total", nil))

		e.k.Start()
		// The client retries; once the broker is back the request succeeds.
		require.Eventually(t, func() bool {
			code, _, _ := e.post(t, "pageviews", "application/x-ndjson", e.event("during", ""))
			return code == http.StatusOK
		}, 15*time.Second, 100*time.Millisecond)
		keys := map[string]bool{}
		for _, m := range e.readTopic(t) {
			keys[string(m.Key)] = true
		}
		require.True(t, keys["before"] && keys["during"])
	})
}

// gate holds every Append until released, in front of the real producer,
// so a test can keep a request in flight.
type gate struct {
	Log
	entered chan struct{}
	release chan struct{}
}

func (g *gate) Append(ctx context.Context, topic string, ts time.Time, h map[string]string, k, v [][]byte) error {
	g.entered <- struct{}{}
	<-g.release
	return g.Log.Append(ctx, topic, ts, h, k, v)
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 16), release: make(chan struct{})} }

func TestOverloadIs429Quickly(t *testing.T) {
	g := newGate()
	e := startGateway(t, gwOpts{maxBody: 8 << 10, maxInflight: 8 << 10, wrap: func(l Log) Log { g.Log = l; return g }})
	body := e.event("first", "")
	type result struct {
		code int
		res  Response
	}
	first := make(chan result, 1)
	go func() {
		code, res, _ := e.post(t, "pageviews", "application/x-ndjson", body+strings.Repeat(" ", 6000))
		first <- result{code, res}
	}()
	<-g.entered // the first request holds 6 KiB of the 8 KiB

	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			code, _, hdr := e.post(t, "pageviews", "application/x-ndjson", e.event(fmt.Sprintf("c%d", i), strings.Repeat(" ", 4000)))
			codes[i] = code
			if code == http.StatusTooManyRequests {
				require.Equal(t, "1", hdr.Get("Retry-After"))
				require.Less(t, time.Since(start), time.Second, "429 must come at once")
			}
		}()
	}
	wg.Wait()
	for _, c := range codes {
		require.Equal(t, http.StatusTooManyRequests, c)
	}
	require.Equal(t, 6000.0+float64(len(body)), metricValue(t, e.reg, "tandem_ingest_inflight_bytes", nil))
	close(g.release)
	r := <-first
	require.Equal(t, http.StatusOK, r.code)
	require.Equal(t, 1, r.res.Accepted)
	code, _, _ := e.post(t, "pageviews", "application/x-ndjson", e.event("after", ""))
	require.Equal(t, http.StatusOK, code, "capacity is given back")
	require.Len(t, e.readTopic(t), 2)
	require.Equal(t, 8.0, metricValue(t, e.reg, "tandem_ingest_request_duration_seconds", map[string]string{"code": "429"}))
}

func TestGracefulShutdownFinishesInFlightRequest(t *testing.T) {
	g := newGate()
	e := startGateway(t, gwOpts{wrap: func(l Log) Log { g.Log = l; return g }})
	var events []string
	for i := 0; i < 500; i++ {
		events = append(events, e.event(fmt.Sprintf("g%d", i), `,"country":"FR"`))
	}
	type result struct {
		code int
		res  Response
	}
	out := make(chan result, 1)
	go func() {
		code, res, _ := e.post(t, "pageviews", "application/x-ndjson", strings.Join(events, "\n"))
		out <- result{code, res}
	}()
	<-g.entered
	e.cancel() // SIGTERM
	// New connections are refused once the listener is closed.
	require.Eventually(t, func() bool {
		_, err := http.Post(e.url+"/v1/streams/pageviews/events", "application/x-ndjson", bytes.NewReader(nil))
		return err != nil
	}, 5*time.Second, 10*time.Millisecond)
	close(g.release)
	r := <-out
	require.Equal(t, http.StatusOK, r.code)
	require.Equal(t, 500, r.res.Accepted)
	require.NoError(t, <-e.done)
	e.done <- nil // for the cleanup
	require.Len(t, e.readTopic(t), 500)
}

func TestRejectReasonAndSplitArray(t *testing.T) {
	els, err := splitArray([]byte(` [ {"a":"x,]"} , [1,[2]], "s\"]" ,3 ] `), 4)
	require.NoError(t, err)
	require.Equal(t, []string{`{"a":"x,]"}`, `[1,[2]]`, `"s\"]"`, `3`}, toStrings(els))
	_, err = splitArray([]byte(` [ {"a":"x,]"} , [1,[2]], "s\"]" ,3 ] `), 3)
	require.ErrorIs(t, err, errTooManyEvents)
	els, err = splitArray([]byte(`[]`), 1)
	require.NoError(t, err)
	require.Empty(t, els)
	els, err = splitArray([]byte(`{"one":1}`), 1)
	require.NoError(t, err)
	require.Equal(t, []string{`{"one":1}`}, toStrings(els))
	els, err = splitLines([]byte("\n a \r\n\n\tb"), 2)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, toStrings(els))
	_, err = splitLines([]byte("\n a \r\n\n\tb"), 1)
	require.ErrorIs(t, err, errTooManyEvents)
	// Blank lines are not events: a body of only newlines is no events,
	// whatever its size.
	els, err = splitLines(bytes.Repeat([]byte("\n"), 1<<20), 1)
	require.NoError(t, err)
	require.Empty(t, els)
}

func toStrings(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}
