package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// configYAML is the example configuration on a small scale: two
// partitions, chunks of 100 offsets, a fast manifest poll, no tokens (tests
// that want them append an auth section).
func configYAML(t testing.TB) string {
	return testenv.ExampleConfigYAML(t,
		`serve:      { listen: "127.0.0.1:8081" }`, `serve:      { listen: "127.0.0.1:0", max_query_range: 30d, manifest_poll: 100ms }`,
		"chunk_size: 10000", "chunk_size: 100",
		"partitions: 6", "partitions: 2",
		"auth:       { ingest_tokens: [], query_tokens: [] }", "")
}

const viewName = "pageviews_by_country"

func loadConfig(t testing.TB, yaml string) *testConfig {
	t.Helper()
	cfg, err := schemas.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	conf, err := serving.ConfigFrom(cfg)
	require.NoError(t, err)
	return &testConfig{Config: cfg, Serve: conf}
}

// testConfig is a test's tandem.yaml as far as serving reads it: the
// vocabulary and the serve section (config.Config holds both the same way).
type testConfig struct {
	*schemas.Config
	Serve serving.Config
}

// migratedClickHouse returns the test configuration (configYAML) on a
// ClickHouse of the test's own, and that database with the configuration's
// tables created.
func migratedClickHouse(ctx context.Context, t testing.TB) (*schemas.Config, *clickhouse.DB) {
	t.Helper()
	cfg := loadConfig(t, configYAML(t))
	_, db := migrateOnClickHouse(ctx, t, cfg.Config)
	return cfg.Config, db
}

// migrateOnClickHouse points cfg at a ClickHouse of the test's own and
// creates cfg's tables there.
func migrateOnClickHouse(ctx context.Context, t testing.TB, cfg *schemas.Config) (*testenv.ClickHouseServer, *clickhouse.DB) {
	t.Helper()
	ch := testenv.ClickHouse(t)
	cfg.ClickHouse = schemas.ClickHouseConfig{Addr: ch.Addr, Database: ch.Database, Username: ch.Username, Password: ch.Password}
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	return ch, db
}

// ---------------------------------------------------------------- dataset

// event is one accepted event and where it sat in Kafka.
type event struct {
	ev        schemas.Event
	partition int32
	offset    int64
	raw       []byte // the event as sent (for raw files the batch run reads)
}

// dataset is a stream of events whose truth the tests compute directly.
type dataset struct {
	view   *schemas.View
	events []event
	next   map[int32]int64 // next offset per partition
	chunk  int64
}

// Base time of the test data: 2026-11-20 22:00 UTC; events span four hours
// (across midnight, so batch runs have two day files) with no events in
// 23:00-23:30 (empty windows must be omitted).
var base = time.Date(2026, 11, 20, 22, 0, 0, 0, time.UTC)

var (
	countries = []string{"US", "DE", "FR", "", "XX"} // "" = field missing; XX never has a latency
	devices   = []string{"mobile", "desktop", "tablet"}
)

func genDataset(t testing.TB, cfg *schemas.Config, n int, seed uint64) *dataset {
	t.Helper()
	return genDatasetSpan(t, cfg, n, seed, base, 4*time.Hour, true)
}

// genDatasetSpan is genDataset with events in [start, start+span), with
// the 23:00-23:30 UTC gap when gap is set.
func genDatasetSpan(t testing.TB, cfg *schemas.Config, n int, seed uint64, start time.Time, span time.Duration, gap bool) *dataset {
	t.Helper()
	v := cfg.View(viewName)
	dec := schemas.NewDecoder(v.StreamDef(), 0)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	d := &dataset{view: v, next: map[int32]int64{}, chunk: cfg.ChunkSize}
	for i := 0; i < n; i++ {
		var ts time.Time
		for {
			ts = start.Add(time.Duration(rng.Int64N(int64(span))))
			ts = ts.Truncate(time.Millisecond)
			if !gap || !(ts.Hour() == 23 && ts.Minute() < 30) {
				break
			}
		}
		obj := map[string]any{"event_id": fmt.Sprintf("ev-%d-%d", seed, i), "ts": ts.Format(time.RFC3339Nano)}
		country := countries[rng.IntN(len(countries))]
		if country != "" {
			obj["country"] = country
		}
		obj["device"] = devices[rng.IntN(len(devices))]
		if rng.IntN(10) > 0 {
			obj["user_id"] = fmt.Sprintf("u%d", rng.IntN(300))
		}
		if rng.IntN(5) > 0 {
			obj["amount"] = float64(rng.IntN(100000)) / 100
		}
		if country != "XX" && rng.IntN(10) > 0 {
			obj["latency_ms"] = math.Round(math.Exp(rng.NormFloat64()+4)*1000) / 1000
		}
		raw, err := json.Marshal(obj)
		require.NoError(t, err)
		ev, err := dec.Decode(raw, time.Time{})
		require.NoError(t, err)
		p := int32(rng.IntN(2))
		d.events = append(d.events, event{ev: ev, partition: p, offset: d.next[p], raw: raw})
		d.next[p]++
	}
	return d
}

