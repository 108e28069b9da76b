package serving

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestLeaseNamesWhatQueriesRead drives one replica's manifests and lease
// on a real S3 (FakeS3) with a test clock, and checks the rules of
// lease.go at each step: what the lease names, when a run is switched to,
// and when answers stop.
func TestLeaseNamesWhatQueriesRead(t *testing.T) {
	cfg, err := schemas.Parse("t.yaml", []byte(testenv.ExampleConfigYAML(t, "chunk_size: 10000", "chunk_size: 100")),
		func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	srv := testenv.FakeS3(t)
	store, err := s3.New(schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region})
	require.NoError(t, err)
	ctx := context.Background()
	v := cfg.View("pageviews_by_country")

	var mu sync.Mutex
	clock := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	m := newMetrics(nil)
	ms := newManifests(store, cfg, time.Second, now, m)
	ms.lease = newLeaser(store, "r1", ms.staleAfter, now, m)
	vm := ms.views[v.Name]

	publish := func(run string, k map[int32]int64) {
		man := &schemas.Manifest{View: v.Name, RunID: run, Fingerprint: v.Fingerprint(), ChunkSize: cfg.ChunkSize,
			CreatedAt: now(), Absorbed: map[int32]int64{}, Files: []schemas.ManifestFile{}}
		for p, c := range k {
			man.Absorbed[p] = c * cfg.ChunkSize
		}
		data, err := json.Marshal(man)
		require.NoError(t, err)
		require.NoError(t, objstore.PutBytes(ctx, store, schemas.ManifestKey(v.Name), data))
	}
	lease := func() schemas.ServeLeaseView {
		t.Helper()
		data, err := objstore.GetBytes(ctx, store, schemas.ServeLeaseKey("r1"))
		require.NoError(t, err)
		l, err := schemas.DecodeServeLease(data)
		require.NoError(t, err)
		require.Equal(t, 2*ms.staleAfter, l.TTL())
		return l.Views[v.Name]
	}
	k1 := map[int32]int64{0: 2, 1: 3}
	k2 := map[int32]int64{0: 4, 1: 5}

	// No run yet: the lease names the view with nothing absorbed.
	require.NoError(t, ms.refreshAll(ctx))
	require.Equal(t, schemas.ServeLeaseView{Runs: []string{""}, AbsorbedChunks: map[int32]int64{}}, lease())

	// A run whose K_p is higher switches at once (the lease, naming less,
	// covers it); a query holds it.
	publish("run-1", k1)
	require.NoError(t, ms.refreshAll(ctx))
	require.Equal(t, "run-1", vm.current.Load().RunID())
	require.NoError(t, ms.renewLease(ctx, false))
	require.Equal(t, k1, lease().AbsorbedChunks)
	held, err := ms.snapshot(ctx, vm)
	require.NoError(t, err)

	// Run 2: switched, but the lease keeps run 1's K_p while the query
	// holding run 1 runs, and drops it once the query ends.
	publish("run-2", k2)
	require.NoError(t, ms.refreshAll(ctx))
	require.Equal(t, "run-2", vm.current.Load().RunID())
	require.NoError(t, ms.renewLease(ctx, false))
	require.Equal(t, schemas.ServeLeaseView{Runs: []string{"run-2", "run-1"}, AbsorbedChunks: k1}, lease())
	held.release()
	require.NoError(t, ms.renewLease(ctx, false))
	require.Equal(t, schemas.ServeLeaseView{Runs: []string{"run-2"}, AbsorbedChunks: k2}, lease())

	// An older run published again (lower K_p): not answered from until the
	// lease names it; a refresh alone leaves it pending.
	publish("run-1", k1)
	require.NoError(t, ms.refresh(ctx, vm))
	require.Equal(t, "run-2", vm.current.Load().RunID(), "switched before the lease named run 1's K_p")
	require.NoError(t, ms.renewLease(ctx, false))
	require.Equal(t, k1, lease().AbsorbedChunks, "the pending run is named")
	require.NoError(t, ms.refresh(ctx, vm))
	require.Equal(t, "run-1", vm.current.Load().RunID())
	snap, err := ms.snapshot(ctx, vm)
	require.NoError(t, err)
	snap.release()

	// Renewals that stop: answers stop after staleAfter. A late renewal
	// starts a new epoch; answers resume only once a manifest read after
	// it confirms the run.
	advance(ms.staleAfter + time.Second)
	_, err = ms.snapshot(ctx, vm)
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "could not be renewed")
	require.Error(t, ms.ready())
	require.NoError(t, ms.renewLease(ctx, false))
	_, err = ms.snapshot(ctx, vm)
	require.ErrorContains(t, err, "not yet confirmed")
	require.NoError(t, ms.refresh(ctx, vm))
	snap, err = ms.snapshot(ctx, vm)
	require.NoError(t, err)
	snap.release()
	require.NoError(t, ms.ready())

	// Unchanged and recent: not written again; old enough: renewed.
	before := lease()
	seq := func() int64 {
		data, err := objstore.GetBytes(ctx, store, schemas.ServeLeaseKey("r1"))
		require.NoError(t, err)
		l, err := schemas.DecodeServeLease(data)
		require.NoError(t, err)
		return l.Seq
	}
	s0 := seq()
	require.NoError(t, ms.renewLease(ctx, false))
	require.Equal(t, s0, seq())
	advance(ms.lease.renewEvery)
	require.NoError(t, ms.renewLease(ctx, false))
	require.Equal(t, s0+1, seq())
	require.Equal(t, before, lease())

	// Stopping removes it.
	require.NoError(t, ms.lease.remove(ctx))
	_, err = objstore.GetBytes(ctx, store, schemas.ServeLeaseKey("r1"))
	require.ErrorIs(t, err, objstore.ErrNotFound)
	_, err = ms.snapshot(ctx, vm)
	require.ErrorIs(t, err, ErrUnavailable)
}
