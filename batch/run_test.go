package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func openCH(t *testing.T, ctx context.Context, cfg *schemas.Config) *clickhouse.DB {
	t.Helper()
	srv := testenv.ClickHouse(t)
	cfg.ClickHouse.Addr = srv.Addr
	cfg.ClickHouse.Username, cfg.ClickHouse.Password = srv.Username, srv.Password
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	return db
}

// TestBatchEndToEnd walks one deployment through its life: a first run
// over a partly archived master dataset, a re-run with nothing new, an
// incremental run after more data, a full run that must equal it byte for
// byte, ClickHouse loads and speed-row deletion, and garbage collection.
func TestBatchEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 3, srv)
	st := testStore(t, cfg)
	db := openCH(t, ctx, cfg)
	s := cfg.Stream("pv")
	hourly, daily := cfg.View("pv_hourly"), cfg.View("pv_daily")

	rng := rand.New(rand.NewPCG(1, 2))
	msgs := map[int32][]genMsg{}
	ids := map[int32]*[]string{0: {}, 1: {}, 2: {}}
	for p := int32(0); p < 3; p++ {
		msgs[p] = genPartition(rng, p, 0, 350, ids[p])
	}
	// Partition 2 is archived only up to offset 279: chunk 2 is partial.
	writeRaw(t, ctx, st, s, 0, msgs[0], 70)
	writeRaw(t, ctx, st, s, 1, msgs[1][:200], 70)
	writeRaw(t, ctx, st, s, 1, msgs[1][200:], 33) // other file boundaries
	writeRaw(t, ctx, st, s, 2, msgs[2][:280], 70)

	bc, err := ConfigFrom(cfg) // the file's batch section: keep_runs 2
	require.NoError(t, err)
	run := func(full bool) *Result {
		t.Helper()
		res, err := Run(ctx, Options{Config: cfg, Batch: &bc, Store: st, ClickHouse: db, Full: full, Log: testLog(), TempDir: t.TempDir()})
		require.NoError(t, err)
		return res
	}

	// Run 1.
	res1 := run(false)
	require.False(t, res1.UpToDate())
	m1, rows, _ := publishedRows(t, ctx, st, hourly)
	want1 := map[int32]int64{0: 300, 1: 300, 2: 200}
	require.Equal(t, want1, m1.Absorbed, "only whole, fully archived chunks are absorbed")
	require.Equal(t, hourly.StreamDef().FieldDecls(), m1.Fields, "the manifest records the field declarations the run validated under")
	tr, events, dups, invalid := truth(msgs, want1, time.Hour, true)
	require.Positive(t, dups)
	require.Positive(t, invalid)
	checkAgainstTruth(t, hourly, rows, tr)
	require.Equal(t, events, m1.Events)
	require.Equal(t, dups, m1.Duplicates)
	require.Equal(t, invalid, m1.Invalid)
	for _, f := range m1.Files {
		require.True(t, strings.HasPrefix(f.Key, schemas.ViewRunPrefix(hourly.Name, m1.RunID)))
		require.Equal(t, f.Day, f.MinTime.Truncate(24*time.Hour))
	}
	checkClickHouse(t, ctx, db, cfg, m1, msgs, want1)
	checkLevels(t, ctx, st, hourly, m1, msgs, want1)
	checkAnalystSQL(t, ctx, db, hourly, msgs, want1) // no speed rows yet: the batch run's states

	// Run 2: nothing new → up to date, the same run stays current.
	res2 := run(false)
	require.True(t, res2.UpToDate())
	m2, err := ReadManifest(ctx, st, hourly.Name)
	require.NoError(t, err)
	require.Equal(t, m1.RunID, m2.RunID)

	// Speed rows of partition 0, chunks 0..4 (run 1 absorbed chunks 0..2).
	insertSpeedRows(t, ctx, db, hourly, 0, 5)
	// A serving replica answers from run 1: its lease (live for an hour)
	// names run 1's K_p. The next run does not wait for it to switch.
	bc.SpeedReleaseWait = 0
	lease := schemas.ServeLease{Replica: "serve-on-run-1", RenewedAt: time.Now().UTC(), Seq: 1, TTLMs: time.Hour.Milliseconds(),
		Views: map[string]schemas.ServeLeaseView{hourly.Name: {Runs: []string{m1.RunID}, AbsorbedChunks: map[int32]int64{}}}}
	for p := range m1.Absorbed {
		lease.Views[hourly.Name].AbsorbedChunks[p] = m1.AbsorbedChunks(p)
	}
	leaseData, err := json.Marshal(lease)
	require.NoError(t, err)
	require.NoError(t, objstore.PutBytes(ctx, st, schemas.ServeLeaseKey(lease.Replica), leaseData))

	// More data: partition 0 to offset 549, partition 2 completes.
	more0 := genPartition(rng, 0, 350, 200, ids[0])
	msgs[0] = append(msgs[0], more0...)
	writeRaw(t, ctx, st, s, 0, more0, 90)
	more2 := genPartition(rng, 2, 350, 100, ids[2])
	writeRaw(t, ctx, st, s, 2, msgs[2][280:], 70)
	msgs[2] = append(msgs[2], more2...)
	writeRaw(t, ctx, st, s, 2, more2, 100)

	// Run 3: incremental.
	res3 := run(false)
	require.False(t, res3.UpToDate())
	require.True(t, res3.Views[0].Incremental)
	m3, rows3, order3 := publishedRows(t, ctx, st, hourly)
	want3 := map[int32]int64{0: 500, 1: 300, 2: 400}
	require.Equal(t, want3, m3.Absorbed)
	tr3, events3, dups3, invalid3 := truth(msgs, want3, time.Hour, true)
	checkAgainstTruth(t, hourly, rows3, tr3)
	require.Equal(t, []int64{events3, dups3, invalid3}, []int64{m3.Events, m3.Duplicates, m3.Invalid})
	require.Equal(t, m1.RunID, m3.PreviousRunID)
	require.Positive(t, res3.Views[0].DaysKept, "some days carried over")
	// The replica on run 1 reads chunks 3 and 4 of partition 0 (run 3
	// absorbed them): only chunks 0..2 go.
	require.Equal(t, []uint64{3, 4}, speedChunks(t, ctx, db, hourly, 0))
	require.Equal(t, int64(3), res3.Views[0].SpeedRowsDeletedThrough[0])
	checkClickHouse(t, ctx, db, cfg, m3, msgs, want3)
	// Days carried over inside ClickHouse keep their states; the speed
	// rows left are of chunks run 3 absorbed.
	checkAnalystSQL(t, ctx, db, hourly, msgs, want3)
	_, drows3, dorder3 := publishedRows(t, ctx, st, daily)
	dtr3, _, _, _ := truth(msgs, want3, 24*time.Hour, false)
	require.Len(t, drows3, len(dtr3))
	checkLevels(t, ctx, st, hourly, m3, msgs, want3)
	dm3, _, _ := publishedRows(t, ctx, st, daily)
	require.Empty(t, dm3.Levels, "a 1d view has no level coarser than itself")

	// The replica stops (removing its lease). Run 4: full recompute equals
	// the incremental run byte for byte.
	require.NoError(t, st.Delete(ctx, schemas.ServeLeaseKey(lease.Replica)))
	res4 := run(true)
	require.False(t, res4.Views[0].Incremental)
	m4, _, order4 := publishedRows(t, ctx, st, hourly)
	require.NotEqual(t, m3.RunID, m4.RunID, "a --full run publishes a new run")
	require.Equal(t, order3, order4, "incremental and full runs give identical rows")
	_, _, dorder4 := publishedRows(t, ctx, st, daily)
	require.Equal(t, dorder3, dorder4)
	require.Equal(t, m3.Rows, m4.Rows)
	// Every file, levels included, is the same bytes: the incremental run
	// kept its levels consistent with its base rows.
	files3, files4 := fileBytes(t, ctx, st, m3), fileBytes(t, ctx, st, m4)
	require.Equal(t, len(m3.Files), len(files3))
	require.Len(t, files4, len(files3))
	for k, b := range files3 {
		require.True(t, bytes.Equal(b, files4[k]), "file %s differs between the incremental and the full run", k)
	}
	require.Empty(t, speedChunks(t, ctx, db, hourly, 0), "run 3 absorbed chunks 3 and 4; with no replica on run 1, run 4 deleted their speed rows")

	// GC: keep_runs = 2 keeps runs 3 and 4 only.
	runs, published, err := listRuns(ctx, st, "views/pv_hourly/runs/", "_manifest.json")
	require.NoError(t, err)
	require.Equal(t, []string{m3.RunID, m4.RunID}, runs)
	require.Len(t, published, 2)
	states, _, err := listRuns(ctx, st, "batch/pv/runs/", "state.json")
	require.NoError(t, err)
	require.Equal(t, []string{m3.RunID, m4.RunID}, states)
	// The files of run 4's manifest all exist.
	for _, f := range m4.Files {
		_, err := st.Stat(ctx, f.Key)
		require.NoError(t, err)
	}
}

