package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// loadRunIntoClickHouse does what the batch job does after writing a run:
// its base rows into <view>_batch (read back from its files) and its
// levels into <view>_levels, built inside ClickHouse.
func loadRunIntoClickHouse(t testing.TB, db *clickhouse.DB, store *s3.Store, v *schemas.View, m *schemas.Manifest) {
	t.Helper()
	ctx := context.Background()
	var rows []schemas.ViewRow
	for _, f := range m.BaseFiles() {
		data, err := objstore.GetBytes(ctx, store, f.Key)
		require.NoError(t, err)
		r, err := parquet.NewViewReader(v, bytes.NewReader(data), int64(len(data)))
		require.NoError(t, err)
		for row, err := range r.Rows(time.Time{}, time.Time{}) {
			require.NoError(t, err)
			rows = append(rows, row)
		}
		r.Close()
	}
	n, err := db.LoadBatchRun(ctx, v, clickhouse.BatchLoad{Manifest: m, Rows: func(yield func(clickhouse.ViewRow, error) bool) {
		for _, r := range rows {
			if !yield(r, nil) {
				return
			}
		}
	}})
	require.NoError(t, err)
	require.EqualValues(t, len(rows), n)
	require.NoError(t, db.LoadLevels(ctx, v, m))
}

// topNCount reads tandem_serve_topn_total of path from /metrics.
func topNCount(t testing.TB, base, path string) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^tandem_serve_topn_total\{path="` + path + `",view="` + viewName + `"\} (\d+)$`)
	m := re.FindStringSubmatch(metricsText(t, base))
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// mergeGroupsSum reads the sum of tandem_serve_merge_groups from /metrics.
func mergeGroupsSum(t testing.TB, base string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^tandem_serve_merge_groups_sum\{view="` + viewName + `"\} (\S+)$`)
	m := re.FindStringSubmatch(metricsText(t, base))
	if m == nil {
		return 0
	}
	f, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return f
}

// randomTopN is a random top-N shape over the dataset's span (base, 4
// hours): ragged or whole-day ranges, any granularity, group-by, filter,
// having, order (exact measures, both directions, ties) and measure
// subset, sketches included.
func randomTopN(rng *rand.Rand, i int) shape {
	c := shape{limit: 1 + rng.IntN(4)}
	p := url.Values{}
	if rng.IntN(5) == 0 { // whole UTC days: the 1d level
		c.from = base.Truncate(24 * time.Hour)
		c.to = c.from.Add(48 * time.Hour)
	} else {
		c.from = base.Add(time.Duration(rng.IntN(180)-20)*time.Minute + time.Duration(rng.IntN(60))*time.Second)
		c.to = c.from.Add(time.Duration(10+rng.IntN(270))*time.Minute + time.Duration(rng.IntN(60))*time.Second)
	}
	grans := []string{"all", "1m", "15m", "30m", "1h", "2h", "1d"}
	g := grans[rng.IntN(len(grans))]
	p.Set("granularity", g)
	if g == "all" {
		c.all = true
	} else {
		gr, _ := schemas.ParseGranularity(g)
		c.gran = gr.D()
	}
	if !c.all && rng.IntN(4) == 0 { // local buckets: whole offsets (1h levels) and half-hour ones (base rows)
		zone := []string{"Europe/Amsterdam", "Asia/Kolkata"}[rng.IntN(2)]
		c.loc, _ = time.LoadLocation(zone)
		p.Set("tz", zone)
	}
	c.groupBy = [][]string{nil, {"country"}, {"device"}, {"country", "device"}, {"device", "country"}}[rng.IntN(5)]
	switch rng.IntN(5) {
	case 1:
		p.Add("filter", "country:US")
		p.Add("filter", "country:DE")
		c.keep = func(dim func(string) string) bool { return dim("country") == "US" || dim("country") == "DE" }
	case 2:
		p.Add("filter", "country!:XX")
		c.keep = func(dim func(string) string) bool { return dim("country") != "XX" }
	case 3:
		p.Add("filter", "device^:m")
		c.keep = func(dim func(string) string) bool { return strings.HasPrefix(dim("device"), "m") }
	case 4:
		p.Add("filter", "device!^:t")
		c.keep = func(dim func(string) string) bool { return !strings.HasPrefix(dim("device"), "t") }
	}
	need := map[string]bool{}
	switch rng.IntN(6) {
	case 5:
		k := 1 + rng.IntN(20)
		p.Add("having", fmt.Sprintf("users>%d", k))
		c.having, need["users"] = func(r *truthRow) bool { return len(r.users) > k }, true
	case 1:
		k := 1 + rng.IntN(8)
		p.Add("having", fmt.Sprintf("views>=%d", k))
		c.having, need["views"] = func(r *truthRow) bool { return r.count >= int64(k) }, true
	case 2:
		p.Add("having", "revenue>500")
		c.having, need["revenue"] = func(r *truthRow) bool { return r.sum > 500 }, true
	case 3:
		p.Add("having", "max_latency<=150")
		c.having, need["max_latency"] = func(r *truthRow) bool { return len(r.lat) > 0 && r.lat[len(r.lat)-1] <= 150 }, true
	case 4:
		p.Add("having", "min_latency>20")
		c.having, need["min_latency"] = func(r *truthRow) bool { return len(r.lat) > 0 && r.lat[0] > 20 }, true
	}
	c.order = []string{"", "views", "views", "revenue", "min_latency", "max_latency", "users", "latency.p99", "latency.p50"}[rng.IntN(9)]
	if c.order != "" {
		c.desc = rng.IntN(2) == 0
		dir := "asc"
		if c.desc {
			dir = "desc"
		}
		p.Set("order_by", c.order+":"+dir)
		need[strings.TrimSuffix(strings.TrimSuffix(c.order, ".p99"), ".p50")] = true
	}
	p.Set("limit", strconv.Itoa(c.limit))
	if rng.IntN(2) == 0 { // a subset; otherwise every measure (sketches too)
		var ms []string
		for _, m := range allMeasures {
			if need[m] || rng.IntN(2) == 0 {
				ms = append(ms, m)
			}
		}
		if len(ms) == 0 {
			ms = []string{"users"}
		}
		p.Set("measures", strings.Join(ms, ","))
	}
	c.params = p
	c.name = fmt.Sprintf("case %d: %s from %s to %s group_by %v", i, p.Encode(), c.from.Format(time.RFC3339), c.to.Format(time.RFC3339), c.groupBy)
	return c
}

