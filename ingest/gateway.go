// Package ingest is tandem's HTTP ingest gateway: it validates events against
// their stream's schema and appends the valid ones to the stream's log
// (Kafka), acknowledged by every in-sync replica before it answers. The
// subpackage gen generates realistic load for it.
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/schemas/openapi"
)

// Log is where the gateway appends events: one topic per stream, the event
// id as key, the event's bytes as value.
type Log interface {
	// Append writes keys[i]/values[i] to topic, all with timestamp ts and
	// the given headers. It returns nil only when every record is
	// acknowledged by all in-sync replicas. On error the caller must assume
	// any subset was written (and may still be written after Append
	// returns), and must not modify the slices.
	Append(ctx context.Context, topic string, ts time.Time, headers map[string]string, keys, values [][]byte) error
	// Ready reports whether the log can take writes now.
	Ready() error
}

// Headers the gateway puts on every record.
const (
	HeaderStream = "tandem-stream" // the stream's name
	HeaderSchema = "tandem-schema" // Stream.SchemaVersion() the event was validated against
)

// MaxErrors caps the errors listed in one response; "rejected" still counts
// all of them.
const MaxErrors = 100

// AuthEndpoint is the endpoint label of the gateway's auth failures in
// tandem_auth_failures_total.
const AuthEndpoint = "ingest"