// chunks returns, per partition, the number of chunks holding events.
func (d *dataset) chunks() map[int32]int64 {
	out := map[int32]int64{}
	for p, n := range d.next {
		out[p] = (n + d.chunk - 1) / d.chunk
	}
	return out
}

// halfChunks is the first half of each partition's chunks, what a batch
// run absorbed in tests that keep speed rows beside a run.
func (d *dataset) halfChunks() map[int32]int64 {
	out := d.chunks()
	for p, n := range out {
		out[p] = n / 2
	}
	return out
}

// aggregate folds events into view rows (window, dims).
func aggregate(v *schemas.View, evs []event) map[schemas.RowKey]schemas.Aggregate {
	rows := map[schemas.RowKey]schemas.Aggregate{}
	for i := range evs {
		k := v.Key(&evs[i].ev)
		a := rows[k]
		if a == nil {
			a = v.NewAggregate()
			rows[k] = a
		}
		v.Add(a, &evs[i].ev)
	}
	return rows
}

func cellsOf(v *schemas.View, a schemas.Aggregate) []any {
	cells := make([]any, len(v.Measures))
	for i := range v.Measures {
		cells[i] = v.Measures[i].Cell(&a[i])
	}
	return cells
}

// ---------------------------------------------------------------- env

// env is a running service on real S3 (FakeS3 or MinIO) and ClickHouse.
type env struct {
	t     testing.TB
	cfg   *schemas.Config
	view  *schemas.View
	s3srv *testenv.S3Server
	store *s3.Store
	ch    *testenv.ClickHouseServer
	db    *clickhouse.DB
	svc   *serving.Service
	url   string
	logs  *testenv.LockedBuffer
}

// newBackends starts S3 and ClickHouse and creates tandem's tables.
func newBackends(t testing.TB, cfg *schemas.Config, minio bool) (*testenv.S3Server, *s3.Store, *testenv.ClickHouseServer, *clickhouse.DB) {
	t.Helper()
	ctx := context.Background()
	var srv *testenv.S3Server
	if minio {
		srv = testenv.MinIO(t)
	} else {
		srv = testenv.FakeS3(t)
	}
	cfg.S3 = schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}
	store, err := s3.New(cfg.S3, s3.WithRetry(s3.Retry{Attempts: 2, Base: 50 * time.Millisecond}))
	require.NoError(t, err)
	ch, db := migrateOnClickHouse(ctx, t, cfg)
	return srv, store, ch, db
}

// startService runs a service for cfg (built by serving.FromConfig, as
// `tandem serve` builds it) until the test ends.
func startService(t testing.TB, cfg *testConfig) (*serving.Service, string, *testenv.LockedBuffer) {
	t.Helper()
	logs := &testenv.LockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := ops.NewRegistry()
	svc, closeFn, err := serving.FromConfig(cfg.Serve, cfg.Config, reg, log)
	require.NoError(t, err)
	require.NoError(t, svc.Listen())
	testenv.RunService(t, "the serving service", svc.Run, func() { closeFn() })
	return svc, "http://" + svc.Addr(), logs
}

