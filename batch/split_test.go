package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// splitConfig is testYAML over three partitions with a dedup_window, a
// master-dataset retention and a view retention, in bucket (created).
func splitConfig(t *testing.T, ctx context.Context, srv *testenv.S3Server, bucket string) (*schemas.Config, *s3.Store) {
	t.Helper()
	y := fmt.Sprintf(testYAML, 100, 3)
	y = strings.Replace(y, "    id_field: event_id\n", "    id_field: event_id\n    dedup_window: 1d\n    retention: 5d\n", 1)
	y = strings.Replace(y, "    granularity: 1h\n", "    granularity: 1h\n    retention: 3d\n", 1)
	y = strings.Replace(y, "    granularity: 1d\n", "    granularity: 1d\n    retention: 3d\n", 1)
	cfg, err := schemas.Parse("test.yaml", []byte(y), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg.S3 = schemas.S3Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}
	st := testStore(t, cfg)
	require.NoError(t, st.EnsureBucket(ctx))
	return cfg, st
}

// runWorkers runs a split run of n workers concurrently (worker 0
// publishes), as the processes of a Kubernetes Indexed Job would.
func runWorkers(ctx context.Context, t *testing.T, o Options, name string, n int) (*Result, error) {
	t.Helper()
	var wg sync.WaitGroup
	res := make([]*Result, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oi := o
			oi.TempDir = t.TempDir()
			oi.Split = SplitOptions{Name: name, Workers: n, Worker: i, Publish: i == 0, Wait: time.Minute}
			res[i], errs[i] = Run(ctx, oi)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return res[0], nil
}

// publishedState is every view's manifest, without what names the run or
// its timing, and the bytes of each of its files by level and day.
func publishedState(t testing.TB, ctx context.Context, st *s3.Store, cfg *schemas.Config) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range cfg.Views {
		m, err := ReadManifest(ctx, st, v.Name)
		require.NoError(t, err)
		require.NotNil(t, m)
		c := *m
		c.RunID, c.PreviousRunID, c.CreatedAt, c.Duration = "", "", time.Time{}, 0
		c.Files = nil
		for _, f := range m.Files {
			f.Key = strings.Replace(f.Key, m.RunID, "RUN", 1)
			c.Files = append(c.Files, f)
		}
		data, err := json.MarshalIndent(c, "", " ")
		require.NoError(t, err)
		out[v.Name+" manifest"] = string(data)
		for k, b := range fileBytes(t, ctx, st, m) {
			out[v.Name+" "+k] = string(b)
		}
	}
	return out
}

