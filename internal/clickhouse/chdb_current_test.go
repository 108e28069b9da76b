//go:build chdb

package clickhouse

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chdb-io/chdb-go/chdb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// These tests run only with -tags chdb and CHDB_LIB_PATH set; the ordinary
// TestCurrentClickHouse starts them (see chdb_test.go). chdb has no network
// port, so the SQL runs with its '?' arguments substituted as literals, the
// way clickhouse-go binds them client-side.

type chdbSession struct {
	t *testing.T
	s *chdb.Session
}

func newCHDB(t *testing.T) *chdbSession {
	s, err := chdb.NewSession(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return &chdbSession{t: t, s: s}
}

// query runs sql with args substituted and returns the rows, fields unescaped
// (NULL stays \\N).
func (c *chdbSession) query(sql string, args ...any) [][]string {
	c.t.Helper()
	return c.run(substitute(c.t, sql, args))
}

// run runs a complete statement.
func (c *chdbSession) run(full string) [][]string {
	c.t.Helper()
	res, err := c.s.Query(full, "TSV")
	if err != nil {
		shown := full
		if len(shown) > 2000 {
			shown = shown[:2000] + " …"
		}
		c.t.Fatalf("on current ClickHouse: %v\n%s", err, shown)
	}
	if res == nil {
		return nil
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimRight(res.String(), "\n"), "\n") {
		if line != "" {
			fields := strings.Split(line, "\t")
			for i, f := range fields {
				if f != `\N` {
					fields[i] = tsvUnescape.Replace(f)
				}
			}
			out = append(out, fields)
		}
	}
	return out
}

// insert runs an INSERT statement of the adapter with VALUES for rows.
func (c *chdbSession) insert(sql string, rows [][]any) {
	c.t.Helper()
	if len(rows) == 0 {
		return
	}
	var b strings.Builder
	b.WriteString(sql)
	b.WriteString(" VALUES ")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for j, v := range r {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(literal(c.t, v))
		}
		b.WriteString(")")
	}
	c.run(b.String())
}

func substitute(t *testing.T, sql string, args []any) string {
	parts := strings.Split(sql, "?")
	require.Len(t, parts, len(args)+1, "placeholders of %q", sql)
	var b strings.Builder
	for i, p := range parts {
		b.WriteString(p)
		if i < len(args) {
			b.WriteString(literal(t, args[i]))
		}
	}
	return b.String()
}

