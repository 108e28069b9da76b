package serving

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// Snapshot is the batch run one query answers from: the manifest (nil when
// no run has been published yet) and, derived from it, K_p per partition.
// A query takes one Snapshot and uses it for both halves, so the batch
// files and the speed rows it reads cover every chunk exactly once.
type Snapshot struct {
	View     *schemas.View
	Manifest *schemas.Manifest // nil: nothing absorbed, every speed row counts
	// AbsorbedChunks is K_p: chunks below it of partition p are in the
	// batch files; the speed half reads chunks from it on.
	AbsorbedChunks map[int32]int64
	// LoadedAt is when serving switched to this snapshot.
	LoadedAt time.Time
	// Err, when set, makes the view unanswerable with this run (its chunk
	// size differs from the configuration).
	Err error

	// inflight counts the queries holding this snapshot; the lease keeps
	// naming a replaced snapshot until it is 0.
	inflight atomic.Int64
	// confirmed is the lease epoch in which a manifest read after a lease
	// write covering this snapshot returned its run (see lease.go).
	confirmed atomic.Uint64
	// OtherDefinition is set when the run was computed for another
	// definition of the view, or under another declaration of a field of
	// its stream: the view is backfilling until a run of the configured
	// definition is published.
	OtherDefinition bool
	// ChangedFields are the fields whose declaration differs from the
	// run's, when that is why OtherDefinition is set.
	ChangedFields []string
}

// Release ends a query's hold on the snapshot (from manifests.snapshot).
func (s *Snapshot) release() { s.inflight.Add(-1) }

// RunID is the run's id, or "".
func (s *Snapshot) RunID() string {
	if s.Manifest == nil {
		return ""
	}
	return s.Manifest.RunID
}

func newSnapshot(v *schemas.View, m *schemas.Manifest, chunkSize int64, now time.Time) *Snapshot {
	s := &Snapshot{View: v, Manifest: m, AbsorbedChunks: map[int32]int64{}, LoadedAt: now}
	if m == nil {
		return s
	}
	switch {
	case m.View != v.Name:
		s.Err = fmt.Errorf("the manifest of view %s names view %q", v.Name, m.View)
	case m.Fingerprint != "" && m.Fingerprint != v.Fingerprint():
		s.OtherDefinition = true
	case v.StreamDef() != nil && len(v.StreamDef().ChangedFieldDecls(m.Fields)) > 0:
		s.OtherDefinition = true
		s.ChangedFields = v.StreamDef().ChangedFieldDecls(m.Fields)
	case m.ChunkSize != chunkSize:
		s.Err = fmt.Errorf("batch run %s of view %s used chunk_size %d, the configuration says %d; chunk numbers would not line up",
			m.RunID, v.Name, m.ChunkSize, chunkSize)
	}
	for p := range m.Absorbed {
		s.AbsorbedChunks[p] = m.AbsorbedChunks(p)
	}
	return s
}

// viewManifest tracks the current snapshot of one view.
type viewManifest struct {
	view    *schemas.View
	current atomic.Pointer[Snapshot]

	mu  sync.Mutex // serialises refreshes of this view
	raw []byte     // bytes of the current manifest, to skip unchanged polls

	// leaseMu guards pending and draining apart from mu, so the lease is
	// renewed while a refresh warms the cache.
	leaseMu sync.Mutex
	// pending is a run read from the manifest that the lease must name
	// before this replica switches to it.
	pending *Snapshot
	// draining holds replaced snapshots that queries may still hold.
	draining []*Snapshot

	// statusMu guards the read status apart from mu, so a query never waits
	// for a refresh that is warming the cache for a new run.
	statusMu sync.Mutex
	lastOK   time.Time // last successful read of the manifest
	lastErr  error     // last failed read, nil after a success
}

