package clickhouse

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
	"github.com/tandem-analytics/tandem/schemas"
)

// An analyst case: a question asked of a merged view with GROUP BY, as
// docs/analysts.md shows it. from is the object read (the view or a level
// view), seconds the granularity the windows are floored to, dims the
// dimensions grouped by (the others are merged away).
type analystCase struct {
	from    string
	seconds int64
	dims    []string
}

func analystCases(v *schemas.View) []analystCase {
	out := []analystCase{
		{v.Name, 60, []string{"country", "device"}}, // the view's own rows
		{v.Name, 300, []string{"country"}},          // 5 minutes by country
		{v.Name, 3600, nil},                         // hourly, everything merged
		{v.Name, 86400, []string{"device"}},         // daily by device
	}
	for _, l := range v.Levels() {
		out = append(out, analystCase{LevelView(v.Name, l), levelSeconds(l), []string{"country"}})
	}
	return out
}

// analystSQL is the analyst's query of c: the window floored to c.seconds,
// the grouped dimensions, distinct users and the amount quantiles
// finalized from their SQL states.
func analystSQL(db string, c analystCase) string {
	sel := []string{fmt.Sprintf("toUInt32(intDiv(toUInt32(window_start), %d) * %d) AS w", c.seconds, c.seconds)}
	group := []string{"w"}
	for _, d := range c.dims {
		sel = append(sel, ident(d))
		group = append(group, ident(d))
	}
	sel = append(sel, "uniqHLL12Merge(users) AS d", "CAST(quantilesTDigestWeightedMerge("+quantileLevels+")(amount_q) AS Array(Float64)) AS q")
	return fmt.Sprintf("SELECT %s FROM %s GROUP BY %s", strings.Join(sel, ", "), qualified(db, c.from), strings.Join(group, ", "))
}

// analystRow is one answer row: the group (window and grouped dimension
// values, joined), the distinct count and the three quantiles.
type analystRow struct {
	group    string
	distinct uint64
	q        []float64
}

func analystGroup(w int64, dims []string) string {
	return fmt.Sprint(w) + "|" + strings.Join(dims, "|")
}

// checkAnalyst holds the analyst's answers of c against the events the
// answer covers (every event of evs, once):
//
//   - distinct: the digits of Go's estimate of one uniqHLL12 state folded
//     over the group's events (what merging the rows' states gives, in any
//     order), and the exact count within chstate.DistinctSQLRelativeError
//     (equal up to 16 users, where the state is the set of hashes);
//   - quantiles: each within the TDigest's rank bound of the group's
//     amounts: between the ⌊(q−ε)·n + ½⌋-th and the ⌈(q+ε)·n + ½⌉-th
//     smallest of the n amounts, ε = 1%.
//
// It returns how many groups had more than 16 users (the HyperLogLog
// form), so callers can make sure both forms were checked.
func checkAnalyst(t *testing.T, v *schemas.View, evs []testEvent, c analystCase, got []analystRow) (large int) {
	t.Helper()
	type group struct {
		agg    schemas.Aggregate
		users  map[string]bool
		values []float64
	}
	s := v.StreamDef()
	ui, ai := s.FieldIndex("user"), s.FieldIndex("amount")
	want := map[string]*group{}
	for _, e := range evs {
		w := e.ev.Time.Unix() / c.seconds * c.seconds
		var dims []string
		for _, d := range c.dims {
			dims = append(dims, e.ev.Values[s.FieldIndex(d)].Str)
		}
		k := analystGroup(w, dims)
		g := want[k]
		if g == nil {
			g = &group{agg: v.NewAggregate(), users: map[string]bool{}}
			want[k] = g
		}
		v.Add(g.agg, &e.ev)
		if u := e.ev.Values[ui]; u.Set {
			g.users[u.Str] = true
		}
		if a := e.ev.Values[ai]; a.Set {
			g.values = append(g.values, a.Float)
		}
	}
	require.Len(t, got, len(want), "%s: groups", c.from)
	di := v.MeasureIndex("users")
	for _, r := range got {
		g := want[r.group]
		require.NotNil(t, g, "%s: unexpected group %s", c.from, r.group)
		n := len(g.users)
		require.Equal(t, g.agg[di].UniqHLL12.Estimate(), r.distinct, "%s %s: uniqHLL12Merge vs Go's state of the same users", c.from, r.group)
		if n > 16 {
			large++
		}
		require.LessOrEqual(t, math.Abs(float64(r.distinct)-float64(n)), chstate.DistinctSQLBound(n), "%s %s: %d users, SQL says %d", c.from, r.group, n, r.distinct)
		if len(g.values) == 0 {
			continue
		}
		sorted := append([]float64(nil), g.values...)
		sort.Float64s(sorted)
		require.Len(t, r.q, 3)
		for i, lv := range []float64{0.5, 0.9, 0.99} {
			// A TDigest puts the i-th of n values at rank i + ½ and
			// interpolates between neighbours: the answer at level q lies
			// between the values at ranks (q ∓ ε)·n, each ± ½, outward.
			n := float64(len(sorted))
			lo := max(int(math.Floor((lv-sqlQuantileRankError)*n-0.5)), 0)
			hi := min(int(math.Ceil((lv+sqlQuantileRankError)*n-0.5)), len(sorted)-1)
			require.True(t, sorted[lo] <= r.q[i] && r.q[i] <= sorted[hi], "%s %s: p%g = %g outside [%g, %g] of %d amounts", c.from, r.group, lv*100, r.q[i], sorted[lo], sorted[hi], len(sorted))
		}
	}
	return large
}

