package serving_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/serving"
)

// TestSpeedTreeRollupsMatchRows is the property test of the closed-chunk
// cache's tree of rollups (serving/speedcache.go): nodes of 2, 4 and 8
// chunks here, over events sent in time order (as a live stream is), so
// that chunks cover short stretches and ranges cut nodes. For a few fixed
// shapes (so that nodes built by one query serve the next), random ranges
// — the whole data, or cut anywhere — and a K_p per partition that moves
// forward and back (manifest switches, nodes partly absorbed), every answer
// of a cached source equals the row-by-row merge of the speed rows, cold
// and warm; so do the answers of a cache too small for the shapes (nodes
// dropped while they are built) and the answers after more rows land in
// the open chunks. It requires nodes above single chunks to be cached.
func TestSpeedTreeRollupsMatchRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg, db := migratedClickHouse(ctx, t)
	src, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)

	d := genDataset(t, cfg, 3000, 31)
	// Time order within each partition: chunk k holds the k-th stretch.
	sort.SliceStable(d.events, func(i, j int) bool { return d.events[i].ev.Time.Before(d.events[j].ev.Time) })
	d.next = map[int32]int64{}
	for i := range d.events {
		e := &d.events[i]
		e.offset = d.next[e.partition]
		d.next[e.partition]++
	}
	insertSpeed(t, db, d)
	v := d.view
	chunks := d.chunks()
	require.GreaterOrEqual(t, min(chunks[0], chunks[1]), int64(10), "the tree needs chunks")

	big, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	big.CacheClosedChunks(cfg.ChunkSize, 64<<20)
	big.SetRollupTree(2, 4)

	shapes := []string{"granularity=1h&group_by=country", "granularity=all&group_by=device", "granularity=5m&measures=users,latency,views"}
	queryOf := func(params string, from, to time.Time) *serving.Query {
		p, err := url.ParseQuery(params)
		require.NoError(t, err)
		p.Set("from", from.Format(time.RFC3339Nano))
		p.Set("to", to.Format(time.RFC3339Nano))
		q, err := serving.ParseQuery(v, p.Encode(), 30*24*time.Hour)
		require.NoError(t, err)
		return q
	}
	// A cache holding about a third of what the shapes take whole.
	for _, params := range shapes {
		require.NoError(t, big.RollupSpeed(ctx, queryOf(params, base.Add(-time.Hour), base.Add(5*time.Hour)), nil, func(*serving.Group) error { return nil }))
	}
	require.Positive(t, big.CachedTreeNodes(), "no node above a chunk was cached")
	small, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	small.CacheClosedChunks(cfg.ChunkSize, big.CachedRollupBytes()/3)
	small.SetRollupTree(2, 4)
	fresh, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	fresh.CacheClosedChunks(cfg.ChunkSize, 64<<20)
	fresh.SetRollupTree(2, 4)

	rng := rand.New(rand.NewPCG(7, 11))
	seam := func() map[int32]int64 {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return d.halfChunks()
		}
		out := map[int32]int64{}
		for p, n := range chunks {
			out[p] = rng.Int64N(n + 1)
		}
		return out
	}
	check := func(name string, q *serving.Query, absorbed map[int32]int64) {
		t.Helper()
		rows := serving.NewMerger(q)
		require.NoError(t, src.ScanSpeed(ctx, q, absorbed, func(r *serving.Row) error { rows.Add(r); return nil }))
		want := rows.Groups()
		for _, c := range []struct {
			name string
			src  *serving.ClickHouseSpeed
		}{{"big", big}, {"small", small}, {"fresh", fresh}} {
			for _, pass := range []string{"cold", "warm"} {
				m := serving.NewMerger(q)
				require.NoError(t, c.src.RollupSpeed(ctx, q, absorbed, func(g *serving.Group) error { m.AddGroup(g); return nil }))
				compare(t, q, fmt.Sprintf("%s (%s, %s)", name, c.name, pass), want, m.Groups())
			}
		}
	}
	cases := 40
	if testing.Short() {
		cases = 12
	}
	round := func(label string) {
		for i := 0; i < cases; i++ {
			params := shapes[rng.IntN(len(shapes))]
			from, to := base.Add(-time.Hour), base.Add(5*time.Hour)
			if rng.IntN(2) == 0 { // cut somewhere, often inside a node's span
				from = base.Add(time.Duration(rng.Int64N(int64(2 * time.Hour)))).Truncate(time.Second)
				to = from.Add(time.Duration(1 + rng.Int64N(int64(3*time.Hour)))).Truncate(time.Second).Add(time.Second)
			}
			absorbed := seam()
			check(fmt.Sprintf("%s %d %s [%s, %s) seam=%v", label, i, params, from.Format(time.TimeOnly), to.Format(time.TimeOnly), absorbed),
				queryOf(params, from, to), absorbed)
		}
	}
	round("closed")
	require.Positive(t, small.CachedRollups(), "the small cache must hold part of the shapes")
	t.Logf("nodes above a chunk cached: big %d, small %d, fresh %d", big.CachedTreeNodes(), small.CachedTreeNodes(), fresh.CachedTreeNodes())

	// The open chunks go on: more events, later in time, land in each
	// partition's last, partial chunk and the chunks after it, which
	// closes the old last chunk and completes nodes around it.
	more := genDatasetSpan(t, cfg, 500, 32, base.Add(4*time.Hour), 30*time.Minute, false)
	sort.SliceStable(more.events, func(i, j int) bool { return more.events[i].ev.Time.Before(more.events[j].ev.Time) })
	for _, e := range more.events {
		e.offset = d.next[e.partition]
		d.next[e.partition]++
		d.events = append(d.events, e)
	}
	insertSpeed(t, db, d)
	chunks = d.chunks()
	round("after new rows")
}
