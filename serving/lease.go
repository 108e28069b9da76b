package serving

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// The serving lease (docs/architecture.md, "Deleting absorbed speed
// rows"): this replica keeps one object in the bucket naming, per view,
// the lowest K_p of every run it answers from or is about to. The batch
// job deletes speed rows only below what every live lease names, so a
// replica reads a run's speed rows only while its lease protects them:
//
//   - it switches to a run only when the last lease write that completed
//     before the manifest read named that run's K_p or less (so a newly
//     published run whose K_p is higher switches at once, and one whose
//     K_p is lower first becomes pending: written, then read again);
//   - a run replaced while queries still hold it stays in the lease until
//     they end (Snapshot.inflight);
//   - it answers only while its last successful write started less than
//     staleAfter ago. The lease's TTL is twice that; the batch job writes a
//     lease off only after watching it unchanged for the TTL, and a
//     query's speed half ends within speedTimeout (15 s) of its start, well
//     inside the TTL's second half (≥ 30 s);
//   - after a gap longer than staleAfter between writes (the batch job may
//     have written the lease off meanwhile) a new epoch starts: every
//     snapshot must be confirmed again by a manifest read after a write of
//     the new epoch before it answers.

// leaseState is the outcome of the last completed lease write.
type leaseState struct {
	views   map[string]schemas.ServeLeaseView // what it named
	startOK time.Time                         // when that write started
	epoch   uint64                            // 0: no write succeeded yet
}

// covers reports whether the lease protects every speed row a snapshot of
// view with K_p = k reads: it names the view, and K_p or less for every
// partition.
func (st *leaseState) covers(view string, k map[int32]int64) bool {
	if st == nil || st.epoch == 0 {
		return false
	}
	lv, ok := st.views[view]
	if !ok {
		return false
	}
	for p, c := range lv.AbsorbedChunks {
		if c > k[p] {
			return false
		}
	}
	return true
}

// leaser writes this replica's lease.
type leaser struct {
	store      objstore.Bucket
	replica    string
	key        string
	staleAfter time.Duration // answers stop this long after the last write started
	ttl        time.Duration // written into the lease: 2 × staleAfter
	renewEvery time.Duration // an unchanged lease is written again this often
	now        func() time.Time
	m          *metrics

	mu  sync.Mutex // serialises writes
	seq int64
	// state is the last completed write's outcome, read by queries.
	state atomic.Pointer[leaseState]
}

func newLeaser(store objstore.Bucket, replica string, staleAfter time.Duration, now func() time.Time, m *metrics) *leaser {
	l := &leaser{store: store, replica: replica, key: schemas.ServeLeaseKey(replica), staleAfter: staleAfter,
		ttl: 2 * staleAfter, renewEvery: max(staleAfter/6, time.Second), now: now, m: m}
	l.state.Store(&leaseState{})
	return l
}

// fresh reports whether the replica may answer in epoch: the last write
// that succeeded started less than staleAfter ago and belongs to epoch.
// Both clocks are checked: the monotonic one stops while a machine is
// suspended, the wall clock does not.
func (l *leaser) fresh(epoch uint64) error {
	st := l.state.Load()
	if st.epoch == 0 {
		return fmt.Errorf("the serving lease %s has not been written yet", l.key)
	}
	now := l.now()
	if age := max(now.Sub(st.startOK), now.Round(0).Sub(st.startOK.Round(0))); age > l.staleAfter {
		return fmt.Errorf("the serving lease %s could not be renewed for %s (the batch job may delete speed rows this replica reads)", l.key, age.Round(time.Second))
	}
	if epoch != st.epoch {
		return fmt.Errorf("the batch run is not yet confirmed after the serving lease %s was renewed late", l.key)
	}
	return nil
}

// write writes the lease naming views, unless the last write named the
// same and is younger than renewEvery (force writes anyway). It returns
// the write's error; the state of the last completed write stays.
func (l *leaser) write(ctx context.Context, views map[string]schemas.ServeLeaseView, force bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.state.Load()
	start := l.now()
	if !force && prev.epoch != 0 && start.Sub(prev.startOK) < l.renewEvery && sameLeaseViews(prev.views, views) {
		return nil
	}
	l.seq++
	data, err := json.Marshal(&schemas.ServeLease{Replica: l.replica, RenewedAt: start.UTC(), Seq: l.seq,
		TTLMs: l.ttl.Milliseconds(), Views: views})
	if err != nil {
		return err
	}
	if err := objstore.PutBytes(ctx, l.store, l.key, data); err != nil {
		l.m.leaseErrors.Inc()
		return fmt.Errorf("writing the serving lease %s: %w", l.key, err)
	}
	// The batch job may have written the lease off if writes stopped
	// becoming visible for longer than staleAfter (it waits 2 ×): from here
	// on, snapshots need confirming again.
	st := &leaseState{views: views, startOK: start, epoch: prev.epoch}
	if prev.epoch == 0 || l.now().Sub(prev.startOK) > l.staleAfter {
		st.epoch = prev.epoch + 1
	}
	l.state.Store(st)
	return nil
}

// remove deletes the lease (a replica shutting down, after its last query).
func (l *leaser) remove(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the epoch: snapshots confirmed before must not pass again.
	l.state.Store(&leaseState{epoch: l.state.Load().epoch})
	return l.store.Delete(ctx, l.key)
}

func sameLeaseViews(a, b map[string]schemas.ServeLeaseView) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || !slices.Equal(x.Runs, y.Runs) || len(x.AbsorbedChunks) != len(y.AbsorbedChunks) {
			return false
		}
		for p, c := range x.AbsorbedChunks {
			if d, ok := y.AbsorbedChunks[p]; !ok || d != c {
				return false
			}
		}
	}
	return true
}

// replicaID names this replica in its lease: the host and the listen
// address, which no two live processes share (a replica restarted in place
// takes its predecessor's lease over), or a random suffix when the port is
// chosen at start-up.
func replicaID(listen string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "serve"
	}
	if _, port, err := net.SplitHostPort(listen); err == nil && port != "0" && port != "" {
		return host + "_" + listen
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "_" + hex.EncodeToString(b[:])
}