// setStatus records the outcome of a read of the manifest and returns err.
func (vm *viewManifest) setStatus(ok time.Time, err error) error {
	vm.statusMu.Lock()
	defer vm.statusMu.Unlock()
	if err == nil {
		vm.lastOK = ok
	}
	vm.lastErr = err
	return err
}

func (vm *viewManifest) status() (lastOK time.Time, lastErr error) {
	vm.statusMu.Lock()
	defer vm.statusMu.Unlock()
	return vm.lastOK, vm.lastErr
}

// manifests polls the manifest of every view and switches each view to a
// newly published run atomically: a query that loaded the old snapshot
// finishes on it, the next one sees the new one.
type manifests struct {
	store      ManifestStore
	chunkSize  int64
	poll       time.Duration
	staleAfter time.Duration
	now        func() time.Time
	views      map[string]*viewManifest
	order      []*viewManifest
	m          *metrics
	onSwitch   func(view, fromRun, toRun string)
	// beforeSwitch, when set, runs before a view switches from one run to
	// a newer one, while queries still answer from the old run: serving
	// warms its cache with it, so the first queries after a batch run are
	// not cold.
	beforeSwitch func(ctx context.Context, snap *Snapshot)
	// lease, when set, is this replica's serving lease (lease.go); nil
	// switches runs as soon as they are read (no speed rows are deleted
	// behind this replica's back only if no batch job deletes any).
	lease *leaser
}

func newManifests(store ManifestStore, cfg *schemas.Config, poll time.Duration, now func() time.Time, m *metrics) *manifests {
	if poll <= 0 {
		poll = 2 * time.Second
	}
	// A replica that cannot read manifests keeps answering from its last
	// run for a while (the run's files and the speed rows of the chunks it
	// did not absorb stay until every replica can have switched), but not
	// forever: speed rows of chunks a newer run absorbed get deleted.
	stale := 10 * poll
	if stale < 30*time.Second {
		stale = 30 * time.Second
	}
	ms := &manifests{store: store, chunkSize: cfg.ChunkSize, poll: poll, staleAfter: stale, now: now,
		views: map[string]*viewManifest{}, m: m}
	for _, v := range cfg.Views {
		vm := &viewManifest{view: v}
		ms.views[v.Name] = vm
		ms.order = append(ms.order, vm)
	}
	return ms
}