func newEnv(t testing.TB, minio bool) *env {
	t.Helper()
	cfg := loadConfig(t, configYAML(t))
	e := &env{t: t, cfg: cfg.Config, view: cfg.View(viewName)}
	e.s3srv, e.store, e.ch, e.db = newBackends(t, cfg.Config, minio)
	e.svc, e.url, e.logs = startService(t, cfg)
	return e
}

// ---------------------------------------------------------------- writers

// publish writes a batch run of d absorbing the first absorbed[p] chunks of
// each partition (day files via internal/parquet's ViewWriter, small row
// groups so statistics pruning has work) and then its manifest.
func publish(t testing.TB, store *s3.Store, cfg *schemas.Config, d *dataset, runID string, absorbed map[int32]int64) *schemas.Manifest {
	t.Helper()
	m := writeRun(t, store, cfg, d, runID, absorbed)
	publishManifest(t, store, m)
	return m
}

func writeRun(t testing.TB, store *s3.Store, cfg *schemas.Config, d *dataset, runID string, absorbed map[int32]int64) *schemas.Manifest {
	t.Helper()
	ctx := context.Background()
	v := d.view
	var in []event
	for _, e := range d.events {
		if e.offset < absorbed[e.partition]*cfg.ChunkSize {
			in = append(in, e)
		}
	}
	rows := aggregate(v, in)
	keys := make([]schemas.RowKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].WindowMs != keys[j].WindowMs {
			return keys[i].WindowMs < keys[j].WindowMs
		}
		return keys[i].Dims < keys[j].Dims
	})
	m := &schemas.Manifest{View: v.Name, RunID: runID, Fingerprint: v.Fingerprint(), ChunkSize: cfg.ChunkSize,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond), Absorbed: map[int32]int64{}, Events: int64(len(in))}
	for p, k := range absorbed {
		m.Absorbed[p] = k * cfg.ChunkSize
	}
	byDay := map[time.Time][]schemas.RowKey{}
	var days []time.Time
	for _, k := range keys {
		day := k.Window().Truncate(24 * time.Hour)
		if byDay[day] == nil {
			days = append(days, day)
		}
		byDay[day] = append(byDay[day], k)
	}
	for _, day := range days {
		var buf bytes.Buffer
		w := parquet.NewViewWriter(&buf, v, parquet.ViewWriterOptions{RowGroupRows: 64})
		for _, k := range byDay[day] {
			dims, err := schemas.SplitDims(k.Dims)
			require.NoError(t, err)
			for len(dims) < len(v.Dimensions) {
				dims = append(dims, "") // SplitDims of trailing empty values
			}
			require.NoError(t, w.Write(parquet.ViewRow{WindowStart: k.Window(), Dims: dims, Cells: cellsOf(v, rows[k])}))
		}
		require.NoError(t, w.Close())
		key := schemas.ViewDayKey(v.Name, runID, day, 0)
		require.NoError(t, objstore.PutBytes(ctx, store, key, buf.Bytes()))
		ks := byDay[day]
		m.Files = append(m.Files, schemas.ManifestFile{Key: key, Day: day, Rows: int64(len(ks)), Bytes: int64(buf.Len()),
			MinTime: ks[0].Window(), MaxTime: ks[len(ks)-1].Window()})
		m.Rows += int64(len(ks))
	}
	return m
}

func publishManifest(t testing.TB, store *s3.Store, m *schemas.Manifest) {
	t.Helper()
	data, err := json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, objstore.PutBytes(context.Background(), store, schemas.ManifestKey(m.View), data))
}

