package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/batch/export"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

const cfgYAML = `
chunk_size: 50
streams:
  - name: clicks
    topic: t.clicks
    partitions: 2
    id_field: id
    time_field: ts
    fields:
      - { name: id, type: string, required: true }
      - { name: ts, type: timestamp, required: true }
      - { name: amount, type: float64 }
      - { name: n, type: int64 }
      - { name: ok, type: bool }
views:
  - name: clicks_daily
    stream: clicks
    granularity: 1d
    measures:
      - { name: c, type: count }
`

type msg struct {
	off    int64
	kts    time.Time
	raw    []byte
	valid  bool
	id     string
	ts     time.Time
	amount float64
}

var base = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

func gen(rng *rand.Rand, p int32, from, n int64, ids *[]string) []msg {
	var out []msg
	for off := from; off < from+n; off++ {
		kts := base.Add(time.Duration(off) * 20 * time.Minute)
		m := msg{off: off, kts: kts, valid: true, id: fmt.Sprintf("p%d-%d", p, off)}
		if len(*ids) > 0 && rng.IntN(100) < 6 {
			m.id = (*ids)[rng.IntN(len(*ids))]
		} else {
			*ids = append(*ids, m.id)
		}
		m.ts = kts.Add(-time.Duration(rng.IntN(7200)) * time.Second)
		m.amount = math.Round(rng.Float64()*1000) / 10
		m.raw, _ = json.Marshal(map[string]any{"id": m.id, "ts": m.ts.UnixMilli(), "amount": m.amount, "n": off, "ok": off%2 == 0})
		if rng.IntN(100) < 3 {
			m.raw, m.valid = []byte(`{"id": 5}`), false
		}
		out = append(out, m)
	}
	return out
}

func put(t *testing.T, ctx context.Context, st *s3.Store, s *schemas.Stream, p int32, ms []msg, per int) {
	dec := schemas.NewDecoder(s, time.Hour)
	for len(ms) > 0 {
		k := min(per, len(ms))
		var buf bytes.Buffer
		w := parquet.NewRawWriter(&buf, s, parquet.RawWriterOptions{Partition: p})
		for _, m := range ms[:k] {
			rec := parquet.RawRecord{Raw: m.raw, Partition: p, Offset: m.off, KafkaTime: m.kts}
			if ev, err := dec.Decode(m.raw, m.kts); err == nil {
				rec.Event = &ev
			}
			require.NoError(t, w.Write(rec))
		}
		require.NoError(t, w.Close())
		require.NoError(t, objstore.PutBytes(ctx, st, schemas.RawKey(s.Name, p, ms[0].off, ms[k-1].off), buf.Bytes()))
		ms = ms[k:]
	}
}

type dayTruth struct {
	Rows   int64
	Sum    float64
	MinOff int64
}

func truthByDay(all map[int32][]msg, absorbed map[int32]int64) map[string]dayTruth {
	out := map[string]dayTruth{}
	for p, ms := range all {
		seen := map[string]bool{}
		for _, m := range ms {
			if m.off >= absorbed[p] || !m.valid || seen[m.id] {
				continue
			}
			seen[m.id] = true
			d := m.ts.UTC().Format("2006-01-02")
			t := out[d]
			t.Rows++
			t.Sum += m.amount
			out[d] = t
		}
	}
	return out
}

// duckdb reads the downloaded lake with DuckDB (npm @duckdb/node-api,
// installed into the tandem cache when missing) and returns per-day rows.
func duckdb(t *testing.T, dir string) []map[string]any {
	t.Helper()
	nodeDir := filepath.Join(testenv.CacheDir(), "node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@duckdb", "node-api")); err != nil {
		if _, err := exec.LookPath("npm"); err != nil {
			t.Fatalf("DuckDB check needs npm (to install @duckdb/node-api into %s)", nodeDir)
		}
		out, err := exec.Command("npm", "install", "--prefix", nodeDir, "@duckdb/node-api").CombinedOutput()
		require.NoError(t, err, "npm install @duckdb/node-api: %s", out)
	}
	script := filepath.Join(nodeDir, fmt.Sprintf("tandem-export-test-%d.mjs", os.Getpid()))
	src := `import { DuckDBInstance } from '@duckdb/node-api';
const inst = await DuckDBInstance.create(':memory:');
const c = await inst.connect();
const r = await c.runAndReadAll(` + "`" + `
  SELECT CAST(dt AS VARCHAR) AS dt, count(*)::BIGINT AS n, sum(amount)::DOUBLE AS s,
         count(DISTINCT _partition::VARCHAR || '/' || id)::BIGINT AS ids,
         min(typeof(ts)) AS ts_type, min(typeof(_offset)) AS off_type,
         sum(CASE WHEN CAST(ts AS DATE) = CAST(dt AS DATE) THEN 0 ELSE 1 END)::BIGINT AS wrong_day
  FROM read_parquet('` + "${process.argv[2]}" + `/**/*.parquet', hive_partitioning = true)
  GROUP BY dt ORDER BY dt` + "`" + `);
console.log(JSON.stringify(r.getRowObjectsJson()));
`
	require.NoError(t, os.WriteFile(script, []byte(src), 0o644))
	defer os.Remove(script)
	cmd := exec.Command("node", script, dir)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "duckdb: %s", out)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(out), &rows), "%s", out)
	return rows
}