// samePaths asks c with the top N computed in ClickHouse and merged in
// serving, and requires the same answer: the same rows in the same order
// with the same values (sums equal to float rounding: ClickHouse adds in
// another order; ties between such sums may then fall either way, so a
// revenue order is compared as a set per bucket).
func samePaths(t *testing.T, baseURL string, c shape) {
	t.Helper()
	p := url.Values{}
	for k, vs := range c.params {
		p[k] = vs
	}
	p.Set("from", c.from.Format(time.RFC3339Nano))
	p.Set("to", c.to.Format(time.RFC3339Nano))
	if len(c.groupBy) > 0 {
		p.Set("group_by", strings.Join(c.groupBy, ","))
	}
	pushed := query(t, baseURL, p)
	restore := serving.SetUsePushdown(false)
	merged := query(t, baseURL, p)
	restore()
	require.Equal(t, *merged.Truncated, *pushed.Truncated, "%s: truncated", c.name)
	require.Equal(t, len(merged.Rows), len(pushed.Rows), "%s: rows", c.name)
	key := func(r apiRow) string { return fmt.Sprint(r.WindowStart.UnixMilli(), r.Dimensions) }
	byKey := map[string]apiRow{}
	for _, r := range merged.Rows {
		byKey[key(r)] = r
	}
	for i, r := range pushed.Rows {
		want := merged.Rows[i]
		if c.order == "revenue" {
			want = byKey[key(r)]
			require.True(t, want.WindowStart.Equal(r.WindowStart), "%s: row %d %v is not in the merged answer", c.name, i, r.Dimensions)
		}
		require.True(t, want.WindowStart.Equal(r.WindowStart), "%s: row %d bucket", c.name, i)
		require.Equal(t, want.Dimensions, r.Dimensions, "%s: row %d", c.name, i)
		require.Equal(t, len(want.Measures), len(r.Measures), "%s: row %d measures", c.name, i)
		for m, raw := range want.Measures {
			if m == "revenue" && string(raw) != "null" {
				var a, b float64
				require.NoError(t, json.Unmarshal(raw, &a))
				require.NoError(t, json.Unmarshal(r.Measures[m], &b))
				require.InDelta(t, a, b, 1e-9*math.Max(1, math.Abs(a)), "%s: row %d revenue", c.name, i)
				continue
			}
			require.JSONEq(t, string(raw), string(r.Measures[m]), "%s: row %d %s", c.name, i, m)
		}
	}
}

