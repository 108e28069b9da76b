package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// A split run is one batch run done by several processes, on one machine
// or many (a Kubernetes Indexed Job), with the output of a one-process run
// byte for byte (docs/architecture.md, Split batch runs):
//
//  1. Plan. The first process of the run lists the master dataset once and
//     stores the plan (the raw objects each partition absorbs, the run id,
//     the clock retention is measured against, the views' current runs)
//     with a create-only write; every other process reads that plan, so all
//     of them work on the same snapshot whatever the archiver adds.
//  2. Scan, by Kafka partition. Worker I of N reads phase A (the newly
//     absorbed offsets, duplicate check against the previous run's index)
//     of the partitions p with p mod N = I, stores their id index and
//     duplicate offsets as a one-process run does, uploads its spill (the
//     kept events by day) and then its scan part.
//  3. Aggregate, by day. Once every scan part is in, each worker knows the
//     run's days; it takes every Nth day to compute, downloads those days'
//     spill of every partition, re-reads the older offsets of those days
//     (phase B, with the duplicate offsets the scan stored), aggregates
//     them in (partition, offset) order — what a one-process run does —
//     writes the day files and then its aggregate part.
//  4. Publish, once. The publisher checks that every part is there and
//     from this plan, then carries the unchanged days over, stores the
//     state and writes the manifests: the one-process run's last steps.
//
// Every part key is named by the worker's index, written after what it
// describes, and has the same content whenever the worker runs again, so
// a crashed or repeated worker is re-run and overwrites what it wrote.
// The processes hold the batch lock together (joinLock, holder
// "split:NAME"), and the publisher releases it.

// SplitOptions make Run one process of a split run. The zero value is a
// one-process run.
type SplitOptions struct {
	// Name identifies the run among its processes (a Kubernetes Job's
	// name); letters, digits, '.', '_' and '-'.
	Name string
	// Workers is the number of workers N (≥ 1); 0: not a split run.
	Workers int
	// Worker is this process's index I in [0, N); -1: the publisher only.
	Worker int
	// Publish makes a worker publish the run after its own part, once
	// every part is in (waiting up to Wait). The publisher always does.
	Publish bool
	// Wait bounds how long a process waits for the other workers' parts
	// (the scan parts before aggregating, every part before publishing);
	// 0: do not wait, fail naming the missing parts.
	Wait time.Duration
	// crashAfter, for tests, fails a worker after the named step
	// ("scan", "spill", "agg": before the part that step's objects
	// belong to).
	crashAfter string
}

var splitNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// Validate reports a bad worker index or count, naming the flag.
func (so SplitOptions) Validate() error {
	if so.Workers < 1 {
		return fmt.Errorf("batch: --workers must be at least 1, got %d", so.Workers)
	}
	if so.Workers > maxSplitWorkers {
		return fmt.Errorf("batch: --workers must be at most %d, got %d", maxSplitWorkers, so.Workers)
	}
	if so.Worker < -1 || so.Worker >= so.Workers {
		return fmt.Errorf("batch: --worker %d/%d: the index must be in [0, %d)", so.Worker, so.Workers, so.Workers)
	}
	if !splitNameRE.MatchString(so.Name) {
		return fmt.Errorf("batch: --run %q: a split run's name is 1 to 100 letters, digits, '.', '_' or '-'", so.Name)
	}
	return nil
}

// maxSplitWorkers bounds N: each worker lists and reads N parts.
const maxSplitWorkers = 1024

// ErrSplitPublished is returned (wrapped) by a worker of a split run that
// was already published: its part is not needed any more.
var ErrSplitPublished = errors.New("the split run was already published")

// ParseWorker parses "I/N".
func ParseWorker(s string) (worker, workers int, err error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("batch: --worker %q: want I/N, the worker's index and the number of workers (e.g. 0/3)", s)
	}
	if n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("batch: --worker %q: want 0 ≤ I < N", s)
	}
	return i, n, nil
}

