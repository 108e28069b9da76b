// Package batch is tandem's batch layer: `tandem batch run` recomputes
// every view from the master dataset (raw Parquet in S3), publishes each as
// an immutable run with a manifest written last, loads it into ClickHouse
// for analysts, deletes the speed rows it absorbed once no serving replica
// reads them (ReleaseSpeedRows), and collects
// old runs. The archiver (batch/archive) and the data-lake export
// (batch/export) live beside it.
//
// A run absorbs, per Kafka partition, every whole chunk the master dataset
// holds contiguously (docs/architecture.md, The exactness contract, rule
// 1), deduplicates by event id (first offset wins, per partition),
// re-validates every raw message with the
// same schemas.Decoder the speed layer uses, and aggregates with the shared
// schemas.View.Key/Add — so a run's answer and the speed layer's agree by
// construction, and together they are exact.
//
// Runs are incremental by UTC day: a day no newly absorbed event falls into
// is copied from the previous run; Config.Full recomputes everything. Both
// give byte-identical rows.
package batch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"

	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// Deps are what a run reads and writes. Schema and Store are required.
type Deps struct {
	// Schema holds the streams and views a run computes.
	Schema *schemas.Config
	Store  objstore.Bucket
	// ClickHouse, when set, receives each published run (and has the speed
	// rows of absorbed chunks deleted). Nil skips that step.
	ClickHouse *clickhouse.DB
	Log        *slog.Logger
	// Now is the clock retention is measured against (views[].retention,
	// streams[].retention); default time.Now. Read once per run.
	Now func() time.Time
	// AfterPublish, if set, runs after the views are published and loaded
	// but before the lock is released (the export hooks in here).
	AfterPublish func(ctx context.Context, res *Result) error
}

// Runner runs batch runs with one configuration; each Run is one run.
type Runner struct {
	conf Config
	deps Deps
	// crashBeforeManifest, for tests, fails the run just before a manifest
	// would be written.
	crashBeforeManifest func(view string) error
}

// New returns a Runner. It does no I/O.
func New(cfg Config, deps Deps) (*Runner, error) {
	if deps.Schema == nil || deps.Store == nil {
		return nil, errors.New("batch: Deps need the Schema and a Store")
	}
	if cfg.KeepRuns <= 0 {
		// A zero Config is valid: fewer than two kept runs never is.
		cfg.KeepRuns = DefaultConfig().KeepRuns
	}
	return &Runner{conf: cfg, deps: deps}, nil
}

// options are one run's settings and dependencies together, as the steps
// of a run read them.
type options struct {
	Deps
	Config

	at time.Time // Now() at the start of the run
	// deferStreamGC: a stream's jobs leave the garbage collection of its
	// runs and states to runStream, which does it once over every view
	// (each job's alone would delete the other's state).
	deferStreamGC bool

	crashBeforeManifest func(view string) error
}

// Result describes what one Run did.
type Result struct {
	RunID    string
	Views    []ViewResult
	Duration time.Duration
	// RemovedViews are the views no longer configured whose objects this
	// run deleted (batch.removed_view_grace), retired versions' physical
	// names among them.
	RemovedViews []string
	// Switched are the views whose pending version this run made current
	// (clickhouse.DB.SwitchVersions); Collected the physical names of
	// retired versions whose ClickHouse tables it dropped.
	Switched, Collected []string
}

// ViewResult is the outcome for one view.
type ViewResult struct {
	View string
	// Published is false when the view was up to date (no newly absorbed
	// chunk and not Full): its current run stays.
	Published bool
	// Manifest is the view's current manifest after the run.
	Manifest *schemas.Manifest
	// Incremental is true when unchanged days were carried over.
	Incremental            bool
	DaysComputed, DaysKept int
	// IDsLoaded counts the id index entries the stream's scan read from the
	// previous run: with a dedup_window, the window's ids only.
	IDsLoaded int64
	// IDTableSlots sums the slots (32 bytes each) of the partitions' id
	// tables at their largest: what the duplicate check held in memory.
	IDTableSlots int64
	// IDsSpilled counts the ids the duplicate check wrote to local bucket
	// files because they would not fit batch.dedup_memory (grace.go).
	IDsSpilled int64
	// SpeedRowsDeletedThrough is, per partition, the chunk below which
	// the view's speed rows were deleted (ReleaseSpeedRows).
	SpeedRowsDeletedThrough map[int32]int64 `json:",omitempty"`
}

// UpToDate reports whether no view was published.
func (r *Result) UpToDate() bool {
	for _, v := range r.Views {
		if v.Published {
			return false
		}
	}
	return true
}

// NewRunID returns a run id that sorts by start time.
func NewRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

