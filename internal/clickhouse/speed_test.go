package clickhouse

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// testEvent is one event of the clicks stream with where it sat in Kafka.
type testEvent struct {
	ev        schemas.Event
	partition int32
	offset    int64
}

// makeEvents builds n events over partitions and 10 minutes, with some
// events missing amount (so min/max/sum skip them). Amounts are multiples of
// 0.25, so float sums are exact in any order.
func makeEvents(s *schemas.Stream, n int, partitions int32, seed uint64) []testEvent {
	r := rand.New(rand.NewPCG(seed, 7))
	countries := []string{"US", "DE", "", "FR"}
	devices := []string{"web", "ios"}
	next := make([]int64, partitions)
	var out []testEvent
	for i := 0; i < n; i++ {
		p := int32(r.IntN(int(partitions)))
		ts := t0.Add(time.Duration(r.IntN(600_000)) * time.Millisecond)
		vals := make([]schemas.Value, len(s.Fields))
		set := func(name string, v schemas.Value) { v.Set = true; vals[s.FieldIndex(name)] = v }
		id := fmt.Sprintf("e%d", i)
		set("id", schemas.Value{Str: id})
		set("ts", schemas.Value{Time: ts})
		if c := countries[r.IntN(len(countries))]; c != "" {
			set("country", schemas.Value{Str: c})
		}
		set("device", schemas.Value{Str: devices[r.IntN(len(devices))]})
		set("user", schemas.Value{Str: fmt.Sprintf("u%d", r.IntN(50))})
		if r.IntN(5) > 0 {
			a := float64(r.IntN(4000)-1000) / 4
			set("amount", schemas.Value{Float: a})
		}
		q := int64(r.IntN(10))
		set("qty", schemas.Value{Int: q, Float: float64(q)})
		out = append(out, testEvent{ev: schemas.Event{ID: id, Time: ts, Values: vals}, partition: p, offset: next[p]})
		next[p]++
	}
	return out
}

// aggregate folds events into rows keyed by (window, dims), optionally per
// (partition, chunk), the way the layers do, with schemas' own Add.
type rowKey struct {
	p     int32
	chunk int64
	key   schemas.RowKey
}

func aggregate(v *schemas.View, evs []testEvent, chunkSize int64, perChunk bool, keep func(testEvent) bool) map[rowKey]schemas.Aggregate {
	out := map[rowKey]schemas.Aggregate{}
	for _, e := range evs {
		if keep != nil && !keep(e) {
			continue
		}
		k := rowKey{key: v.Key(&e.ev)}
		if perChunk {
			k.p, k.chunk = e.partition, schemas.ChunkOf(e.offset, chunkSize)
		}
		a, ok := out[k]
		if !ok {
			a = v.NewAggregate()
			out[k] = a
		}
		v.Add(a, &e.ev)
	}
	return out
}

func viewRow(v *schemas.View, k schemas.RowKey, a schemas.Aggregate) ViewRow {
	dims, err := schemas.SplitDims(k.Dims)
	if err != nil {
		panic(err)
	}
	if dims == nil {
		dims = []string{}
	}
	cells := make([]any, len(v.Measures))
	for i := range v.Measures {
		cells[i] = v.Measures[i].Cell(&a[i])
	}
	return ViewRow{WindowStart: k.Window(), Dims: dims, Cells: cells}
}

// withStates adds the SQL states of a to r (rows read back carry none).
func withStates(v *schemas.View, r ViewRow, a schemas.Aggregate) ViewRow {
	r.States = make([][]byte, len(v.Measures))
	for i := range v.Measures {
		r.States[i] = v.Measures[i].SQLStateCell(&a[i])
	}
	return r
}

// speedRows turns per-chunk aggregates into speed rows; version is the
// highest offset of the chunk seen in evs.
func speedRows(v *schemas.View, evs []testEvent, chunkSize int64) []SpeedRow {
	return speedRowsOf(v, evs, chunkSize, false)
}

// speedRowsOf is speedRows, with the rows' SQL states when states is set
// (rows read back carry none, so tests comparing them leave it unset).
func speedRowsOf(v *schemas.View, evs []testEvent, chunkSize int64, states bool) []SpeedRow {
	maxOff := map[[2]int64]int64{}
	for _, e := range evs {
		k := [2]int64{int64(e.partition), schemas.ChunkOf(e.offset, chunkSize)}
		maxOff[k] = max(maxOff[k], e.offset)
	}
	var out []SpeedRow
	for k, a := range aggregate(v, evs, chunkSize, true, nil) {
		r := viewRow(v, k.key, a)
		if states {
			r = withStates(v, r, a)
		}
		out = append(out, SpeedRow{ViewRow: r, Partition: k.p, Chunk: k.chunk, Version: maxOff[[2]int64{int64(k.p), k.chunk}]})
	}
	return out
}