func splitPrefix(name string) string  { return "batch/_split/" + name + "/" }
func splitPlanKey(name string) string { return splitPrefix(name) + "plan.json" }
func splitDoneKey(name string) string { return splitPrefix(name) + "published.json" }
func scanPartKey(name, stream string, i int) string {
	return fmt.Sprintf("%s%s/scan-%05d.json", splitPrefix(name), stream, i)
}
func aggPartKey(name, stream string, i int) string {
	return fmt.Sprintf("%s%s/agg-%05d.json", splitPrefix(name), stream, i)
}
func spillPrefix(name, stream string) string { return splitPrefix(name) + stream + "/spill/" }
func spillKey(name, stream string, day int64, p int32) string {
	return fmt.Sprintf("%sd%d/p%05d.rec", spillPrefix(name, stream), day, p)
}

// splitPlan is the snapshot every process of a split run works on.
type splitPlan struct {
	Name  string `json:"name"`
	RunID string `json:"run_id"`
	// FreshRunID is the run id of the views computed over all history
	// beside a stream's incremental ones (a view added, a new version), as
	// one process's run gives them one of their own (runStream). Plans
	// stored before it have none: their fresh views are computed in one
	// job with the others, in full.
	FreshRunID string    `json:"fresh_run_id,omitempty"`
	Workers    int       `json:"workers"`
	At         time.Time `json:"at"` // Deps.Now at the plan: retention's clock
	Full       bool      `json:"full"`
	// Streams holds each stream's partitions (planStream's).
	Streams map[string][]partitionPlan `json:"streams"`
	// Views holds each view's fingerprint and current run at the plan: a
	// process seeing others works on another configuration or after
	// another run published, and refuses.
	Views map[string]splitView `json:"views"`
	id    string               // hash of the stored bytes
}

type splitView struct {
	Fingerprint string `json:"fingerprint"`
	CurrentRun  string `json:"current_run"`
}

// scanPart is what scan worker I leaves for the others and the publisher.
type scanPart struct {
	Plan       string          `json:"plan"`
	Worker     int             `json:"worker"`
	Partitions []int32         `json:"partitions"`
	NewDays    []int64         `json:"new_days"` // days with newly kept events
	Spill      []spillObject   `json:"spill"`
	Clock      map[int32]int64 `json:"clock"`
	Entries    map[int32]int64 `json:"entries"`
	Events     int64           `json:"events"`
	Duplicates int64           `json:"duplicates"`
	Invalid    int64           `json:"invalid"`
	Read       int64           `json:"read"`
	IDsLoaded  int64           `json:"ids_loaded"`
	TableSlots int64           `json:"table_slots"`
	IDsSpilled int64           `json:"ids_spilled"`
}

type spillObject struct {
	Day       int64 `json:"day"`
	Partition int32 `json:"partition"`
	Bytes     int64 `json:"bytes"`
}

// aggPart is what aggregate worker I leaves for the publisher.
type aggPart struct {
	Plan   string                   `json:"plan"`
	Worker int                      `json:"worker"`
	Days   []int64                  `json:"days"`
	Files  [][]schemas.ManifestFile `json:"files"` // by view
}