// Run executes one batch run over every view of the configuration. It is
// safe to retry after any failure: nothing is visible until a view's
// manifest is written, and every later step (ClickHouse load, speed-row
// deletion, garbage collection) is repeated by the next run if it did not
// finish. A second run while one holds the lock fails with ErrLocked.
func (r *Runner) Run(ctx context.Context) (*Result, error) {
	return run(ctx, options{Deps: r.deps, Config: r.conf, crashBeforeManifest: r.crashBeforeManifest})
}

func run(ctx context.Context, o options) (*Result, error) {
	start := time.Now()
	cfg := o.Schema
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.at = o.Now().UTC()
	if o.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if o.ClickHouse != nil {
		// The views computed are every version of the configured views:
		// a changed definition is computed beside the version that keeps
		// answering until it is exact (docs/architecture.md, "Versioned
		// view definitions").
		eff, err := o.ClickHouse.Versioned(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("batch: %w", err)
		}
		o.Schema, cfg = eff, eff
	}
	if o.Split.Workers > 0 || o.Split.Name != "" {
		return runSplit(ctx, o, start)
	}
	ttl := o.LockTTL.D()
	if ttl <= 0 {
		ttl = time.Hour
	}
	lk, err := acquireLock(ctx, o.Store, o.Holder, ttl, o.Log)
	if err != nil {
		return nil, err
	}
	defer lk.release(context.WithoutCancel(ctx))

	res := &Result{RunID: NewRunID(start)}
	tmp, err := os.MkdirTemp(o.TempDir, "tandem-batch-")
	if err != nil {
		return nil, fmt.Errorf("batch: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	for _, s := range cfg.Streams {
		views := cfg.ViewsOf(s.Name)
		if len(views) == 0 {
			continue
		}
		vr, err := runStream(ctx, &o, lk, res.RunID, s, views, tmp)
		if err != nil {
			return nil, err
		}
		res.Views = append(res.Views, vr...)
	}
	if err := finishRun(ctx, &o, cfg, lk, res); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

// finishRun ends a run (one process's or a split run's publish) once
// every stream is published: it switches every pending version whose run
// is published and drops the ClickHouse tables of versions retired longer
// than the grace (with ClickHouse), deletes the objects of views no longer
// configured after their grace, then calls Options.AfterPublish while the
// run still holds the lock.
func finishRun(ctx context.Context, o *options, cfg *schemas.Config, lk *lock, res *Result) error {
	if o.ClickHouse != nil {
		if err := lk.check(); err != nil {
			return err
		}
		var err error
		if res.Switched, err = o.ClickHouse.SwitchVersions(ctx, cfg); err != nil {
			return err
		}
		for _, v := range res.Switched {
			o.Log.Info("batch: the new version of a view is exact and now answers REST and SQL; the old one is retired", "view", v,
				"collected_after", o.RemovedViewGrace.String())
		}
		if res.Collected, err = o.ClickHouse.CollectRetired(ctx, cfg, o.RemovedViewGrace.D(), time.Now()); err != nil {
			return err
		}
	}
	removed, err := gcRemovedViews(ctx, o.Store, cfg, o.RemovedViewGrace.D(), time.Now(), lk)
	if err != nil {
		return err
	}
	for _, v := range removed {
		o.Log.Info("batch: deleted the objects of a view no longer configured", "view", v, "grace", o.RemovedViewGrace.String())
	}
	res.RemovedViews = removed
	if o.AfterPublish == nil {
		return nil
	}
	if err := lk.check(); err != nil {
		return err
	}
	return o.AfterPublish(ctx, res)
}

// previous is the state of a stream's views before this run.
type previous struct {
	manifests map[string]*schemas.Manifest // by view; nil entries for none
	state     *streamState                 // nil: recompute in full
	reason    string                       // why not incremental
	// allDays: the run had to recompute in full (reason), but retention
	// cut the master dataset, so it cannot start from the first offset
	// with an empty id index. It continues from state instead and
	// recomputes every retained day, taking the duplicate decisions of the
	// offsets state absorbed from its duplicate offsets (the first
	// occurrences of their ids may be among the deleted objects).
	allDays bool
}

func readManifest(ctx context.Context, st objstore.Bucket, view string) (*schemas.Manifest, error) {
	data, err := objstore.GetBytes(ctx, st, schemas.ManifestKey(view))
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("batch: reading the manifest of %s: %w", view, err)
	}
	m, err := schemas.DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("batch: manifest of %s: %w", view, err)
	}
	return m, nil
}

// ReadManifest returns the current manifest of view, or nil when none was
// published yet.
func ReadManifest(ctx context.Context, st objstore.Bucket, view string) (*schemas.Manifest, error) {
	return readManifest(ctx, st, view)
}