// TestTopNInClickHouse holds top N computed in ClickHouse to the truth
// from the events and to the merge in serving, over random ranges,
// granularities, group-bys, filters, having, orders (ties included) and
// measure subsets, in each state of the seam: speed rows only; a run
// published but not (yet) in ClickHouse, which must be merged in serving;
// the same run loaded (base rows and levels) beside speed rows; and a run
// absorbing everything. It also checks which path answered.
func TestTopNInClickHouse(t *testing.T) {
	e := newEnv(t, false)
	d := genDataset(t, e.cfg, 3000, 61)
	insertSpeed(t, e.db, d)
	rng := rand.New(rand.NewPCG(61, 62))
	run := func(path string, cases int) func(t *testing.T) {
		return func(t *testing.T) {
			for i, done := 0, 0; done < cases; i++ {
				c := randomTopN(rng, i)
				if want, _ := c.answer(d, nil); len(want) == 0 {
					continue // selects nothing: checkShape wants rows
				}
				done++
				want := path
				if path == "clickhouse" && (strings.HasPrefix(c.order, "users") || strings.HasPrefix(c.order, "latency") || strings.Contains(c.params.Encode(), "having=users")) {
					want = "stream" // a sketch order key or threshold
				}
				before := topNCount(t, e.url, want)
				checkShape(t, e.url, d, nil, c)
				require.Equal(t, before+1, topNCount(t, e.url, want), "%s: answered by %s", c.name, want)
				samePaths(t, e.url, c)
			}
		}
	}
	t.Run("speed only", run("clickhouse", 40))

	chunks := d.chunks()
	m := writeRun(t, e.store, e.cfg, d, "run-seam", map[int32]int64{0: chunks[0] / 2, 1: chunks[1]/2 + 1})
	addLevels(t, e.store, e.view, m)
	publishManifest(t, e.store, m)
	waitRun(t, e.url, "run-seam")
	t.Run("run not in ClickHouse: merged", run("merge", 10))

	loadRunIntoClickHouse(t, e.db, e.store, e.view, m)
	t.Run("batch and speed", run("clickhouse", 40))

	m = writeRun(t, e.store, e.cfg, d, "run-all", chunks)
	addLevels(t, e.store, e.view, m)
	loadRunIntoClickHouse(t, e.db, e.store, e.view, m)
	publishManifest(t, e.store, m)
	waitRun(t, e.url, "run-all")
	t.Run("batch only", run("clickhouse", 30))

	// The batch job drops every run but ClickHouse's current one
	// (DropOldRuns; none was published there, so every run goes): a
	// replica still answering from a dropped run merges in serving.
	dropped, err := e.db.DropOldRuns(context.Background(), e.view)
	require.NoError(t, err)
	require.Contains(t, dropped, "run-all")
	t.Run("run dropped from ClickHouse: merged", run("merge", 10))
}

// TestTopNHoldsNGroups: a top N computed in ClickHouse merges in serving
// only the chosen groups' sketches, at most N per bucket, where the merge
// holds every (bucket, group).
func TestTopNHoldsNGroups(t *testing.T) {
	e := newEnv(t, false)
	d := genDataset(t, e.cfg, 3000, 71)
	insertSpeed(t, e.db, d)
	chunks := d.chunks()
	m := writeRun(t, e.store, e.cfg, d, "run-half", map[int32]int64{0: chunks[0] / 2, 1: chunks[1] / 2})
	addLevels(t, e.store, e.view, m)
	loadRunIntoClickHouse(t, e.db, e.store, e.view, m)
	publishManifest(t, e.store, m)
	waitRun(t, e.url, "run-half")

	p := url.Values{"from": {base.Format(time.RFC3339)}, "to": {base.Add(4 * time.Hour).Format(time.RFC3339)}, "granularity": {"1m"},
		"group_by": {"country,device"}, "order_by": {"views"}, "limit": {"1"}}
	before := mergeGroupsSum(t, e.url)
	a := query(t, e.url, p)
	held := mergeGroupsSum(t, e.url) - before
	require.True(t, *a.Truncated)
	require.NotEmpty(t, a.Rows)
	require.LessOrEqual(t, held, float64(len(a.Rows)), "the sketches of the chosen groups only")
	require.Positive(t, held, "users and latency come from the merge")

	restore := serving.SetUsePushdown(false)
	before = mergeGroupsSum(t, e.url)
	b := query(t, e.url, p)
	all := mergeGroupsSum(t, e.url) - before
	restore()
	require.Equal(t, len(a.Rows), len(b.Rows))
	require.Greater(t, all, 5*held, "the merge holds every group of every minute (%v) against %v", all, held)
	t.Logf("groups held: %v pushed down, %v merged, for %d answer rows", held, all, len(a.Rows))

	// A sketch order key: ranked as ClickHouse streams the groups, the
	// answer's measures merged for the chosen groups only.
	p.Set("order_by", "users")
	before = mergeGroupsSum(t, e.url)
	streams := topNCount(t, e.url, "stream")
	c := query(t, e.url, p)
	held = mergeGroupsSum(t, e.url) - before
	require.Equal(t, streams+1, topNCount(t, e.url, "stream"))
	require.NotEmpty(t, c.Rows)
	require.LessOrEqual(t, held, float64(len(c.Rows)), "the measures of the chosen groups only")
	require.Less(t, 5*held, all)
}