// refresh reads the manifest of one view and switches to it when it
// changed and the lease covers it; a run the lease does not cover yet
// becomes pending (the next lease write names it).
func (ms *manifests) refresh(ctx context.Context, vm *viewManifest) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	// The lease as last written before this read: a run read now is safe
	// to answer from if that write covers it.
	var cov *leaseState
	if ms.lease != nil {
		cov = ms.lease.state.Load()
	}
	data, err := objstore.GetBytes(ctx, ms.store, schemas.ManifestKey(vm.view.Name))
	now := ms.now()
	cur := vm.current.Load()
	var snap *Snapshot
	switch {
	case errors.Is(err, objstore.ErrNotFound) && vm.raw != nil:
		// A manifest never goes away once published; answering as if no
		// run existed would miss the absorbed chunks whose speed rows are
		// gone. Keep the last run and say so.
		ms.m.manifestErrors.WithLabelValues(vm.view.Name).Inc()
		return vm.setStatus(now, fmt.Errorf("the manifest of view %s (run %s) has disappeared from the store", vm.view.Name, cur.RunID()))
	case errors.Is(err, objstore.ErrNotFound):
		// No run published yet: the speed layer answers everything.
		if cur != nil {
			ms.confirm(vm, cur, cov)
			return vm.setStatus(now, nil)
		}
		data = nil
		snap = newSnapshot(vm.view, nil, ms.chunkSize, now)
	case err != nil:
		ms.m.manifestErrors.WithLabelValues(vm.view.Name).Inc()
		return vm.setStatus(now, fmt.Errorf("reading the manifest of view %s: %w", vm.view.Name, err))
	default:
		if cur != nil && vm.raw != nil && bytes.Equal(data, vm.raw) {
			ms.confirm(vm, cur, cov)
			return vm.setStatus(now, nil)
		}
		m, err := schemas.DecodeManifest(data)
		if err != nil {
			ms.m.manifestErrors.WithLabelValues(vm.view.Name).Inc()
			return vm.setStatus(now, fmt.Errorf("the manifest of view %s: %w", vm.view.Name, err))
		}
		snap = newSnapshot(vm.view, m, ms.chunkSize, now)
	}
	if ms.lease != nil {
		if !cov.covers(vm.view.Name, snap.AbsorbedChunks) {
			vm.leaseMu.Lock()
			vm.pending = snap
			vm.leaseMu.Unlock()
			return vm.setStatus(now, nil)
		}
		snap.confirmed.Store(cov.epoch)
	}
	prev := cur
	if ms.beforeSwitch != nil && prev != nil && snap.Manifest != nil && snap.Err == nil && !snap.OtherDefinition && prev.RunID() != snap.RunID() {
		// Pending while warming: the lease keeps naming it.
		vm.leaseMu.Lock()
		vm.pending = snap
		vm.leaseMu.Unlock()
		ms.beforeSwitch(ctx, snap)
		snap.LoadedAt = ms.now()
	}
	vm.leaseMu.Lock()
	vm.current.Store(snap)
	vm.pending = nil
	if prev != nil {
		vm.draining = append(vm.draining, prev)
	}
	vm.leaseMu.Unlock()
	vm.raw = data
	vm.setStatus(now, nil)
	if prev != nil && prev.RunID() != snap.RunID() {
		ms.m.manifestSwitches.WithLabelValues(vm.view.Name).Inc()
		if ms.onSwitch != nil {
			ms.onSwitch(vm.view.Name, prev.RunID(), snap.RunID())
		}
	}
	return nil
}

// confirm marks cur, whose run a manifest read just returned again, as
// answerable in cov's epoch when cov covers it.
func (ms *manifests) confirm(vm *viewManifest, cur *Snapshot, cov *leaseState) {
	if ms.lease != nil && cov.covers(vm.view.Name, cur.AbsorbedChunks) {
		cur.confirmed.Store(cov.epoch)
	}
	vm.leaseMu.Lock()
	vm.pending = nil // a pending run the manifest no longer names
	vm.leaseMu.Unlock()
}

// leaseViews is what the lease must name now: per view, the lowest K_p of
// the current, pending and still-held replaced snapshots. Replaced
// snapshots no query holds are dropped: a query takes a snapshot only
// while it is current (snapshot), so once replaced, a count of 0 stays 0
// for every query that reads by it.
func (ms *manifests) leaseViews() map[string]schemas.ServeLeaseView {
	out := map[string]schemas.ServeLeaseView{}
	for _, vm := range ms.order {
		vm.leaseMu.Lock()
		vm.draining = slices.DeleteFunc(vm.draining, func(s *Snapshot) bool { return s.inflight.Load() == 0 })
		snaps := append([]*Snapshot{vm.current.Load(), vm.pending}, vm.draining...)
		vm.leaseMu.Unlock()
		var lv *schemas.ServeLeaseView
		for _, s := range snaps {
			if s == nil {
				continue
			}
			if lv == nil {
				lv = &schemas.ServeLeaseView{AbsorbedChunks: map[int32]int64{}}
				for p, k := range s.AbsorbedChunks {
					lv.AbsorbedChunks[p] = k
				}
			} else {
				for p, k := range lv.AbsorbedChunks {
					lv.AbsorbedChunks[p] = min(k, s.AbsorbedChunks[p]) // a partition s lacks is 0
				}
			}
			if !slices.Contains(lv.Runs, s.RunID()) {
				lv.Runs = append(lv.Runs, s.RunID())
			}
		}
		if lv != nil {
			for p, k := range lv.AbsorbedChunks {
				if k == 0 {
					delete(lv.AbsorbedChunks, p) // 0 is the default
				}
			}
			out[vm.view.Name] = *lv
		}
	}
	return out
}