// loadPrevious reads the views' manifests and decides whether this run can
// continue incrementally from the run they share. rec is the stream's
// retention record (nil: never cut).
func loadPrevious(ctx context.Context, o *options, s *schemas.Stream, views []*schemas.View, plan *streamPlan, rec *retentionRecord) (*previous, error) {
	pv := &previous{manifests: map[string]*schemas.Manifest{}}
	var runID, latest string
	for _, v := range views {
		m, err := readManifest(ctx, o.Store, v.Name)
		if err != nil {
			return nil, err
		}
		pv.manifests[v.Name] = m
		switch {
		case pv.reason != "":
		case m == nil:
			pv.reason = "view " + v.Name + " has no published run"
		case m.Fingerprint != v.Fingerprint():
			pv.reason = "the definition of view " + v.Name + " changed"
		case m.ChunkSize != o.Schema.ChunkSize:
			pv.reason = "chunk_size changed"
		case !slices.Equal(m.Levels, v.Levels()):
			// The days carried over would lack (or keep) a level.
			pv.reason = "the levels of view " + v.Name + " changed"
		case runID != "" && m.RunID != runID && !sameAbsorbed(m.Absorbed, pv.manifests[views[0].Name].Absorbed):
			// Runs that absorbed the same chunks (a fresh view computed
			// beside an incremental run) have equivalent states.
			pv.reason = "the views of the stream are on different runs"
		}
		if m != nil {
			runID = m.RunID
			latest = max(latest, m.RunID) // run ids sort by start time
		}
	}
	if o.Full {
		pv.reason = "--full"
	}
	cut := rec.cutBelow()
	if pv.reason != "" {
		if cut == "" {
			return pv, nil
		}
		// The stream's newest state holds the duplicate decisions of
		// every offset it absorbed, whatever view they were for.
		runID = latest
	}
	// cannot is the error of a recompute in full that retention made
	// impossible to do exactly.
	cannot := func(why string) error {
		return fmt.Errorf("batch: stream %s: %s, so the run would recompute in full, but streams[%s].retention deleted the master dataset below %s: the ids first seen there would count again. Restore the previous setting (or tandem version) for this stream", s.Name, why, s.Name, cut)
	}
	if runID == "" {
		return nil, cannot(pv.reason + " and no run of the stream was ever published")
	}
	stt, err := loadState(ctx, o.Store, s.Name, runID)
	if err != nil {
		if !isNotFound(err) {
			return nil, err
		}
		if cut != "" {
			return nil, cannot("run " + runID + " left no state")
		}
		pv.reason = "the previous run left no state"
		return pv, nil
	}
	var streamReason string
	switch {
	case stt.SchemaVersion != s.SchemaVersion():
		streamReason = "the stream's fields changed"
	case stt.DecoderVersion != schemas.DecoderVersion:
		streamReason = "the decoder changed (validation verdicts may differ)"
	case stt.MaxFutureSkew != o.Schema.MaxFutureSkew.D().String():
		streamReason = "ingest.max_future_skew changed (validation verdicts may differ)"
	case stt.ChunkSize != o.Schema.ChunkSize:
		streamReason = "chunk_size changed"
	case stt.IndexFormat != stateFormat:
		streamReason = "the previous run's state has another format"
	case stt.DedupWindow != s.DedupWindow.D().String():
		streamReason = fmt.Sprintf("streams[%s].dedup_window changed", s.Name)
	}
	for _, p := range plan.Partitions {
		if streamReason != "" {
			break
		}
		if p.Absorbed < stt.Absorbed[p.Partition] {
			streamReason = fmt.Sprintf("partition %d: the master dataset now ends at offset %d, before the previous run's %d", p.Partition, p.Absorbed, stt.Absorbed[p.Partition])
		} else if stt.Absorbed[p.Partition] > 0 && p.Start != stt.Start[p.Partition] &&
			!(rec != nil && p.Start > stt.Start[p.Partition] && p.Start <= rec.Cut[p.Partition]) {
			// Retention moves the start up to its cut; anything else is
			// a master dataset that changed under the run.
			streamReason = fmt.Sprintf("partition %d: the master dataset now starts at offset %d, not %d", p.Partition, p.Start, stt.Start[p.Partition])
		}
	}
	switch {
	case streamReason != "" && cut != "":
		return nil, cannot(streamReason)
	case streamReason != "":
		pv.reason = streamReason
	case pv.reason != "":
		pv.state, pv.allDays = stt, true
	default:
		pv.state = stt
	}
	return pv, nil
}

func sameAbsorbed(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for p, x := range a {
		if b[p] != x {
			return false
		}
	}
	return true
}

// streamJob is what a run decided for one stream before reading it: the
// plan, the previous state and each view's retained start. Every process
// of a split run derives the same one from the same plan (split.go).
type streamJob struct {
	s        *schemas.Stream
	views    []*schemas.View
	log      *slog.Logger
	t0       time.Time
	plan     *streamPlan
	absorbed map[int32]int64
	rec      *retentionRecord
	pv       *previous
	carried  bool
	from     []time.Time // each view's retained start
	fromDay  []int64
	// upToDate: nothing new absorbed and no retained start moved; empty:
	// nothing absorbed and nothing ever published.
	upToDate, empty bool
}

