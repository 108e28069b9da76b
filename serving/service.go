package serving

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/schemas/openapi"
)

// speedTimeout bounds the speed half of one query. A ClickHouse that hangs
// must not hang the API: past this, the answer comes from the batch view
// alone, with the warning, or a 503 when ClickHouse is up but busy (see
// speedVerdict). A variable only so tests can shorten it.
var speedTimeout = 15 * time.Second

// ErrOverloaded is wrapped by errors of queries refused because the speed
// layer is at capacity: ClickHouse is up but did not answer the speed half
// in time. The HTTP layer answers 503 with Retry-After; the same query
// succeeds once the load passes. (A replica whose slots and queue are full
// refuses before the query starts: see admission.)
var ErrOverloaded = errors.New("overloaded")

// ErrSpeedBusy is wrapped by a SpeedSource's errors when the speed store
// is reachable but refused or could not finish the query for load (too
// many queries, a server-side time or memory limit). Unlike an unreachable
// store, it makes the query fail with ErrOverloaded rather than answer
// from the batch view alone.
var ErrSpeedBusy = errors.New("speed store busy")

// Retry-After values (seconds): a query slot or a place in the queue
// frees within about one query's time; a busy or unreachable store takes longer.
const (
	retryFull = "1"
	retryBusy = "5"
)

