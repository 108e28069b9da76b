package serving_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// TestSpeedRollupMatchesRows is the property test of the speed push-down on
// a real ClickHouse (18.16 in the tests): for random ranges (sub-second
// bounds included), granularities (epoch-aligned and local), group-bys,
// filters (values, negations,
// prefixes), measure subsets and
// seams (K_p per partition, so chunks straddle it), the groups ClickHouse
// rolls up (RollupSpeed) equal the row-by-row merge of the speed rows
// (ScanSpeed into a Merger). The table holds every row twice more than
// needed: an earlier, partial version of each chunk's rows and a replay of
// the final version at the same version number; FINAL must leave exactly
// one of each.
func TestSpeedRollupMatchesRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg, db := migratedClickHouse(ctx, t)
	src, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	// The same source with the closed-chunk cache: each case runs on it
	// twice, cold (filling the cache) and warm (answering from it).
	cached, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	cached.CacheClosedChunks(cfg.ChunkSize, 64<<20)

	d := genDataset(t, cfg, 3000, 21)
	insertSpeed(t, db, d)
	insertSpeed(t, db, d) // a replay: the same rows at the same versions
	v := d.view
	chunks := d.chunks()

	rng := rand.New(rand.NewPCG(3, 5))
	grans := []string{"", "1m", "2m", "5m", "7m", "1h", "90m", "1d", "all"}
	dimVals := map[string][]string{"country": countries, "device": devices}
	cases := 60
	if testing.Short() {
		cases = 15
	}
	nonEmpty := 0
	for i := 0; i < cases; i++ {
		p := url.Values{}
		from := base.Add(-30*time.Minute + time.Duration(rng.Int64N(int64(3*time.Hour))))
		if rng.IntN(3) == 0 {
			from = from.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		}
		to := from.Add(time.Duration(1 + rng.Int64N(int64(5*time.Hour)-1)))
		p.Set("from", from.Format(time.RFC3339Nano))
		p.Set("to", to.Format(time.RFC3339Nano))
		g := grans[rng.IntN(len(grans))]
		if g != "" {
			p.Set("granularity", g)
		}
		if g != "7m" && rng.IntN(3) == 0 { // local buckets (7m does not divide a day)
			p.Set("tz", []string{"Europe/Amsterdam", "Asia/Kolkata", "America/St_Johns"}[rng.IntN(3)])
		}
		dims := []string{"country", "device"}
		rng.Shuffle(len(dims), func(a, b int) { dims[a], dims[b] = dims[b], dims[a] })
		if n := rng.IntN(3); n > 0 {
			p.Set("group_by", strings.Join(dims[:n], ","))
		}
		for _, dim := range []string{"country", "device"} {
			if rng.IntN(3) == 0 {
				vals := dimVals[dim]
				for k := 0; k < 1+rng.IntN(3); k++ {
					val := vals[rng.IntN(len(vals))]
					op := []string{"", "!", "^", "!^"}[rng.IntN(4)]
					if op == "^" || op == "!^" {
						if val == "" {
							op = "!"
						} else {
							val = val[:1+rng.IntN(len(val))]
						}
					}
					p.Add("filter", dim+op+":"+val)
				}
			}
		}
		if rng.IntN(2) == 0 {
			ms := append([]string(nil), allMeasures...)
			rng.Shuffle(len(ms), func(a, b int) { ms[a], ms[b] = ms[b], ms[a] })
			p.Set("measures", strings.Join(ms[:1+rng.IntN(len(ms))], ","))
		}
		absorbed := map[int32]int64{}
		for part, n := range chunks {
			if k := rng.Int64N(n + 2); k > 0 { // 0 (none absorbed) .. past the last chunk
				absorbed[part] = k
			}
		}
		name := fmt.Sprintf("%d %s seam=%v", i, p.Encode(), absorbed)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			q, err := serving.ParseQuery(v, p.Encode(), 30*24*time.Hour)
			require.NoError(t, err, name)
			rows := serving.NewMerger(q)
			require.NoError(t, src.ScanSpeed(ctx, q, absorbed, func(r *serving.Row) error { rows.Add(r); return nil }))
			pushed := serving.NewMerger(q)
			require.NoError(t, src.RollupSpeed(ctx, q, absorbed, func(g *serving.Group) error { pushed.AddGroup(g); return nil }))
			want := rows.Groups()
			if len(want) > 0 {
				nonEmpty++
			}
			compare(t, q, name+" (push-down)", want, pushed.Groups())
			for _, pass := range []string{"cold", "warm"} {
				m := serving.NewMerger(q)
				require.NoError(t, cached.RollupSpeed(ctx, q, absorbed, func(g *serving.Group) error { m.AddGroup(g); return nil }))
				compare(t, q, name+" (cached, "+pass+")", want, m.Groups())
			}
		})
	}
	require.Greater(t, nonEmpty, cases/2, "most random cases must select rows")
	require.Positive(t, cached.CachedRollups(), "no closed chunk was cached")
	t.Logf("%d closed-chunk rollups cached", cached.CachedRollups())

	shapes := []string{"granularity=1h&group_by=country", "granularity=all", "granularity=5m&group_by=device,country&measures=users,views,latency"}
	seams := []map[int32]int64{nil, {0: 2, 1: 3}}
	queryOf := func(params string) *serving.Query {
		p, err := url.ParseQuery(params)
		require.NoError(t, err)
		p.Set("from", base.Add(-time.Hour).Format(time.RFC3339))
		p.Set("to", base.Add(5*time.Hour).Format(time.RFC3339))
		q, err := serving.ParseQuery(v, p.Encode(), 30*24*time.Hour)
		require.NoError(t, err)
		return q
	}
	for _, params := range shapes { // fill the cache with these shapes
		for _, absorbed := range seams {
			require.NoError(t, cached.RollupSpeed(ctx, queryOf(params), absorbed, func(*serving.Group) error { return nil }))
		}
	}
	// The open chunks go on: more events land in the last, partial chunk of
	// each partition (new versions of its rows). Only closed chunks may
	// come from the cache, so the warm answers must change with the data.
	more := genDataset(t, cfg, 400, 22)
	added := 0
	for _, e := range more.events {
		p := e.partition
		if d.next[p]%d.chunk == 0 {
			continue // the partition's last chunk is full (closed)
		}
		e.offset = d.next[p]
		d.next[p]++
		d.events = append(d.events, e)
		added++
	}
	require.Positive(t, added)
	insertSpeed(t, db, d)
	for _, params := range shapes {
		q := queryOf(params)
		for _, absorbed := range seams {
			rows := serving.NewMerger(q)
			require.NoError(t, src.ScanSpeed(ctx, q, absorbed, func(r *serving.Row) error { rows.Add(r); return nil }))
			for _, pass := range []string{"after new rows", "again"} {
				m := serving.NewMerger(q)
				require.NoError(t, cached.RollupSpeed(ctx, q, absorbed, func(g *serving.Group) error { m.AddGroup(g); return nil }))
				compare(t, q, params+" "+pass, rows.Groups(), m.Groups())
			}
		}
	}
}

