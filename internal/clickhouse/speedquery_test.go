package clickhouse

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

func TestWindowBounds(t *testing.T) {
	sec := t0.Unix()
	for _, tc := range []struct {
		name     string
		from, to time.Time
		lo, hi   int64
	}{
		{"whole seconds", t0, t0.Add(time.Minute), sec, sec + 60},
		{"sub-second from leaves out the window starting just before it", t0.Add(500 * time.Millisecond), t0.Add(time.Minute), sec + 1, sec + 60},
		{"a nanosecond after a window start", t0.Add(time.Nanosecond), t0.Add(time.Minute), sec + 1, sec + 60},
		{"sub-second to keeps the window starting just before it", t0, t0.Add(time.Minute + time.Millisecond), sec, sec + 61},
		{"zero bounds: everything", time.Time{}, time.Time{}, 0, math.MaxUint32},
		{"before 1970 clamps to 0", time.Unix(-5, 0), time.Unix(-1, 500_000_000), 0, 0},
		{"half a second before 1970 rounds up to 0", time.Unix(-1, 500_000_000), time.Unix(1, 0), 0, 1},
		{"after 2106 clamps", time.Unix(math.MaxUint32+10, 0), time.Unix(math.MaxUint32+20, 0), math.MaxUint32, math.MaxUint32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi := windowBounds(tc.from, tc.to)
			require.Equal(t, tc.lo, lo, "lo")
			require.Equal(t, tc.hi, hi, "hi")
		})
	}
}

func TestSpeedQuerySQLRefusesNamesOutsideTheView(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	v := cfg.View("clicks_by_country")
	for _, q := range []SpeedQuery{
		{},
		{View: v, Measures: []string{"n", "nope"}},
		{View: v, Measures: []string{"n`; DROP TABLE x"}},
		{View: v, Filters: map[string][]string{"user": {"u1"}}},
		{View: v, Filters: map[string][]string{"country) OR (1": {"x"}}},
		{View: v, Prefixes: map[string][]string{"user": {"u"}}},
		{View: v, NotIn: map[string][]string{"country`": {"u"}}},
		{View: v, NotPrefixes: map[string][]string{"nope": {"u"}}},
		{View: v, Absorbed: map[int32]int64{0: -1}},
	} {
		_, _, _, err := speedQuerySQL("tandem", &q)
		require.Error(t, err, "%+v", q)
	}
	// User values only ever appear as bound arguments.
	sql, args, need, err := speedQuerySQL("tandem", &SpeedQuery{View: v, Filters: map[string][]string{"country": {"x') OR 1=1 --", "DE", "DE"}}, Measures: []string{"users"}})
	require.NoError(t, err)
	require.NotContains(t, sql, "OR 1=1")
	require.Contains(t, sql, "`country` IN (?, ?)")
	require.Equal(t, []any{int64(0), int64(math.MaxUint32), "DE", "x') OR 1=1 --"}, args)
	require.Equal(t, []bool{false, false, false, false, true, false}, need)

	sql, args, _, err = speedQuerySQL("tandem", &SpeedQuery{View: v, Filters: map[string][]string{"country": {"US"}},
		Prefixes: map[string][]string{"country": {"x') OR 1=1 --"}}, NotIn: map[string][]string{"device": {"'"}}, NotPrefixes: map[string][]string{"device": {"é"}}})
	require.NoError(t, err)
	require.NotContains(t, sql, "OR 1=1")
	require.Contains(t, sql, "(`country` IN (?) OR substring(`country`, 1, 13) = ?)")
	require.Contains(t, sql, "`device` NOT IN (?) AND substring(`device`, 1, 2) != ?", "a prefix's length is in bytes")
	require.Equal(t, []any{int64(0), int64(math.MaxUint32), "US", "x') OR 1=1 --", "'", "é"}, args)
}