// prepareStream plans stream s (or takes plan, a split run's) and decides
// how the run continues from the previous one.
func prepareStream(ctx context.Context, o *options, s *schemas.Stream, views []*schemas.View, plan *streamPlan) (*streamJob, error) {
	j := &streamJob{s: s, views: views, log: o.Log.With("stream", s.Name), t0: time.Now(), plan: plan}
	var err error
	if j.plan == nil {
		if j.plan, err = planStream(ctx, o.Store, s, o.Schema.ChunkSize); err != nil {
			return nil, err
		}
	}
	j.absorbed = j.plan.Absorbed()
	if j.rec, err = readRetention(ctx, o.Store, s.Name); err != nil {
		return nil, err
	}
	if j.pv, err = loadPrevious(ctx, o, s, views, j.plan, j.rec); err != nil {
		return nil, err
	}
	pv := j.pv
	j.carried = pv.state != nil && !pv.allDays
	j.from = make([]time.Time, len(views))
	j.fromDay = make([]int64, len(views))
	retainedMoved := false
	for i, v := range views {
		j.from[i] = retainedFrom(v, o.at, j.rec, o.Schema.MaxFutureSkew.D(), pv.manifests[v.Name], j.carried)
		j.fromDay[i] = keepFromDay(j.from[i : i+1])
		if !pv.manifests[v.Name].Retained().Equal(j.from[i]) {
			retainedMoved = true
		}
	}
	j.upToDate = j.carried && sameAbsorbed(pv.state.Absorbed, j.absorbed) && !retainedMoved
	j.empty = !j.upToDate && len(j.absorbed) == 0 && pv.state == nil && allNil(pv.manifests)
	return j, nil
}

// scanner returns the scanner of the job's master dataset for run runID.
func (j *streamJob) scanner(o *options, runID, tmp string, spill *spillDir) *scanner {
	sc := &scanner{st: o.Store, plan: j.plan, prev: j.pv.state, runID: runID, decoder: schemas.NewDecoder(j.s, o.Schema.MaxFutureSkew.D()),
		spill: spill, tmp: tmp, workers: o.Workers, dedupMemory: o.DedupMemory, log: j.log, keepFrom: keepFromDay(j.from), allDays: j.pv.allDays}
	if w := j.rec.firstWholeDay(o.Schema.MaxFutureSkew.D()); !w.IsZero() {
		sc.daysFrom = dayOf(w)
	}
	return sc
}

// computeSet is the days the run aggregates: the dirty ones, or all of
// the retained ones in a full run.
func (j *streamJob) computeSet(dirty, days map[int64]bool) map[int64]bool {
	if j.pv.state != nil {
		return dirty
	}
	compute := maps.Clone(days)
	dropDaysBefore(compute, keepFromDay(j.from))
	return compute
}

// logStart says how the run continues from the previous one.
func (j *streamJob) logStart() {
	if j.pv.state == nil {
		j.log.Info("batch: recomputing in full", "reason", j.pv.reason)
	} else if j.pv.allDays {
		j.log.Info("batch: recomputing every retained day with the stored duplicate decisions (retention cut the master dataset)", "reason", j.pv.reason, "cut", j.rec.Cut)
	}
}

// noNews handles a job that is up to date or empty; ok is false for one
// that has something to compute.
func (j *streamJob) noNews(ctx context.Context, o *options, lk *lock) (out []ViewResult, ok bool, err error) {
	switch {
	case j.upToDate:
		// Nothing new: keep the current runs, but finish what a crashed
		// run may have left undone (ClickHouse load, garbage collection).
		// A view whose retained start moved is published again, without
		// its old days.
		j.log.Info("batch: up to date; nothing new absorbed, nothing published", "run_id", j.pv.state.RunID, "absorbed", j.absorbed)
		if err := rawRetention(ctx, o, lk, j.s, j.plan, j.absorbed, j.rec, j.log); err != nil {
			return nil, true, err
		}
		out, err := finishUpToDate(ctx, o, lk, j.s, j.views, j.pv)
		return out, true, err
	case j.empty:
		j.log.Info("batch: the master dataset holds no whole chunk yet; nothing to publish")
		for _, v := range j.views {
			out = append(out, ViewResult{View: v.Name})
		}
		return out, true, nil
	}
	return nil, false, nil
}

// scanSummary is what a stream's scan leaves for the state and the
// manifests: one scanner's, or the sum of a split run's workers'.
type scanSummary struct {
	Days                              map[int64]bool // every day with kept events, after retention
	Clock, Entries                    map[int32]int64
	Events, Duplicates, Invalid, Read int64
	IDsLoaded, TableSlots, IDsSpilled int64
	Scan                              time.Duration
	FileTimes                         map[string][2]int64 // streamState.FileTimes seen by the scan
}