// runSplit is Run for one process of a split run.
func runSplit(ctx context.Context, o options, start time.Time) (*Result, error) {
	so := o.Split
	if err := so.Validate(); err != nil {
		return nil, err
	}
	if done, err := objstore.GetBytes(ctx, o.Store, splitDoneKey(so.Name)); err == nil {
		var res Result
		_ = json.Unmarshal(done, &res)
		if so.Worker >= 0 && !so.Publish {
			return nil, fmt.Errorf("batch: split run %s: %w (run %s)", so.Name, ErrSplitPublished, res.RunID)
		}
		o.Log.Info("batch: split run already published", "run", so.Name, "run_id", res.RunID)
		return &res, nil
	} else if !isNotFound(err) {
		return nil, err
	}
	if so.Worker < 0 {
		// A publisher of a run no worker planned (a typo in its name) must
		// not take the lock: it would block every run for lock_ttl.
		if _, err := ensurePlan(ctx, &o, false); err != nil {
			return nil, err
		}
	}
	ttl := o.LockTTL.D()
	if ttl <= 0 {
		ttl = time.Hour
	}
	lk, err := joinLock(ctx, o.Store, "split:"+so.Name, ttl, o.Log)
	if err != nil {
		return nil, err
	}
	plan, err := ensurePlan(ctx, &o, so.Worker >= 0)
	if err != nil {
		lk.leave()
		return nil, err
	}
	o.at = plan.At
	log := o.Log.With("run", so.Name, "run_id", plan.RunID)
	if so.Worker >= 0 {
		log = log.With("worker", fmt.Sprintf("%d/%d", so.Worker, so.Workers))
	}
	o.Log = log
	tmp, err := os.MkdirTemp(o.TempDir, "tandem-batch-")
	if err != nil {
		lk.leave()
		return nil, fmt.Errorf("batch: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if so.Worker >= 0 {
		t0 := time.Now()
		if err := splitWorker(ctx, &o, lk, plan, tmp); err != nil {
			lk.leave()
			return nil, err
		}
		log.Info("batch: worker's part done", "duration", time.Since(t0).Round(time.Millisecond).String())
		if !so.Publish {
			lk.leave()
			return &Result{RunID: plan.RunID, Duration: time.Since(start)}, nil
		}
	}
	res, err := splitPublish(ctx, &o, lk, plan, tmp, start)
	if err != nil {
		// The run is not over: its workers may still be at work (a part
		// was missing) and keep the lock; a publish run again rejoins it.
		lk.leave()
		return nil, err
	}
	lk.release(context.WithoutCancel(ctx))
	return res, nil
}

// ensurePlan reads the run's plan, or, for a worker when there is none,
// makes it (create-only: of racing workers, one plan wins and all use it).
func ensurePlan(ctx context.Context, o *options, create bool) (*splitPlan, error) {
	so := o.Split
	data, err := objstore.GetBytes(ctx, o.Store, splitPlanKey(so.Name))
	if isNotFound(err) && !create {
		return nil, fmt.Errorf("batch: split run %s has no plan (s3://%s/%s): start its workers (tandem batch run --run %s --worker I/%d) before publishing it",
			so.Name, o.Store.Name(), splitPlanKey(so.Name), so.Name, so.Workers)
	}
	if isNotFound(err) {
		now := time.Now()
		// The fresh views' run id sorts after the run's, as one process's
		// later one does.
		p := &splitPlan{Name: so.Name, RunID: NewRunID(now), FreshRunID: NewRunID(now.Add(time.Millisecond)), Workers: so.Workers, At: o.Now().UTC(), Full: o.Full,
			Streams: map[string][]partitionPlan{}, Views: map[string]splitView{}}
		for _, s := range o.Schema.Streams {
			if len(o.Schema.ViewsOf(s.Name)) == 0 {
				continue
			}
			sp, err := planStream(ctx, o.Store, s, o.Schema.ChunkSize)
			if err != nil {
				return nil, err
			}
			p.Streams[s.Name] = sp.Partitions
		}
		for _, v := range o.Schema.Views {
			m, err := readManifest(ctx, o.Store, v.Name)
			if err != nil {
				return nil, err
			}
			sv := splitView{Fingerprint: v.Fingerprint()}
			if m != nil {
				sv.CurrentRun = m.RunID
			}
			p.Views[v.Name] = sv
		}
		enc, _ := json.MarshalIndent(p, "", "  ")
		if _, err := o.Store.PutIf(ctx, splitPlanKey(so.Name), enc, objstore.Precondition{IfNoneMatch: true}); err != nil && !isPreconditionFailed(err) {
			return nil, fmt.Errorf("batch: storing the plan of split run %s: %w", so.Name, err)
		}
		data, err = objstore.GetBytes(ctx, o.Store, splitPlanKey(so.Name))
	}
	if err != nil {
		return nil, fmt.Errorf("batch: reading the plan of split run %s: %w", so.Name, err)
	}
	var p splitPlan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("batch: the plan of split run %s: %w", so.Name, err)
	}
	sum := sha256.Sum256(data)
	p.id = hex.EncodeToString(sum[:8])
	if p.Workers != so.Workers {
		return nil, fmt.Errorf("batch: split run %s was planned for %d workers, not %d (--worker I/N and --workers must give the same N)", so.Name, p.Workers, so.Workers)
	}
	if p.Full != o.Full {
		return nil, fmt.Errorf("batch: split run %s was planned with full=%v; give every process the same --full", so.Name, p.Full)
	}
	for _, v := range o.Schema.Views {
		sv, ok := p.Views[v.Name]
		if !ok || sv.Fingerprint != v.Fingerprint() {
			return nil, fmt.Errorf("batch: split run %s was planned under another configuration (view %s differs): give every process the same configuration", so.Name, v.Name)
		}
		m, err := readManifest(ctx, o.Store, v.Name)
		if err != nil {
			return nil, err
		}
		cur := ""
		if m != nil {
			cur = m.RunID
		}
		if cur != sv.CurrentRun {
			return nil, fmt.Errorf("batch: split run %s is stale: view %s was on run %q when it was planned and is on %q now; start a new split run under another --run name", so.Name, v.Name, sv.CurrentRun, cur)
		}
	}
	if len(p.Views) != len(o.Schema.Views) {
		return nil, fmt.Errorf("batch: split run %s was planned under another configuration (%d views, not %d): give every process the same configuration", so.Name, len(p.Views), len(o.Schema.Views))
	}
	return &p, nil
}