// TestScanSpeedRows checks SpeedQuery's selection on 18.16 against the
// rows computed from the events: exact window bounds (sub-second ones
// included), the chunk seam, filters and measure subsets.
func TestScanSpeedRows(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 800, 3, 11)

	// An empty table has no freshness.
	mw, err := db.MaxSpeedWindow(ctx, v, nil)
	require.NoError(t, err)
	require.True(t, mw.IsZero())

	all := speedRows(v, evs, cfg.ChunkSize)
	// An older, partial version of partition 1's rows first: FINAL hides it.
	var early []testEvent
	for _, e := range evs {
		if e.partition == 1 && e.offset%2 == 0 {
			early = append(early, e)
		}
	}
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, early, cfg.ChunkSize)))
	require.NoError(t, db.InsertSpeedRows(ctx, v, all))

	keyOf := func(r *SpeedRow) rowKey {
		return rowKey{p: r.Partition, chunk: r.Chunk, key: schemas.RowKey{WindowMs: r.WindowStart.UnixMilli(), Dims: schemas.JoinDims(r.Dims)}}
	}
	absorbed := map[int32]int64{0: 2, 2: 1}
	for _, tc := range []struct {
		name string
		q    SpeedQuery
	}{
		{"everything", SpeedQuery{}},
		{"the seam", SpeedQuery{Absorbed: absorbed}},
		{"whole-minute range", SpeedQuery{From: t0.Add(2 * time.Minute), To: t0.Add(5 * time.Minute)}},
		{"sub-second from leaves out the window before it", SpeedQuery{From: t0.Add(2*time.Minute + 500*time.Millisecond), To: t0.Add(5 * time.Minute)}},
		{"from a millisecond before a window keeps it", SpeedQuery{From: t0.Add(2*time.Minute - time.Millisecond), To: t0.Add(5 * time.Minute)}},
		{"sub-second to keeps the window before it", SpeedQuery{From: t0.Add(2 * time.Minute), To: t0.Add(5*time.Minute + time.Millisecond)}},
		{"one filter", SpeedQuery{Filters: map[string][]string{"country": {"US"}}}},
		{"values ORed, dimensions ANDed", SpeedQuery{Absorbed: absorbed, Filters: map[string][]string{"country": {"US", "FR", ""}, "device": {"ios"}}}},
		{"a value with quotes matches nothing", SpeedQuery{Filters: map[string][]string{"country": {"US' OR '1'='1"}}}},
		{"no accepted values", SpeedQuery{Filters: map[string][]string{"device": {}}}},
		{"prefix", SpeedQuery{Prefixes: map[string][]string{"country": {"U"}}}},
		{"prefix ORed with values", SpeedQuery{Filters: map[string][]string{"country": {"FR"}}, Prefixes: map[string][]string{"country": {"U", "Q"}}}},
		{"not", SpeedQuery{NotIn: map[string][]string{"country": {"US", ""}}}},
		{"not prefix and a value", SpeedQuery{Absorbed: absorbed, NotPrefixes: map[string][]string{"country": {"F"}}, Filters: map[string][]string{"device": {"ios"}}}},
		{"hostile prefix matches nothing", SpeedQuery{Prefixes: map[string][]string{"country": {"' OR 1=1 --"}}}},
		{"hostile not matches everything", SpeedQuery{NotIn: map[string][]string{"country": {"') OR 1=1 --"}}, NotPrefixes: map[string][]string{"device": {"%"}}}},
		{"measure subset", SpeedQuery{From: t0.Add(3*time.Minute + time.Second), Measures: []string{"users", "hi", "n"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.View = v
			want := map[rowKey]SpeedRow{}
			for _, r := range all {
				w := r.WindowStart
				if r.Chunk < q.Absorbed[r.Partition] || w.Before(q.From) || (!q.To.IsZero() && !w.Before(q.To)) {
					continue
				}
				ok := true
				for _, d := range v.Dimensions {
					val := r.Dims[v.DimensionIndex(d)]
					starts := func(ps []string) bool {
						return slices.ContainsFunc(ps, func(p string) bool { return strings.HasPrefix(val, p) })
					}
					vals, isIn := q.Filters[d]
					if ps, isP := q.Prefixes[d]; isIn || isP {
						ok = ok && (slices.Contains(vals, val) || starts(ps))
					}
					ok = ok && !slices.Contains(q.NotIn[d], val) && !starts(q.NotPrefixes[d])
				}
				if ok {
					want[keyOf(&r)] = r
				}
			}
			got := map[rowKey]SpeedRow{}
			require.NoError(t, db.ScanSpeedRows(ctx, q, func(r *SpeedRow) error {
				k := keyOf(r)
				require.NotContains(t, got, k, "read twice")
				got[k] = SpeedRow{ViewRow: ViewRow{WindowStart: r.WindowStart, Dims: slices.Clone(r.Dims), Cells: slices.Clone(r.Cells)},
					Partition: r.Partition, Chunk: r.Chunk, Version: r.Version}
				return nil
			}))
			require.Equal(t, len(want), len(got))
			for k, w := range want {
				g, ok := got[k]
				require.True(t, ok, "missing %v", k)
				require.Equal(t, w.Version, g.Version)
				for i := range v.Measures {
					m := &v.Measures[i]
					if len(q.Measures) > 0 && !slices.Contains(q.Measures, m.Name) {
						require.Nil(t, g.Cells[i], "%s was not asked for", m.Name)
						continue
					}
					ws, err := m.StateFromCell(w.Cells[i])
					require.NoError(t, err)
					gs, err := m.StateFromCell(g.Cells[i])
					require.NoError(t, err)
					require.Equal(t, m.Result(&ws), m.Result(&gs), "%s of %v", m.Name, k)
				}
			}
		})
	}

	t.Run("freshness", func(t *testing.T) {
		for _, abs := range []map[int32]int64{nil, absorbed, {0: 100, 1: 100, 2: 100}} {
			var want time.Time
			for _, r := range all {
				if r.Chunk >= abs[r.Partition] && r.WindowStart.After(want) {
					want = r.WindowStart
				}
			}
			got, err := db.MaxSpeedWindow(ctx, v, abs)
			require.NoError(t, err)
			require.Equal(t, want, got, "absorbed %v", abs)
		}
	})
}