// Deps are what the service reads from. Schema, Manifests and Files are
// required;
// Speed may be nil (every answer then carries the speed-layer warning).
type Deps struct {
	// Schema holds the views answered, the chunk size and the tokens;
	// required.
	Schema    *schemas.Config
	Manifests ManifestStore
	Files     ViewFiles
	Speed     SpeedSource
	// Leases, when set, holds this replica's serving lease (the bucket the
	// manifests are in), so the batch job deletes no speed row it may
	// read. Without it the replica switches runs at once and relies on
	// no deletion happening behind it (tests, embedding).
	Leases objstore.Bucket
	// Replica names this replica in its lease; "" is the host and
	// serve.listen.
	Replica string
	// Registry receives the tandem_serve_* metrics and is served on /metrics;
	// nil makes a fresh ops.NewRegistry().
	Registry *prometheus.Registry
	Log      *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Service is the query API: GET /v1/views and GET /v1/views/{view}/query,
// with /healthz, /readyz and /metrics on the same handler. Run polls the
// manifests and serves HTTP on serve.listen until its context ends.
type Service struct {
	cfg       *schemas.Config
	conf      Config
	deps      Deps
	log       *slog.Logger
	now       func() time.Time
	reg       *prometheus.Registry
	m         *metrics
	manifests *manifests
	batch     *batchReader
	// buckets holds the batch half of answers per bucket (bucketcache.go).
	buckets *bucketCache
	// warmBudget is the cache bytes one view's warm-up may fill.
	warmBudget int64
	mux        *http.ServeMux
	// admit holds serve.max_concurrent_queries slots and the bounded
	// queue of queries waiting for one (see admission).
	admit  *admission
	auth   *ops.Bearer
	server *ops.HTTPServer
}

var (
	_ ops.Component    = (*Service)(nil)
	_ ops.ReadyChecker = (*Service)(nil)
)

// New builds the service for cfg. It does no I/O.
func New(conf Config, deps Deps) (*Service, error) {
	if deps.Schema == nil || deps.Manifests == nil || deps.Files == nil {
		return nil, errors.New("serving: Deps.Schema, Deps.Manifests and Deps.Files are required")
	}
	cfg := deps.Schema
	s := &Service{cfg: cfg, conf: conf, deps: deps, log: deps.Log, now: deps.Now, reg: deps.Registry}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "serve")
	if s.now == nil {
		s.now = time.Now
	}
	if s.reg == nil {
		s.reg = ops.NewRegistry()
	}
	s.m = newMetrics(s.reg)
	slots := conf.MaxConcurrentQueries
	if slots <= 0 {
		slots = 2 * runtime.GOMAXPROCS(0)
	}
	s.admit = newAdmission(slots, conf.MaxQueuedQueries, conf.QueueTimeout.D())
	s.manifests = newManifests(deps.Manifests, cfg, conf.ManifestPoll.D(), s.now, s.m)
	if deps.Leases != nil {
		replica := deps.Replica
		if replica == "" {
			replica = replicaID(conf.Listen)
		}
		s.manifests.lease = newLeaser(deps.Leases, replica, s.manifests.staleAfter, s.now, s.m)
	}
	s.manifests.onSwitch = func(view, from, to string) {
		s.log.Info("switched to a new batch run", "view", view, "from_run", from, "to_run", to)
		// The old run's buckets answer no new query (their keys name the
		// run); a query still reading it may add some back, which age out.
		s.buckets.dropRun(view, from)
	}
	cacheBytes := conf.cacheBytes()
	// The speed source built by FromConfig keeps closed chunks' rollups in
	// speedCacheShare of serve.cache_bytes, the bucket cache takes
	// bucketCacheShare; the batch rows get the rest.
	s.buckets = newBucketCache(bucketCacheShare(cacheBytes), s.m)
	batchBytes := cacheBytes - speedCacheShare(cacheBytes) - bucketCacheShare(cacheBytes)
	s.batch = newBatchReader(deps.Files, batchBytes, s.m)
	// Each view may warm up to half the batch cache, shared by the views,
	// with the newest days of its new run before switching to it.
	s.warmBudget = batchBytes / int64(2*max(len(cfg.Views), 1))
	if conf.WarmCache {
		s.manifests.beforeSwitch = func(ctx context.Context, snap *Snapshot) { s.warm(ctx, snap, "switch") }
	}
	s.auth = ops.NewBearer(cfg.Auth.QueryTokens)
	s.registerGauges()

	s.mux = http.NewServeMux()
	s.mux.Handle("GET /v1/views", s.authorize("views", http.HandlerFunc(s.handleViews)))
	s.mux.Handle("GET /v1/views/{view}/query", s.authorize("query", http.HandlerFunc(s.handleQuery)))
	s.mux.Handle("GET /v1/openapi.json", openapi.Handler())
	metricsAuth := ops.NewBearer(cfg.Auth.MetricsTokens)
	ops.MountAuth(s.mux, s.reg, metricsAuth, s)
	if conf.Pprof {
		// Index serves the named profiles (heap, allocs, goroutine…)
		// below it; the CPU profile has its own handler.
		s.mux.Handle("GET /debug/pprof/", metricsAuth.Wrap("tandem-metrics", http.HandlerFunc(pprof.Index), nil))
		s.mux.Handle("GET /debug/pprof/profile", metricsAuth.Wrap("tandem-metrics", http.HandlerFunc(pprof.Profile), nil))
	}
	t := conf.HTTPTimeouts
	s.server = &ops.HTTPServer{Name: "serve", Addr: conf.Listen, Handler: s.mux,
		CertFile: conf.TLS.CertFile, KeyFile: conf.TLS.KeyFile, Log: s.log,
		Timeouts: ops.Timeouts{ReadHeader: t.ReadHeaderTimeout.D(), Read: t.ReadTimeout.D(), Write: t.WriteTimeout.D(), Idle: t.IdleTimeout.D()}}
	return s, nil
}

func (s *Service) registerGauges() {
	for _, vm := range s.manifests.order {
		vm := vm
		s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tandem_serve_batch_run_age_seconds",
			Help:        "Age of the batch run serving answers from (now - the run's creation); -1 when no run is published.",
			ConstLabels: prometheus.Labels{"view": vm.view.Name},
		}, func() float64 {
			snap := vm.current.Load()
			if snap == nil || snap.Manifest == nil || snap.Manifest.CreatedAt.IsZero() {
				return -1
			}
			return s.now().Sub(snap.Manifest.CreatedAt).Seconds()
		}))
	}
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tandem_serve_queries_in_flight",
		Help: "Queries being answered now (at most serve.max_concurrent_queries; more wait in the queue).",
	}, func() float64 { running, _ := s.admit.counts(); return float64(running) }))
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tandem_serve_queries_queued",
		Help: "Queries waiting for a slot now (at most serve.max_queued_queries, each for at most serve.queue_timeout).",
	}, func() float64 { _, waiting := s.admit.counts(); return float64(waiting) }))
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tandem_serve_cache_bytes",
		Help: "Estimated bytes held by the batch row cache (bounded by 1/2 of serve.cache_bytes; 1/4 is for closed speed chunks, 1/4 for the bucket cache).",
	}, func() float64 {
		b, _ := s.batch.cache.usage()
		return float64(b)
	}))
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tandem_serve_bucket_cache_bytes",
		Help: "Estimated bytes held by the bucket cache: the batch half of answers per bucket (bounded by 1/4 of serve.cache_bytes).",
	}, func() float64 {
		b, _ := s.buckets.lru.usage()
		return float64(b)
	}))
}