// insertSpeed writes the speed rows of every chunk of d the way the speed
// layer does: per (window, dims, partition, chunk), cumulative, versioned by
// the highest offset folded in. Each chunk also gets an earlier, partial
// version of its rows (a previous flush), which FINAL must hide.
func insertSpeed(t testing.TB, db *clickhouse.DB, d *dataset) int {
	t.Helper()
	ctx := context.Background()
	v := d.view
	type pc struct {
		p int32
		c int64
	}
	byChunk := map[pc][]event{}
	for _, e := range d.events {
		k := pc{e.partition, schemas.ChunkOf(e.offset, d.chunk)}
		byChunk[k] = append(byChunk[k], e)
	}
	cols := []string{"window_start"}
	cols = append(cols, v.Dimensions...)
	for _, m := range v.Measures {
		cols = append(cols, m.Name)
	}
	cols = append(cols, "kafka_partition", "chunk", "version")
	batch, err := db.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s_speed (%s)", db.Database(), v.Name, strings.Join(cols, ", ")))
	require.NoError(t, err)
	n := 0
	add := func(k pc, evs []event) {
		var version int64
		for _, e := range evs {
			version = max(version, e.offset)
		}
		for rk, agg := range aggregate(v, evs) {
			dims, err := schemas.SplitDims(rk.Dims)
			require.NoError(t, err)
			for len(dims) < len(v.Dimensions) {
				dims = append(dims, "")
			}
			args := []any{rk.Window()}
			for _, dv := range dims {
				args = append(args, dv)
			}
			for _, c := range cellsOf(v, agg) {
				if b, ok := c.([]byte); ok {
					c = string(b)
				}
				args = append(args, c)
			}
			args = append(args, uint32(k.p), uint64(k.c), uint64(version))
			require.NoError(t, batch.Append(args...))
			n++
		}
	}
	for k, evs := range byChunk {
		sort.Slice(evs, func(i, j int) bool { return evs[i].offset < evs[j].offset })
		add(k, evs[:len(evs)/2]) // an earlier flush: FINAL must prefer the newer rows
		add(k, evs)
	}
	require.NoError(t, batch.Send())
	return n
}

// ---------------------------------------------------------------- truth

type truthRow struct {
	window time.Time
	dims   []string
	count  int64
	sum    float64
	lat    []float64
	users  map[string]bool
}

// truth answers a query directly from the events, independently of the
// view machinery: floor each event time to the view granularity, keep the
// windows in [from, to), apply the filters, bucket, group.
func truth(d *dataset, include func(event) bool, from, to time.Time, gran time.Duration, all bool, groupBy []string, filters map[string][]string) []*truthRow {
	v := d.view
	s := v.StreamDef()
	field := func(e event, name string) schemas.Value { return e.ev.Values[s.FieldIndex(name)] }
	groups := map[string]*truthRow{}
	for _, e := range d.events {
		if include != nil && !include(e) {
			continue
		}
		w := e.ev.Time.Truncate(v.Granularity.D())
		if w.Before(from) || !w.Before(to) {
			continue
		}
		pass := true
		for dim, vals := range filters {
			ok := false
			for _, x := range vals {
				ok = ok || field(e, dim).Str == x
			}
			pass = pass && ok
		}
		if !pass {
			continue
		}
		bucket := from
		if !all {
			bucket = w.Truncate(gran)
		}
		dims := make([]string, len(groupBy))
		for i, g := range groupBy {
			dims[i] = field(e, g).Str
		}
		key := bucket.String() + "|" + strings.Join(dims, "\x00")
		r := groups[key]
		if r == nil {
			r = &truthRow{window: bucket, dims: dims, users: map[string]bool{}}
			groups[key] = r
		}
		r.count++
		if a := field(e, "amount"); a.Set {
			r.sum += a.Float
		}
		if l := field(e, "latency_ms"); l.Set {
			r.lat = append(r.lat, l.Float)
		}
		if u := field(e, "user_id"); u.Set {
			r.users[u.Str] = true
		}
	}
	out := make([]*truthRow, 0, len(groups))
	for _, r := range groups {
		sort.Float64s(r.lat)
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].window.Equal(out[j].window) {
			return out[i].window.Before(out[j].window)
		}
		for k := range out[i].dims {
			if out[i].dims[k] != out[j].dims[k] {
				return out[i].dims[k] < out[j].dims[k]
			}
		}
		return false
	})
	return out
}

// ---------------------------------------------------------------- client

type apiRow struct {
	WindowStart time.Time                  `json:"window_start"`
	Dimensions  map[string]string          `json:"dimensions"`
	Measures    map[string]json.RawMessage `json:"measures"`
}

