package batch

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// ReleaseOptions configure ReleaseSpeedRows. Store, ClickHouse and
// Current are required.
type ReleaseOptions struct {
	Store      objstore.Bucket
	ClickHouse CHStore
	// Current holds the current run of each view to release, as published
	// in Store (nil entries are skipped). It must have been published
	// before ReleaseSpeedRows starts: leases read earlier than the publish
	// could name an older run without this call seeing it.
	Current []*schemas.Manifest
	Views   []*schemas.View
	// Wait bounds how long to wait for the live serving replicas to name
	// the current runs in their leases (batch.speed_release_wait); 0 reads
	// the leases once.
	Wait time.Duration
	Log  *slog.Logger
}

// releasePoll is how often the leases are read again while waiting.
const releasePoll = 250 * time.Millisecond

// ReleaseSpeedRows deletes, per view and partition, the speed rows of
// chunks below min(K_p of the view's current run, K_p of every live serving
// lease naming the view), and returns those bounds by view. This is the
// rule of docs/architecture.md ("Deleting absorbed speed rows"): a replica
// answers from a run only while its lease names that run's K_p or less,
// so no replica, and no query in flight on one, ever misses a row.
//
// It first waits, up to o.Wait, until every live lease names at least the
// current K_p (replicas switch within about one serve.manifest_poll of a
// publish) or turns out dead (unchanged for its TTL as watched here, or
// older than schemas.ServeLeaseForget TTLs); it never waits for longer,
// and deletes what the leases allow then: a replica still on an older run
// keeps that run's rows until a later call.
func ReleaseSpeedRows(ctx context.Context, o ReleaseOptions) (map[string]map[int32]int64, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	views := map[string]*schemas.View{}
	for _, v := range o.Views {
		views[v.Name] = v
	}
	cur := map[string]map[int32]int64{}
	for _, m := range o.Current {
		if m == nil {
			continue
		}
		if views[m.View] == nil {
			return nil, fmt.Errorf("batch: releasing speed rows: manifest of view %s, which is not among the views", m.View)
		}
		k := make(map[int32]int64, len(m.Absorbed))
		for p := range m.Absorbed {
			k[p] = m.AbsorbedChunks(p)
		}
		cur[m.View] = k
	}
	if len(cur) == 0 {
		return nil, nil
	}
	w := &leaseWatch{seen: map[string]leaseSeen{}, log: o.Log}
	start := time.Now()
	var floors map[string]map[int32]int64
	for logged := false; ; {
		var behind []string
		var err error
		floors, behind, err = w.scan(ctx, o.Store, cur)
		if err != nil {
			return nil, err
		}
		waited := time.Since(start)
		if len(behind) == 0 {
			break
		}
		if waited >= o.Wait {
			o.Log.Info("batch: serving replicas still on an older run keep its speed rows until a later run",
				"replicas", strings.Join(behind, ","), "waited", waited.Round(time.Millisecond).String())
			break
		}
		if !logged {
			o.Log.Info("batch: waiting for serving replicas to switch to the new runs before deleting absorbed speed rows",
				"replicas", strings.Join(behind, ","), "up_to", o.Wait.String())
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(releasePoll, o.Wait-waited)):
		}
	}
	names := make([]string, 0, len(floors))
	for name := range floors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := o.ClickHouse.DeleteAbsorbedSpeedRows(ctx, views[name], floors[name]); err != nil {
			return nil, fmt.Errorf("batch: deleting the absorbed speed rows of %s: %w", name, err)
		}
	}
	o.Log.Info("batch: deleted absorbed speed rows", "below_chunks", floors, "waited", time.Since(start).Round(time.Millisecond).String())
	return floors, nil
}

// leaseWatch tells live leases from dead ones across reads: a lease whose
// Seq has not changed for its TTL, by this process's monotonic clock, is
// dead. Comparing with the replica's own clock would need clocks that
// agree; watching the lease change does not.
type leaseWatch struct {
	seen map[string]leaseSeen // by object key
	log  *slog.Logger
}

type leaseSeen struct {
	seq   int64
	renew time.Time // RenewedAt as read, with Seq: the content seen
	since time.Time // when this content was first read here
}

// scan reads every lease and returns, per view of cur, the deletion bounds
// (cur lowered by every live lease naming the view) and the live replicas
// whose leases name less than cur.
func (w *leaseWatch) scan(ctx context.Context, st objstore.Bucket, cur map[string]map[int32]int64) (map[string]map[int32]int64, []string, error) {
	floors := make(map[string]map[int32]int64, len(cur))
	for view, k := range cur {
		f := make(map[int32]int64, len(k))
		for p, c := range k {
			f[p] = c
		}
		floors[view] = f
	}
	infos, err := objstore.List(ctx, st, schemas.ServeLeasePrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("batch: listing the serving leases: %w", err)
	}
	var behind []string
	for _, info := range infos {
		data, err := objstore.GetBytes(ctx, st, info.Key)
		if isNotFound(err) {
			continue // the replica stopped and removed it
		}
		if err != nil {
			return nil, nil, fmt.Errorf("batch: reading the serving lease %s: %w", info.Key, err)
		}
		l, err := schemas.DecodeServeLease(data)
		if err != nil {
			// An unreadable lease may protect anything: delete nothing.
			return nil, nil, fmt.Errorf("batch: %s: %w (absorbed speed rows are kept until it is readable or removed)", info.Key, err)
		}
		now := time.Now()
		s, ok := w.seen[info.Key]
		if !ok || s.seq != l.Seq || !s.renew.Equal(l.RenewedAt) {
			s = leaseSeen{seq: l.Seq, renew: l.RenewedAt, since: now}
			w.seen[info.Key] = s
		}
		if age := now.Sub(l.RenewedAt); age > schemas.ServeLeaseForget*l.TTL() {
			w.log.Info("batch: forgetting the lease of a serving replica gone for long", "replica", l.Replica, "renewed_at", l.RenewedAt)
			if err := st.Delete(ctx, info.Key); err != nil {
				w.log.Warn("batch: deleting a forgotten serving lease", "key", info.Key, "err", err)
			}
			continue
		}
		if now.Sub(s.since) >= l.TTL() {
			continue // not renewed for its TTL: the replica stopped answering long ago
		}
		below := false
		for view, f := range floors {
			lv, ok := l.Views[view]
			if !ok {
				continue
			}
			for p, c := range cur[view] {
				if k := lv.AbsorbedChunks[p]; k < c {
					f[p] = min(f[p], k)
					below = true
				}
			}
		}
		if below {
			behind = append(behind, l.Replica)
		}
	}
	return floors, behind, nil
}