// cacheBytes is serve.cache_bytes, or its default when unset.
func (c Config) cacheBytes() int64 {
	if c.CacheBytes > 0 {
		return c.CacheBytes
	}
	return DefaultConfig().CacheBytes
}

// Registry is the registry the service's metrics are on.
func (s *Service) Registry() *prometheus.Registry { return s.reg }

// Handler serves the API, /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.mux }

// Mount adds another handler to the service's mux (the web dashboard mounts
// "/"). Call it before Run.
func (s *Service) Mount(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Listen binds serve.listen now (Run does it otherwise), so a taken port is
// reported before anything else starts.
func (s *Service) Listen() error { return s.server.Listen() }

// Addr is the address the service listens on (after Listen or Run).
func (s *Service) Addr() string { return s.server.BoundAddr() }

// Run loads the manifests, then polls them every serve.manifest_poll and
// serves HTTP(S) on serve.listen until ctx is cancelled, then shuts down
// gracefully.
func (s *Service) Run(ctx context.Context) error {
	if s.auth.Open() {
		s.log.Warn("the query API is open to anyone who can reach it: auth.query_tokens is empty (fine for development only)")
	}
	if s.deps.Speed == nil {
		s.log.Warn("no speed layer configured: answers hold only what the batch runs absorbed")
	}
	if err := s.manifests.refreshAll(ctx); err != nil {
		s.log.Warn("reading manifests at start-up; queries of that view answer 503 until it is readable", "err", err)
	}
	var wg sync.WaitGroup
	pctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	wg.Add(2)
	go func() {
		defer wg.Done()
		if !s.conf.WarmCache {
			return
		}
		// Warm the cache with the runs loaded at start-up while serving
		// (queries meanwhile read what they need themselves).
		for _, vm := range s.manifests.order {
			if snap := vm.current.Load(); snap != nil && snap.Err == nil && !snap.OtherDefinition {
				s.warm(pctx, snap, "start")
			}
		}
	}()
	go func() { defer wg.Done(); s.manifests.run(pctx) }()
	err := s.server.Run(ctx)
	cancel()
	wg.Wait()
	s.removeLease()
	return err
}

// removeLease deletes the lease after the last query, so the next batch
// job need not wait for it to expire.
func (s *Service) removeLease() {
	if s.manifests.lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.manifests.lease.remove(ctx); err != nil {
		s.log.Warn("removing the serving lease; the batch job writes it off after its TTL", "err", err)
	}
}

// warmTimeout bounds one view's warm-up, so a slow store delays a switch
// to a new run by at most this long.
const warmTimeout = time.Minute

// warm fills the cache with the newest row groups of snap's run (see
// batchReader.warm) and logs what it did; errors only shorten it.
func (s *Service) warm(ctx context.Context, snap *Snapshot, why string) {
	if snap.Manifest == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	t0 := time.Now()
	groups, bytes, err := s.batch.warm(ctx, snap, s.warmBudget)
	log := s.log.With("view", snap.View.Name, "run", snap.RunID(), "at", why, "row_groups", groups,
		"mib", bytes>>20, "took", time.Since(t0).Round(time.Millisecond))
	if err != nil && ctx.Err() == nil {
		log.Warn("warming the cache stopped early; queries read the rest themselves", "err", err)
		return
	}
	log.Info("warmed the cache with the newest batch rows")
}

// RunPoller only polls the manifests (for callers that serve Handler on
// their own server). It returns when ctx is cancelled.
func (s *Service) RunPoller(ctx context.Context) {
	s.manifests.run(ctx)
	s.removeLease()
}

// Ready reports whether the manifest store is reachable: every view's
// manifest was read on the last attempt.
func (s *Service) Ready() error { return s.manifests.ready() }

// authorize checks the bearer token when auth.query_tokens is set (the
// shared ops.Bearer check).
func (s *Service) authorize(endpoint string, h http.Handler) http.Handler {
	return s.auth.Wrap("tandem", h, func(w http.ResponseWriter, r *http.Request) {
		s.m.authFailures.WithLabelValues(endpoint).Inc()
		s.m.errors.WithLabelValues(endpoint, "401").Inc()
		writeError(w, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer <token>)")
	})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeErrorFields(w, code, msg, nil)
}

// ReasonBackfilling is the `reason` of a 503 for a view that is
// backfilling, and its `state` in /v1/views.
const ReasonBackfilling = "backfilling"

// retryBackfilling is the Retry-After of a backfilling view: a batch run
// over all history takes minutes, not seconds.
const retryBackfilling = "30"

// writeErrorReason writes the JSON error answer; reason, when set, is a
// machine-readable word beside the sentence.
func writeErrorReason(w http.ResponseWriter, code int, msg, reason string) {
	var fields map[string]string
	if reason != "" {
		fields = map[string]string{"reason": reason}
	}
	writeErrorFields(w, code, msg, fields)
}

// writeErrorFields is writeError with more fields beside "error", for a
// client to act on without parsing the sentence.
func writeErrorFields(w http.ResponseWriter, code int, msg string, fields map[string]string) {
	w.Header().Set("Content-Type", ContentJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	body := map[string]string{"error": msg}
	for k, v := range fields {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	w.Write(append(b, '\n'))
}

// statusWriter remembers the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Service) handleQuery(rw http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	name := r.PathValue("view")
	label := "unknown" // only configured names become label values
	v := s.resolve(r.Context(), name)
	if v != nil {
		label = v.Logical()
	}
	defer func() {
		code := w.code
		if code == 0 {
			code = 499 // client went away before an answer
		}
		s.m.queryDuration.WithLabelValues(label, strconv.Itoa(code)).Observe(time.Since(t0).Seconds())
		if code >= 400 {
			s.m.errors.WithLabelValues("query", strconv.Itoa(code)).Inc()
		}
	}()
	if v == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown view %q", clip(name)))
		return
	}
	q, err := ParseQuery(v, r.URL.RawQuery, s.conf.MaxQueryRange.D())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// The slot is held through encoding: the answer's groups stay in
	// memory until the last byte is written.
	out, waited := s.admit.admit(r.Context())
	if waited > 0 {
		s.m.queueWait.Observe(waited.Seconds())
	}
	switch out {
	case admitted:
		defer s.admit.release()
	case admitGone:
		return // the client is gone; nobody reads an answer
	case queueFull:
		s.m.overloaded.WithLabelValues(label, "queue_full").Inc()
		w.Header().Set("Retry-After", retryFull)
		queue := fmt.Sprintf("%d more are waiting (serve.max_queued_queries)", s.admit.maxWait)
		if s.admit.maxWait == 0 {
			queue = "none may wait (serve.max_queued_queries is 0)"
		}
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"%d queries are being answered by this replica (serve.max_concurrent_queries) and %s; retry after %s s",
			s.admit.slots, queue, retryFull))
		return
	case queueTimeout:
		s.m.overloaded.WithLabelValues(label, "queue_timeout").Inc()
		w.Header().Set("Retry-After", retryFull)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"waited %s (serve.queue_timeout) for one of this replica's %d query slots (serve.max_concurrent_queries); retry after %s s",
			s.admit.timeout, s.admit.slots, retryFull))
		return
	}
	res, err := s.Query(r.Context(), q)
	var tooMany *TooManyRowsError
	var retention *RetentionError
	switch {
	case err == nil:
	case r.Context().Err() != nil:
		return // the client is gone; nobody reads an answer
	case errors.As(err, &tooMany):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case errors.As(err, &retention):
		writeErrorFields(w, http.StatusBadRequest, err.Error(), map[string]string{"retained_from": retention.RetainedFrom.UTC().Format(time.RFC3339)})
		return
	case errors.Is(err, ErrOverloaded):
		s.m.overloaded.WithLabelValues(label, "speed").Inc()
		s.log.Warn("query refused for load", "view", v.Name, "err", err)
		w.Header().Set("Retry-After", retryBusy)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case errors.Is(err, ErrBackfilling):
		// Not a fault: the view waits for its first batch run.
		w.Header().Set("Retry-After", retryBackfilling)
		writeErrorReason(w, http.StatusServiceUnavailable, err.Error(), ReasonBackfilling)
		return
	case errors.Is(err, ErrUnavailable):
		s.log.Warn("query unanswerable", "view", v.Name, "err", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	default:
		s.log.Error("query failed", "view", v.Name, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Vary", "Accept, Authorization")
	if err := writeResult(w, negotiate(r.Header.Get("Accept")), res); err != nil {
		s.log.Warn("writing a query answer", "view", v.Name, "err", err)
	}
}

// Query answers q from one manifest snapshot: the batch rows of its run
// merged with the speed rows of the chunks it did not absorb. Errors wrap
// ErrUnavailable when the batch half cannot be read, are a
// *TooManyRowsError when the answer would pass serve.max_result_rows,
// *RetentionError when q.From is before the view's retained start, and
// wrap ErrOverloaded when the speed store is up but could not answer in
// time (see speedVerdict). A speed layer that is down is not an error but
// a warning in the result.
func (s *Service) Query(ctx context.Context, q *Query) (*Result, error) {
	if q.MaxRows == 0 || q.MaxGroups == 0 {
		qq := *q
		if qq.MaxRows == 0 {
			qq.MaxRows = s.conf.MaxResultRows
		}
		if qq.MaxGroups == 0 {
			qq.MaxGroups = s.conf.MergeGroups()
		}
		q = &qq
	}
	vm := s.manifests.views[q.View.Name]
	if vm == nil {
		return nil, fmt.Errorf("unknown view %q", q.View.Name)
	}
	// The one snapshot of this query: its files answer the batch half and
	// its K_p bound the speed half.
	snap, err := s.manifests.snapshot(ctx, vm)
	if err != nil {
		return nil, err
	}
	// Held until both halves are read: the lease keeps naming its run.
	defer snap.release()
	// Before the retained start some days are gone from the batch half
	// while late speed rows of them may remain: no answer there is exact,
	// so none is given. Before the first run the configured retention
	// says where the view starts.
	if retained := retainedStart(q.View, snap.Manifest, time.Now()); !retained.IsZero() && q.From.Before(retained) {
		return nil, &RetentionError{View: q.View.Name, RetainedFrom: retained}
	}
	res := &Result{Query: q, Freshness: Freshness{BatchRun: snap.RunID(), Absorbed: map[int32]int64{}}}
	if snap.Manifest != nil {
		res.Freshness.BatchCreatedAt = snap.Manifest.CreatedAt
		for p, off := range snap.Manifest.Absorbed {
			res.Freshness.Absorbed[p] = off
		}
	}

	if push := s.topNPath(q); push != nil {
		done, err := push(ctx, q, snap, res)
		if err != nil {
			return nil, err
		}
		if done {
			return res, nil
		}
	}
	if u, ok := cacheUnit(q); ok {
		groups, err := s.answerFromBuckets(ctx, q, snap, res, u)
		if !errors.Is(err, errOverBound) {
			if err != nil {
				return nil, err
			}
			s.m.answered(q, "merge", len(groups))
			res.Groups = groups
			return res, nil
		}
	}
	merged, err := s.mergeHalves(ctx, q, snap, res)
	if err != nil {
		return nil, err
	}
	s.m.answered(q, "merge", len(merged.groups))
	res.Groups, res.Truncated = merged.Answer()
	if q.MaxRows > 0 && len(res.Groups) > q.MaxRows { // a cut answer: buckets × limit
		return nil, &TooManyRowsError{Limit: q.MaxRows}
	}
	return res, nil
}

// speedOut is the speed half of one query (startSpeed).
type speedOut struct {
	merger  *Merger
	maxWin  time.Time
	err     error
	elapsed time.Duration
	// timedOut: speedTimeout passed (the driver may report it as
	// its own read timeout rather than the context's error).
	timedOut bool
}

// startSpeed reads the speed half of q (the speed rows of the chunks snap
// did not absorb) in the background; the channel gets its one result.
func (s *Service) startSpeed(ctx context.Context, q *Query, snap *Snapshot) <-chan speedOut {
	speedc := make(chan speedOut, 1)
	if s.deps.Speed == nil {
		speedc <- speedOut{err: errors.New("no speed layer is configured")}
		return speedc
	}
	go func() {
		sctx, cancel := context.WithTimeout(ctx, speedTimeout)
		defer cancel()
		t0 := time.Now()
		var out speedOut
		defer func() {
			out.elapsed = time.Since(t0)
			// By the clock, not sctx.Err(): the driver's read deadline
			// can fire a moment before the context's timer does.
			dl, _ := sctx.Deadline()
			out.timedOut = out.err != nil && ctx.Err() == nil && !time.Now().Before(dl)
			speedc <- out
		}()
		// The newest speed window is asked beside the rollup, not after
		// it: one round trip less in every answer's time.
		type maxWin struct {
			t   time.Time
			err error
		}
		mwc := make(chan maxWin, 1)
		go func() {
			t, err := s.deps.Speed.MaxWindow(sctx, q.View, snap.AbsorbedChunks)
			mwc <- maxWin{t, err}
		}()
		out.merger = NewMerger(q)
		// The speed half comes rolled up by ClickHouse: one group per
		// (bucket, group), not one row per (window, dimensions,
		// partition, chunk).
		out.err = s.deps.Speed.RollupSpeed(sctx, q, snap.AbsorbedChunks, func(g *Group) error {
			out.merger.AddGroup(g)
			return nil
		})
		mw := <-mwc
		if out.err == nil {
			out.maxWin, out.err = mw.t, mw.err
		}
	}()
	return speedc
}

// speedHalf settles the speed half's result for the answer: its Merger,
// or nil with the warning added to res when the speed layer is down, or
// the error to fail the query with (see speedVerdict).
func (s *Service) speedHalf(ctx context.Context, q *Query, snap *Snapshot, res *Result, sp speedOut) (*Merger, error) {
	if sp.err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := s.speedVerdict(ctx, sp.err, sp.timedOut); err != nil {
			return nil, err
		}
		s.m.speedFailures.WithLabelValues(q.View.Name).Inc()
		s.log.Warn("speed layer unavailable; answering from the batch view alone", "view", q.View.Name, "err", sp.err)
		res.Warnings = append(res.Warnings, speedWarning(sp.err, snap))
		return nil, nil
	}
	s.m.speedRows.WithLabelValues(q.View.Name).Add(float64(sp.merger.Rows()))
	if !sp.maxWin.IsZero() {
		res.Freshness.SpeedMaxEventTime = sp.maxWin
	}
	return sp.merger, nil
}

// answerFromBuckets answers q with the batch half from the bucket cache
// (buckets of u ms; see bucketcache.go) and the speed half read now.
// errOverBound: answer it without the cache.
func (s *Service) answerFromBuckets(ctx context.Context, q *Query, snap *Snapshot, res *Result, u int64) ([]*Group, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // a query answered without the cache reads the speed half again
	speedc := s.startSpeed(sctx, q, snap)
	t0 := time.Now()
	buckets, scanned, berr := s.buckets.batchHalf(ctx, q, snap, s.batch, u)
	batchElapsed := time.Since(t0)
	if berr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, berr
	}
	sp := <-speedc
	s.m.batchRows.WithLabelValues(q.View.Name).Add(float64(scanned))
	spm, err := s.speedHalf(ctx, q, snap, res, sp)
	if err != nil {
		return nil, err
	}
	groups, err := answerCached(q, buckets, spm)
	if err != nil {
		return nil, err
	}
	s.log.Debug("query answered from the bucket cache", "view", q.View.Name, "run", snap.RunID(), "groups", len(groups),
		"buckets", len(buckets), "batch_rows", scanned, "batch_time", batchElapsed, "speed_time", sp.elapsed)
	return groups, nil
}