// sqlQuantileRankError is the stated rank bound of a quantiles answer in
// SQL (docs/analysts.md): ClickHouse's TDigest accuracy ε = 0.01.
const sqlQuantileRankError = 0.01

// blockOf builds a speed block from per-chunk aggregates, as the speed
// layer does (SpeedBlock.Append), with version = base + the highest offset
// of the chunk in evs.
func blockOf(t *testing.T, v *schemas.View, evs []testEvent, chunkSize int64, base int64) *SpeedBlock {
	t.Helper()
	maxOff := map[[2]int64]int64{}
	for _, e := range evs {
		k := [2]int64{int64(e.partition), schemas.ChunkOf(e.offset, chunkSize)}
		maxOff[k] = max(maxOff[k], e.offset)
	}
	b := NewSpeedBlock(v, 0)
	for k, a := range aggregate(v, evs, chunkSize, true, nil) {
		dims, err := schemas.SplitDims(k.key.Dims)
		require.NoError(t, err)
		require.NoError(t, b.Append(k.key.Window(), dims, a, k.p, k.chunk, base+maxOff[[2]int64{int64(k.p), k.chunk}]))
	}
	return b
}

// TestAnalystSketchSQL runs analyst SQL for distinct and quantiles on the
// real 18.16 server as the read-only analyst, at several granularities and
// groupings, on the merged view and its level views: over speed rows only,
// after the same speed rows were upserted again (exactly once: the states
// do not double), after a batch run absorbing part of the chunks (mixed),
// and after one absorbing all of them (batch rows and levels only).
func TestAnalystSketchSQL(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, srv := migrated(t, cfg)
	analystSketchSQL(t, cfg, db, srv.AnalystConn(t))
}