// renewLease writes the lease naming what leaseViews says (force: even
// when unchanged and recent).
func (ms *manifests) renewLease(ctx context.Context, force bool) error {
	if ms.lease == nil {
		return nil
	}
	return ms.lease.write(ctx, ms.leaseViews(), force)
}

// refreshAll renews the lease and refreshes every view, and when a view's
// new run is pending (its K_p is below what the lease named), does it
// again at once so the switch does not wait a poll. It returns the first
// failure, and sets each view's backfilling gauge.
func (ms *manifests) refreshAll(ctx context.Context) error {
	var first error
	for round := 0; round < 2; round++ {
		leaseErr := ms.renewLease(ctx, false)
		first = nil
		pending := false
		for _, vm := range ms.order {
			if err := ms.refresh(ctx, vm); err != nil && first == nil {
				first = err
			}
			vm.leaseMu.Lock()
			pending = pending || vm.pending != nil
			vm.leaseMu.Unlock()
		}
		if first == nil {
			first = leaseErr
		}
		if !pending {
			break
		}
	}
	for _, vm := range ms.order {
		if snap := vm.current.Load(); snap != nil {
			v := 0.0
			if errors.Is(ms.backfilling(ctx, vm, snap), ErrBackfilling) {
				v = 1
			}
			ms.m.backfilling.WithLabelValues(vm.view.Name).Set(v)
		}
	}
	return first
}

// ErrUnavailable is wrapped by errors that make a query unanswerable right
// now (the manifest or the batch files cannot be read); the HTTP layer
// answers 503.
var ErrUnavailable = errors.New("batch view unavailable")

// ErrBackfilling is wrapped (as a *BackfillingError, which also wraps
// ErrUnavailable) when a view is backfilling: its stream's history has been
// absorbed by batch runs, but no run of the view's configured definition
// has been published yet (docs/architecture.md, "Adding and changing
// views"). The speed layer alone would answer it inexactly, so it is not
// answered until the batch run publishes.
var ErrBackfilling = errors.New("backfilling")

// BackfillingError says why a view is backfilling.
type BackfillingError struct {
	View   string
	Reason string
}

func (e *BackfillingError) Error() string {
	return fmt.Sprintf("view %s is backfilling: %s; it is answered once the next batch run (tandem batch run, the CronJob, or tandem dev's scheduler) has published it",
		e.View, e.Reason)
}

// Is makes errors.Is match both ErrBackfilling and ErrUnavailable.
func (e *BackfillingError) Is(target error) bool {
	return target == ErrBackfilling || target == ErrUnavailable
}

// backfilling returns a *BackfillingError when snap cannot answer vm
// exactly: the run it holds was computed for another definition, or there
// is no run while another view of the same stream has one (the view was
// added after the stream's history was absorbed: the speed layer's
// duplicate horizon cannot see repeats of long-absorbed events, and Kafka
// may no longer hold them). A stream on which no run was ever published is
// answered by the speed layer alone, as always.
func (ms *manifests) backfilling(ctx context.Context, vm *viewManifest, snap *Snapshot) error {
	if snap.OtherDefinition && len(snap.ChangedFields) > 0 {
		return &BackfillingError{View: vm.view.Name, Reason: fmt.Sprintf(
			"the declaration of field(s) %s of its stream changed since run %s validated events", strings.Join(snap.ChangedFields, ", "), snap.RunID())}
	}
	if snap.OtherDefinition {
		return &BackfillingError{View: vm.view.Name, Reason: fmt.Sprintf(
			"its definition changed (fingerprint %s; the published run %s was computed for %s)", vm.view.Fingerprint(), snap.RunID(), snap.Manifest.Fingerprint)}
	}
	if snap.Manifest != nil {
		return nil
	}
	for _, other := range ms.order {
		if other == vm || other.view.Stream != vm.view.Stream {
			continue
		}
		osnap := other.current.Load()
		if osnap == nil {
			// Not loaded yet. When it cannot be read, whether the stream
			// has absorbed history is unknown: unanswerable, not an answer
			// from the speed layer alone.
			if err := ms.refresh(ctx, other); err != nil {
				return fmt.Errorf("%w: view %s has no published run, and whether view %s of its stream has one is unknown: %v", ErrUnavailable, vm.view.Name, other.view.Name, err)
			}
			if osnap = other.current.Load(); osnap == nil {
				continue
			}
		}
		if osnap.Manifest != nil {
			return &BackfillingError{View: vm.view.Name, Reason: fmt.Sprintf(
				"it was added after batch runs absorbed its stream's history (view %s is at run %s) and has no published run yet", other.view.Name, osnap.RunID())}
		}
	}
	return nil
}