// exact is the expected answer of the exact measures of one row.
type exact struct {
	n       int64
	sum     float64
	lo, hi  *float64
	present bool
}

func exactOf(v *schemas.View, a schemas.Aggregate) exact {
	e := exact{present: true}
	for i, m := range v.Measures {
		switch m.Type {
		case schemas.MeasureCount:
			e.n = m.Result(&a[i]).(int64)
		case schemas.MeasureSum:
			e.sum = m.Result(&a[i]).(float64)
		case schemas.MeasureMin:
			e.lo = m.Result(&a[i]).(*float64)
		case schemas.MeasureMax:
			e.hi = m.Result(&a[i]).(*float64)
		}
	}
	return e
}

func truth(v *schemas.View, evs []testEvent) map[schemas.RowKey]exact {
	out := map[schemas.RowKey]exact{}
	for k, a := range aggregate(v, evs, 1, false, nil) {
		out[k.key] = exactOf(v, a)
	}
	return out
}

func seqOf(rows []ViewRow) iter.Seq2[ViewRow, error] {
	return func(yield func(ViewRow, error) bool) {
		for _, r := range rows {
			if !yield(r, nil) {
				return
			}
		}
	}
}

func TestSpeedRowsFinalReplacesOlderVersionsAndFiltersAbsorbedChunks(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")

	evs := makeEvents(s, 600, 3, 1)
	// The first half of partition 0's chunk 0, written first; then the
	// cumulative rows of everything, written later with higher versions.
	var early []testEvent
	for _, e := range evs {
		if e.partition == 0 && e.offset < 50 {
			early = append(early, e)
		}
	}
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, early, cfg.ChunkSize)))
	all := speedRows(v, evs, cfg.ChunkSize)
	require.NoError(t, db.InsertSpeedRows(ctx, v, all))

	// Without FINAL the stale rows are still there (separate parts), so
	// the FINAL read below is what removes them.
	var raw uint64
	require.NoError(t, db.Conn().QueryRow(ctx, "SELECT count() FROM tandem.clicks_by_country_speed").Scan(&raw))
	require.Greater(t, raw, uint64(len(all)))

	read := func(absorbed map[int32]int64, from, to time.Time) map[rowKey]SpeedRow {
		got := map[rowKey]SpeedRow{}
		require.NoError(t, db.SelectSpeedRows(ctx, v, from, to, absorbed, func(r SpeedRow) error {
			k := rowKey{p: r.Partition, chunk: r.Chunk, key: schemas.RowKey{WindowMs: r.WindowStart.UnixMilli(), Dims: schemas.JoinDims(r.Dims)}}
			_, dup := got[k]
			require.False(t, dup, "row %v read twice", k)
			got[k] = r
			return nil
		}))
		return got
	}

	want := map[rowKey]SpeedRow{}
	for _, r := range all {
		want[rowKey{p: r.Partition, chunk: r.Chunk, key: schemas.RowKey{WindowMs: r.WindowStart.UnixMilli(), Dims: schemas.JoinDims(r.Dims)}}] = r
	}
	got := read(nil, time.Time{}, time.Time{})
	require.Len(t, got, len(want))
	for k, w := range want {
		g := got[k]
		require.Equal(t, w.Version, g.Version, "%v", k)
		require.Equal(t, w.WindowStart, g.WindowStart)
		for i := range v.Measures {
			m := &v.Measures[i]
			ws, err := m.StateFromCell(w.Cells[i])
			require.NoError(t, err)
			gs, err := m.StateFromCell(g.Cells[i])
			require.NoError(t, err, m.Name)
			require.Equal(t, m.Result(&ws), m.Result(&gs), "%s of %v", m.Name, k)
		}
	}

	// Absorbed chunks are left out: partition 0 chunk 0, partition 2
	// chunks 0-2 (all of it); partition 1 is absent, so K = 0.
	absorbed := map[int32]int64{0: 1, 2: 3}
	got = read(absorbed, time.Time{}, time.Time{})
	n := 0
	for k := range want {
		if k.chunk >= absorbed[k.p] {
			n++
			require.Contains(t, got, k)
		}
	}
	require.Len(t, got, n)
	require.Less(t, n, len(want))

	// The time range is [from, to) on window starts.
	from, to := t0.Add(2*time.Minute), t0.Add(5*time.Minute)
	got = read(nil, from, to)
	n = 0
	for k := range want {
		if w := k.key.Window(); !w.Before(from) && w.Before(to) {
			n++
			require.Contains(t, got, k)
		}
	}
	require.Len(t, got, n)

	progress, err := db.SpeedProgress(ctx, v)
	require.NoError(t, err)
	wantProgress := map[int32]int64{}
	for _, e := range evs {
		wantProgress[e.partition] = max(wantProgress[e.partition], e.offset)
	}
	require.Equal(t, wantProgress, progress)

	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, absorbed))
	got = read(nil, time.Time{}, time.Time{})
	require.Len(t, got, n0(want, absorbed))
	for k := range got {
		require.GreaterOrEqual(t, k.chunk, absorbed[k.p])
	}

	b := NewSpeedBlock(v, 0)
	require.Error(t, b.AppendRow(&SpeedRow{ViewRow: ViewRow{WindowStart: t0, Dims: []string{"x"}}}))
	require.Zero(t, b.Len())
}