// mergeHalves merges the batch rows of snap's run and the speed rows of
// the chunks it did not absorb that q selects into one Merger (the answer
// before any cut), adding to res the freshness of the speed half and the
// warning when the speed layer is down. Errors: see Query.
func (s *Service) mergeHalves(ctx context.Context, q *Query, snap *Snapshot, res *Result) (*Merger, error) {
	speedc := s.startSpeed(ctx, q, snap)
	t0 := time.Now()
	merged, berr := s.batch.scan(ctx, q, snap)
	batchElapsed := time.Since(t0)
	var batchRows int64
	if merged != nil {
		batchRows = merged.Rows()
	}
	sp := <-speedc
	if berr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, berr
	}
	s.m.batchRows.WithLabelValues(q.View.Name).Add(float64(batchRows))
	spm, err := s.speedHalf(ctx, q, snap, res, sp)
	if err != nil {
		return nil, err
	}
	if spm != nil {
		merged.MergeFrom(spm)
	}
	if merged.Overflow() { // the speed half's overflow came in with MergeFrom
		if q.Cut() && q.MaxGroups > 0 {
			return nil, &TooManyRowsError{Limit: q.MaxGroups, Merge: true}
		}
		return nil, &TooManyRowsError{Limit: q.MaxRows}
	}
	s.log.Debug("query merged", "view", q.View.Name, "run", snap.RunID(), "groups", len(merged.groups),
		"batch_rows", batchRows, "speed_rows", merged.Rows()-batchRows, "batch_time", batchElapsed, "speed_time", sp.elapsed)
	return merged, nil
}

