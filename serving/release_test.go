package serving_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// startReplica runs one serving replica for cfg (built as `tandem serve`
// builds it, under the given replica name) and returns its URL and a
// graceful stop.
func startReplica(t *testing.T, cfg *testConfig, replica string) (string, func()) {
	t.Helper()
	reg := ops.NewRegistry()
	log := slog.New(slog.NewTextHandler(&testenv.LockedBuffer{}, nil))
	store, err := s3.New(cfg.S3)
	require.NoError(t, err)
	speed := &serving.LazyClickHouseSpeed{Config: cfg.ClickHouse}
	svc, err := serving.New(cfg.Serve, serving.Deps{Schema: cfg.Config, Manifests: store, Leases: store, Replica: replica,
		Files: serving.S3ViewFiles{Store: store}, Speed: speed, Registry: reg, Log: log})
	require.NoError(t, err)
	require.NoError(t, svc.Listen())
	return "http://" + svc.Addr(), testenv.RunService(t, "serving replica "+replica, svc.Run, func() { speed.Close() })
}

// speedRows counts the view's speed rows (all versions) of chunks below
// (below true) or from bound[p] on, per partition p.
func speedRows(t *testing.T, db *clickhouse.DB, v *schemas.View, bound map[int32]int64, below bool) int {
	t.Helper()
	n := 0
	for p := int32(0); p < 2; p++ {
		op := ">="
		if below {
			op = "<"
		}
		var c uint64
		require.NoError(t, db.Conn().QueryRow(context.Background(), fmt.Sprintf("SELECT count() FROM %s.%s WHERE kafka_partition = ? AND chunk %s ?",
			db.Database(), clickhouse.SpeedTable(v.Name), op), uint32(p), uint64(bound[p])).Scan(&c))
		n += int(c)
	}
	return n
}

