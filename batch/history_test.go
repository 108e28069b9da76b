package batch

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// countingBucket counts the requests a run makes by kind, and the objects
// its listings return, on a real bucket.
type countingBucket struct {
	objstore.Bucket
	mu sync.Mutex
	n  map[string]int64
}

func (c *countingBucket) add(kind string, n int64) {
	c.mu.Lock()
	c.n[kind] += n
	c.mu.Unlock()
}

func (c *countingBucket) reset() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.n
	c.n = map[string]int64{}
	return out
}

func (c *countingBucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.add("get", 1)
	return c.Bucket.Get(ctx, key)
}

func (c *countingBucket) GetRange(ctx context.Context, key string, off, length int64, ifMatch string) (io.ReadCloser, error) {
	c.add("get", 1)
	return c.Bucket.GetRange(ctx, key, off, length, ifMatch)
}

func (c *countingBucket) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	c.add("stat", 1)
	return c.Bucket.Stat(ctx, key)
}

func (c *countingBucket) Iter(ctx context.Context, prefix, startAfter string, f func(objstore.ObjectInfo) error) error {
	// The raw objects are listed whole each run (planStream: the coverage
	// of the master dataset); counted apart.
	kind := "list"
	if strings.HasPrefix(prefix, "raw/") {
		kind = "list raw"
	}
	c.add(kind, 1)
	return c.Bucket.Iter(ctx, prefix, startAfter, func(oi objstore.ObjectInfo) error {
		c.add(kind+"ed", 1)
		return f(oi)
	})
}

func (c *countingBucket) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	c.add("put", 1)
	return c.Bucket.Put(ctx, key, r, size)
}

func (c *countingBucket) PutIf(ctx context.Context, key string, data []byte, cond objstore.Precondition) (string, error) {
	c.add("put", 1)
	return c.Bucket.PutIf(ctx, key, data, cond)
}

func (c *countingBucket) Copy(ctx context.Context, src, dst string) error {
	c.add("copy", 1)
	return c.Bucket.Copy(ctx, src, dst)
}

func (c *countingBucket) Delete(ctx context.Context, key string) error {
	c.add("delete", 1)
	return c.Bucket.Delete(ctx, key)
}

// incrementalRequests builds a history of about days days (one partition,
// 144 events a day), runs the batch job over it three times as new chunks
// arrive (so the last run also collects an old run), and returns the
// requests of the last, incremental run by kind. With workers > 1 the
// first two runs are split runs of that many workers; the last is one
// process's either way.
func incrementalRequests(t *testing.T, days, workers int) (map[string]int64, *Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 1, srv)
	st := &countingBucket{Bucket: testStore(t, cfg), n: map[string]int64{}}
	s := cfg.Stream("pv")
	hist := int64(days*144/100) * 100 // genPartition: an event every 10 minutes
	rng := rand.New(rand.NewPCG(7, 8))
	var ids []string
	msgs := genPartition(rng, 0, 0, hist+200, &ids)
	bc, err := ConfigFrom(cfg)
	require.NoError(t, err)
	run := func(from, to int64, split string) *Result {
		t.Helper()
		writeRaw(t, ctx, st, s, 0, msgs[from:to], 100)
		o := Options{Config: cfg, Batch: &bc, Store: st, Log: testLog(), TempDir: t.TempDir()}
		var res *Result
		var err error
		if workers > 1 && split != "" {
			res, err = runWorkers(ctx, t, o, split, workers)
		} else {
			res, err = Run(ctx, o)
		}
		require.NoError(t, err)
		return res
	}
	run(0, hist, "first")
	run(hist, hist+100, "second")
	writeRaw(t, ctx, st, s, 0, msgs[hist+100:hist+200], 100)
	st.reset()
	res := run(0, 0, "")
	return st.reset(), res
}

// TestIncrementalCostFollowsNewData: an incremental run that absorbs one
// new chunk makes as many requests of every kind over a long history as
// over a short one, except the server-side copies of the unchanged days
// into the new run's folder (and the deletes of the run it collects),
// which the layout of immutable runs makes one per day file, and the keys
// of the raw objects' listing (one LIST request per 1,000 objects), which
// planStream reads whole to find the master dataset's coverage (issue #14).
func TestIncrementalCostFollowsNewData(t *testing.T) {
	short, rs := incrementalRequests(t, 6, 1)
	long, rl := incrementalRequests(t, 30, 1)
	for _, r := range []*Result{rs, rl} {
		require.True(t, r.Views[0].Incremental)
	}
	t.Logf("6 days: %v, days computed %d kept %d", short, rs.Views[0].DaysComputed, rs.Views[0].DaysKept)
	t.Logf("30 days: %v, days computed %d kept %d", long, rl.Views[0].DaysComputed, rl.Views[0].DaysKept)
	// Collecting an old run lists the keys it deletes: those count with
	// the deletes.
	for _, m := range []map[string]int64{short, long} {
		m["listed, not deleted"] = m["listed"] - m["delete"]
		delete(m, "listed")
	}
	var kinds []string
	for k := range long {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var grew []string
	for _, k := range kinds {
		if k == "copy" || k == "delete" || k == "list rawed" {
			continue
		}
		if long[k] > short[k] {
			grew = append(grew, fmt.Sprintf("%s %d → %d", k, short[k], long[k]))
		}
	}
	require.Empty(t, grew, "requests that grew with the untouched history: %s", strings.Join(grew, ", "))
}

// TestIncrementalCostAfterASplitRun: a split run records the raw objects'
// event-time bounds as one process does, so the incremental run after it
// makes exactly the requests, of every kind, that it makes after one
// process's runs (issue #14); without them it opens every raw object.
func TestIncrementalCostAfterASplitRun(t *testing.T) {
	one, r1 := incrementalRequests(t, 30, 1)
	split, r2 := incrementalRequests(t, 30, 2)
	for _, r := range []*Result{r1, r2} {
		require.True(t, r.Views[0].Incremental)
	}
	t.Logf("after one process: %v", one)
	t.Logf("after a split run: %v", split)
	require.Equal(t, one, split)
}