func (sc *scanner) summary(scan time.Duration) *scanSummary {
	return &scanSummary{Days: sc.days, Clock: sc.clock, Entries: sc.entries, FileTimes: sc.fileTimes,
		Events: sc.stats.Events.Load(), Duplicates: sc.stats.Duplicates.Load(), Invalid: sc.stats.Invalid.Load(),
		Read: sc.stats.Read.Load(), IDsLoaded: sc.stats.IDsLoaded.Load(), TableSlots: sc.stats.TableSlots.Load(),
		IDsSpilled: sc.stats.IDsSpilled.Load(), Scan: scan}
}

func runStream(ctx context.Context, o *options, lk *lock, runID string, s *schemas.Stream, views []*schemas.View, tmp string) ([]ViewResult, error) {
	fresh, rest, err := freshViews(ctx, o, s, views)
	if err != nil {
		return nil, err
	}
	if len(fresh) == 0 || len(rest) == 0 {
		out, _, err := runStreamJob(ctx, o, lk, runID, s, views, tmp, nil)
		return out, err
	}
	// Only what changed is recomputed: the views on the stream's current
	// run continue incrementally, and the fresh ones (a view added, a new
	// version) are computed over all history, up to the same absorbed
	// chunks, under a run id of their own. Both runs' states absorbed the
	// same chunks with the same duplicate decisions, so the next run
	// continues incrementally from either (loadPrevious).
	o.Log.Info("batch: computing new views over all history, the others incrementally", "stream", s.Name, "new", viewNames(fresh), "incremental", viewNames(rest))
	o.deferStreamGC = true
	out, plan, err := runStreamJob(ctx, o, lk, runID, s, rest, tmp, nil)
	var more []ViewResult
	if err == nil {
		// Spill files of its own: the first job's are still in tmp.
		var sub string
		if sub, err = os.MkdirTemp(tmp, "fresh-"); err == nil {
			more, _, err = runStreamJob(ctx, o, lk, NewRunID(time.Now()), s, fresh, sub, plan)
		}
	}
	o.deferStreamGC = false
	if err != nil {
		return nil, err
	}
	out = append(out, more...)
	sortByConfig(out, views)
	return out, gcStream(ctx, o, s, views, out)
}

// sortByConfig puts two jobs' results in the configuration's order, as
// one job reports them.
func sortByConfig(out []ViewResult, views []*schemas.View) {
	slices.SortStableFunc(out, func(a, b ViewResult) int {
		return slices.IndexFunc(views, func(v *schemas.View) bool { return v.Name == a.View }) -
			slices.IndexFunc(views, func(v *schemas.View) bool { return v.Name == b.View })
	})
}

// freshViews splits a stream's views into those with no published run of
// their definition (fresh) and the others, when the others can continue
// incrementally on their own: not --full, and no retention cut (whose
// recomputation continues from the stream's state for every view). Else
// fresh is empty: one job computes them all.
func freshViews(ctx context.Context, o *options, s *schemas.Stream, views []*schemas.View) (fresh, rest []*schemas.View, err error) {
	if o.Full || s.Retention > 0 {
		return nil, views, nil
	}
	for _, v := range views {
		m, err := readManifest(ctx, o.Store, v.Name)
		if err != nil {
			return nil, nil, err
		}
		if m == nil || m.Fingerprint != v.Fingerprint() || !slices.Equal(m.Levels, v.Levels()) {
			fresh = append(fresh, v)
		} else {
			rest = append(rest, v)
		}
	}
	return fresh, rest, nil
}

func viewNames(vs []*schemas.View) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}

// runStreamJob runs one job over some of a stream's views: planned now,
// or on plan (the absorbed chunks of another job of the same run). It
// returns the plan it ran on.
func runStreamJob(ctx context.Context, o *options, lk *lock, runID string, s *schemas.Stream, views []*schemas.View, tmp string, plan *streamPlan) ([]ViewResult, *streamPlan, error) {
	j, err := prepareStream(ctx, o, s, views, plan)
	if err != nil {
		return nil, nil, err
	}
	if out, ok, err := j.noNews(ctx, o, lk); ok {
		return out, j.plan, err
	}
	j.logStart()
	spill := &spillDir{dir: tmp + "/" + s.Name, stream: s}
	sc := j.scanner(o, runID, tmp, spill)
	if err := sc.run(ctx); err != nil {
		return nil, nil, err
	}
	sum := sc.summary(time.Since(j.t0))
	compute := j.computeSet(sc.dirty, sc.days)
	files, err := computeDays(ctx, o, spill, s, views, sortedDays(compute), j.fromDay, runID, tmp)
	if err != nil {
		return nil, nil, err
	}
	out, err := publishStream(ctx, o, lk, j, runID, compute, files, sum)
	return out, j.plan, err
}