// TestSpeedReleaseFollowsReplicas is the lease rule end to end on MinIO and
// ClickHouse 18.16: two serving replicas, batch runs published between
// them, and ReleaseSpeedRows (what `tandem batch run` calls after
// publishing) at each step. Every answer of both replicas equals the truth
// computed from the events at every step, speed rows are deleted as soon
// as no live replica reads them, a replica still on an older run keeps
// its rows, and the lease of a replica that died stops protecting anything
// after its TTL (or at once when it is long past).
func TestSpeedReleaseFollowsReplicas(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	_, store, _, db := newBackends(t, cfg.Config, true)
	v := cfg.View(viewName)
	d := genDataset(t, cfg.Config, 3000, 11)
	chunks := d.chunks()
	insertSpeed(t, db, d)
	ctx := context.Background()

	// A polls every 100 ms; B only at start (a replica slow to switch).
	cfgB := *cfg
	cfgB.Serve.ManifestPoll = schemas.Duration(time.Hour)
	urlA, _ := startReplica(t, cfg, "replica-a")
	urlB, stopB := startReplica(t, &cfgB, "replica-b")

	exact := func(stage string, urls ...string) {
		t.Helper()
		for _, u := range urls {
			for _, c := range queryMatrix() {
				a := query(t, u, c.params())
				want := c.truth(d, nil)
				require.Equal(t, len(want), len(a.Rows), "%s: %s: %s", stage, u, c.name)
				checkAnswer(t, a.Rows, want, c.groupBy, c.measureList())
			}
		}
	}
	release := func(wait time.Duration, m *schemas.Manifest) (map[int32]int64, time.Duration) {
		t.Helper()
		t0 := time.Now()
		floors, err := batch.ReleaseSpeedRows(ctx, batch.ReleaseOptions{Store: store, ClickHouse: db,
			Current: []*schemas.Manifest{m}, Views: []*schemas.View{v}, Wait: wait})
		require.NoError(t, err)
		return floors[v.Name], time.Since(t0)
	}
	leaseOf := func(replica string) *schemas.ServeLease {
		t.Helper()
		data, err := objstore.GetBytes(ctx, store, schemas.ServeLeaseKey(replica))
		require.NoError(t, err)
		l, err := schemas.DecodeServeLease(data)
		require.NoError(t, err)
		return l
	}
	exact("no run yet", urlA, urlB)
	total := speedRows(t, db, v, map[int32]int64{}, false)

	// Run 1: A switches, B stays on "no run" and its lease says so; the
	// release waits its bound for B, then deletes nothing.
	k1 := map[int32]int64{0: chunks[0] / 3, 1: chunks[1] / 3}
	r1 := publish(t, store, cfg.Config, d, "run-1", k1)
	waitRun(t, urlA, "run-1")
	require.Equal(t, []string{""}, leaseOf("replica-b").Views[v.Name].Runs)
	floors, took := release(time.Second, r1)
	require.Equal(t, map[int32]int64{0: 0, 1: 0}, floors, "B still reads every chunk")
	require.GreaterOrEqual(t, took, time.Second, "the release waited for B")
	require.Equal(t, total, speedRows(t, db, v, map[int32]int64{}, false))
	exact("run 1 published, B on no run", urlA, urlB)

	// B restarts (its successor takes its lease over) and reads run 1: now
	// every replica is on it and its absorbed chunks go.
	stopB()
	_, err := objstore.GetBytes(ctx, store, schemas.ServeLeaseKey("replica-b"))
	require.ErrorIs(t, err, objstore.ErrNotFound, "a replica that stops removes its lease")
	urlB, stopB = startReplica(t, &cfgB, "replica-b")
	waitRun(t, urlB, "run-1")
	kept := speedRows(t, db, v, k1, false)
	require.Less(t, kept, total)
	floors, _ = release(10*time.Second, r1)
	require.Equal(t, k1, floors)
	require.Zero(t, speedRows(t, db, v, k1, true), "speed rows of chunks run 1 absorbed")
	require.Equal(t, kept, speedRows(t, db, v, k1, false), "speed rows of chunks run 1 did not absorb")
	exact("everyone on run 1, its chunks deleted", urlA, urlB)

	// Run 2: A switches within a poll, B stays on run 1 and keeps run 1's
	// seam: only chunks below K(run 1) are gone, the ones B reads stay.
	k2 := map[int32]int64{0: chunks[0] - 1, 1: chunks[1] - 2}
	r2 := publish(t, store, cfg.Config, d, "run-2", k2)
	waitRun(t, urlA, "run-2")
	floors, _ = release(500*time.Millisecond, r2)
	require.Equal(t, k1, floors, "B on run 1 holds the deletion at run 1's seam")
	between := speedRows(t, db, v, k1, false) - speedRows(t, db, v, k2, false)
	require.Positive(t, between, "rows of chunks run 2 absorbed and B still reads")
	exact("run 2 published, B on run 1", urlA, urlB)

	// B dies; a replica that crashed left a lease naming no run (watched
	// dead after its 1 s TTL), and one gone for long is forgotten outright.
	stopB()
	now := time.Now().UTC()
	for _, l := range []schemas.ServeLease{
		{Replica: "crashed", RenewedAt: now, Seq: 3, TTLMs: 1000, Views: map[string]schemas.ServeLeaseView{v.Name: {Runs: []string{""}}}},
		{Replica: "gone", RenewedAt: now.Add(-time.Hour), Seq: 9, TTLMs: 1000, Views: map[string]schemas.ServeLeaseView{v.Name: {Runs: []string{""}}}},
	} {
		data, err := json.Marshal(l)
		require.NoError(t, err)
		require.NoError(t, objstore.PutBytes(ctx, store, schemas.ServeLeaseKey(l.Replica), data))
	}
	floors, took = release(10*time.Second, r2)
	require.Equal(t, k2, floors, "dead leases do not hold speed rows back")
	require.GreaterOrEqual(t, took, time.Second, "the crashed replica's lease counted until watched unchanged for its TTL")
	require.Less(t, took, 10*time.Second)
	_, err = objstore.GetBytes(ctx, store, schemas.ServeLeaseKey("gone"))
	require.ErrorIs(t, err, objstore.ErrNotFound, "a lease long past is deleted")
	require.Zero(t, speedRows(t, db, v, k2, true))
	exact("only A, on run 2, its chunks deleted", urlA)
}