// speedOverloadPing bounds the check that tells a busy speed store from
// one that is down.
const speedOverloadPing = 2 * time.Second

// speedVerdict decides what a failed speed half means for the answer.
// Answering from the batch view alone, with a warning, is right only when
// the speed layer is really down: the rows it holds are unreachable for
// everyone, and the warning says so. When the store is up but could not
// answer this query in time — it said so (ErrSpeedBusy), or speedTimeout
// passed and a ping still succeeds — the rows exist and another attempt
// gets them, so the query fails with ErrOverloaded (503, Retry-After)
// rather than a 200 silently missing them. It returns nil for "down:
// warn", or the error to fail the query with.
func (s *Service) speedVerdict(ctx context.Context, err error, timedOut bool) error {
	busy := errors.Is(err, ErrSpeedBusy)
	if !busy && (timedOut || errors.Is(err, context.DeadlineExceeded)) && s.deps.Speed != nil {
		pctx, cancel := context.WithTimeout(ctx, speedOverloadPing)
		busy = s.deps.Speed.Ping(pctx) == nil
		cancel()
	}
	if !busy {
		return nil
	}
	return fmt.Errorf("%w: the speed layer (ClickHouse) is up but could not answer the speed half in time (%v); retry later, or narrow the query", ErrOverloaded, err)
}