// TestExcludeConditionUsesTheKey: the condition leaving out the chunks
// serving has cached selects exactly the other (partition, chunk) pairs
// from K_p on — partitions not listed whole, excluded chunks below K_p
// ignored — and ClickHouse reads only their granules through the sorting
// key (kafka_partition, chunk): a condition the key cannot use would read
// every row and pass max_rows_to_read.
func TestExcludeConditionUsesTheKey(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := openTest(t, cfg)
	ctx := testCtx(t)
	const parts, chunks, perChunk = 6, 40, 8
	require.NoError(t, db.Conn().Exec(ctx, "CREATE TABLE default.excl (kafka_partition UInt32, chunk UInt64, n UInt64) ENGINE = MergeTree ORDER BY (kafka_partition, chunk) SETTINGS index_granularity = 8"))
	require.NoError(t, db.Conn().Exec(ctx, fmt.Sprintf("INSERT INTO default.excl SELECT toUInt32(intDiv(number, %d)), toUInt64(intDiv(number, %d) %% %d), number FROM system.numbers LIMIT %d",
		perChunk*chunks, perChunk, chunks, parts*chunks*perChunk)))
	rng := rand.New(rand.NewPCG(5, 9))
	bounded := 0
	for i := 0; i < 40; i++ {
		ex, absorbed := map[int32][]int64{}, map[int32]int64{}
		for p := int32(0); p < parts; p++ {
			if rng.IntN(8) == 0 {
				continue // not listed: read whole
			}
			absorbed[p] = rng.Int64N(5)
			for c := int64(0); c < chunks; c++ {
				if rng.IntN(10) < 9 {
					ex[p] = append(ex[p], c)
				}
			}
			rng.Shuffle(len(ex[p]), func(a, b int) { ex[p][a], ex[p][b] = ex[p][b], ex[p][a] })
		}
		cond, err := excludeCondition(ex, absorbed)
		require.NoError(t, err)
		var want []string
		for p := int32(0); p < parts; p++ {
			for c := int64(0); c < chunks; c++ {
				_, listed := ex[p]
				if !listed || (c >= absorbed[p] && !slices.Contains(ex[p], c)) {
					want = append(want, fmt.Sprintf("%d|%d", p, c))
				}
			}
		}
		if cond == "" {
			require.Len(t, want, parts*chunks)
			continue
		}
		// Each chunk is one granule; the key may select the granule
		// before a range's start, or after its end, too.
		bound := 2 * (len(want) + parts) * perChunk
		if bound < parts*chunks*perChunk {
			bounded++
		} else {
			bound = 0 // no limit: as many rows as a full scan
		}
		got := queryStrings(t, db, fmt.Sprintf("SELECT DISTINCT concat(toString(kafka_partition), '|', toString(chunk)) AS k FROM default.excl WHERE %s ORDER BY kafka_partition, chunk SETTINGS max_rows_to_read = %d", cond, bound))
		require.Equal(t, want, got, "%s", cond)
	}
	require.GreaterOrEqual(t, bounded, 30, "too few cases read less than the whole table")
	cond, err := excludeCondition(map[int32][]int64{2: {3, 4, 6}, 4: {1}}, map[int32]int64{2: 1})
	require.NoError(t, err)
	require.Equal(t, "(kafka_partition < 2 OR (kafka_partition > 2 AND kafka_partition < 4) OR kafka_partition > 4 OR "+
		"(kafka_partition = 2 AND ((chunk >= 1 AND chunk < 3) OR chunk = 5 OR chunk >= 7)) OR (kafka_partition = 4 AND (chunk = 0 OR chunk >= 2)))", cond)
}
