package serving_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/serving"
)

// TestBucketCacheEqualsUncached: answers through the bucket cache equal
// answers merged from the run's rows, over a dashboard's sliding ranges
// (the same shapes again and again with moving edges, so interior buckets
// hit), random ranges, granularities (1h, 1d, all, 5m and 1m kept an
// hour to an entry, and the uncached 7m and local days), group-bys, filters and measure subsets, cold and warm; after
// late speed rows land in buckets the cache holds; and after a manifest
// switch to a new run that absorbed more chunks, where a bucket of the old
// run would double-count or miss rows.
func TestBucketCacheEqualsUncached(t *testing.T) {
	e := newEnv(t, true)
	start := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	d := genDatasetSpan(t, e.cfg, 3000, 11, start, 72*time.Hour, false)
	m := writeRun(t, e.store, e.cfg, d, "run-1", d.halfChunks())
	addLevels(t, e.store, e.view, m)
	publishManifest(t, e.store, m)
	insertSpeed(t, e.db, d)
	waitRun(t, e.url, "run-1")

	rng := rand.New(rand.NewPCG(3, 5))
	measures := []string{"views", "revenue", "min_latency", "max_latency", "users", "latency"}
	var shapes []url.Values
	for i := 0; i < 10; i++ {
		p := url.Values{"granularity": {[]string{"1h", "1d", "all", "1h", "1d", "all", "5m", "1d", "1m", "7m"}[i]}}
		if i == 7 {
			p.Set("tz", "Europe/Amsterdam")
		}
		randomGroupsAndFilters(rng, p)
		if rng.IntN(3) == 0 {
			p.Set("measures", strings.Join(measures[rng.IntN(4):], ","))
		}
		shapes = append(shapes, p)
	}
	// round asks every shape over ranges sliding by step from first, each
	// twice through the cache (cold or warm, then warm) and once without.
	round := func(label string, first time.Time, step time.Duration, n int) {
		for k := 0; k < n; k++ {
			from := first.Add(time.Duration(k) * step)
			to := from.Add(30*time.Hour + time.Duration(k)*17*time.Minute)
			for i, s := range shapes {
				p := url.Values{}
				for key, v := range s {
					p[key] = v
				}
				p.Set("from", from.Format(time.RFC3339Nano))
				p.Set("to", to.Format(time.RFC3339Nano))
				where := fmt.Sprintf("%s %d shape %d: %s", label, k, i, p.Encode())
				cold := query(t, e.url, p)
				r0 := batchRowsMerged(t, e.url)
				warm := query(t, e.url, p)
				if cached := p.Get("tz") == "" && p.Get("granularity") != "7m"; cached {
					require.Zero(t, batchRowsMerged(t, e.url)-r0, "%s: the warm query merged batch rows", where)
				}
				restore := serving.SetUseBucketCache(false)
				want := query(t, e.url, p)
				restore()
				sameAnswer(t, where+" (first)", want, cold)
				sameAnswer(t, where+" (again)", want, warm)
			}
		}
	}
	// Sliding by ragged steps: the edges move, the interior buckets stay.
	round("sliding", start.Add(3*time.Hour+7*time.Minute+13*time.Second), 41*time.Minute+3*time.Second, 4)
	// Random ranges.
	for k := 0; k < 4; k++ {
		from := start.Add(-2 * time.Hour).Add(time.Duration(rng.Int64N(int64(60 * time.Hour)))).Truncate(time.Minute)
		round("random", from, 0, 1)
	}

	// Late data: more events over the same days, in chunks after the run's
	// (the open chunk grows, new chunks open), land in buckets now cached.
	late := genDatasetSpan(t, e.cfg, 600, 12, start, 72*time.Hour, false)
	d.extend(late)
	insertSpeed(t, e.db, d)
	round("late", start.Add(3*time.Hour+7*time.Minute+13*time.Second), 41*time.Minute+3*time.Second, 2)

	// A new run absorbing every whole chunk: the speed half shrinks to the
	// rest, so a bucket of run-1 would miss the rows run-2 absorbed.
	m2 := writeRun(t, e.store, e.cfg, d, "run-2", d.chunks())
	addLevels(t, e.store, e.view, m2)
	publishManifest(t, e.store, m2)
	waitRun(t, e.url, "run-2")
	round("switched", start.Add(3*time.Hour+7*time.Minute+13*time.Second), 41*time.Minute+3*time.Second, 2)

	// Concurrent queries share cached buckets, which they only read (run
	// with -race): four clients ask every shape over new ranges at once.
	from := start.Add(5*time.Hour + 11*time.Minute)
	var want []*apiAnswer
	var ps []url.Values
	restore := serving.SetUseBucketCache(false)
	for i, s := range shapes {
		p := url.Values{}
		for key, v := range s {
			p[key] = v
		}
		p.Set("from", from.Add(time.Duration(i)*time.Minute).Format(time.RFC3339Nano))
		p.Set("to", from.Add(40*time.Hour).Format(time.RFC3339Nano))
		ps = append(ps, p)
		want = append(want, query(t, e.url, p))
	}
	restore()
	var wg sync.WaitGroup
	got := make([][]*apiAnswer, 4)
	errs := make([]error, len(got))
	for c := range got {
		wg.Add(1)
		go func() { // no require here: it must stop the test's own goroutine
			defer wg.Done()
			for _, p := range ps {
				a, err := queryErr(e.url, p)
				if err != nil {
					errs[c] = err
					return
				}
				got[c] = append(got[c], a)
			}
		}()
	}
	wg.Wait()
	for c := range got {
		require.NoError(t, errs[c], "client %d", c)
		for i := range ps {
			sameAnswer(t, fmt.Sprintf("client %d shape %d: %s", c, i, ps[i].Encode()), want[i], got[c][i])
		}
	}
}

// sameAnswer requires got to have want's rows and values; sums may differ
// in the last bits (float addition in another order).
func sameAnswer(t *testing.T, where string, want, got *apiAnswer) {
	t.Helper()
	require.Equal(t, want.Freshness.BatchRun, got.Freshness.BatchRun, where)
	sameRows(t, where, want, got)
}

// sameRows requires got to have want's rows and values (sums to float
// rounding).
func sameRows(t *testing.T, where string, want, got *apiAnswer) {
	t.Helper()
	require.Equal(t, len(want.Rows), len(got.Rows), "%s: answer rows", where)
	for j, g := range got.Rows {
		w := want.Rows[j]
		at := fmt.Sprintf("%s row %d", where, j)
		require.True(t, g.WindowStart.Equal(w.WindowStart), at)
		require.Equal(t, w.Dimensions, g.Dimensions, at)
		require.Len(t, g.Measures, len(w.Measures), at)
		for name, wv := range w.Measures {
			gv := g.Measures[name]
			if name == "revenue" {
				var gs, ws float64
				require.NoError(t, json.Unmarshal(gv, &gs))
				require.NoError(t, json.Unmarshal(wv, &ws))
				require.InDelta(t, ws, gs, 1e-12*math.Max(1, math.Abs(ws)), "%s %s", at, name)
				continue
			}
			require.JSONEq(t, string(wv), string(gv), "%s %s", at, name)
		}
	}
}

// queryErr is query for a goroutine other than the test's.
func queryErr(base string, params url.Values) (*apiAnswer, error) {
	resp, err := http.Get(queryURL(base, params))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var a apiAnswer
	return &a, json.Unmarshal(body, &a)
}