// compare requires the groups of two ways of answering q to be equal:
// exact measures exactly (sums to float rounding), sketches identical.
func compare(t *testing.T, q *serving.Query, name string, want, got []*serving.Group) {
	t.Helper()
	v := q.View
	require.Equal(t, len(want), len(got), name)
	{
		for k := range want {
			w, g := want[k], got[k]
			require.Equal(t, w.WindowMs, g.WindowMs, "%s: group %d", name, k)
			require.Equal(t, w.Dims, g.Dims, "%s: group %d", name, k)
			for j, mi := range q.Measures {
				m := &v.Measures[mi]
				wr, gr := w.Result(q, j), g.Result(q, j)
				where := fmt.Sprintf("%s: group %d (%d %v) %s", name, k, w.WindowMs, w.Dims, m.Name)
				if m.Type == schemas.MeasureSum {
					// The same values added in another order.
					require.InDelta(t, wr.(float64), gr.(float64), 1e-9*math.Max(1, math.Abs(wr.(float64))), where)
					continue
				}
				require.True(t, reflect.DeepEqual(wr, gr), "%s: rows %v, push-down %v", where, show(wr), show(gr))
			}
		}
	}
}

func show(x any) any {
	switch v := x.(type) {
	case *float64:
		if v != nil {
			return *v
		}
	case *schemas.Quantiles:
		if v != nil {
			return *v
		}
	}
	return x
}