// splitJob is one streamJob of a split run, with the run id it publishes
// under and the name its parts are stored by.
type splitJob struct {
	*streamJob
	runID string
	// key names the job's parts and spill under the run's prefix: the
	// stream's name, and <stream>/fresh for its fresh views' job.
	key string
}

// jobs are the stream's streamJobs under the plan: as in one process's run
// (runStream), the views with no run of their definition (a view added, a
// new version) are computed over all history in a job of their own, under
// the plan's FreshRunID, while the others continue incrementally.
func (p *splitPlan) jobs(ctx context.Context, o *options, s *schemas.Stream) ([]splitJob, error) {
	parts, ok := p.Streams[s.Name]
	if !ok {
		return nil, fmt.Errorf("batch: split run %s was planned under another configuration (stream %s is not in its plan)", p.Name, s.Name)
	}
	sp := &streamPlan{Stream: s, Partitions: parts}
	views := o.Schema.ViewsOf(s.Name)
	fresh, rest, err := freshViews(ctx, o, s, views)
	if err != nil {
		return nil, err
	}
	if len(fresh) == 0 || len(rest) == 0 || p.FreshRunID == "" {
		j, err := prepareStream(ctx, o, s, views, sp)
		if err != nil {
			return nil, err
		}
		return []splitJob{{j, p.RunID, s.Name}}, nil
	}
	var out []splitJob
	for _, x := range []struct {
		views      []*schemas.View
		runID, key string
	}{{rest, p.RunID, s.Name}, {fresh, p.FreshRunID, s.Name + "/fresh"}} {
		j, err := prepareStream(ctx, o, s, x.views, sp)
		if err != nil {
			return nil, err
		}
		out = append(out, splitJob{j, x.runID, x.key})
	}
	return out, nil
}

// splitWorker does worker I's part of every stream: its partitions' scan,
// then its days' aggregation.
func splitWorker(ctx context.Context, o *options, lk *lock, plan *splitPlan, tmp string) error {
	for _, s := range o.Schema.Streams {
		if len(o.Schema.ViewsOf(s.Name)) == 0 {
			continue
		}
		jobs, err := plan.jobs(ctx, o, s)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.upToDate || j.empty {
				continue // the publisher does what is left
			}
			if !hasPart(ctx, o, plan, scanPartKey(plan.Name, j.key, o.Split.Worker)) {
				if err := scanWorker(ctx, o, plan, j, tmp); err != nil {
					return err
				}
			}
			if err := lk.check(); err != nil {
				return err
			}
			if !hasPart(ctx, o, plan, aggPartKey(plan.Name, j.key, o.Split.Worker)) {
				if err := aggWorker(ctx, o, plan, j, tmp); err != nil {
					return err
				}
			}
			if err := lk.check(); err != nil {
				return err
			}
		}
	}
	return nil
}

// hasPart reports whether the part at key is stored and from this plan: a
// repeated worker (a retried pod) skips what it finished before. Parts are
// written after what they describe, so a stored part is a whole one.
func hasPart(ctx context.Context, o *options, plan *splitPlan, key string) bool {
	data, err := objstore.GetBytes(ctx, o.Store, key)
	if err != nil {
		return false
	}
	var p struct {
		Plan string `json:"plan"`
	}
	if json.Unmarshal(data, &p) != nil || p.Plan != plan.id {
		return false
	}
	o.Log.Info("batch: part already stored by an earlier attempt of this worker; skipping it", "key", key)
	return true
}