// TestSplitRunEqualsOneProcess: split runs of 2 and 3 workers publish the
// same manifests and Parquet bytes as one process over the same master
// dataset (late events, duplicates across objects and partitions'
// windows, a dedup_window, retention of the raw data and of a view), for
// a first run and an incremental one.
func TestSplitRunEqualsOneProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	type setup struct {
		workers int
		cfg     *schemas.Config
		st      *s3.Store
	}
	var sets []setup
	for _, n := range []int{1, 2, 3} {
		cfg, st := splitConfig(t, ctx, srv, fmt.Sprintf("split%d", n))
		sets = append(sets, setup{n, cfg, st})
	}
	s := sets[0].cfg.Stream("pv")
	rng := rand.New(rand.NewPCG(11, 12))
	msgs := map[int32][]genMsg{}
	ids := map[int32]*[]string{0: {}, 1: {}, 2: {}}
	write := func(p int32, ms []genMsg) {
		for _, x := range sets {
			writeRaw(t, ctx, x.st, s, p, ms, 50)
		}
	}
	for p := int32(0); p < 3; p++ {
		msgs[p] = genPartition(rng, p, 0, 1000+100*int64(p), ids[p]) // about 7 days
		write(p, msgs[p])
	}
	now := genBase.Add(7*24*time.Hour + 5*time.Hour)
	runAll := func(round string) {
		for _, x := range sets {
			o := Options{Config: x.cfg, Store: x.st, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }}
			if x.workers == 3 {
				// Its workers decide duplicates in buckets (grace.go): 1,024-
				// slot tables for 1,000–1,500 ids a partition.
				bc, err := ConfigFrom(x.cfg)
				require.NoError(t, err)
				bc.DedupMemory = 64 << 10
				o.Batch = &bc
			}
			var res *Result
			var err error
			if x.workers == 1 {
				res, err = Run(ctx, o)
			} else {
				res, err = runWorkers(ctx, t, o, fmt.Sprintf("%s-%d", round, x.workers), x.workers)
			}
			require.NoError(t, err, "%s, %d workers", round, x.workers)
			require.False(t, res.UpToDate(), "%s, %d workers", round, x.workers)
			if round == "first" { // the second's ids in scope are its window's: they fit
				require.Equal(t, x.workers == 3, res.Views[0].IDsSpilled > 0, "%s, %d workers: ids spilled", round, x.workers)
			}
		}
		want := publishedState(t, ctx, sets[0].st, sets[0].cfg)
		for _, x := range sets[1:] {
			got := publishedState(t, ctx, x.st, x.cfg)
			require.Equal(t, len(want), len(got), "%s, %d workers: files", round, x.workers)
			for k, w := range want {
				require.True(t, w == got[k], "%s, %d workers: %s differs from one process's", round, x.workers, k)
			}
		}
	}
	runAll("first")
	m, err := ReadManifest(ctx, sets[0].st, "pv_hourly")
	require.NoError(t, err)
	require.NotNil(t, m.RetainedFrom, "the view's retention applies")
	require.Positive(t, m.Duplicates)

	// More events, a day later: an incremental run (late events make old
	// days dirty; retention moves on).
	now = now.Add(24 * time.Hour)
	for p := int32(0); p < 3; p++ {
		more := genPartition(rng, p, int64(len(msgs[p])), 200, ids[p])
		msgs[p] = append(msgs[p], more...)
		write(p, more)
	}
	runAll("second")
	for _, x := range sets {
		_, err := objstore.GetBytes(ctx, x.st, splitDoneKey(fmt.Sprintf("second-%d", x.workers)))
		if x.workers > 1 {
			require.NoError(t, err, "the published marker")
			objs, err := objstore.List(ctx, x.st, splitPrefix(fmt.Sprintf("second-%d", x.workers)))
			require.NoError(t, err)
			for _, o := range objs {
				require.NotContains(t, o.Key, "/spill/", "the spill is deleted after the publish")
			}
			objs, err = objstore.List(ctx, x.st, splitPrefix(fmt.Sprintf("first-%d", x.workers)))
			require.NoError(t, err)
			require.Empty(t, objs, "an earlier split run's records go when the next one publishes")
		}
	}
	// The state the split run left continues incrementally like one
	// process's: nothing new, up to date.
	for _, x := range sets {
		res, err := Run(ctx, Options{Config: x.cfg, Store: x.st, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }})
		require.NoError(t, err)
		require.True(t, res.UpToDate(), "%d workers", x.workers)
	}

	// A view's definition changes: its pending version is computed over
	// all history beside the current one (with retention, in one job
	// with the stream's other views: the stored duplicate decisions), by
	// N workers as by one process.
	for i := range sets {
		sets[i].cfg = withPendingVersion(t, sets[i].cfg)
	}
	now = now.Add(3 * time.Hour)
	for p := int32(0); p < 3; p++ {
		more := genPartition(rng, p, int64(len(msgs[p])), 100, ids[p])
		msgs[p] = append(msgs[p], more...)
		write(p, more)
	}
	runAll("pending")
	m, err = ReadManifest(ctx, sets[0].st, "pv_hourly__v2")
	require.NoError(t, err)
	require.NotNil(t, m, "the pending version is published")
}