type apiAnswer struct {
	View        string   `json:"view"`
	Granularity string   `json:"granularity"`
	From        string   `json:"from"`
	To          string   `json:"to"`
	Rows        []apiRow `json:"rows"`
	Freshness   struct {
		BatchRun          *string          `json:"batch_run"`
		BatchCreatedAt    *time.Time       `json:"batch_created_at"`
		Absorbed          map[string]int64 `json:"batch_absorbed_offsets"`
		SpeedMaxEventTime *time.Time       `json:"speed_max_event_time"`
	} `json:"freshness"`
	Warnings  []string `json:"warnings"`
	Truncated *bool    `json:"truncated"`
}

// get performs a GET and returns status, headers and body.
func get(t testing.TB, rawURL string, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, body
}

func queryURL(base string, params url.Values) string {
	return base + "/v1/views/" + viewName + "/query?" + params.Encode()
}

func query(t testing.TB, base string, params url.Values) *apiAnswer {
	t.Helper()
	code, _, body := get(t, queryURL(base, params), nil)
	require.Equal(t, http.StatusOK, code, "body: %s", body)
	var a apiAnswer
	require.NoError(t, json.Unmarshal(body, &a), "body: %s", body)
	return &a
}

// ---------------------------------------------------------------- checks

// checkAnswer compares an answer's rows with the truth, measure by measure:
// exact measures exactly (sums to float rounding), sketches within their
// stated error bounds.
func checkAnswer(t testing.TB, got []apiRow, want []*truthRow, groupBy, measures []string) {
	t.Helper()
	require.Equal(t, len(want), len(got), "row count")
	for i, w := range want {
		g := got[i]
		require.True(t, w.window.Equal(g.WindowStart), "row %d: window %s, want %s", i, g.WindowStart, w.window)
		require.Len(t, g.Dimensions, len(groupBy), "row %d dimensions", i)
		for k, dim := range groupBy {
			require.Equal(t, w.dims[k], g.Dimensions[dim], "row %d dimension %s", i, dim)
		}
		require.Len(t, g.Measures, len(measures), "row %d: measures %v", i, g.Measures)
		for _, m := range measures {
			raw, ok := g.Measures[m]
			require.True(t, ok, "row %d lacks measure %s", i, m)
			checkMeasure(t, fmt.Sprintf("row %d (%s %v) %s", i, w.window.Format(time.RFC3339), w.dims, m), m, raw, w)
		}
	}
}

func checkMeasure(t testing.TB, where, m string, raw json.RawMessage, w *truthRow) {
	t.Helper()
	switch m {
	case "views":
		var n int64
		require.NoError(t, json.Unmarshal(raw, &n), "%s: %s is not an integer", where, raw)
		require.Equal(t, w.count, n, where)
	case "revenue":
		var f float64
		require.NoError(t, json.Unmarshal(raw, &f))
		require.InDelta(t, w.sum, f, 1e-9*math.Max(1, math.Abs(w.sum)), where)
	case "min_latency", "max_latency":
		if len(w.lat) == 0 {
			require.Equal(t, "null", string(raw), where)
			return
		}
		var f float64
		require.NoError(t, json.Unmarshal(raw, &f), "%s: %s", where, raw)
		want := w.lat[0]
		if m == "max_latency" {
			want = w.lat[len(w.lat)-1]
		}
		require.Equal(t, want, f, where)
	case "users":
		var n uint64
		require.NoError(t, json.Unmarshal(raw, &n), "%s: %s is not an unsigned integer", where, raw)
		exact := float64(len(w.users))
		require.InDelta(t, exact, float64(n), schemas.DistinctBound(exact), where)
	case "latency":
		if len(w.lat) == 0 {
			require.Equal(t, "null", string(raw), where)
			return
		}
		var q struct{ P50, P90, P99 *float64 }
		require.NoError(t, json.Unmarshal(raw, &q), where)
		require.NotNil(t, q.P50, where)
		require.NotNil(t, q.P90, where)
		require.NotNil(t, q.P99, where)
		checkQuantile(t, where+" p50", w.lat, 0.5, *q.P50)
		checkQuantile(t, where+" p90", w.lat, 0.9, *q.P90)
		checkQuantile(t, where+" p99", w.lat, 0.99, *q.P99)
	default:
		t.Fatalf("unknown measure %s", m)
	}
}