// publishStream carries the unchanged days over, stores the state and
// publishes every view of the job: the days of compute were aggregated
// into files (by view).
func publishStream(ctx context.Context, o *options, lk *lock, j *streamJob, runID string, compute map[int64]bool, files [][]schemas.ManifestFile, sum *scanSummary) ([]ViewResult, error) {
	s, views, pv, log, t0, absorbed, carried := j.s, j.views, j.pv, j.log, j.t0, j.absorbed, j.carried
	from, plan, rec := j.from, j.plan, j.rec
	days := len(compute)
	kept, err := keepDays(ctx, o, views, pv, compute, j.fromDay, runID, files)
	if err != nil {
		return nil, err
	}
	stt, err := saveStreamState(ctx, o, s, runID, plan, absorbed, sum, pv)
	if err != nil {
		return nil, err
	}

	var out []ViewResult
	for i, v := range views {
		prev := pv.manifests[v.Name]
		m := &schemas.Manifest{View: v.Name, RunID: runID, Fingerprint: v.Fingerprint(), ChunkSize: o.Schema.ChunkSize,
			Fields: s.FieldDecls(), CreatedAt: time.Now().UTC(), Absorbed: absorbed, Levels: slices.Clone(v.Levels()), Files: files[i],
			Events: stt.Events, Duplicates: stt.Duplicates, Invalid: stt.Invalid, Duration: time.Since(t0).Seconds()}
		if m.Files == nil {
			m.Files = []schemas.ManifestFile{}
		}
		for _, f := range m.BaseFiles() {
			m.Rows += f.Rows
		}
		if prev != nil {
			m.PreviousRunID = prev.RunID
		}
		if !from[i].IsZero() {
			m.RetainedFrom = &from[i]
		}
		if err := lk.check(); err != nil {
			return nil, err
		}
		if o.crashBeforeManifest != nil {
			if err := o.crashBeforeManifest(v.Name); err != nil {
				return nil, err
			}
		}
		if err := publishManifest(ctx, o.Store, m); err != nil {
			return nil, err
		}
		log.Info("batch: published", "view", v.Name, "run_id", runID, "rows", m.Rows, "files", len(m.Files),
			"events", m.Events, "duplicates", m.Duplicates, "invalid", m.Invalid, "absorbed", absorbed,
			"incremental", carried, "retained_from", from[i], "days_computed", days, "days_kept", kept,
			"read", sum.Read, "ids_loaded", sum.IDsLoaded, "ids_spilled", sum.IDsSpilled, "scan", sum.Scan.Round(time.Millisecond).String(), "duration", time.Since(t0).Round(time.Millisecond).String())
		var dirty map[int64]bool
		if carried {
			dirty = compute
		}
		if err := afterPublish(ctx, o, v, m, prev, dirty); err != nil {
			return nil, err
		}
		out = append(out, ViewResult{View: v.Name, Published: true, Manifest: m, Incremental: carried,
			DaysComputed: days, DaysKept: kept, IDsLoaded: sum.IDsLoaded,
			IDTableSlots: sum.TableSlots, IDsSpilled: sum.IDsSpilled})
	}
	if err := rawRetention(ctx, o, lk, s, plan, absorbed, rec, log); err != nil {
		return nil, err
	}
	if err := releaseSpeedRows(ctx, o, lk, views, out); err != nil {
		return nil, err
	}
	return out, gcStream(ctx, o, s, views, out)
}

// rawRetention applies streams[].retention to the master dataset once the
// state of what it absorbed is stored (applyRawRetention).
func rawRetention(ctx context.Context, o *options, lk *lock, s *schemas.Stream, plan *streamPlan, absorbed map[int32]int64, rec *retentionRecord, log *slog.Logger) error {
	if s.Retention <= 0 {
		return nil
	}
	// A run whose lock was taken over must not delete what the run now
	// holding it may be reading.
	if err := lk.check(); err != nil {
		return err
	}
	n, err := applyRawRetention(ctx, o, s, plan, absorbed, rec, o.at)
	if n > 0 {
		log.Info("batch: deleted raw objects past streams[].retention", "objects", n, "before", s.RawCutoff(o.at))
	}
	return err
}

// releaseSpeedRows deletes the speed rows the views' current runs absorbed
// once no serving replica reads them (ReleaseSpeedRows), after every view
// of the stream is published, so the replicas switch all views at once.
func releaseSpeedRows(ctx context.Context, o *options, lk *lock, views []*schemas.View, out []ViewResult) error {
	if o.ClickHouse == nil {
		return nil
	}
	cur := make([]*schemas.Manifest, 0, len(out))
	for _, vr := range out {
		cur = append(cur, vr.Manifest)
	}
	if err := lk.check(); err != nil {
		return err
	}
	floors, err := ReleaseSpeedRows(ctx, ReleaseOptions{Store: o.Store, ClickHouse: o.ClickHouse, Current: cur, Views: views,
		Wait: o.SpeedReleaseWait.D(), Log: o.Log})
	if err != nil {
		return err
	}
	for i := range out {
		out[i].SpeedRowsDeletedThrough = floors[out[i].View]
	}
	return nil
}