// withPendingVersion is cfg (Versioned, or not yet) after pv_hourly lost
// a measure, as clickhouse.DB.Versioned gives it once tandem migrate
// registered the change: the current version, pv_hourly, and the pending
// one, pv_hourly__v2, both computed.
func withPendingVersion(t *testing.T, cfg *schemas.Config) *schemas.Config {
	t.Helper()
	old := cfg.View("pv_hourly")
	changed := *cfg
	changed.Views = nil
	var versions []schemas.ViewVersion
	for _, v := range cfg.Views {
		versions = append(versions, schemas.ViewVersion{View: v.Name, Version: 1, Fingerprint: v.Fingerprint(), Definition: v.DefinitionYAML(), State: schemas.VersionCurrent})
		if v.Name != "pv_hourly" {
			changed.Views = append(changed.Views, v)
			continue
		}
		nv := *old
		nv.Measures = slices.DeleteFunc(slices.Clone(old.Measures), func(m schemas.Measure) bool { return m.Name == "min_latency" })
		changed.Views = append(changed.Views, &nv)
	}
	nv := changed.View("pv_hourly")
	require.NotEqual(t, old.Fingerprint(), nv.Fingerprint())
	versions = append(versions, schemas.ViewVersion{View: "pv_hourly", Version: 2, Fingerprint: nv.Fingerprint(), Definition: nv.DefinitionYAML(), State: schemas.VersionPending})
	eff, err := changed.Versioned(versions)
	require.NoError(t, err)
	require.Len(t, eff.Views, len(cfg.Views)+1)
	return eff
}

// TestSplitRunPendingVersionIncremental: without retention, a split run
// computes a pending version over all history under a run id of its own
// while the stream's other views continue incrementally — one process's
// per-view recompute — and publishes the same manifests and bytes; the
// next run continues incrementally for all of them.
func TestSplitRunPendingVersionIncremental(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	type setup struct {
		workers int
		cfg     *schemas.Config
		st      *s3.Store
	}
	var sets []setup
	for _, n := range []int{1, 2, 3} {
		cfg := testConfig(t, 100, 3, srv)
		cfg.S3.Bucket = fmt.Sprintf("pending%d", n)
		st := testStore(t, cfg)
		require.NoError(t, st.EnsureBucket(ctx))
		sets = append(sets, setup{n, cfg, st})
	}
	s := sets[0].cfg.Stream("pv")
	rng := rand.New(rand.NewPCG(21, 22))
	msgs := map[int32][]genMsg{}
	ids := map[int32]*[]string{0: {}, 1: {}, 2: {}}
	add := func(n int64) {
		for p := int32(0); p < 3; p++ {
			more := genPartition(rng, p, int64(len(msgs[p])), n+50*int64(p), ids[p])
			msgs[p] = append(msgs[p], more...)
			for _, x := range sets {
				writeRaw(t, ctx, x.st, s, p, more, 50)
			}
		}
	}
	now := genBase.Add(8 * 24 * time.Hour)
	runAll := func(round string) map[int]*Result {
		out := map[int]*Result{}
		for _, x := range sets {
			o := Options{Config: x.cfg, Store: x.st, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }}
			var res *Result
			var err error
			if x.workers == 1 {
				res, err = Run(ctx, o)
			} else {
				res, err = runWorkers(ctx, t, o, fmt.Sprintf("%s-%d", round, x.workers), x.workers)
			}
			require.NoError(t, err, "%s, %d workers", round, x.workers)
			out[x.workers] = res
		}
		want := publishedState(t, ctx, sets[0].st, sets[0].cfg)
		for _, x := range sets[1:] {
			got := publishedState(t, ctx, x.st, x.cfg)
			require.Equal(t, len(want), len(got), "%s, %d workers: files", round, x.workers)
			for k, w := range want {
				require.True(t, w == got[k], "%s, %d workers: %s differs from one process's", round, x.workers, k)
			}
		}
		return out
	}
	add(800)
	runAll("first")
	for i := range sets {
		sets[i].cfg = withPendingVersion(t, sets[i].cfg)
	}
	add(150)
	for n, res := range runAll("pending") {
		byView := map[string]ViewResult{}
		for _, vr := range res.Views {
			byView[vr.View] = vr
		}
		require.Len(t, byView, 3, "%d workers", n)
		for _, name := range []string{"pv_hourly", "pv_daily"} {
			require.True(t, byView[name].Published && byView[name].Incremental, "%d workers: %s continues incrementally", n, name)
			require.Positive(t, byView[name].DaysKept, "%d workers: %s", n, name)
		}
		nv := byView["pv_hourly__v2"]
		require.True(t, nv.Published, "%d workers", n)
		require.False(t, nv.Incremental, "%d workers: the pending version is computed over all history", n)
		require.NotEqual(t, byView["pv_hourly"].Manifest.RunID, nv.Manifest.RunID, "%d workers: under a run id of its own", n)
		require.Equal(t, byView["pv_hourly"].Manifest.Absorbed, nv.Manifest.Absorbed, "%d workers: up to the same chunks", n)
		t.Logf("%d workers: pv_hourly %d days computed, %d kept; pv_hourly__v2 %d days computed, %d kept",
			n, byView["pv_hourly"].DaysComputed, byView["pv_hourly"].DaysKept, nv.DaysComputed, nv.DaysKept)
	}
	// The pending version's rows are the truth of its definition.
	absorbed := map[int32]int64{}
	m, err := ReadManifest(ctx, sets[2].st, "pv_hourly__v2")
	require.NoError(t, err)
	maps.Copy(absorbed, m.Absorbed)
	want, _, _, _ := truth(msgs, absorbed, time.Hour, true)
	nv := sets[2].cfg.View("pv_hourly__v2")
	_, rows, _ := publishedRows(t, ctx, sets[2].st, nv)
	checkAgainstTruth(t, nv, rows, want)

	// Both continue incrementally from either run's state.
	add(100)
	for n, res := range runAll("after") {
		for _, vr := range res.Views {
			require.True(t, vr.Published && vr.Incremental, "%d workers: %s", n, vr.View)
		}
	}
}