func n0(want map[rowKey]SpeedRow, absorbed map[int32]int64) int {
	n := 0
	for k := range want {
		if k.chunk >= absorbed[k.p] {
			n++
		}
	}
	return n
}

// mergedRows reads the merged SQL view.
func mergedRows(t *testing.T, db *DB, query string) map[schemas.RowKey]exact {
	t.Helper()
	rows, err := db.Conn().Query(testCtx(t), query)
	require.NoError(t, err)
	defer rows.Close()
	out := map[schemas.RowKey]exact{}
	for rows.Next() {
		var w time.Time
		var country, device string
		var e exact
		require.NoError(t, rows.Scan(&w, &country, &device, &e.n, &e.sum, &e.lo, &e.hi))
		e.present = true
		k := schemas.RowKey{WindowMs: w.UnixMilli(), Dims: schemas.JoinDims([]string{country, device})}
		_, dup := out[k]
		require.False(t, dup)
		out[k] = e
	}
	require.NoError(t, rows.Err())
	return out
}

// goMerged answers like serving does: batch rows of the current run plus
// speed rows of unabsorbed chunks, merged with View.Merge.
func goMerged(t *testing.T, db *DB, v *schemas.View) map[schemas.RowKey]exact {
	t.Helper()
	ctx := testCtx(t)
	run, absorbed, err := db.CurrentRun(ctx, v)
	require.NoError(t, err)
	acc := map[schemas.RowKey]schemas.Aggregate{}
	add := func(r ViewRow) error {
		k := schemas.RowKey{WindowMs: r.WindowStart.UnixMilli(), Dims: schemas.JoinDims(r.Dims)}
		a, ok := acc[k]
		if !ok {
			a = v.NewAggregate()
			acc[k] = a
		}
		src := v.NewAggregate()
		for i := range v.Measures {
			st, err := v.Measures[i].StateFromCell(r.Cells[i])
			require.NoError(t, err)
			src[i] = st
		}
		v.Merge(a, src)
		return nil
	}
	if run != "" {
		require.NoError(t, db.SelectBatchRows(ctx, v, run, time.Time{}, time.Time{}, add))
	}
	require.NoError(t, db.SelectSpeedRows(ctx, v, time.Time{}, time.Time{}, absorbed, func(r SpeedRow) error { return add(r.ViewRow) }))
	out := map[schemas.RowKey]exact{}
	for k, a := range acc {
		out[k] = exactOf(v, a)
	}
	return out
}

func TestMergedViewEqualsTruthAcrossBatchRuns(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	mergedViewAcrossBatchRuns(t, cfg, db)
}