// analystSketchSQL is TestAnalystSketchSQL on a migrated db, the analyst
// connected through analyst.
func analystSketchSQL(t *testing.T, cfg *schemas.Config, db *DB, analyst driver.Conn) {
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	evs := makeEvents(s, 1500, 3, 9)

	check := func(stage string) {
		t.Helper()
		large := 0
		for _, c := range analystCases(v) {
			rows, err := analyst.Query(ctx, analystSQL("tandem", c))
			require.NoError(t, err, "%s: %s", stage, c.from)
			var got []analystRow
			for rows.Next() {
				var w uint32
				dims := make([]string, len(c.dims))
				dest := []any{&w}
				for i := range dims {
					dest = append(dest, &dims[i])
				}
				var r analystRow
				dest = append(dest, &r.distinct, &r.q)
				require.NoError(t, rows.Scan(dest...))
				r.group = analystGroup(int64(w), dims)
				got = append(got, r)
			}
			require.NoError(t, rows.Err())
			rows.Close()
			t.Run(fmt.Sprintf("%s/%s-%ds-by-%s", stage, c.from, c.seconds, strings.Join(c.dims, "-")), func(t *testing.T) {
				large += checkAnalyst(t, v, evs, c, got)
			})
		}
		require.Positive(t, large, "%s: some group holds more than 16 users", stage)
	}

	// Speed rows only.
	require.NoError(t, db.InsertSpeedBlock(ctx, blockOf(t, v, evs, cfg.ChunkSize, 0)))
	check("speed")
	// The same chunks upserted again, with the same and with higher
	// versions (a replay after a restart): FINAL keeps one row each, the
	// states count every user once.
	require.NoError(t, db.InsertSpeedBlock(ctx, blockOf(t, v, evs, cfg.ChunkSize, 0)))
	require.NoError(t, db.InsertSpeedBlock(ctx, blockOf(t, v, evs, cfg.ChunkSize, 1000)))
	check("replayed")
	// Every amount is in the stored centroids once: the replayed versions
	// replaced the rows, they did not add to them.
	withAmount := 0
	for _, e := range evs {
		if e.ev.Values[s.FieldIndex("amount")].Set {
			withAmount++
		}
	}
	weight := func(sql string) uint64 {
		var n uint64
		require.NoError(t, db.Conn().QueryRow(ctx, sql).Scan(&n))
		return n
	}
	amountQ := &v.Measures[v.MeasureIndex("amount_q")]
	// The counts are left out where all are 1 (unitCounts), as in every
	// speed row here (TestStateCounts reads the other form).
	require.Positive(t, weight("SELECT toUInt64(countIf(empty(amount_q__td_counts) AND notEmpty(amount_q__td_means))) FROM tandem.clicks_by_country_speed FINAL"))
	require.EqualValues(t, withAmount, weight("SELECT toUInt64(sum(arraySum("+stateCounts(amountQ)+"))) FROM tandem.clicks_by_country_speed FINAL"))

	load := func(runID string, absorbed map[int32]int64) {
		var rows []ViewRow
		for k, a := range aggregate(v, evs, cfg.ChunkSize, false, func(e testEvent) bool { return e.offset < absorbed[e.partition] }) {
			rows = append(rows, withStates(v, viewRow(v, k.key, a), a))
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].WindowStart.Before(rows[j].WindowStart) })
		m := &schemas.Manifest{View: v.Name, RunID: runID, ChunkSize: cfg.ChunkSize, Absorbed: absorbed, Rows: int64(len(rows)), Levels: v.Levels()}
		// The manifest's level counts, as the batch run writes them.
		for _, l := range v.Levels() {
			keys := map[string]bool{}
			for _, r := range rows {
				keys[fmt.Sprint(l.WindowStart(r.WindowStart).Unix(), r.Dims)] = true
			}
			m.Files = append(m.Files, schemas.ManifestFile{Level: l, Rows: int64(len(keys))})
		}
		_, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m, Rows: seqOf(rows)})
		require.NoError(t, err)
		require.NoError(t, db.LoadLevels(ctx, v, m))
		require.NoError(t, db.PublishRun(ctx, v, runID, time.Time{}))
	}
	// A run absorbing part of the chunks: batch rows and speed rows mixed.
	load("r1", map[int32]int64{0: 200, 1: 100})
	check("mixed")
	// docs/analysts.md's examples, as the analyst writes them.
	for _, sql := range []string{
		"SELECT toStartOfHour(window_start) AS hour, country, uniqHLL12Merge(users) AS users FROM tandem.clicks_by_country " +
			"WHERE window_start >= '2026-11-25 00:00:00' AND window_start < '2026-11-26 00:00:00' GROUP BY hour, country ORDER BY hour, country",
		"SELECT window_start AS day, quantilesTDigestWeightedMerge(0.99)(amount_q)[1] AS p99 FROM tandem.clicks_by_country_1d " +
			"WHERE window_start >= '2026-11-01 00:00:00' AND window_start < '2026-12-01 00:00:00' GROUP BY day ORDER BY day",
		"SELECT toStartOfHour(window_start) AS hour, country, sum(n) AS views, uniqHLL12Merge(users) AS users, " +
			"quantilesTDigestWeightedMerge(0.5, 0.9, 0.99)(amount_q) AS q FROM tandem.clicks_by_country GROUP BY hour, country",
	} {
		rows, err := analyst.Query(ctx, sql)
		require.NoError(t, err, sql)
		n := 0
		for rows.Next() {
			n++
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Positive(t, n, sql)
	}

	// A run absorbing every chunk: batch rows and their levels only.
	load("r2", map[int32]int64{0: 1 << 20, 1: 1 << 20, 2: 1 << 20})
	check("batch")
	require.EqualValues(t, withAmount, weight("SELECT toUInt64(sum(arraySum("+stateCounts(amountQ)+"))) FROM tandem.clicks_by_country_batch WHERE run_id = 'r2'"))
}

// TestStateCounts: rowState rebuilds the same state from a digest's
// centroids whether their counts are stored or, all being 1, left out
// (unitCounts); a digest that glued centroids keeps its counts.
func TestStateCounts(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	m := &v.Measures[v.MeasureIndex("amount_q")]
	for _, n := range []int{0, 1, 40, 5000} {
		var q chstate.Quantiles
		for i := range n {
			q.Add(float64(i*7919%1000) / 10)
		}
		means, counts := q.AppendCentroids(nil, nil)
		stored := unitCounts(slices.Clone(counts))
		switch n {
		case 40: // too few values to glue any
			require.Empty(t, stored)
		case 5000:
			require.Equal(t, counts, stored, "a glued digest keeps its counts")
		}
		// The serialized states (18.16's = calls any two states equal).
		var same uint8
		require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf(
			"SELECT toString(%s) = toString(arrayReduce('quantilesTDigestWeightedState(%s)', %s, full)) FROM (SELECT CAST(? AS Array(Float32)) AS %s, CAST(? AS Array(UInt64)) AS %s, CAST(? AS Array(UInt64)) AS full)",
			rowState(m), quantileLevels, ident(m.Name+"__td_means"), ident(m.Name+"__td_means"), ident(m.Name+"__td_counts")),
			means, stored, counts).Scan(&same))
		require.EqualValues(t, 1, same, "%d values", n)
	}
}