// Deps are what a Gateway reads from and writes to. Schema and Log are
// required.
type Deps struct {
	Schema *schemas.Config // streams, max_future_skew, auth.ingest_tokens
	Log    Log
	// Registry receives the gateway's tandem_ingest_* metrics and
	// tandem_auth_failures_total; /metrics serves it. Nil: a fresh one.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// MaxMessageBytes rejects events whose record (key, value, headers)
	// would be larger, since the log refuses a whole write over its limit.
	// Zero: no check.
	MaxMessageBytes int64
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Gateway is the HTTP ingest gateway, an ops.Component.
type Gateway struct {
	cfg         *schemas.Config
	conf        Config
	log         Log
	logger      *slog.Logger
	reg         *prometheus.Registry
	now         func() time.Time
	maxMsg      int64
	streams     map[string]*streamState
	auth        *ops.Bearer
	budget      *budget
	maxBody     int64
	maxEvents   int
	timeout     time.Duration
	readTimeout time.Duration
	m           *metrics
	server      *ops.HTTPServer
	stopping    atomic.Bool
}

type streamState struct {
	s        *schemas.Stream
	dec      *schemas.Decoder
	headers  map[string]string
	hdrBytes int64
	accepted prometheus.Counter
	bytes    prometheus.Counter
	prodErrs prometheus.Counter
}

// New builds a gateway. It does not listen until Listen or Run.
func New(conf Config, o Deps) (*Gateway, error) {
	if o.Schema == nil {
		return nil, errors.New("ingest: no configuration")
	}
	if o.Log == nil {
		return nil, errors.New("ingest: no log to append to")
	}
	cfg := o.Schema
	g := &Gateway{
		cfg: cfg, conf: conf, log: o.Log, logger: o.Logger, reg: o.Registry, now: o.Now, maxMsg: o.MaxMessageBytes,
		streams: map[string]*streamState{},
		maxBody: conf.MaxBodyBytes, maxEvents: conf.MaxEventsPerRequest, timeout: conf.ProduceTimeout.D(),
		readTimeout: conf.ReadTimeout.D(),
	}
	if g.logger == nil {
		g.logger = slog.Default()
	}
	if g.reg == nil {
		g.reg = ops.NewRegistry()
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.maxBody <= 0 {
		g.maxBody = DefaultConfig().MaxBodyBytes
	}
	if g.maxEvents <= 0 {
		g.maxEvents = DefaultConfig().MaxEventsPerRequest
	}
	maxIn := max(conf.MaxInflightBytes, g.maxBody)
	perClient := conf.InflightPerClient()
	if perClient <= 0 || perClient > maxIn {
		perClient = maxIn
	}
	if g.timeout <= 0 {
		g.timeout = DefaultConfig().ProduceTimeout.D()
	}
	m, err := newMetrics(g.reg)
	if err != nil {
		return nil, err
	}
	g.m = m
	g.budget = newBudget(maxIn, perClient, m.inflight)
	for _, tok := range cfg.Auth.IngestTokens {
		if tok == "" {
			return nil, errors.New("ingest: auth.ingest_tokens has an empty token")
		}
	}
	g.auth = ops.NewBearer(cfg.Auth.IngestTokens)
	for _, s := range cfg.Streams {
		h := map[string]string{HeaderStream: s.Name, HeaderSchema: s.SchemaVersion()}
		var hb int64
		for k, v := range h {
			hb += int64(len(k)+len(v)) + 16
		}
		g.streams[s.Name] = &streamState{
			s: s, dec: schemas.NewDecoder(s, cfg.MaxFutureSkew.D()), headers: h, hdrBytes: hb,
			accepted: m.accepted.WithLabelValues(s.Name),
			bytes:    m.bytes.WithLabelValues(s.Name),
			prodErrs: m.produceErrors.WithLabelValues(s.Name),
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/streams/{stream}/events", g.serveEvents)
	mux.Handle("GET /v1/openapi.json", openapi.Handler())
	ops.MountAuth(mux, g.reg, ops.NewBearer(cfg.Auth.MetricsTokens), g)
	t := conf.HTTPTimeouts
	g.server = &ops.HTTPServer{
		Name: "ingest", Addr: conf.Listen, Handler: mux,
		CertFile: conf.TLS.CertFile, KeyFile: conf.TLS.KeyFile,
		ShutdownTimeout: g.timeout + 5*time.Second, Log: g.logger,
		Timeouts: ops.Timeouts{ReadHeader: t.ReadHeaderTimeout.D(), Read: t.ReadTimeout.D(), Write: t.WriteTimeout.D(), Idle: t.IdleTimeout.D()},
	}
	return g, nil
}

// Handler is the gateway's HTTP handler: the events endpoint and /healthz,
// /readyz, /metrics.
func (g *Gateway) Handler() http.Handler { return g.server.Handler }

// Listen binds the configured address now (see ops.HTTPServer.Listen).
func (g *Gateway) Listen() error { return g.server.Listen() }

// Addr is the address listened on.
func (g *Gateway) Addr() string { return g.server.BoundAddr() }

// Run serves until ctx is cancelled, then stops accepting connections and
// waits for in-flight requests to finish (each bounded by the produce
// timeout). Closing the Log afterwards, which flushes it, is the caller's job.
func (g *Gateway) Run(ctx context.Context) error {
	if g.auth.Open() {
		g.logger.Warn("ingest is open to anyone: auth.ingest_tokens is empty; set tokens before exposing this port")
	}
	err := g.server.Run(ctx)
	g.stopping.Store(true)
	return err
}

// Ready reports whether the log can take writes.
func (g *Gateway) Ready() error {
	if g.stopping.Load() {
		return errors.New("ingest is shutting down")
	}
	return g.log.Ready()
}

// EventError is one rejected event of a request.
type EventError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Response is the body of every answer of the events endpoint. Error is set
// only when the request as a whole failed.
type Response struct {
	Accepted int          `json:"accepted"`
	Rejected int          `json:"rejected"`
	Errors   []EventError `json:"errors"`
	Error    string       `json:"error,omitempty"`
}

// serveEvents implements POST /v1/streams/{stream}/events.
//
// Semantics of a failed write: the gateway hands all valid events of a
// request to Kafka in one call. When Kafka does not acknowledge every one of
// them within ingest.produce_timeout, the answer is 503 with Retry-After and
// "accepted": 0: the client retries the whole request. Some of the events
// may already be in Kafka; the retry then writes them again, which is
// harmless because every consumer keeps the first occurrence of an id. So a
// 200 means exactly the events not listed in "errors" are in Kafka, and a 503
// means none is promised.
func (g *Gateway) serveEvents(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := g.events(w, r)
	g.m.requests.WithLabelValues(strconv.Itoa(code)).Observe(time.Since(start).Seconds())
}

func (g *Gateway) events(w http.ResponseWriter, r *http.Request) int {
	ok, client := g.auth.Check(r)
	if !ok {
		g.m.authFailures.WithLabelValues(AuthEndpoint).Inc()
		// Who was refused, never what they sent: the token stays out of logs.
		g.logger.Warn("ingest: refused a request without a valid bearer token", "remote", r.RemoteAddr,
			"path", r.URL.Path, "authorization_header", r.Header.Get("Authorization") != "")
		w.Header().Set("WWW-Authenticate", `Bearer realm="tandem-ingest"`)
		return g.refuse(w, r, 0, http.StatusUnauthorized, "missing or invalid bearer token")
	}
	name := r.PathValue("stream")
	st := g.streams[name]
	if st == nil {
		return g.refuse(w, r, 0, http.StatusNotFound, fmt.Sprintf("unknown stream %q", name))
	}
	ndjson, err := bodyFormat(r.Header.Get("Content-Type"))
	if err != nil {
		return g.refuse(w, r, 0, http.StatusUnsupportedMediaType, err.Error())
	}
	if r.ContentLength > g.maxBody {
		g.m.refused.WithLabelValues("max_body_bytes").Inc()
		return g.refuse(w, r, 0, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes is over the limit of %d (ingest.max_body_bytes); send smaller batches", r.ContentLength, g.maxBody))
	}

	body, held, code, msg := g.readBody(r, client)
	if code != 0 {
		g.budget.release(client, held)
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		return g.refuse(w, r, int64(len(body)), code, msg)
	}
	defer g.budget.release(client, held)
	st.bytes.Add(float64(len(body)))

	var events [][]byte
	if ndjson {
		events, err = splitLines(body, g.maxEvents)
	} else {
		events, err = splitArray(body, g.maxEvents)
	}
	if errors.Is(err, errTooManyEvents) {
		g.m.refused.WithLabelValues("max_events_per_request").Inc()
		return fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request has more than %d events, the limit (ingest.max_events_per_request); send smaller batches", g.maxEvents))
	}
	if err != nil {
		return fail(w, http.StatusBadRequest, err.Error())
	}

	// The ingest time is the record's timestamp, so a consumer re-validating
	// the record against the same skew reaches the same verdict. Kafka keeps
	// milliseconds.
	ingestTime := g.now().UTC().Truncate(time.Millisecond)
	resp := Response{Errors: []EventError{}}
	keys := make([][]byte, 0, len(events))
	values := make([][]byte, 0, len(events))
	// The message is built only for the first MaxErrors rejections, so a
	// body of many bad events costs no string per event.
	reject := func(i int, reason string, msg func() string) {
		resp.Rejected++
		g.m.rejected.WithLabelValues(st.s.Name, reason).Inc()
		if len(resp.Errors) < MaxErrors {
			resp.Errors = append(resp.Errors, EventError{Index: i, Error: msg()})
		}
	}
	for i, raw := range events {
		ev, err := st.dec.Decode(raw, ingestTime)
		if err != nil {
			reject(i, rejectReason(err), err.Error)
			continue
		}
		if g.maxMsg > 0 {
			if n := int64(len(ev.ID)+len(raw)) + 64 + st.hdrBytes; n > g.maxMsg {
				reject(i, schemas.ReasonTooLarge.String(), func() string {
					return fmt.Sprintf("event of %d bytes is over the log's record limit of %d bytes", len(raw), g.maxMsg)
				})
				continue
			}
		}
		keys = append(keys, []byte(ev.ID))
		values = append(values, raw)
	}

	if len(values) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
		t0 := time.Now()
		err := g.log.Append(ctx, st.s.Topic, ingestTime, st.headers, keys, values)
		cancel()
		g.m.produce.Observe(time.Since(t0).Seconds())
		if err != nil {
			st.prodErrs.Add(float64(len(values)))
			g.logger.Warn("kafka did not take a write", "stream", st.s.Name, "events", len(values), "err", err)
			w.Header().Set("Retry-After", "1")
			resp.Error = fmt.Sprintf("Kafka did not acknowledge the write within %s; no event of this request is accepted, retry it (events already written are dropped as duplicates by id)", g.timeout)
			return writeJSON(w, http.StatusServiceUnavailable, resp)
		}
		resp.Accepted = len(values)
		st.accepted.Add(float64(len(values)))
	}
	return writeJSON(w, http.StatusOK, resp)
}

// bodyFormat tells NDJSON (true) from a JSON array (false).
func bodyFormat(contentType string) (ndjson bool, err error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, fmt.Errorf("content type %q is not one of application/x-ndjson or application/json", contentType)
	}
	switch mt {
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		return true, nil
	case "application/json":
		return false, nil
	}
	return false, fmt.Errorf("content type %q is not one of application/x-ndjson or application/json", mt)
}

// firstBuffer is the body buffer a request starts with; it grows as bytes
// arrive, so a client that declares a large body and sends little holds
// little.
const firstBuffer = 64 << 10

// readBody reads the request body into a buffer that grows (doubling, from
// firstBuffer up to max_body_bytes) only as bytes arrive, reserving each
// growth against the gateway's and the client's in-flight budgets first.
// held is what was reserved (the buffer's capacity); the caller releases it
// when done, whatever the outcome. A non-zero code is the refusal: 429 at an
// in-flight limit, 413 over max_body_bytes, 408 when the body did not
// arrive within ingest.read_timeout, 400 for another read error.
func (g *Gateway) readBody(r *http.Request, client string) (body []byte, held int64, code int, msg string) {
	limit := g.maxBody
	known := r.ContentLength >= 0 && r.ContentLength <= limit
	if known {
		// net/http ends the body at its declared length, so that is all
		// there is to hold; the length only caps growth, it reserves nothing.
		limit = r.ContentLength
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= limit {
				if known {
					break
				}
				// Full at max_body_bytes with no declared length: one more
				// byte means the body is over the limit.
				var probe [1]byte
				n, err := io.ReadFull(r.Body, probe[:])
				if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
					break
				}
				if err != nil && n == 0 {
					code, msg := g.readError(err, len(buf))
					return buf, held, code, msg
				}
				g.m.refused.WithLabelValues("max_body_bytes").Inc()
				return buf, held, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the limit of %d bytes (ingest.max_body_bytes); send smaller batches", g.maxBody)
			}
			grow := min(max(int64(cap(buf)), firstBuffer), limit-int64(cap(buf)))
			if which := g.budget.acquire(client, grow); which != "" {
				g.m.refused.WithLabelValues(which).Inc()
				return buf, held, http.StatusTooManyRequests, fmt.Sprintf("the gateway is at its in-flight limit (ingest.%s); retry shortly", which)
			}
			held += grow
			next := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(next, buf)
			buf = next
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			code, msg := g.readError(err, len(buf))
			return buf, held, code, msg
		}
	}
	return buf, held, 0, ""
}

// readError is the answer to a body that could not be read: 408 when it
// did not arrive within ingest.read_timeout, 400 otherwise.
func (g *Gateway) readError(err error, got int) (int, string) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		g.m.refused.WithLabelValues("read_timeout").Inc()
		return http.StatusRequestTimeout, fmt.Sprintf("the body did not arrive within %s (ingest.read_timeout); %d bytes were received", g.readTimeout, got)
	}
	return http.StatusBadRequest, "could not read the body: " + err.Error()
}