// mergedViewAcrossBatchRuns checks the merged SQL view and serving's
// reads against the truth through two batch runs, on a migrated db.
func mergedViewAcrossBatchRuns(t *testing.T, cfg *schemas.Config, db *DB) {
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	const query = "SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.clicks_by_country"

	evs := makeEvents(s, 900, 3, 2)
	want := truth(v, evs)
	require.Greater(t, len(want), 20)

	// Nothing published: the merged view is the speed rows.
	require.Empty(t, mergedRows(t, db, query))
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))
	require.Equal(t, want, mergedRows(t, db, query))
	require.Equal(t, want, goMerged(t, db, v))

	// A run absorbing partition 0 chunks 0-1 and partition 1 chunk 0.
	load := func(runID string, absorbedOffsets map[int32]int64) {
		agg := aggregate(v, evs, cfg.ChunkSize, false, func(e testEvent) bool { return e.offset < absorbedOffsets[e.partition] })
		var rows []ViewRow
		for k, a := range agg {
			rows = append(rows, viewRow(v, k.key, a))
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].WindowStart.Before(rows[j].WindowStart) })
		m := &schemas.Manifest{View: v.Name, RunID: runID, ChunkSize: cfg.ChunkSize, Absorbed: absorbedOffsets, Rows: int64(len(rows))}
		n, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m, Rows: seqOf(rows)})
		require.NoError(t, err)
		require.EqualValues(t, len(rows), n)
	}
	load("r1", map[int32]int64{0: 200, 1: 100})
	// Loaded but not published: still the speed answer.
	require.Equal(t, want, mergedRows(t, db, query))
	require.NoError(t, db.PublishRun(ctx, v, "r1", time.Time{}))
	run, absorbed, err := db.CurrentRun(ctx, v)
	require.NoError(t, err)
	require.Equal(t, "r1", run)
	require.Equal(t, map[int32]int64{0: 2, 1: 1}, absorbed)
	require.Equal(t, want, mergedRows(t, db, query))
	require.Equal(t, want, goMerged(t, db, v))

	// Speed rows of absorbed chunks no longer count: corrupt one (a newer
	// version with a huge count) and the answer does not move.
	var victim SpeedRow
	for _, r := range speedRows(v, evs, cfg.ChunkSize) {
		if r.Partition == 0 && r.Chunk == 0 {
			victim = r
			break
		}
	}
	victim.Version += 1000
	victim.Cells[0] = int64(1_000_000)
	require.NoError(t, db.InsertSpeedRows(ctx, v, []SpeedRow{victim}))
	require.Equal(t, want, mergedRows(t, db, query))

	// A second run absorbing more; the first stays loaded until dropped.
	load("r2", map[int32]int64{0: 300, 1: 200, 2: 100})
	require.NoError(t, db.PublishRun(ctx, v, "r2", time.Time{}))
	require.NoError(t, db.PublishRun(ctx, v, "r2", time.Time{})) // idempotent
	require.Equal(t, want, mergedRows(t, db, query))
	require.Equal(t, want, goMerged(t, db, v))

	// Cleanup after every reader moved to r2: drop r1, delete the speed
	// rows r1 absorbed. The answer is unchanged.
	dropped, err := db.DropOldRuns(ctx, v)
	require.NoError(t, err)
	require.Equal(t, []string{"r1"}, dropped)
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, map[int32]int64{0: 2, 1: 1}))
	require.Equal(t, want, mergedRows(t, db, query))
	require.Equal(t, want, goMerged(t, db, v))

	// The analyst sees the same answer through the view.
	require.Equal(t, []string{fmt.Sprint(len(want))}, queryStrings(t, db, "SELECT toString(count()) FROM tandem.clicks_by_country"))
}

func TestLoadBatchRunRetriesCleanly(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 200, 2, 3)
	var rows []ViewRow
	for k, a := range aggregate(v, evs, cfg.ChunkSize, false, nil) {
		rows = append(rows, viewRow(v, k.key, a))
	}
	m := &schemas.Manifest{View: v.Name, RunID: "2026-11-25T10:00:00Z.a1", ChunkSize: cfg.ChunkSize, Absorbed: map[int32]int64{0: 100}, Rows: int64(len(rows))}
	// The first attempt fails after some rows.
	failing := func(yield func(ViewRow, error) bool) {
		for i, r := range rows {
			if i == len(rows)/2 {
				yield(ViewRow{}, fmt.Errorf("reading parquet: boom"))
				return
			}
			if !yield(r, nil) {
				return
			}
		}
	}
	_, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m, Rows: failing})
	require.ErrorContains(t, err, "boom")
	n, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m, Rows: seqOf(rows)})
	require.NoError(t, err)
	require.EqualValues(t, len(rows), n)
	require.Equal(t, []string{fmt.Sprint(len(rows))}, queryStrings(t, db, "SELECT toString(count()) FROM tandem.clicks_by_country_batch"))
	_, err = db.LoadBatchRun(ctx, v, BatchLoad{Manifest: &schemas.Manifest{View: v.Name, RunID: "bad'id", ChunkSize: 1}})
	require.Error(t, err)
}

func TestMergedViewWithoutDimensions(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_total")
	evs := makeEvents(cfg.Stream("clicks"), 500, 3, 6)
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))
	want := truth(v, evs)
	rows, err := db.Conn().Query(ctx, "SELECT window_start, n, items FROM tandem.clicks_total")
	require.NoError(t, err)
	defer rows.Close()
	got := map[schemas.RowKey]exact{}
	for rows.Next() {
		var w time.Time
		var e exact
		require.NoError(t, rows.Scan(&w, &e.n, &e.sum))
		e.present = true
		got[schemas.RowKey{WindowMs: w.UnixMilli(), Dims: schemas.JoinDims(nil)}] = e
	}
	require.NoError(t, rows.Err())
	require.Len(t, want, 1) // ten minutes in one 1h window
	require.Equal(t, want, got)
}