// checkLevels: the view's manifest lists its default levels (1d for an
// hourly view), every day with base rows has a file of each level, and the
// level's rows are the truth at that level.
func checkLevels(t *testing.T, ctx context.Context, st *s3.Store, v *schemas.View, m *schemas.Manifest, msgs map[int32][]genMsg, absorbed map[int32]int64) {
	t.Helper()
	require.Equal(t, []schemas.Granularity{schemas.Granularity(24 * time.Hour)}, m.Levels)
	days := map[time.Time]int{}
	for _, f := range m.Files {
		days[f.Day]++
		if f.Level != 0 {
			require.True(t, strings.HasPrefix(f.Key, schemas.ViewRunPrefix(v.Name, m.RunID)+"level=1d/"), f.Key)
		}
	}
	for d, n := range days {
		require.Equal(t, 2, n, "day %s: one base file and one 1d file", d)
	}
	rows, _ := levelRowsOf(t, ctx, st, v, m, schemas.Granularity(24*time.Hour))
	tr, _, _, _ := truth(msgs, absorbed, 24*time.Hour, true)
	checkAgainstTruth(t, v, rows, tr)
}

// q quotes a name for the tests' own SQL, which checks what the adapter
// wrote independently of it.
func q(name string) string { return "`" + name + "`" }