// refuse answers a request refused before its body was read to the end
// (read bytes of it were), then reads and discards what is left of the
// body, at most twice max_body_bytes. Clients that send the whole body
// before reading (Python's urllib and requests) would otherwise see the
// connection reset instead of the refusal: a socket closed with unread
// bytes makes the kernel send a reset, which can discard the answer before
// the client reads it. The answer is written and flushed first, so clients
// that read early have it at once; draining holds no memory and ends at
// ingest.read_timeout like any read. A longer body closes the connection.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, read int64, code int, msg string) int {
	rc := http.NewResponseController(w)
	// Without full duplex, net/http itself reads at most 256 KiB of the
	// body before writing the answer and closes the connection otherwise.
	duplex := rc.EnableFullDuplex() == nil
	drain := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if drain && strings.EqualFold(r.Header.Get("Expect"), "100-continue") && read == 0 {
		// The client waits for "100 Continue" before sending the body, and
		// gets the refusal instead: there is nothing to drain.
		w.Header().Set("Connection", "close")
		drain = false
	}
	if drain && r.ContentLength > 0 && r.ContentLength-read > 2*g.maxBody {
		w.Header().Set("Connection", "close")
		drain = false
	}
	fail(w, code, msg)
	if drain && duplex {
		rc.Flush()
		io.CopyN(io.Discard, r.Body, 2*g.maxBody)
	}
	return code
}