// scanWorker is phase A of the worker's partitions (p mod N = I).
func scanWorker(ctx context.Context, o *options, plan *splitPlan, j splitJob, tmp string) error {
	so := o.Split
	t0 := time.Now()
	mine := &streamPlan{Stream: j.s}
	var parts []int32
	for _, p := range j.plan.Partitions {
		if int(p.Partition)%so.Workers == so.Worker {
			mine.Partitions = append(mine.Partitions, p)
			parts = append(parts, p.Partition)
		}
	}
	dir := filepath.Join(tmp, strings.ReplaceAll(j.key, "/", "-")+"-scan")
	spill := &spillDir{dir: dir, stream: j.s}
	jj := *j.streamJob
	jj.plan = mine
	sc := jj.scanner(o, j.runID, tmp, spill)
	sc.phaseAOnly = true
	if err := sc.run(ctx); err != nil {
		return err
	}
	if so.crashAfter == "scan" {
		return errors.New("batch: test crash after the scan")
	}
	part := &scanPart{Plan: plan.id, Worker: so.Worker, Partitions: parts, NewDays: sortedDays(sc.dirty),
		Clock: sc.clock, Entries: sc.entries, Events: sc.stats.Events.Load(), Duplicates: sc.stats.Duplicates.Load(),
		Invalid: sc.stats.Invalid.Load(), Read: sc.stats.Read.Load(), IDsLoaded: sc.stats.IDsLoaded.Load(), TableSlots: sc.stats.TableSlots.Load(),
		IDsSpilled: sc.stats.IDsSpilled.Load()}
	// Phase A's spill: one object per (day, partition), the records in
	// offset order, as the aggregating worker's phase A bucket.
	for _, d := range part.NewDays {
		for _, p := range parts {
			path := spill.path(d, p, 1)
			f, err := os.Open(path)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("batch: spill: %w", err)
			}
			fi, err := f.Stat()
			if err == nil {
				err = o.Store.Put(ctx, spillKey(plan.Name, j.key, d, p), f, fi.Size())
			}
			f.Close()
			os.Remove(path)
			if err != nil {
				return fmt.Errorf("batch: uploading the spill of %s day %s partition %d: %w", j.s.Name, DayTime(d).Format("2006-01-02"), p, err)
			}
			part.Spill = append(part.Spill, spillObject{Day: d, Partition: p, Bytes: fi.Size()})
		}
	}
	if so.crashAfter == "spill" {
		return errors.New("batch: test crash after the spill upload")
	}
	data, _ := json.MarshalIndent(part, "", "  ")
	if err := objstore.PutBytes(ctx, o.Store, scanPartKey(plan.Name, j.key, so.Worker), data); err != nil {
		return err
	}
	j.log.Info("batch: scan part stored", "worker", fmt.Sprintf("%d/%d", so.Worker, so.Workers), "partitions", parts,
		"read", part.Read, "events", part.Events, "duplicates", part.Duplicates, "spill_objects", len(part.Spill),
		"duration", time.Since(t0).Round(time.Millisecond).String())
	return nil
}