// checkClickHouse: the run is current in runs, its absorbed chunks are
// recorded, older runs are gone from <view>_batch, and the merged SQL view
// (batch only, no speed rows of unabsorbed chunks) equals the truth.
func checkClickHouse(t *testing.T, ctx context.Context, db *clickhouse.DB, cfg *schemas.Config, m *schemas.Manifest, msgs map[int32][]genMsg, absorbed map[int32]int64) {
	t.Helper()
	v := cfg.View(m.View)
	cur, _, err := db.CurrentRun(ctx, v)
	require.NoError(t, err)
	require.Equal(t, m.RunID, cur)
	var runs uint64
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT uniqExact(run_id) FROM %s.%s", q(db.Database()), q(clickhouse.BatchTable(v.Name)))).Scan(&runs))
	require.EqualValues(t, 1, runs)
	rows, err := db.Conn().Query(ctx, fmt.Sprintf("SELECT kafka_partition, chunks, absorbed_offset FROM %s.absorbed WHERE view = ? AND run_id = ? ORDER BY kafka_partition", q(db.Database())), v.Name, m.RunID)
	require.NoError(t, err)
	got := map[int32]int64{}
	for rows.Next() {
		var p uint32
		var k, off uint64
		require.NoError(t, rows.Scan(&p, &k, &off))
		require.EqualValues(t, off/uint64(cfg.ChunkSize), k)
		got[int32(p)] = int64(off)
	}
	rows.Close()
	require.Equal(t, absorbed, got)

	tr, _, _, _ := truth(msgs, absorbed, time.Hour, true)
	var wantCount int64
	var wantSum float64
	for _, r := range tr {
		wantCount += r.Count
		wantSum += r.Sum
	}
	// Speed rows of chunks the run did not absorb count too: subtract them.
	var speedCount int64
	var speedSum float64
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf(`SELECT toInt64(sum(views)), sum(revenue) FROM %s.%s FINAL
		WHERE chunk >= transform(kafka_partition, [toUInt32(4294967295), 0, 1, 2], [toUInt64(0), %d, %d, %d], toUInt64(0))`,
		q(db.Database()), q(clickhouse.SpeedTable(v.Name)), absorbed[0]/cfg.ChunkSize, absorbed[1]/cfg.ChunkSize, absorbed[2]/cfg.ChunkSize)).Scan(&speedCount, &speedSum))
	var gotCount int64
	var gotSum float64
	var groups uint64
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT toInt64(sum(views)), sum(revenue), count() FROM %s.%s", q(db.Database()), q(v.Name))).Scan(&gotCount, &gotSum, &groups))
	require.Equal(t, wantCount, gotCount-speedCount)
	// The level view for analysts (LoadLevels checked its row counts
	// against the manifest's level files) sums to the same.
	var levelCount int64
	var levelSum float64
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT toInt64(sum(views)), sum(revenue) FROM %s.%s", q(db.Database()), q(clickhouse.LevelView(v.Name, schemas.Granularity(24*time.Hour))))).Scan(&levelCount, &levelSum))
	require.Equal(t, gotCount, levelCount)
	require.InDelta(t, gotSum, levelSum, 1e-9*gotSum)
	require.InDelta(t, wantSum, gotSum-speedSum, 1e-6*wantSum)
	if speedCount == 0 {
		require.EqualValues(t, len(tr), groups)
	}
}