func download(t *testing.T, ctx context.Context, st *s3.Store, stream string) (string, map[string]string) {
	dir := t.TempDir()
	objs, err := objstore.List(ctx, st, "lake/"+stream+"/")
	require.NoError(t, err)
	etags := map[string]string{}
	for _, o := range objs {
		data, err := objstore.GetBytes(ctx, st, o.Key)
		require.NoError(t, err)
		p := filepath.Join(dir, strings.TrimPrefix(o.Key, "lake/"+stream+"/"))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, data, 0o644))
		etags[o.Key] = o.ETag
	}
	return dir, etags
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func check(t *testing.T, rows []map[string]any, want map[string]dayTruth) {
	t.Helper()
	var days []string
	for d := range want {
		days = append(days, d)
	}
	sort.Strings(days)
	require.Len(t, rows, len(days))
	for i, d := range days {
		r := rows[i]
		require.Equal(t, d, r["dt"])
		require.EqualValues(t, fmt.Sprint(want[d].Rows), fmt.Sprint(r["n"]), "rows of %s", d)
		require.EqualValues(t, fmt.Sprint(want[d].Rows), fmt.Sprint(r["ids"]), "one row per id and partition on %s", d)
		require.InDelta(t, want[d].Sum, r["s"].(float64), 1e-6*math.Max(1, want[d].Sum))
		require.Contains(t, r["ts_type"], "TIMESTAMP")
		require.Equal(t, "BIGINT", r["off_type"])
		require.EqualValues(t, "0", fmt.Sprint(r["wrong_day"]))
	}
}

func TestExportReadByDuckDB(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	cfg, err := schemas.Parse("t.yaml", []byte(cfgYAML), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg.S3 = schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}
	st, err := s3.New(cfg.S3)
	require.NoError(t, err)
	s := cfg.Stream("clicks")
	log := testLog()

	rng := rand.New(rand.NewPCG(7, 8))
	all := map[int32][]msg{}
	ids := map[int32]*[]string{0: {}, 1: {}}
	for p := int32(0); p < 2; p++ {
		all[p] = gen(rng, p, 0, 300, ids[p])
		put(t, ctx, st, s, p, all[p], 64)
	}
	_, err = export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir()})
	require.NoError(t, err) // no batch run yet: nothing exported, no error

	_, err = runBatch(ctx, t.TempDir(), batch.Deps{Schema: cfg, Store: st, Log: log})
	require.NoError(t, err)
	res, err := export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir()})
	require.NoError(t, err)
	require.Len(t, res.Streams, 1)
	absorbed := map[int32]int64{0: 300, 1: 300}
	require.Equal(t, absorbed, res.Streams[0].Absorbed)
	require.Equal(t, res.Streams[0].Days, res.Streams[0].Written)
	dir, etags1 := download(t, ctx, st, "clicks")
	check(t, duckdb(t, dir), truthByDay(all, absorbed))

	// Again with nothing new: every day unchanged, no object rewritten.
	res, err = export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir()})
	require.NoError(t, err)
	require.Zero(t, res.Streams[0].Written)
	_, etags2 := download(t, ctx, st, "clicks")
	require.Equal(t, etags1, etags2)

	// New data touching only the last days: only they are rewritten.
	more := gen(rng, 0, 300, 60, ids[0])
	all[0] = append(all[0], more...)
	put(t, ctx, st, s, 0, more, 64)
	_, err = runBatch(ctx, t.TempDir(), batch.Deps{Schema: cfg, Store: st, Log: log,
		AfterPublish: func(ctx context.Context, _ *batch.Result) error {
			res, err = export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir()})
			return err
		}})
	require.NoError(t, err)
	absorbed = map[int32]int64{0: 350, 1: 300} // 360 archived: the partial chunk 7 waits
	require.Equal(t, absorbed, res.Streams[0].Absorbed)
	require.Positive(t, res.Streams[0].Written)
	require.Positive(t, res.Streams[0].Unchanged)
	dir, _ = download(t, ctx, st, "clicks")
	check(t, duckdb(t, dir), truthByDay(all, absorbed))
	// Every day folder is complete.
	objs, err := objstore.List(ctx, st, "lake/clicks/")
	require.NoError(t, err)
	succ := 0
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/_SUCCESS") {
			succ++
		}
	}
	require.Equal(t, len(truthByDay(all, absorbed)), succ)
}