// readParts reads every worker's part of kind ("scan" or "agg") for the
// job stored by key (splitJob.key), waiting up to o.Split.Wait for missing ones; a part of another
// plan counts as missing (a worker of an earlier, abandoned plan).
func readParts[T any](ctx context.Context, o *options, plan *splitPlan, stream, kind string, planOf func(*T) string) ([]*T, error) {
	key := scanPartKey
	if kind == "agg" {
		key = aggPartKey
	}
	out := make([]*T, plan.Workers)
	deadline := time.Now().Add(o.Split.Wait)
	logged := time.Time{}
	for {
		var missing []string
		for i := range out {
			if out[i] != nil {
				continue
			}
			data, err := objstore.GetBytes(ctx, o.Store, key(plan.Name, stream, i))
			if err != nil && !isNotFound(err) {
				return nil, err
			}
			if err == nil {
				var p T
				if err := json.Unmarshal(data, &p); err != nil {
					return nil, fmt.Errorf("batch: split run %s: %s part of worker %d: %w", plan.Name, kind, i, err)
				}
				if planOf(&p) == plan.id {
					out[i] = &p
					continue
				}
			}
			missing = append(missing, strconv.Itoa(i))
		}
		if len(missing) == 0 {
			return out, nil
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("batch: split run %s, stream %s: the %s parts of workers %s (of %d) are missing: run those workers (tandem batch run --run %s --worker I/%d) and publish again",
				plan.Name, stream, kind, strings.Join(missing, ", "), plan.Workers, plan.Name, plan.Workers)
		}
		if time.Since(logged) > 30*time.Second {
			o.Log.Info("batch: waiting for the other workers' parts", "stream", stream, "kind", kind, "missing", missing)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func scanPlanOf(p *scanPart) string { return p.Plan }
func aggPlanOf(p *aggPart) string   { return p.Plan }

// settle combines the scan parts into the run's days (scanner.settleDays)
// and the scan's summary, and returns the days the run computes.
func settle(o *options, j *streamJob, parts []*scanPart) (compute map[int64]bool, sum *scanSummary) {
	sc := j.scanner(o, "", "", nil)
	sc.days, sc.dirty = map[int64]bool{}, map[int64]bool{}
	if j.pv.state != nil {
		for _, d := range j.pv.state.Days {
			sc.days[d] = true
		}
	}
	sum = &scanSummary{Clock: map[int32]int64{}, Entries: map[int32]int64{}}
	for _, p := range parts {
		for _, d := range p.NewDays {
			sc.days[d], sc.dirty[d] = true, true
		}
		for k, v := range p.Clock {
			sum.Clock[k] = v
		}
		for k, v := range p.Entries {
			sum.Entries[k] = v
		}
		sum.Events += p.Events
		sum.Duplicates += p.Duplicates
		sum.Invalid += p.Invalid
		sum.Read += p.Read
		sum.IDsLoaded += p.IDsLoaded
		sum.TableSlots += p.TableSlots
		sum.IDsSpilled += p.IDsSpilled
	}
	sc.settleDays()
	sum.Days = sc.days
	return j.computeSet(sc.dirty, sc.days), sum
}

// aggWorker aggregates worker I's days: every Nth of the days the run
// computes, from every partition's events of those days.
func aggWorker(ctx context.Context, o *options, plan *splitPlan, j splitJob, tmp string) error {
	so := o.Split
	parts, err := readParts(ctx, o, plan, j.key, "scan", scanPlanOf)
	if err != nil {
		return err
	}
	t0 := time.Now()
	compute, _ := settle(o, j.streamJob, parts)
	all := sortedDays(compute)
	var days []int64
	mine := map[int64]bool{}
	for i, d := range all {
		if i%so.Workers == so.Worker {
			days = append(days, d)
			mine[d] = true
		}
	}
	spill := &spillDir{dir: filepath.Join(tmp, strings.ReplaceAll(j.key, "/", "-")+"-agg"), stream: j.s}
	for _, p := range parts {
		for _, obj := range p.Spill {
			if !mine[obj.Day] {
				continue
			}
			if err := download(ctx, o.Store, spillKey(plan.Name, j.key, obj.Day, obj.Partition), spill.path(obj.Day, obj.Partition, 1)); err != nil {
				return err
			}
		}
	}
	if j.pv.state != nil && len(days) > 0 {
		// Phase B for these days only: the older offsets' events, with
		// the duplicate offsets the scan workers stored for this run.
		sc := j.scanner(o, j.runID, tmp, spill)
		sc.dirty = mine
		if err := sc.rereadDays(ctx); err != nil {
			return err
		}
	}
	files, err := computeDays(ctx, o, spill, j.s, j.views, days, j.fromDay, j.runID, tmp)
	if err != nil {
		return err
	}
	if so.crashAfter == "agg" {
		return errors.New("batch: test crash after the day files")
	}
	part := &aggPart{Plan: plan.id, Worker: so.Worker, Days: days, Files: files}
	data, _ := json.MarshalIndent(part, "", "  ")
	if err := objstore.PutBytes(ctx, o.Store, aggPartKey(plan.Name, j.key, so.Worker), data); err != nil {
		return err
	}
	j.log.Info("batch: aggregate part stored", "worker", fmt.Sprintf("%d/%d", so.Worker, so.Workers), "days", len(days), "of", len(all),
		"duration", time.Since(t0).Round(time.Millisecond).String())
	return nil
}

// rereadDays is phase B alone, for the days in sc.dirty.
func (sc *scanner) rereadDays(ctx context.Context) error {
	sc.pool = startDecodePool(sc.plan.Stream, sc.decoder.MaxFutureSkew, sc.workers)
	defer sc.pool.stop()
	return sc.forPartitions(ctx, sc.phaseB)
}

// download copies an object to a local file.
func download(ctx context.Context, st objstore.Bucket, key, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("batch: spill: %w", err)
	}
	rc, err := st.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("batch: downloading %s: %w", key, err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("batch: spill: %w", err)
	}
	if _, err := f.ReadFrom(rc); err != nil {
		f.Close()
		return fmt.Errorf("batch: downloading %s: %w", key, err)
	}
	return f.Close()
}

// splitPublish publishes a split run once every part is in: the
// one-process run's steps after the aggregation, on the parts' results.
func splitPublish(ctx context.Context, o *options, lk *lock, plan *splitPlan, tmp string, start time.Time) (*Result, error) {
	res := &Result{RunID: plan.RunID}
	for _, s := range o.Schema.Streams {
		views := o.Schema.ViewsOf(s.Name)
		if len(views) == 0 {
			continue
		}
		jobs, err := plan.jobs(ctx, o, s)
		if err != nil {
			return nil, err
		}
		// Two jobs collect the stream's old runs once, over every view,
		// as runStream does.
		o.deferStreamGC = len(jobs) > 1
		var out []ViewResult
		for _, j := range jobs {
			vr, err := publishJob(ctx, o, lk, plan, j, start)
			if err != nil {
				o.deferStreamGC = false
				return nil, err
			}
			out = append(out, vr...)
		}
		o.deferStreamGC = false
		if len(jobs) > 1 {
			sortByConfig(out, views)
			if err := gcStream(ctx, o, s, views, out); err != nil {
				return nil, err
			}
		}
		res.Views = append(res.Views, out...)
	}
	if err := finishRun(ctx, o, o.Schema, lk, res); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	// The marker makes late or repeated workers stop; the spill, the bulk
	// of the run's temporary objects, goes (the small parts stay as a
	// record of the run until the next split run publishes). Other split
	// runs' objects go whole: they were abandoned (this run holds the
	// lock, and their plans are stale now that the views moved on).
	done, _ := json.MarshalIndent(res, "", "  ")
	if err := objstore.PutBytes(ctx, o.Store, splitDoneKey(plan.Name), done); err != nil {
		return nil, err
	}
	objs, err := objstore.List(ctx, o.Store, "batch/_split/")
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if strings.HasPrefix(obj.Key, splitPrefix(plan.Name)) && !strings.Contains(obj.Key, "/spill/") {
			continue
		}
		if err := o.Store.Delete(ctx, obj.Key); err != nil {
			return nil, fmt.Errorf("batch: deleting the split runs' temporary object %s: %w", obj.Key, err)
		}
	}
	o.Log.Info("batch: split run published", "workers", plan.Workers, "views", len(res.Views), "duration", res.Duration.Round(time.Millisecond).String())
	return res, nil
}

// publishJob publishes one job of a split run once every part is in: the
// one-process run's steps after the aggregation, on the parts' results.
func publishJob(ctx context.Context, o *options, lk *lock, plan *splitPlan, j splitJob, start time.Time) ([]ViewResult, error) {
	if out, ok, err := j.noNews(ctx, o, lk); ok {
		return out, err
	}
	j.logStart()
	scans, err := readParts(ctx, o, plan, j.key, "scan", scanPlanOf)
	if err != nil {
		return nil, err
	}
	aggs, err := readParts(ctx, o, plan, j.key, "agg", aggPlanOf)
	if err != nil {
		return nil, err
	}
	compute, sum := settle(o, j.streamJob, scans)
	sum.Scan = time.Since(start)
	files := make([][]schemas.ManifestFile, len(j.views))
	var got []int64
	for _, a := range aggs {
		if len(a.Files) != len(j.views) && len(a.Days) > 0 {
			return nil, fmt.Errorf("batch: split run %s: the aggregate part of worker %d has %d views, not %d", plan.Name, a.Worker, len(a.Files), len(j.views))
		}
		got = append(got, a.Days...)
		for i := range a.Files {
			files[i] = append(files[i], a.Files[i]...)
		}
	}
	sort.Slice(got, func(a, b int) bool { return got[a] < got[b] })
	if want := sortedDays(compute); fmt.Sprint(got) != fmt.Sprint(want) {
		return nil, fmt.Errorf("batch: split run %s, %s: the aggregate parts computed days %v, the plan needs %v", plan.Name, j.key, got, want)
	}
	return publishStream(ctx, o, lk, j.streamJob, j.runID, compute, files, sum)
}