func insertSpeedRows(t *testing.T, ctx context.Context, db *clickhouse.DB, v *schemas.View, p uint32, chunks int) {
	t.Helper()
	b, err := db.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (window_start, country, views, revenue, min_latency, max_latency, users, lat, kafka_partition, chunk, version)",
		q(db.Database()), q(clickhouse.SpeedTable(v.Name))))
	require.NoError(t, err)
	for c := 0; c < chunks; c++ {
		require.NoError(t, b.Append(genBase, "ZZ", int64(1), 1.5, nil, nil, "", "", p, uint64(c), uint64(c)))
	}
	require.NoError(t, b.Send())
}

func speedChunks(t *testing.T, ctx context.Context, db *clickhouse.DB, v *schemas.View, p uint32) []uint64 {
	t.Helper()
	rows, err := db.Conn().Query(ctx, fmt.Sprintf("SELECT chunk FROM %s.%s WHERE kafka_partition = ? ORDER BY chunk", q(db.Database()), q(clickhouse.SpeedTable(v.Name))), p)
	require.NoError(t, err)
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var c uint64
		require.NoError(t, rows.Scan(&c))
		out = append(out, c)
	}
	return out
}

// TestConcurrentRunRefused: a second run while one holds the lock fails
// clearly and changes nothing.
func TestConcurrentRunRefused(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 1, srv)
	st := testStore(t, cfg)
	lk, err := acquireLock(ctx, st, "first-run", time.Minute, testLog())
	require.NoError(t, err)
	_, err = Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, err.Error(), "first-run")
	_, err = acquireLock(ctx, st, "third", time.Minute, testLog())
	require.ErrorIs(t, err, ErrLocked)
	lk.release(ctx)
	// Released: the next run gets it.
	_, err = Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
	require.NoError(t, err)
	// An expired lock is taken over.
	stale := fmt.Sprintf(`{"holder":"crashed","started_at":%q,"expires_at":%q}`,
		time.Now().Add(-2*time.Hour).Format(time.RFC3339), time.Now().Add(-time.Hour).Format(time.RFC3339))
	require.NoError(t, objstore.PutBytes(ctx, st, LockKey, []byte(stale)))
	_, err = Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
	require.NoError(t, err)
}

// TestCrashBeforeManifest: a run that dies before its manifest leaves the
// previous run visible, and the next run publishes normally.
func TestCrashBeforeManifest(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 1, srv)
	st := testStore(t, cfg)
	s := cfg.Stream("pv")
	rng := rand.New(rand.NewPCG(3, 4))
	var ids []string
	msgs := genPartition(rng, 0, 0, 250, &ids)
	writeRaw(t, ctx, st, s, 0, msgs[:150], 50)
	_, err := Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
	require.NoError(t, err)
	m1, err := ReadManifest(ctx, st, "pv_hourly")
	require.NoError(t, err)

	writeRaw(t, ctx, st, s, 0, msgs[150:], 50)
	crash := errors.New("simulated crash")
	_, err = Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir(),
		crashBeforeManifest: func(string) error { return crash }})
	require.ErrorIs(t, err, crash)
	m, err := ReadManifest(ctx, st, "pv_hourly")
	require.NoError(t, err)
	require.Equal(t, m1.RunID, m.RunID, "the previous run stays visible")
	for _, f := range m.Files {
		_, err := st.Stat(ctx, f.Key)
		require.NoError(t, err)
	}

	res, err := Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
	require.NoError(t, err)
	require.False(t, res.UpToDate())
	m3, rows, _ := publishedRows(t, ctx, st, cfg.View("pv_hourly"))
	require.Equal(t, map[int32]int64{0: 200}, m3.Absorbed)
	tr, _, _, _ := truth(map[int32][]genMsg{0: msgs}, m3.Absorbed, time.Hour, true)
	checkAgainstTruth(t, cfg.View("pv_hourly"), rows, tr)
	// The crashed run's leftovers were collected.
	runs, _, err := listRuns(ctx, st, "views/pv_hourly/runs/", "_manifest.json")
	require.NoError(t, err)
	require.Equal(t, []string{m1.RunID, m3.RunID}, runs)
}