// checkQuantile holds a sketch's answer to DDSketch's guarantee: within the
// relative accuracy of the value at rank q*(n-1) (either neighbour when the
// rank falls between two values).
func checkQuantile(t testing.TB, where string, sorted []float64, q, got float64) {
	t.Helper()
	r := q * float64(len(sorted)-1)
	lo, hi := sorted[int(math.Floor(r))], sorted[int(math.Ceil(r))]
	a := schemas.QuantileRelativeAccuracy + 1e-9
	require.True(t, got >= lo*(1-a) && got <= hi*(1+a), "%s: %g not within %g of [%g, %g]", where, got, a, lo, hi)
}

var allMeasures = []string{"views", "revenue", "min_latency", "max_latency", "users", "latency"}

// addLevels writes the coarse levels of every base file of m, rolled up
// with View.Merge from the base rows as stored, and lists them in m, for
// runs the tests build by hand (the batch run rolls up its rows in memory;
// this is an independent implementation of the same rule).
func addLevels(t testing.TB, store *s3.Store, v *schemas.View, m *schemas.Manifest) {
	t.Helper()
	ctx := context.Background()
	m.Levels = append([]schemas.Granularity(nil), v.Levels()...)
	for _, f := range m.BaseFiles() {
		data, err := objstore.GetBytes(ctx, store, f.Key)
		require.NoError(t, err)
		r, err := parquet.NewViewReader(v, bytes.NewReader(data), int64(len(data)))
		require.NoError(t, err)
		var rows []parquet.ViewRow
		for row, err := range r.Rows(time.Time{}, time.Time{}) {
			require.NoError(t, err)
			rows = append(rows, row)
		}
		r.Close()
		for _, l := range m.Levels {
			aggs := map[schemas.RowKey]schemas.Aggregate{}
			for _, row := range rows {
				k := schemas.RowKey{WindowMs: l.WindowStartMs(row.WindowStart.UnixMilli()), Dims: schemas.JoinDims(row.Dims)}
				a := aggs[k]
				if a == nil {
					a = v.NewAggregate()
					aggs[k] = a
				}
				src := v.NewAggregate()
				for i := range v.Measures {
					src[i], err = v.Measures[i].StateFromCell(row.Cells[i])
					require.NoError(t, err)
				}
				v.Merge(a, src)
			}
			keys := make([]schemas.RowKey, 0, len(aggs))
			for k := range aggs {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool {
				if keys[i].WindowMs != keys[j].WindowMs {
					return keys[i].WindowMs < keys[j].WindowMs
				}
				return keys[i].Dims < keys[j].Dims
			})
			var buf bytes.Buffer
			w := parquet.NewViewWriter(&buf, v, parquet.ViewWriterOptions{RowGroupRows: 8192})
			for _, k := range keys {
				dims, err := schemas.SplitDims(k.Dims)
				require.NoError(t, err)
				for len(dims) < len(v.Dimensions) {
					dims = append(dims, "")
				}
				require.NoError(t, w.Write(parquet.ViewRow{WindowStart: k.Window(), Dims: dims, Cells: cellsOf(v, aggs[k])}))
			}
			require.NoError(t, w.Close())
			key := schemas.ViewLevelDayKey(v.Name, m.RunID, l, f.Day, 0)
			require.NoError(t, objstore.PutBytes(ctx, store, key, buf.Bytes()))
			mf := schemas.ManifestFile{Key: key, Level: l, Day: f.Day, Rows: int64(len(keys)), Bytes: int64(buf.Len())}
			if len(keys) > 0 {
				mf.MinTime, mf.MaxTime = keys[0].Window(), keys[len(keys)-1].Window()
			}
			m.Files = append(m.Files, mf)
		}
	}
}

// runBatch is one batch run over store with cfg's batch section, as
// `tandem batch run` makes it.
func runBatch(ctx context.Context, tmp string, cfg *schemas.Config, store objstore.Bucket) (*batch.Result, error) {
	c, err := batch.ConfigFrom(cfg)
	if err != nil {
		return nil, err
	}
	c.TempDir = tmp
	r, err := batch.New(c, batch.Deps{Schema: cfg, Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	return r.Run(ctx)
}