func speedWarning(err error, snap *Snapshot) string {
	run := snap.RunID()
	if run == "" {
		run = "(none published)"
	}
	return fmt.Sprintf("speed layer unavailable: %v; rows newer than the batch run %s are missing", err, run)
}

// viewInfo is one entry of GET /v1/views.
type viewInfo struct {
	Name        string          `json:"name"`
	Stream      string          `json:"stream"`
	Granularity string          `json:"granularity"`
	Dimensions  []string        `json:"dimensions"`
	Measures    []measureInfo   `json:"measures"`
	Freshness   json.RawMessage `json:"freshness"`
	// RetainedFrom is the first instant the view answers (RFC 3339), when
	// views[].retention is set (retainedStart).
	RetainedFrom string `json:"retained_from,omitempty"`
	// State is "backfilling" while the view waits for its first batch run
	// of its definition; absent when it answers.
	State string `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}

// retainedStart is the first instant view v answers with manifest m (nil
// before the first run): the run's retained_from, or before the first run
// the configured retention at now. The zero time: everything.
func retainedStart(v *schemas.View, m *schemas.Manifest, now time.Time) time.Time {
	if m == nil {
		return v.RetainedFrom(now)
	}
	return m.Retained()
}

type measureInfo struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Field  string `json:"field,omitempty"`
	Result string `json:"result"`
	Exact  bool   `json:"exact"`
}

func (s *Service) handleViews(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	if r.URL.RawQuery != "" {
		s.m.errors.WithLabelValues("views", "400").Inc()
		writeError(w, http.StatusBadRequest, "GET /v1/views takes no parameters")
		return
	}
	ctx := r.Context()
	var warnings []string
	out := struct {
		Views    []viewInfo `json:"views"`
		Warnings []string   `json:"warnings,omitempty"`
	}{Views: []viewInfo{}}
	for _, lv := range s.cfg.Logicals() {
		v := s.resolve(ctx, lv.Logical())
		info := viewInfo{Name: v.Logical(), Stream: v.Stream, Granularity: v.Granularity.String(), Dimensions: append([]string{}, v.Dimensions...)}
		for _, m := range v.Measures {
			info.Measures = append(info.Measures, measureInfo{Name: m.Name, Type: string(m.Type), Field: m.Field,
				Result: m.Kind().ResultDoc, Exact: m.Kind().Exact})
		}
		fr := Freshness{Absorbed: map[int32]int64{}}
		snap, err := s.manifests.snapshot(ctx, s.manifests.views[v.Name])
		if errors.Is(err, ErrBackfilling) {
			info.State = ReasonBackfilling
		}
		if err != nil {
			info.Error = err.Error()
		} else {
			fr.BatchRun = snap.RunID()
			defer snap.release()
			if r := retainedStart(v, snap.Manifest, time.Now()); !r.IsZero() {
				info.RetainedFrom = r.UTC().Format(time.RFC3339)
			}
			if snap.Manifest != nil {
				fr.BatchCreatedAt = snap.Manifest.CreatedAt
				for p, off := range snap.Manifest.Absorbed {
					fr.Absorbed[p] = off
				}
			}
			if s.deps.Speed != nil {
				sctx, cancel := context.WithTimeout(ctx, speedTimeout)
				mw, err := s.deps.Speed.MaxWindow(sctx, v, snap.AbsorbedChunks)
				cancel()
				if err != nil {
					s.m.speedFailures.WithLabelValues(v.Name).Inc()
					warnings = append(warnings, fmt.Sprintf("view %s: speed layer unavailable: %v; speed_max_event_time is unknown", v.Name, err))
				} else {
					fr.SpeedMaxEventTime = mw
				}
			}
		}
		info.Freshness = appendFreshness(nil, fr)
		out.Views = append(out.Views, info)
	}
	out.Warnings = warnings
	b, err := json.Marshal(out)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Content-Type", ContentJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// resolve returns the version of the logical view a query answers from
// (docs/architecture.md, "Versioned view definitions"): the pending version
// as soon as it answers exactly (a run of it is published, the backfilling
// rule), else the current one, which keeps answering meanwhile. The choice
// only ever moves forward, as a run once published stays published; nil
// for an unknown view.
func (s *Service) resolve(ctx context.Context, logical string) *schemas.View {
	vs := s.cfg.VersionsOf(logical)
	if len(vs) == 0 {
		return nil
	}
	if p := vs[len(vs)-1]; p.Pending() {
		vm := s.manifests.views[p.Name]
		if vm == nil {
			return vs[0]
		}
		snap, err := s.manifests.snapshot(ctx, vm)
		if err == nil {
			snap.release()
			return p
		}
		// Only a pending version that is still backfilling leaves the
		// query to the current one: once published, the current one may
		// be retired and no longer folded, so a pending version unusable
		// for another reason (a manifest unreadable for a moment)
		// answers 503 rather than send the query back.
		if !errors.Is(err, ErrBackfilling) {
			return p
		}
	}
	return vs[0]
}

// AnsweringVersions returns, per logical view, the version queries are
// answered from now (resolve).
func (s *Service) AnsweringVersions(ctx context.Context) []*schemas.View {
	var out []*schemas.View
	for _, lv := range s.cfg.Logicals() {
		if v := s.resolve(ctx, lv.Logical()); v != nil {
			out = append(out, v)
		}
	}
	return out
}

// Schema is the configuration the service answers: every version of a
// changed view (a Versioned configuration), each by its physical name.
func (s *Service) Schema() *schemas.Config { return s.cfg }