func TestCoverPartition(t *testing.T) {
	f := func(first, last int64) rawFile { return rawFile{Key: fmt.Sprint(first), First: first, Last: last} }
	cases := []struct {
		name            string
		files           []rawFile
		vouched         int64
		covered, absorb int64
		reads           [][2]int64
	}{
		{"none", nil, -1, 0, 0, nil},
		{"partial chunk", []rawFile{f(0, 149)}, -1, 150, 100, [][2]int64{{0, 100}}},
		{"contiguous", []rawFile{f(0, 99), f(100, 249), f(250, 299)}, -1, 300, 300, [][2]int64{{0, 100}, {100, 250}, {250, 300}}},
		{"gap stops", []rawFile{f(0, 99), f(100, 149), f(160, 399)}, -1, 150, 100, [][2]int64{{0, 100}}},
		{"gap vouched", []rawFile{f(0, 149), f(160, 399)}, 400, 400, 400, [][2]int64{{0, 150}, {160, 400}}},
		{"overlap and re-upload", []rawFile{f(0, 99), f(0, 49), f(50, 199), f(150, 209)}, -1, 210, 200, [][2]int64{{0, 100}, {100, 200}}},
		{"retention start", []rawFile{f(120, 299), f(300, 420)}, -1, 421, 400, [][2]int64{{120, 300}, {300, 400}}},
		{"retention, no whole chunk", []rawFile{f(120, 180)}, -1, 181, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pp := coverPartition(0, tc.files, tc.vouched, 100)
			require.Equal(t, tc.covered, pp.Covered)
			require.Equal(t, tc.absorb, pp.Absorbed)
			var reads [][2]int64
			for _, rf := range pp.Files {
				reads = append(reads, [2]int64{rf.From, rf.To})
			}
			require.Equal(t, tc.reads, reads)
		})
	}
}

// TestChangedLevelsRecomputeInFull: a run after views[].levels changed
// recomputes in full (carried-over days would keep the old levels), even
// with nothing new absorbed, and publishes exactly the configured levels.
func TestChangedLevelsRecomputeInFull(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 1, srv)
	st := testStore(t, cfg)
	ids := &[]string{}
	writeRaw(t, ctx, st, cfg.Stream("pv"), 0, genPartition(rand.New(rand.NewPCG(5, 6)), 0, 0, 300, ids), 100)
	run := func(c *schemas.Config) *Result {
		res, err := Run(ctx, Options{Config: c, Store: st, Log: testLog(), TempDir: t.TempDir()})
		require.NoError(t, err)
		return res
	}
	res := run(cfg)
	m1 := res.Views[0].Manifest
	require.Equal(t, []schemas.Granularity{schemas.Granularity(24 * time.Hour)}, m1.Levels)

	// The same data with levels [6h, 1d].
	cfg2, err := schemas.Parse("test.yaml", []byte(strings.Replace(fmt.Sprintf(testYAML, 100, 1),
		"    dimensions: [country]\n", "    dimensions: [country]\n    levels: [6h, 1d]\n", 1)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg2.S3 = cfg.S3
	res = run(cfg2)
	require.True(t, res.Views[0].Published, "nothing new absorbed, but the levels changed")
	require.False(t, res.Views[0].Incremental)
	m2 := res.Views[0].Manifest
	require.Equal(t, []schemas.Granularity{schemas.Granularity(24 * time.Hour), schemas.Granularity(6 * time.Hour)}, m2.Levels)
	levels := map[schemas.Granularity]int{}
	for _, f := range m2.Files {
		levels[f.Level]++
	}
	require.Equal(t, levels[0], levels[schemas.Granularity(6*time.Hour)])
	require.Equal(t, levels[0], levels[schemas.Granularity(24*time.Hour)])
	require.Equal(t, m1.Rows, m2.Rows, "the same base rows")

	// Levels off: none published.
	cfg3, err := schemas.Parse("test.yaml", []byte(strings.Replace(fmt.Sprintf(testYAML, 100, 1),
		"    dimensions: [country]\n", "    dimensions: [country]\n    levels: []\n", 1)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg3.S3 = cfg.S3
	m3 := run(cfg3).Views[0].Manifest
	require.Empty(t, m3.Levels)
	require.Len(t, m3.Files, len(m3.BaseFiles()))
	// And unchanged levels: up to date again.
	require.True(t, run(cfg3).UpToDate())
}