// finishUpToDate is a run with nothing new to absorb: it finishes what a
// crashed run may have left undone for the current runs (ClickHouse load,
// garbage collection) and publishes nothing.
func finishUpToDate(ctx context.Context, o *options, lk *lock, s *schemas.Stream, views []*schemas.View, pv *previous) ([]ViewResult, error) {
	var out []ViewResult
	for _, v := range views {
		m := pv.manifests[v.Name]
		if err := afterPublish(ctx, o, v, m, nil, nil); err != nil {
			return nil, err
		}
		out = append(out, ViewResult{View: v.Name, Manifest: m})
	}
	if err := releaseSpeedRows(ctx, o, lk, views, out); err != nil {
		return nil, err
	}
	return out, gcStream(ctx, o, s, views, out)
}

// computeDays aggregates the spilled events of days into each view's day
// files of run runID, and returns the files by view, in day order.
//
// Days are independent: o.Workers of them at once, and each day's fold
// split by row over o.Workers shards (aggregateDay), since a day often
// holds most of the events. Every row sees its events in (partition,
// offset) order as always, so the rows do not depend on the parallelism.
// Memory holds the rows of the days being computed. (Splitting a day by
// view instead would read and decode the day's spill once per view:
// slower, measured.)
//
// fromDay is each view's first retained day: earlier days are not written
// for that view.
func computeDays(ctx context.Context, o *options, spill *spillDir, s *schemas.Stream, views []*schemas.View, days []int64, fromDay []int64, runID, tmp string) ([][]schemas.ManifestFile, error) {
	// Each day's coarse levels are rolled up from the same rows as its
	// base file (levelRows), so a level answers exactly what the base rows
	// do, and a day's levels change exactly when its base rows do.
	dayFiles := make([][][]schemas.ManifestFile, len(days)) // [day][view][base, levels…]
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	for j, d := range days {
		g.Go(func() error {
			rows, err := aggregateDay(spill, d, s.Partitions, views, o.Workers)
			if err != nil {
				return err
			}
			dayFiles[j] = make([][]schemas.ManifestFile, len(views))
			for i, v := range views {
				if d < fromDay[i] {
					rows[i] = dayRows{}
					continue // before the view's retained start
				}
				mf, err := writeDayFile(gctx, o.Store, tmp, v, schemas.ViewDayKey(v.Name, runID, DayTime(d), 0), d, rows[i])
				if err != nil {
					return err
				}
				dayFiles[j][i] = append(dayFiles[j][i], mf)
				for l, lr := range levelRows(v, rows[i]) {
					mf, err := writeDayFile(gctx, o.Store, tmp, v, schemas.ViewLevelDayKey(v.Name, runID, l, DayTime(d), 0), d, lr)
					if err != nil {
						return err
					}
					mf.Level = l
					dayFiles[j][i] = append(dayFiles[j][i], mf)
				}
				rows[i] = dayRows{} // free the day's rows as soon as written
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	files := make([][]schemas.ManifestFile, len(views))
	for _, fs := range dayFiles {
		for i, mfs := range fs {
			files[i] = append(files[i], mfs...)
		}
	}
	return files, nil
}

// keepDays carries the previous run's files (base and levels) of the days
// not recomputed into run runID (server-side copies), adds them to files
// and sorts each view's files: base files first, then each level from the
// finest, each by day. It returns how many days were kept.
func keepDays(ctx context.Context, o *options, views []*schemas.View, pv *previous, compute map[int64]bool, fromDay []int64, runID string, files [][]schemas.ManifestFile) (int, error) {
	kept := 0
	type carry struct {
		view int
		src  schemas.ManifestFile
		dst  string
	}
	var carries []carry
	for i, v := range views {
		if pv.state == nil || pv.allDays {
			break
		}
		prev := pv.manifests[v.Name]
		for _, f := range prev.Files {
			if compute[dayOf(f.Day)] || dayOf(f.Day) < fromDay[i] {
				continue // recomputed, or dropped by views[].retention
			}
			dst := schemas.ViewDayKey(v.Name, runID, f.Day, 0)
			if f.Level != 0 {
				dst = schemas.ViewLevelDayKey(v.Name, runID, f.Level, f.Day, 0)
			}
			carries = append(carries, carry{i, f, dst})
			if i == 0 && f.Level == 0 {
				kept++
			}
		}
	}
	// One copy per unchanged day file is what immutable run folders cost;
	// they are independent, and each is a round trip that moves no data
	// through us, so many go at once.
	if err := forEachLimit(ctx, len(carries), copiesAtOnce, func(ctx context.Context, k int) error {
		return copyObject(ctx, o.Store, carries[k].src.Key, carries[k].dst)
	}); err != nil {
		return 0, err
	}
	for _, c := range carries {
		nf := c.src
		nf.Key = c.dst
		files[c.view] = append(files[c.view], nf)
	}
	for i := range files {
		sort.Slice(files[i], func(a, b int) bool {
			fa, fb := files[i][a], files[i][b]
			if fa.Level != fb.Level {
				return fa.Level < fb.Level
			}
			return fa.Day.Before(fb.Day)
		})
	}
	return kept, nil
}

// saveStreamState stores the stream state the next run starts from,
// before any manifest names this run.
func saveStreamState(ctx context.Context, o *options, s *schemas.Stream, runID string, plan *streamPlan, absorbed map[int32]int64, sum *scanSummary, pv *previous) (*streamState, error) {
	stt := &streamState{Stream: s.Name, RunID: runID, SchemaVersion: s.SchemaVersion(), DecoderVersion: schemas.DecoderVersion,
		MaxFutureSkew: o.Schema.MaxFutureSkew.D().String(), ChunkSize: o.Schema.ChunkSize,
		Start: map[int32]int64{}, Absorbed: absorbed, Days: sortedDays(sum.Days),
		Events: sum.Events, Duplicates: sum.Duplicates, Invalid: sum.Invalid,
		IndexFormat: stateFormat, DedupWindow: s.DedupWindow.D().String(), Clock: sum.Clock, IndexEntries: sum.Entries}
	for _, p := range plan.Partitions {
		stt.Start[p.Partition] = p.Start
		// The bounds of the objects the next run may re-read: seen now,
		// or carried from the previous state (objects are immutable).
		for _, f := range p.Files {
			t, ok := sum.FileTimes[f.Key]
			if !ok && pv.state != nil {
				t, ok = pv.state.FileTimes[f.Key]
			}
			if ok {
				if stt.FileTimes == nil {
					stt.FileTimes = map[string][2]int64{}
				}
				stt.FileTimes[f.Key] = t
			}
		}
	}
	if pv.state != nil {
		stt.Events += pv.state.Events
		stt.Duplicates += pv.state.Duplicates
		stt.Invalid += pv.state.Invalid
	}
	data, _ := json.MarshalIndent(stt, "", "  ")
	if err := objstore.PutBytes(ctx, o.Store, stateKey(s.Name, runID), data); err != nil {
		return nil, err
	}
	return stt, nil
}

func allNil(m map[string]*schemas.Manifest) bool {
	for _, x := range m {
		if x != nil {
			return false
		}
	}
	return true
}

func sortedDays(m map[int64]bool) []int64 {
	out := make([]int64, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// publishManifest writes the run's own copy of the manifest, then the
// view's _current.json: one PUT, so readers see the old run or the new
// one, never a mix.
func publishManifest(ctx context.Context, st objstore.Bucket, m *schemas.Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if _, err := schemas.DecodeManifest(data); err != nil {
		return fmt.Errorf("batch: refusing to publish: %w", err)
	}
	if err := objstore.PutBytes(ctx, st, runManifestKey(m.View, m.RunID), data); err != nil {
		return err
	}
	return objstore.PutBytes(ctx, st, schemas.ManifestKey(m.View), data)
}

// afterPublish loads m into ClickHouse (the speed rows it absorbed are
// deleted later, by releaseSpeedRows).
func afterPublish(ctx context.Context, o *options, v *schemas.View, m, prev *schemas.Manifest, dirty map[int64]bool) error {
	if o.ClickHouse == nil || m == nil {
		return nil
	}
	return loadRun(ctx, o.ClickHouse, o.Store, v, m, prev, dirty)
}

func gcStream(ctx context.Context, o *options, s *schemas.Stream, views []*schemas.View, res []ViewResult) error {
	if o.deferStreamGC {
		return nil
	}
	keep := o.KeepRuns
	if keep < 2 {
		keep = 2
	}
	keptRuns := map[string]bool{}
	for _, vr := range res {
		if vr.Manifest == nil {
			continue
		}
		kept, n, err := gcView(ctx, o.Store, vr.View, vr.Manifest.RunID, keep)
		if err != nil {
			return fmt.Errorf("batch: garbage-collecting runs of %s: %w", vr.View, err)
		}
		if n > 0 {
			o.Log.Info("batch: deleted old runs", "view", vr.View, "deleted", n, "kept", kept)
		}
		for _, id := range kept {
			keptRuns[id] = true
		}
	}
	if len(keptRuns) == 0 {
		return nil
	}
	return gcState(ctx, o.Store, s.Name, keptRuns)
}

// copiesAtOnce bounds the server-side copies and deletes of day files a
// run has in flight at once.
const copiesAtOnce = 16

// forEachLimit calls fn for 0..n-1, at most limit at once, and returns the
// first error.
func forEachLimit(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i := 0; i < n; i++ {
		g.Go(func() error { return fn(gctx, i) })
	}
	return g.Wait()
}

// copyObject copies src to dst inside the store (no data through us).
func copyObject(ctx context.Context, st objstore.Bucket, src, dst string) error {
	if err := st.Copy(ctx, src, dst); err != nil {
		return fmt.Errorf("batch: copying %s to %s: %w", src, dst, err)
	}
	return nil
}