// errTooManyEvents is splitLines' and splitArray's answer to a body with
// more events than allowed.
var errTooManyEvents = errors.New("too many events")

// splitLines returns the non-blank lines of an NDJSON body, trimmed, or
// errTooManyEvents past maxEvents of them. Blank lines are skipped and not
// counted: event indexes count events. The slice grows with the events
// found, never from a count taken from the body.
func splitLines(body []byte, maxEvents int) ([][]byte, error) {
	var out [][]byte
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			if len(out) == maxEvents {
				return nil, errTooManyEvents
			}
			out = append(out, line)
		}
	}
	return out, nil
}

// splitArray returns the elements of a JSON array body, each its original
// bytes, or errTooManyEvents past maxEvents of them. A single object is
// taken as an array of one. The body must be valid JSON as a whole
// (otherwise element boundaries are unknowable); elements are validated one
// by one later.
func splitArray(body []byte, maxEvents int) ([][]byte, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("body is empty; send a JSON array of events")
	}
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, fmt.Errorf("body is not valid JSON: %v", err)
	}
	switch body[0] {
	case '{':
		return [][]byte{body}, nil
	case '[':
	default:
		return nil, errors.New("body is not a JSON array of events")
	}
	var out [][]byte
	add := func(el []byte) error {
		if len(out) == maxEvents {
			return errTooManyEvents
		}
		out = append(out, el)
		return nil
	}
	depth, start := 0, -1
	var js schemas.JSONStructure
	for i, c := range body {
		if !js.Outside(c) {
			continue
		}
		switch c {
		case '{', '[':
			depth++
			if depth == 1 {
				start = i + 1
			}
		case '}', ']':
			if depth == 1 {
				if el := bytes.TrimSpace(body[start:i]); len(el) > 0 {
					if err := add(el); err != nil {
						return nil, err
					}
				}
			}
			depth--
		case ',':
			if depth == 1 {
				if err := add(bytes.TrimSpace(body[start:i])); err != nil {
					return nil, err
				}
				start = i + 1
			}
		}
	}
	return out, nil
}