func literal(t *testing.T, v any) string {
	if v == nil {
		return "NULL"
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "NULL"
		}
		return literal(t, rv.Elem().Interface())
	}
	switch x := v.(type) {
	case string:
		return quoteBytes([]byte(x))
	case []byte:
		return quoteBytes(x)
	case time.Time:
		x = x.UTC()
		if x.Nanosecond() == 0 {
			return "'" + x.Format("2006-01-02 15:04:05") + "'"
		}
		return "'" + x.Format("2006-01-02 15:04:05.000") + "'"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int64, int32, uint32, uint64, uint8, int:
		return fmt.Sprint(x)
	case []uint64:
		parts := make([]string, len(x))
		for i, n := range x {
			parts[i] = strconv.FormatUint(n, 10)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case []float32:
		parts := make([]string, len(x))
		for i, f := range x {
			parts[i] = strconv.FormatFloat(float64(f), 'g', -1, 32)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	t.Fatalf("no literal for %T", v)
	return ""
}

// quoteBytes writes any bytes (sketches included) as a string literal.
func quoteBytes(b []byte) string {
	var s strings.Builder
	s.WriteByte('\'')
	for _, c := range b {
		if c == '\'' || c == '\\' || c < 0x20 || c >= 0x7f {
			fmt.Fprintf(&s, "\\x%02X", c)
		} else {
			s.WriteByte(c)
		}
	}
	s.WriteByte('\'')
	return s.String()
}

func TestCHDBEveryStatementAndQuery(t *testing.T) {
	c := newCHDB(t)
	raw := c.query("SELECT version()")[0][0]
	v, err := ParseVersion(raw)
	require.NoError(t, err)
	t.Logf("current ClickHouse: %s", raw)
	require.True(t, v.HasLowCardinality() && v.HasTTL() && v.HasDateTime64(), "chdb %s should exercise every gated feature", v)

	// The DDL for this version, and the Baseline (18.16) DDL too: a server
	// upgraded after migrating keeps the older tables.
	base := parseConfig(t, strings.Replace(testConfigYAML, "database: tandem", "database: tandem_base", 1))
	for _, s := range DDL(base, Baseline) {
		c.query(s.SQL)
	}
	cfg := parseConfig(t, testConfigYAML)
	for _, s := range DDL(cfg, v) {
		c.query(s.SQL)
	}
	types := map[string]string{}
	for _, r := range c.query("SELECT concat(table, '.', name), type FROM system.columns WHERE database = 'tandem'") {
		types[r[0]] = r[1]
	}
	require.Equal(t, "LowCardinality(String)", types["clicks_by_country_speed.country"])
	require.Equal(t, "Nullable(DateTime64(3, 'UTC'))", types["clicks_events.ts"])
	require.Contains(t, c.query("SELECT engine_full FROM system.tables WHERE database = 'tandem' AND name = 'clicks_events'")[0][0], "TTL")

	for _, db := range []string{"tandem", "tandem_base"} {
		t.Run(db, func(t *testing.T) {
			c := &chdbSession{t: t, s: c.s}
			cfg := cfg
			if db == "tandem_base" {
				cfg = base
			}
			checkQueriesOnCurrent(t, c, cfg)
		})
	}
}

// checkQueriesOnCurrent replays the merged-view scenario of
// TestMergedViewEqualsTruthAcrossBatchRuns with every query builder's SQL.
func checkQueriesOnCurrent(t *testing.T, c *chdbSession, cfg *schemas.Config) {
	db := cfg.ClickHouse.Database
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	evs := makeEvents(s, 900, 3, 2)
	want := truth(v, evs)

	merged := func() map[schemas.RowKey]exact {
		got := map[schemas.RowKey]exact{}
		for _, r := range c.query(fmt.Sprintf("SELECT window_start, country, device, n, revenue, lo, hi FROM %s", qualified(db, MergedView(v.Name)))) {
			w, err := time.Parse("2006-01-02 15:04:05", r[0])
			require.NoError(t, err)
			e := exact{present: true}
			e.n, _ = strconv.ParseInt(r[3], 10, 64)
			e.sum, _ = strconv.ParseFloat(r[4], 64)
			e.lo, e.hi = nullFloat(r[5]), nullFloat(r[6])
			got[schemas.RowKey{WindowMs: w.UnixMilli(), Dims: schemas.JoinDims([]string{r[1], r[2]})}] = e
		}
		return got
	}

	// Speed rows as InsertSpeedBlock sends them: the block's columns, row
	// by row as literals (half built from cells, half from aggregates, the
	// speed layer's path).
	sql, cols := speedInsertSQL(db, v)
	require.Len(t, cols, len(v.RowColumns())+3+len(viewStateCols(v)))
	speed := speedRows(v, evs, cfg.ChunkSize)
	block := NewSpeedBlock(v, len(speed))
	for i := range speed {
		r := &speed[i]
		if i%2 == 0 {
			require.NoError(t, block.AppendRow(r))
			continue
		}
		agg := v.NewAggregate()
		for mi := range v.Measures {
			st, err := v.Measures[mi].StateFromCell(r.Cells[mi])
			require.NoError(t, err)
			agg[mi] = st
		}
		require.NoError(t, block.Append(r.WindowStart, r.Dims, agg, r.Partition, r.Chunk, r.Version))
	}
	rows := blockRows(t, block.columns(), len(cols))
	require.Len(t, rows, len(speed))
	c.insert(sql, rows)
	require.Equal(t, want, merged())

	// SpeedResume's SQL before any run is published: versions per
	// partition, and no absorbed chunks.
	highest := map[int32]int64{}
	for _, r := range speed {
		highest[r.Partition] = max(highest[r.Partition], r.Version)
	}
	for p := int32(0); p < 4; p++ {
		want := [][]string{{"0", "0"}}
		if h, ok := highest[p]; ok {
			n := 0
			for _, r := range speed {
				if r.Partition == p {
					n++
				}
			}
			want = [][]string{{strconv.Itoa(n), strconv.FormatInt(h, 10)}}
		}
		require.Equal(t, want, c.query(speedVersionSQL(db, v), uint32(p)))
		require.Equal(t, [][]string{{"0", "0"}}, c.query(currentAbsorbedSQL(db), v.Name, uint32(p), v.Name))
	}

	// Batch run absorbing p0 chunks 0-1 and p1 chunk 0, as LoadBatchRun
	// and PublishRun write it.
	m := &schemas.Manifest{View: v.Name, RunID: "r1", ChunkSize: cfg.ChunkSize, Absorbed: map[int32]int64{0: 200, 1: 100}}
	bsql, _ := batchInsertSQL(db, v)
	rows = nil
	for k, a := range aggregate(v, evs, cfg.ChunkSize, false, func(e testEvent) bool { return e.offset < m.Absorbed[e.partition] }) {
		r := withStates(v, viewRow(v, k.key, a), a)
		args, err := rowArgs(v, &r, 1)
		require.NoError(t, err)
		args, err = appendStateArgs(args, v, &r)
		require.NoError(t, err)
		args[0] = m.RunID
		rows = append(rows, args)
	}
	c.insert(bsql, rows)
	c.insert(insertSQL(db, TableAbsorbed, absorbedColumns), [][]any{
		{v.Name, "r1", uint32(0), uint64(2), uint64(200)}, {v.Name, "r1", uint32(1), uint64(1), uint64(100)},
	})
	require.Equal(t, want, merged())
	require.Equal(t, [][]string{{"0", "0"}}, c.query(currentAbsorbedSQL(db), v.Name, uint32(0), v.Name), "loaded, not published")
	c.insert(insertSQL(db, TableRuns, runsColumns), [][]any{{v.Name, "r1", time.Now().UTC().Truncate(time.Second), uint64(1), sqlDateTime(time.Time{})}})
	require.Equal(t, want, merged())
	require.Equal(t, [][]string{{"1", "2"}}, c.query(currentAbsorbedSQL(db), v.Name, uint32(0), v.Name))
	require.Equal(t, [][]string{{"1", "1"}}, c.query(currentAbsorbedSQL(db), v.Name, uint32(1), v.Name))
	require.Equal(t, [][]string{{"0", "0"}}, c.query(currentAbsorbedSQL(db), v.Name, uint32(2), v.Name))
	require.Equal(t, [][]string{{"0", "0"}}, c.query(currentAbsorbedSQL(db), "clicks_total", uint32(0), "clicks_total"))

	cur := c.query(currentRunSQL(db), v.Name)
	require.Equal(t, [][]string{{"r1", "1"}}, cur)
	require.Equal(t, [][]string{{"0", "2", "200"}, {"1", "1", "100"}}, c.query(runAbsorbedSQL(db), v.Name, "r1"))
	absorbed := map[int32]int64{0: 2, 1: 1}

	// LoadLevels' SQL for the published run, then every level view: the
	// merged answer rolled up to the level.
	for _, l := range v.Levels() {
		c.query(levelInsertSQL(db, v, l), "r1")
	}
	for _, l := range v.Levels() {
		got := map[schemas.RowKey]exact{}
		for _, r := range c.query(fmt.Sprintf("SELECT window_start, country, device, n, revenue, lo, hi FROM %s", qualified(db, LevelView(v.Name, l)))) {
			w, err := time.Parse("2006-01-02 15:04:05", r[0])
			require.NoError(t, err)
			e := exact{present: true}
			e.n, _ = strconv.ParseInt(r[3], 10, 64)
			e.sum, _ = strconv.ParseFloat(r[4], 64)
			e.lo, e.hi = nullFloat(r[5]), nullFloat(r[6])
			got[schemas.RowKey{WindowMs: w.UnixMilli(), Dims: schemas.JoinDims([]string{r[1], r[2]})}] = e
		}
		require.Equal(t, rollUpExact(want, l), got, "level %s", l)
	}

	// ScanTopN's SQL: the run's base rows, or one level's, with the
	// unabsorbed speed rows, grouped by country, the top 2 by n (ties by
	// country), on current ClickHouse.
	byCountry := map[string]int64{}
	for k, e := range want {
		dims, err := schemas.SplitDims(k.Dims)
		require.NoError(t, err)
		byCountry[dims[0]] += e.n
	}
	var ranked []string
	for c := range byCountry {
		ranked = append(ranked, c)
	}
	sort.Slice(ranked, func(i, j int) bool {
		a, b := ranked[i], ranked[j]
		return byCountry[a] > byCountry[b] || byCountry[a] == byCountry[b] && a < b
	})
	require.Greater(t, len(ranked), 2)
	var top [][]string
	for _, c := range ranked[:2] {
		top = append(top, []string{"0", c, strconv.FormatInt(byCountry[c], 10)})
	}
	for _, l := range append([]schemas.Granularity{0}, v.Levels()...) {
		tq := TopNQuery{SpeedQuery: SpeedQuery{View: v, Absorbed: absorbed, Measures: []string{"n"}}, GroupBy: []string{"country"}, RunID: "r1",
			Segments: []TopNSegment{{Level: l, From: time.Unix(0, 0), To: time.Unix(4e9, 0)}}, OrderBy: "n", Desc: true, Limit: 2}
		q, args, _, err := topNSQL(db, &tq)
		require.NoError(t, err)
		require.Equal(t, top, c.query(q, args...), "level %s", l)
	}
	// Nullable and float order keys (their null test) and thresholds.
	for _, order := range []string{"lo", "hi", "revenue"} {
		tq := TopNQuery{SpeedQuery: SpeedQuery{View: v, Absorbed: absorbed, Measures: []string{"n", "revenue", "lo", "hi"}}, Granularity: time.Hour,
			GroupBy: []string{"device", "country"}, RunID: "r1", Segments: []TopNSegment{{From: time.Unix(0, 0), To: time.Unix(4e9, 0)}},
			OrderBy: order, Having: []TopNHaving{{Measure: "n", Op: ">=", Number: 1}, {Measure: "hi", Op: "!=", Number: -1}}, Limit: 1}
		q, args, _, err := topNSQL(db, &tq)
		require.NoError(t, err)
		require.NotEmpty(t, c.query(q, args...), "order by %s", order)
	}

	// SelectSpeedRows' SQL: FINAL, the range and the seam.
	unabsorbed := 0
	for _, r := range speed {
		if r.Chunk >= absorbed[r.Partition] && !r.WindowStart.Before(t0.Add(time.Minute)) {
			unabsorbed++
		}
	}
	q, args, _, err := speedQuerySQL(db, &SpeedQuery{View: v, From: t0.Add(time.Minute), Absorbed: absorbed})
	require.NoError(t, err)
	got := c.query(q, args...)
	require.Len(t, got, unabsorbed)
	require.Len(t, got[0], len(v.RowColumns())+3)

	// ScanSpeedRows' SQL with everything a serving query sets: sub-second
	// bounds (bound as whole seconds), filters bound as values (one with
	// quotes), a measure subset.
	sq := SpeedQuery{View: v, From: t0.Add(2*time.Minute + 500*time.Millisecond), To: t0.Add(7*time.Minute + time.Millisecond), Absorbed: absorbed,
		Filters:  map[string][]string{"country": {"US", "", "x' OR '1'='1"}, "device": {"web"}},
		Measures: []string{"users", "n", "hi"}}
	selected := 0
	for _, r := range speed {
		if r.Chunk >= absorbed[r.Partition] && !r.WindowStart.Before(sq.From) && r.WindowStart.Before(sq.To) &&
			(r.Dims[0] == "US" || r.Dims[0] == "") && r.Dims[1] == "web" {
			selected++
		}
	}
	require.Positive(t, selected)
	q, args, need, err := speedQuerySQL(db, &sq)
	require.NoError(t, err)
	got = c.query(q, args...)
	require.Len(t, got, selected)
	require.Len(t, got[0], 1+len(v.Dimensions)+3+3)
	require.Equal(t, []bool{true, false, false, true, true, false}, need)
	for _, r := range got {
		require.Contains(t, []string{"US", ""}, r[1])
		require.Equal(t, "web", r[2])
	}
	// The other filter forms (a prefix ORed with the values, a negation, a
	// negated prefix) on current ClickHouse too.
	sqp := sq
	sqp.Prefixes = map[string][]string{"country": {"U"}}
	sqp.NotIn = map[string][]string{"country": {""}}
	sqp.NotPrefixes = map[string][]string{"device": {"x'"}}
	q, args, _, err = speedQuerySQL(db, &sqp)
	require.NoError(t, err)
	wantP := 0
	for _, r := range speed {
		if r.Chunk >= absorbed[r.Partition] && !r.WindowStart.Before(sq.From) && r.WindowStart.Before(sq.To) &&
			strings.HasPrefix(r.Dims[0], "U") && r.Dims[1] == "web" {
			wantP++
		}
	}
	require.Positive(t, wantP)
	require.Len(t, c.query(q, args...), wantP)
	// ScanSpeedRollup's SQL: the same selection bucketed (2m) and grouped
	// inside ClickHouse, one row per (bucket, group), sketches as arrays.
	rq := SpeedRollupQuery{SpeedQuery: sq, Granularity: 2 * time.Minute, GroupBy: []string{"device", "country"}}
	groups := map[string]bool{}
	for _, r := range speed {
		if r.Chunk >= absorbed[r.Partition] && !r.WindowStart.Before(sq.From) && r.WindowStart.Before(sq.To) &&
			(r.Dims[0] == "US" || r.Dims[0] == "") && r.Dims[1] == "web" {
			groups[fmt.Sprintf("%d|%s|%s", r.WindowStart.Unix()/120*120, r.Dims[1], r.Dims[0])] = true
		}
	}
	q, args, _, err = speedRollupSQL(db, &rq)
	require.NoError(t, err)
	got = c.query(q, args...)
	require.Len(t, got, len(groups))
	for _, r := range got {
		require.Len(t, r, 1+2+3)
		require.True(t, groups[r[0]+"|"+r[1]+"|"+r[2]], "group %v", r[:3])
	}
	// Local buckets (a multiIf over the pieces) on current ClickHouse: a
	// zone whose offset changes within the data, in 1m buckets so every
	// window is its own bucket and the value is checkable per window.
	lb, err := schemas.NewLocalBuckets(time.FixedZone("X", 0), time.Minute, sq.From, sq.To)
	require.NoError(t, err)
	lb.Pieces = []schemas.BucketPiece{{Start: sq.From.Unix() - 1}, {Start: sq.From.Unix() + 150, IsFixed: true, Fixed: 7},
		{Start: sq.From.Unix() + 270, Shift: 30}}
	lrq := rq
	lrq.Granularity, lrq.Local = time.Minute, lb
	q, args, _, err = speedRollupSQL(db, &lrq)
	require.NoError(t, err)
	require.Contains(t, q, "multiIf(")
	localGroups := map[string]bool{}
	for _, r := range speed {
		if r.Chunk >= absorbed[r.Partition] && !r.WindowStart.Before(sq.From) && r.WindowStart.Before(sq.To) &&
			(r.Dims[0] == "US" || r.Dims[0] == "") && r.Dims[1] == "web" {
			localGroups[fmt.Sprintf("%d|%s|%s", lb.Bucket(r.WindowStart.Unix()), r.Dims[1], r.Dims[0])] = true
		}
	}
	got = c.query(q, args...)
	require.Len(t, got, len(localGroups))
	for _, r := range got {
		require.True(t, localGroups[r[0]+"|"+r[1]+"|"+r[2]], "local group %v", r[:3])
	}
	rq.Granularity = 0 // "all"
	q, args, _, err = speedRollupSQL(db, &rq)
	require.NoError(t, err)
	require.NotEmpty(t, c.query(q, args...))
	// Grouped by chunk too, with chunks left out, and the chunk spans.
	rq.ByChunk = true
	rq.Exclude = map[int32][]int64{0: {2, 3}, 1: {1}}
	q, args, _, err = speedRollupSQL(db, &rq)
	require.NoError(t, err)
	for _, r := range c.query(q, args...) {
		require.Len(t, r, 1+2+2+3)
		require.NotContains(t, []string{"0|2", "0|3", "1|1"}, r[1]+"|"+r[2])
	}
	spans, err := speedSpansSQL(db, v, map[int32][]int64{0: {2, 3}, 1: {1}})
	require.NoError(t, err)
	require.NotEmpty(t, c.query(spans))
	q, args, _, err = speedQuerySQL(db, &SpeedQuery{View: v, Filters: map[string][]string{"device": {}}})
	require.NoError(t, err)
	require.Empty(t, c.query(q, args...))

	// MaxSpeedWindow's SQL (serving's freshness), with and without a seam.
	for _, abs := range []map[int32]int64{nil, absorbed} {
		var newest time.Time
		n := 0
		for _, r := range speed {
			if r.Chunk >= abs[r.Partition] {
				n++
				if r.WindowStart.After(newest) {
					newest = r.WindowStart
				}
			}
		}
		q, err := speedFreshnessSQL(db, v, abs)
		require.NoError(t, err)
		require.Equal(t, [][]string{{strconv.FormatInt(newest.Unix(), 10), strconv.Itoa(n)}}, c.query(q))
	}

	q, args = selectBatchSQL(db, v, "r1", time.Time{}, time.Time{})
	require.Len(t, c.query(q, args...), len(rows))
	require.Equal(t, [][]string{{strconv.Itoa(len(rows))}}, c.query(batchRunRowsSQL(db, v), "r1"))
	require.Equal(t, [][]string{{"0"}}, c.query(batchRunRowsSQL(db, v), "r0"))

	// LoadBatchRun's carry-over copy: every row lies on t0's day, so
	// recomputing that day copies nothing and recomputing others copies
	// every row, byte for byte.
	q, args = copyBatchSQL(db, v, "r1", "r2", []time.Time{t0.Add(3 * time.Hour)}, time.Time{})
	c.query(q, args...)
	require.Equal(t, [][]string{{"0"}}, c.query(batchRunRowsSQL(db, v), "r2"))
	q, args = copyBatchSQL(db, v, "r1", "r2", []time.Time{t0.Add(24 * time.Hour), t0.Add(-24 * time.Hour)}, time.Time{})
	c.query(q, args...)
	// views[].retention: rows before the retained start are not copied.
	q, args = copyBatchSQL(db, v, "r1", "r2", nil, t0.Truncate(24*time.Hour).Add(24*time.Hour))
	c.query(q, args...)
	require.Equal(t, [][]string{{strconv.Itoa(len(rows))}}, c.query(batchRunRowsSQL(db, v), "r2"), "every row is before the next day")
	q, args = copyBatchSQL(db, v, "r1", "r2", nil, t0.Truncate(24*time.Hour))
	c.query(q, args...)
	require.Equal(t, [][]string{{strconv.Itoa(2 * len(rows))}}, c.query(batchRunRowsSQL(db, v), "r2"))
	rowCols := joinIdents(rowColumnNames(v))
	require.Equal(t, [][]string{{"0"}}, c.query(fmt.Sprintf(
		"SELECT count() FROM (SELECT %s, count() AS k FROM %s WHERE run_id = 'r2' GROUP BY %s) WHERE k != 2",
		rowCols, qualified(db, BatchTable(v.Name)), rowCols)), "each r1 row copied once per copy")
	require.Equal(t, [][]string{{"r1"}, {"r2"}}, c.query(batchRunsSQL(db, v)))
	drop, err := dropRunClause("r2")
	require.NoError(t, err)
	c.query(fmt.Sprintf("ALTER TABLE %s %s", qualified(db, BatchTable(v.Name)), drop))
	require.Equal(t, [][]string{{"r1"}}, c.query(batchRunsSQL(db, v)))

	progress := c.query(speedProgressSQL(db, v))
	require.Len(t, progress, 3)

	// Deleting absorbed speed rows (counted first) and dropping a run.
	below := 0
	for _, r := range speed {
		if r.Chunk < absorbed[r.Partition] {
			below++
		}
	}
	require.Positive(t, below)
	count, err := absorbedSpeedCountSQL(db, v, absorbed)
	require.NoError(t, err)
	require.Equal(t, [][]string{{strconv.Itoa(below)}}, c.query(count))
	clause, err := deleteAbsorbedClause(absorbed)
	require.NoError(t, err)
	c.query(fmt.Sprintf("ALTER TABLE %s %s SETTINGS mutations_sync = 2", qualified(db, SpeedTable(v.Name)), clause))
	require.Equal(t, [][]string{{"0"}}, c.query(count))
	require.Equal(t, want, merged())
	q, args, _, err = speedQuerySQL(db, &SpeedQuery{View: v})
	require.NoError(t, err)
	for _, r := range c.query(q, args...) {
		p, _ := strconv.Atoi(r[len(r)-3])
		chunk, _ := strconv.Atoi(r[len(r)-2])
		require.GreaterOrEqual(t, int64(chunk), absorbed[int32(p)])
	}
	drop, err = dropRunClause("r1")
	require.NoError(t, err)
	c.query(fmt.Sprintf("ALTER TABLE %s %s", qualified(db, BatchTable(v.Name)), drop))
	require.Empty(t, c.query(batchRunsSQL(db, v)))

	// Raw events: insert, replay, list and drop a day.
	rsql, rcols := rawInsertSQL(db, s)
	raw := NewRawBlock(s, 0)
	for i, e := range evs[:100] {
		if i%10 == 0 {
			e.ev.Values = append([]schemas.Value(nil), e.ev.Values...)
			e.ev.Values[s.FieldIndex("ok")] = schemas.Value{Set: true, Bool: i%20 == 0}
		}
		require.NoError(t, raw.Append(&e.ev, []byte(`{"id":"x"}`), e.partition, e.offset,
			time.Now().UTC().Add(-time.Duration(i%2)*24*time.Hour).Truncate(time.Millisecond)))
	}
	rows = blockRows(t, raw.columns(), len(rcols))
	c.insert(rsql, rows)
	require.Equal(t, [][]string{{"10", "5"}}, c.query(fmt.Sprintf("SELECT count(ok), sum(ok) FROM %s", qualified(db, RawTable(s.Name)))))
	c.insert(rsql, rows[:10])
	require.Equal(t, [][]string{{"100"}}, c.query(fmt.Sprintf("SELECT count() FROM %s FINAL", qualified(db, RawTable(s.Name)))))
	days := c.query(rawDaysSQL(), db, RawTable(s.Name))
	require.Len(t, days, 2)
	day, err := strconv.Atoi(days[0][0])
	require.NoError(t, err)
	c.query(fmt.Sprintf("ALTER TABLE %s %s", qualified(db, RawTable(s.Name)), dropDayClause(day)))
	require.Equal(t, [][]string{{"50"}}, c.query(fmt.Sprintf("SELECT count() FROM %s FINAL", qualified(db, RawTable(s.Name)))))

	// The merged view of a view without dimensions.
	c.query(fmt.Sprintf("SELECT window_start, n, items FROM %s", qualified(db, MergedView("clicks_total"))))

	// Migrate's own reads.
	c.query(fmt.Sprintf("SELECT object, fingerprint, definition, version FROM %s FINAL", qualified(db, TableSchemaMeta)))
	c.query("SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0", db, SpeedTable(v.Name))
	c.query("SELECT table, name FROM system.columns WHERE database = ?", db)
}

// blockRows turns a block's columns (slices, one per column) into rows of
// values for chdbSession.insert: exactly what the block hands the driver.
func blockRows(t *testing.T, cols []any, want int) [][]any {
	require.Len(t, cols, want)
	n := reflect.ValueOf(cols[0]).Len()
	rows := make([][]any, n)
	for _, col := range cols {
		cv := reflect.ValueOf(col)
		require.Equal(t, n, cv.Len(), "column of %T", col)
		for i := 0; i < n; i++ {
			rows[i] = append(rows[i], cv.Index(i).Interface())
		}
	}
	return rows
}

func nullFloat(s string) *float64 {
	if s == `\N` {
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) {
		return nil
	}
	return &f
}

var tsvUnescape = strings.NewReplacer(`\\`, `\`, `\'`, `'`, `\t`, "\t", `\n`, "\n", `\r`, "\r", `\0`, "\x00", `\b`, "\b", `\f`, "\f")

// TestCHDBAnalystSketchSQL is TestAnalystSketchSQL on the current engine:
// the same rows, written with the adapter's statements (the speed block's
// columns and the batch rows' arguments as literals), the levels built
// with LoadLevels' SQL, then the analyst's queries.
func TestCHDBAnalystSketchSQL(t *testing.T) {
	c := newCHDB(t)
	ver, err := ParseVersion(c.query("SELECT version()")[0][0])
	require.NoError(t, err)
	cfg := parseConfig(t, testConfigYAML)
	for _, s := range DDL(cfg, ver) {
		c.query(s.SQL)
	}
	db := cfg.ClickHouse.Database
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 1500, 3, 9)

	check := func(stage string) {
		t.Helper()
		large := 0
		for _, ac := range analystCases(v) {
			var got []analystRow
			for _, r := range c.query(analystSQL(db, ac)) {
				w, err := strconv.ParseInt(r[0], 10, 64)
				require.NoError(t, err)
				row := analystRow{group: analystGroup(w, r[1:1+len(ac.dims)])}
				row.distinct, err = strconv.ParseUint(r[1+len(ac.dims)], 10, 64)
				require.NoError(t, err)
				for _, f := range strings.Split(strings.Trim(r[2+len(ac.dims)], "[]"), ",") {
					x, err := strconv.ParseFloat(f, 64)
					require.NoError(t, err)
					row.q = append(row.q, x)
				}
				got = append(got, row)
			}
			t.Run(fmt.Sprintf("%s/%s-%ds-by-%s", stage, ac.from, ac.seconds, strings.Join(ac.dims, "-")), func(t *testing.T) {
				large += checkAnalyst(t, v, evs, ac, got)
			})
		}
		require.Positive(t, large, "%s: some group holds more than 16 users", stage)
	}
	speedSQL, cols := speedInsertSQL(db, v)
	insertSpeed := func(base int64) {
		b := blockOf(t, v, evs, cfg.ChunkSize, base)
		c.insert(speedSQL, blockRows(t, b.columns(), len(cols)))
	}
	insertSpeed(0)
	check("speed")
	insertSpeed(0)
	insertSpeed(1000)
	check("replayed")

	bsql, _ := batchInsertSQL(db, v)
	load := func(runID string, version uint64, absorbed map[int32]int64) {
		var rows [][]any
		for k, a := range aggregate(v, evs, cfg.ChunkSize, false, func(e testEvent) bool { return e.offset < absorbed[e.partition] }) {
			r := withStates(v, viewRow(v, k.key, a), a)
			args, err := rowArgs(v, &r, 1)
			require.NoError(t, err)
			args, err = appendStateArgs(args, v, &r)
			require.NoError(t, err)
			args[0] = runID
			rows = append(rows, args)
		}
		c.insert(bsql, rows)
		var abs [][]any
		for p, off := range absorbed {
			abs = append(abs, []any{v.Name, runID, uint32(p), uint64(schemas.ChunkOf(off, cfg.ChunkSize)), uint64(off)})
		}
		c.insert(insertSQL(db, TableAbsorbed, absorbedColumns), abs)
		for _, l := range v.Levels() {
			c.query(levelInsertSQL(db, v, l), runID)
		}
		c.insert(insertSQL(db, TableRuns, runsColumns), [][]any{{v.Name, runID, time.Now().UTC().Truncate(time.Second), version, sqlDateTime(time.Time{})}})
	}
	load("r1", 1, map[int32]int64{0: 200, 1: 100})
	check("mixed")
	load("r2", 2, map[int32]int64{0: 1 << 20, 1: 1 << 20, 2: 1 << 20})
	check("batch")
}