// TestSplitRunCrashedAndRepeatedWorkers: a worker killed mid-way (after its
// spill, before its part) and a worker run twice leave a run that
// publishes the one-process bytes once the worker is run again; the
// publisher refuses while a part is missing, and names it; a worker of a
// published run stops.
func TestSplitRunCrashedAndRepeatedWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	cfg1, st1 := splitConfig(t, ctx, srv, "one")
	cfg2, st2 := splitConfig(t, ctx, srv, "two")
	s := cfg1.Stream("pv")
	rng := rand.New(rand.NewPCG(13, 14))
	for p := int32(0); p < 3; p++ {
		var ids []string
		ms := genPartition(rng, p, 0, 700, &ids)
		writeRaw(t, ctx, st1, s, p, ms, 50)
		writeRaw(t, ctx, st2, s, p, ms, 50)
	}
	now := genBase.Add(5 * 24 * time.Hour)
	o1 := Options{Config: cfg1, Store: st1, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }}
	_, err := Run(ctx, o1)
	require.NoError(t, err)

	o := Options{Config: cfg2, Store: st2, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }}
	split := func(worker int, publish bool, crash string) SplitOptions {
		return SplitOptions{Name: "nightly", Workers: 2, Worker: worker, Publish: publish, crashAfter: crash}
	}
	// The publisher without a plan.
	op := o
	op.Split = split(-1, true, "")
	_, err = Run(ctx, op)
	require.ErrorContains(t, err, "has no plan")
	_, err = st2.Stat(ctx, LockKey)
	require.ErrorIs(t, err, objstore.ErrNotFound, "a publisher of an unplanned run takes no lock")

	// Worker 1 dies after its scan's index and duplicate offsets, then,
	// run again, after uploading its spill: before its scan part both times.
	ow := o
	for _, step := range []string{"scan", "spill"} {
		ow.Split = split(1, false, step)
		_, err = Run(ctx, ow)
		require.ErrorContains(t, err, "test crash", step)
	}
	// A worker with another N is refused.
	ow.Split = SplitOptions{Name: "nightly", Workers: 3, Worker: 1}
	_, err = Run(ctx, ow)
	require.ErrorContains(t, err, "planned for 2 workers, not 3")
	// Worker 0 cannot aggregate without worker 1's scan part: it names it.
	ow.Split = split(0, false, "")
	_, err = Run(ctx, ow)
	require.ErrorContains(t, err, "scan parts of workers 1 (of 2) are missing")
	// The publisher names the missing parts.
	_, err = Run(ctx, op)
	require.ErrorContains(t, err, "parts of workers 1 (of 2) are missing")

	// Both workers; worker 1 dies again, after writing its day files but
	// before its aggregate part.
	both := func(crash1 string) []error {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				oi := o
				oi.TempDir = t.TempDir()
				oi.Split = split(i, false, "")
				if i == 1 {
					oi.Split.crashAfter = crash1
				}
				oi.Split.Wait = time.Minute
				_, errs[i] = Run(ctx, oi)
			}()
		}
		wg.Wait()
		return errs
	}
	errs := both("agg")
	require.NoError(t, errs[0])
	require.ErrorContains(t, errs[1], "test crash")
	_, err = Run(ctx, op)
	require.ErrorContains(t, err, "agg parts of workers 1 (of 2) are missing")
	lock, err := objstore.GetBytes(ctx, st2, LockKey)
	require.NoError(t, err, "a failed publish leaves the run's lock to its workers")
	require.Contains(t, string(lock), `"holder": "split:nightly"`)
	_, err = Run(ctx, Options{Config: cfg2, Store: st2, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }})
	require.ErrorIs(t, err, ErrLocked, "no other run meanwhile")
	// Worker 1 again, then once more (a repeated pod), then the publisher.
	ow.Split = split(1, false, "")
	_, err = Run(ctx, ow)
	require.NoError(t, err)
	_, err = Run(ctx, ow)
	require.NoError(t, err, "a repeated worker")
	res, err := Run(ctx, op)
	require.NoError(t, err)
	require.False(t, res.UpToDate())

	want, got := publishedState(t, ctx, st1, cfg1), publishedState(t, ctx, st2, cfg2)
	require.Equal(t, len(want), len(got))
	for k, w := range want {
		require.True(t, w == got[k], "%s differs from one process's", k)
	}
	// A worker of the published run stops; publishing again is a no-op.
	_, err = Run(ctx, ow)
	require.ErrorIs(t, err, ErrSplitPublished)
	again, err := Run(ctx, op)
	require.NoError(t, err)
	require.Equal(t, res.RunID, again.RunID)
	// The lock was released: a one-process run can run.
	_, err = Run(ctx, Options{Config: cfg2, Store: st2, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }})
	require.NoError(t, err)
}

func TestParseWorker(t *testing.T) {
	for _, tc := range []struct {
		in   string
		i, n int
		err  string
	}{
		{"0/3", 0, 3, ""},
		{"2/3", 2, 3, ""},
		{"3/3", 0, 0, "0 ≤ I < N"},
		{"-1/3", 0, 0, "0 ≤ I < N"},
		{"1/0", 0, 0, "0 ≤ I < N"},
		{"1", 0, 0, "want I/N"},
		{"a/b", 0, 0, "want I/N"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			i, n, err := ParseWorker(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, [2]int{tc.i, tc.n}, [2]int{i, n})
		})
	}
	require.ErrorContains(t, SplitOptions{Name: "x", Workers: 0}.Validate(), "--workers must be at least 1")
	require.ErrorContains(t, SplitOptions{Name: "a b", Workers: 2}.Validate(), "--run")
}