// TestExportRetention: with streams[].retention the lake keeps the days
// from LakeRetainedFrom on, each whole and equal to the truth over the
// whole history (a repeat of an id first seen in a deleted raw object is
// still a duplicate), and drops the folders of the days before.
func TestExportRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	y := strings.Replace(cfgYAML, "    id_field: id\n", "    id_field: id\n    retention: 4d\n", 1)
	y = strings.Replace(y, "    granularity: 1d\n", "    granularity: 1d\n    retention: 2d\n", 1)
	cfg, err := schemas.Parse("t.yaml", []byte(y), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg.S3 = schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}
	st, err := s3.New(cfg.S3)
	require.NoError(t, err)
	s := cfg.Stream("clicks")
	log := testLog()

	rng := rand.New(rand.NewPCG(9, 10))
	all := map[int32][]msg{}
	ids := map[int32]*[]string{0: {}, 1: {}}
	for p := int32(0); p < 2; p++ {
		all[p] = gen(rng, p, 0, 600, ids[p]) // 20 min apart: about 8 days
		put(t, ctx, st, s, p, all[p], 30)
	}
	// A first export before any deletion fills the old days.
	now := base.Add(4 * 24 * time.Hour)
	clock := func() time.Time { return now }
	_, err = runBatch(ctx, t.TempDir(), batch.Deps{Schema: cfg, Store: st, Log: log, Now: clock})
	require.NoError(t, err)
	_, err = export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir(), Now: clock})
	require.NoError(t, err)

	// Five days later the batch run cuts the master dataset; the export
	// after it drops the days before the lake's retained start.
	now = base.Add(9 * 24 * time.Hour)
	var res *export.Result
	_, err = runBatch(ctx, t.TempDir(), batch.Deps{Schema: cfg, Store: st, Log: log, Now: clock,
		AfterPublish: func(ctx context.Context, _ *batch.Result) error {
			res, err = export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir(), Now: clock})
			return err
		}})
	require.NoError(t, err)
	from := base.Add(6 * 24 * time.Hour) // the first midnight at or after now − 4d + max_future_skew
	require.Equal(t, from, res.Streams[0].RetainedFrom)
	require.Positive(t, res.Streams[0].Deleted)
	objs, err := objstore.List(ctx, st, schemas.RawPrefix("clicks", 0))
	require.NoError(t, err)
	_, _, first, _, _ := schemas.ParseRawKey(objs[0].Key)
	require.Positive(t, first, "the batch run deleted the oldest raw objects")

	absorbed := map[int32]int64{0: 600, 1: 600}
	want := truthByDay(all, absorbed)
	for d := range want {
		if d < from.Format(time.DateOnly) {
			delete(want, d)
		}
	}
	require.NotEmpty(t, want)
	dir, etags1 := download(t, ctx, st, "clicks")
	check(t, duckdb(t, dir), want)

	// Exporting again changes nothing: the retained days read from the cut
	// master dataset have the same content as before the cut.
	res, err = export.Run(ctx, export.Options{Config: cfg, Store: st, Log: log, TempDir: t.TempDir(), Now: clock})
	require.NoError(t, err)
	require.Zero(t, res.Streams[0].Written)
	_, etags2 := download(t, ctx, st, "clicks")
	require.Equal(t, etags1, etags2)
}

// runBatch is one batch run with d.Schema's batch section.
func runBatch(ctx context.Context, tmp string, d batch.Deps) (*batch.Result, error) {
	c, err := batch.ConfigFrom(d.Schema)
	if err != nil {
		return nil, err
	}
	c.TempDir = tmp
	r, err := batch.New(c, d)
	if err != nil {
		return nil, err
	}
	return r.Run(ctx)
}