// rejectReason is the bounded label of a validation failure.
func rejectReason(err error) string { return schemas.ReasonOf(err).String() }

func fail(w http.ResponseWriter, code int, msg string) int {
	return writeJSON(w, code, Response{Errors: []EventError{}, Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// A known length lets a refusal be complete on the wire while the rest
	// of the body is still being drained (see refuse).
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
	return code
}

// budget is the gateway's in-flight byte accounting: the body buffers held
// by requests in progress, in total and per client, each bounded.
type budget struct {
	mu        sync.Mutex
	total     int64
	max       int64
	perClient map[string]int64
	maxClient int64
	gauge     prometheus.Gauge
}

func newBudget(max, maxClient int64, gauge prometheus.Gauge) *budget {
	return &budget{max: max, maxClient: maxClient, perClient: map[string]int64{}, gauge: gauge}
}

// acquire reserves n bytes for client. It returns "" when they were
// reserved, else the name of the setting that refused them.
func (b *budget) acquire(client string, n int64) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.perClient[client]+n > b.maxClient {
		return "max_inflight_bytes_per_client"
	}
	if b.total+n > b.max {
		return "max_inflight_bytes"
	}
	b.total += n
	b.perClient[client] += n
	b.gauge.Add(float64(n))
	return ""
}

// release gives back n bytes of client's.
func (b *budget) release(client string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if left := b.perClient[client] - n; left > 0 {
		b.perClient[client] = left
	} else {
		delete(b.perClient, client)
	}
	b.gauge.Sub(float64(n))
}