// snapshot returns the snapshot a query of view vm uses, held until the
// caller calls its release. It loads the manifest when none was loaded
// yet, and refuses a snapshot that could not be confirmed for longer than
// staleAfter, that the lease does not protect now, or that cannot answer
// exactly (a *BackfillingError).
func (ms *manifests) snapshot(ctx context.Context, vm *viewManifest) (*Snapshot, error) {
	for attempt := 0; ; attempt++ {
		snap := vm.current.Load()
		if snap == nil {
			if attempt > 0 {
				return nil, fmt.Errorf("%w: the manifest of view %s has not been read yet", ErrUnavailable, vm.view.Name)
			}
			if err := ms.refreshAll(ctx); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			continue
		}
		// Hold, then check the snapshot is still current: a replaced one
		// may already be gone from the lease (leaseViews).
		snap.inflight.Add(1)
		if vm.current.Load() != snap {
			snap.release()
			continue
		}
		if err := ms.usable(ctx, vm, snap); err != nil {
			snap.release()
			return nil, err
		}
		return snap, nil
	}
}

func (ms *manifests) usable(ctx context.Context, vm *viewManifest, snap *Snapshot) error {
	lastOK, lastErr := vm.status()
	if lastErr != nil && ms.now().Sub(lastOK) > ms.staleAfter {
		return fmt.Errorf("%w: the manifest of view %s could not be read for %s: %v",
			ErrUnavailable, vm.view.Name, ms.now().Sub(lastOK).Round(time.Second), lastErr)
	}
	if snap.Err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, snap.Err)
	}
	if ms.lease != nil {
		if err := ms.lease.fresh(snap.confirmed.Load()); err != nil {
			return fmt.Errorf("%w: view %s: %v", ErrUnavailable, vm.view.Name, err)
		}
	}
	return ms.backfilling(ctx, vm, snap)
}

// run polls until ctx is cancelled. The lease is also renewed on its own,
// so a refresh that warms the cache for a minute does not let it lapse.
func (ms *manifests) run(ctx context.Context) {
	if ms.lease != nil {
		go func() {
			t := time.NewTicker(ms.lease.renewEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					_ = ms.renewLease(ctx, false) // a failure surfaces in queries and Ready
				}
			}
		}()
	}
	t := time.NewTicker(ms.poll)
	defer t.Stop()
	for {
		_ = ms.refreshAll(ctx) // errors are kept per view and surface in queries and Ready
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ready reports an error when some view's manifest could not be read on the
// last attempt, or the lease could not be renewed in time.
func (ms *manifests) ready() error {
	if err := ms.manifestsReady(); err != nil {
		return err
	}
	if ms.lease != nil {
		return ms.lease.fresh(ms.lease.state.Load().epoch)
	}
	return nil
}

func (ms *manifests) manifestsReady() error {
	for _, vm := range ms.order {
		lastOK, err := vm.status()
		ok := !lastOK.IsZero()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("the manifest of view %s has not been read yet", vm.view.Name)
		}
	}
	return nil
}
