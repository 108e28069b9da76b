// Package ingest is tandem's HTTP ingest gateway: it validates events against
// their stream's schema and appends the valid ones to the stream's log
// (Kafka), acknowledged by every in-sync replica before it answers. The
// subpackage gen generates realistic load for it.
package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving/openapi"
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

// Options configure a Gateway.
type Options struct {
	Config *schemas.Config // streams, ingest section, auth.ingest_tokens
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
	cfg      *schemas.Config
	log      Log
	logger   *slog.Logger
	reg      *prometheus.Registry
	now      func() time.Time
	maxMsg   int64
	streams  map[string]*streamState
	tokens   [][sha256.Size]byte
	inflight atomic.Int64
	maxBody  int64
	maxIn    int64
	timeout  time.Duration
	m        *metrics
	server   *ops.HTTPServer
	stopping atomic.Bool
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
func New(o Options) (*Gateway, error) {
	if o.Config == nil {
		return nil, errors.New("ingest: no configuration")
	}
	if o.Log == nil {
		return nil, errors.New("ingest: no log to append to")
	}
	cfg := o.Config
	g := &Gateway{
		cfg: cfg, log: o.Log, logger: o.Logger, reg: o.Registry, now: o.Now, maxMsg: o.MaxMessageBytes,
		streams: map[string]*streamState{},
		maxBody: cfg.Ingest.MaxBodyBytes, maxIn: cfg.Ingest.MaxInflightBytes, timeout: cfg.Ingest.ProduceTimeout.D(),
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
		g.maxBody = schemas.Default().Ingest.MaxBodyBytes
	}
	if g.maxIn < g.maxBody {
		g.maxIn = g.maxBody
	}
	if g.timeout <= 0 {
		g.timeout = schemas.Default().Ingest.ProduceTimeout.D()
	}
	m, err := newMetrics(g.reg)
	if err != nil {
		return nil, err
	}
	g.m = m
	for _, tok := range cfg.Auth.IngestTokens {
		if tok == "" {
			return nil, errors.New("ingest: auth.ingest_tokens has an empty token")
		}
		g.tokens = append(g.tokens, sha256.Sum256([]byte(tok)))
	}
	for _, s := range cfg.Streams {
		h := map[string]string{HeaderStream: s.Name, HeaderSchema: s.SchemaVersion()}
		var hb int64
		for k, v := range h {
			hb += int64(len(k)+len(v)) + 16
		}
		g.streams[s.Name] = &streamState{
			s: s, dec: schemas.NewDecoder(s, cfg.Ingest.MaxFutureSkew.D()), headers: h, hdrBytes: hb,
			accepted: m.accepted.WithLabelValues(s.Name),
			bytes:    m.bytes.WithLabelValues(s.Name),
			prodErrs: m.produceErrors.WithLabelValues(s.Name),
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/streams/{stream}/events", g.serveEvents)
	mux.Handle("GET /v1/openapi.json", openapi.Handler())
	ops.Mount(mux, g.reg, g)
	g.server = &ops.HTTPServer{
		Name: "ingest", Addr: cfg.Ingest.Listen, Handler: mux,
		CertFile: cfg.Ingest.TLS.CertFile, KeyFile: cfg.Ingest.TLS.KeyFile,
		ShutdownTimeout: g.timeout + 5*time.Second, Log: g.logger,
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
	if len(g.tokens) == 0 {
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
	if !g.authorized(r) {
		g.m.authFailures.WithLabelValues(AuthEndpoint).Inc()
		// Who was refused, never what they sent: the token stays out of logs.
		g.logger.Warn("ingest: refused a request without a valid bearer token", "remote", r.RemoteAddr,
			"path", r.URL.Path, "authorization_header", r.Header.Get("Authorization") != "")
		w.Header().Set("WWW-Authenticate", `Bearer realm="tandem-ingest"`)
		return fail(w, http.StatusUnauthorized, "missing or invalid bearer token")
	}
	name := r.PathValue("stream")
	st := g.streams[name]
	if st == nil {
		return fail(w, http.StatusNotFound, fmt.Sprintf("unknown stream %q", name))
	}
	ndjson, err := bodyFormat(r.Header.Get("Content-Type"))
	if err != nil {
		return fail(w, http.StatusUnsupportedMediaType, err.Error())
	}
	if r.ContentLength > g.maxBody {
		return fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes is over the limit of %d (ingest.max_body_bytes); send smaller batches", r.ContentLength, g.maxBody))
	}
	// Reserve the body's bytes before reading it: under overload answer at
	// once rather than queue without bound. Without a length, reserve the
	// most a body may be, and give back the rest once it is read.
	reserve := r.ContentLength
	if reserve < 0 {
		reserve = g.maxBody
	}
	if !g.acquire(reserve) {
		w.Header().Set("Retry-After", "1")
		return fail(w, http.StatusTooManyRequests, "the gateway is at its in-flight limit (ingest.max_inflight_bytes); retry shortly")
	}
	defer func() { g.release(reserve) }()

	body, err := readBody(w, r, g.maxBody)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the limit of %d bytes (ingest.max_body_bytes); send smaller batches", g.maxBody))
		}
		return fail(w, http.StatusBadRequest, "could not read the body: "+err.Error())
	}
	if n := int64(len(body)); n < reserve {
		g.release(reserve - n)
		reserve = n
	}
	st.bytes.Add(float64(len(body)))

	var events [][]byte
	if ndjson {
		events = splitLines(body)
	} else if events, err = splitArray(body); err != nil {
		return fail(w, http.StatusBadRequest, err.Error())
	}

	// The ingest time is the record's timestamp, so a consumer re-validating
	// the record against the same skew reaches the same verdict. Kafka keeps
	// milliseconds.
	ingestTime := g.now().UTC().Truncate(time.Millisecond)
	resp := Response{Errors: []EventError{}}
	keys := make([][]byte, 0, len(events))
	values := make([][]byte, 0, len(events))
	reject := func(i int, reason, msg string) {
		resp.Rejected++
		g.m.rejected.WithLabelValues(st.s.Name, reason).Inc()
		if len(resp.Errors) < MaxErrors {
			resp.Errors = append(resp.Errors, EventError{Index: i, Error: msg})
		}
	}
	for i, raw := range events {
		ev, err := st.dec.Decode(raw, ingestTime)
		if err != nil {
			reject(i, rejectReason(err), err.Error())
			continue
		}
		if g.maxMsg > 0 {
			if n := int64(len(ev.ID)+len(raw)) + 64 + st.hdrBytes; n > g.maxMsg {
				reject(i, "too_large", fmt.Sprintf("event of %d bytes is over the log's record limit of %d bytes", len(raw), g.maxMsg))
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

// authorized checks the bearer token in constant time: both sides are
// hashed first, so neither the token's bytes nor its length leak through
// timing, and every configured token is compared.
func (g *Gateway) authorized(r *http.Request) bool {
	if len(g.tokens) == 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	ok := 0
	for i := range g.tokens {
		ok |= subtle.ConstantTimeCompare(sum[:], g.tokens[i][:])
	}
	return ok == 1
}

func (g *Gateway) acquire(n int64) bool {
	for {
		cur := g.inflight.Load()
		if cur+n > g.maxIn {
			return false
		}
		if g.inflight.CompareAndSwap(cur, cur+n) {
			g.m.inflight.Add(float64(n))
			return true
		}
	}
}

func (g *Gateway) release(n int64) {
	g.inflight.Add(-n)
	g.m.inflight.Sub(float64(n))
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

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength > 0 {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		// A body longer than its Content-Length is cut by net/http; nothing
		// more to read.
		return buf, nil
	}
	return io.ReadAll(rd)
}

// splitLines returns the non-blank lines of an NDJSON body, trimmed. Blank
// lines are skipped and not counted: event indexes count events.
func splitLines(body []byte) [][]byte {
	out := make([][]byte, 0, bytes.Count(body, []byte{'\n'})+1)
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			out = append(out, line)
		}
	}
	return out
}

// splitArray returns the elements of a JSON array body, each its original
// bytes. A single object is taken as an array of one. The body must be valid
// JSON as a whole (otherwise element boundaries are unknowable); elements
// are validated one by one later.
func splitArray(body []byte) ([][]byte, error) {
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
	depth, inString, escaped, start := 0, false, false, -1
	for i, c := range body {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth == 1 {
				start = i + 1
			}
		case '}', ']':
			if depth == 1 {
				if el := bytes.TrimSpace(body[start:i]); len(el) > 0 {
					out = append(out, el)
				}
			}
			depth--
		case ',':
			if depth == 1 {
				out = append(out, bytes.TrimSpace(body[start:i]))
				start = i + 1
			}
		}
	}
	return out, nil
}

// rejectReason is the bounded label of a validation failure.
func rejectReason(err error) string {
	var fe *schemas.FieldError
	switch {
	case errors.Is(err, schemas.ErrFutureEvent):
		return "future_time"
	case !errors.As(err, &fe):
		return "invalid"
	case fe.Field == "":
		return "malformed"
	case fe.Reason == "required field is missing":
		return "missing_field"
	}
	return "bad_field"
}

func fail(w http.ResponseWriter, code int, msg string) int {
	return writeJSON(w, code, Response{Errors: []EventError{}, Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
	return code
}
