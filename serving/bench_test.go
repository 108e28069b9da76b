package serving_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"syscall"
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

// benchData builds a realistic view: 1m windows over 7 days, 10 countries x
// 5 devices (50 combinations), 1-5 events per row with users from a pool
// of 10k and log-normal latencies. Windows of the last 6 hours are speed
// rows (unabsorbed chunks, two partitions); the rest are batch day files.
type benchData struct {
	from, to   time.Time
	batchRows  int
	speedRows  int
	batchBytes int64
}

func buildBenchData(b *testing.B, cfg *schemas.Config, store *s3.Store, db *clickhouse.DB) benchData {
	ctx := context.Background()
	v := cfg.View(viewName)
	s := v.StreamDef()
	rng := rand.New(rand.NewPCG(7, 11))
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(7 * 24 * time.Hour)
	seam := to.Add(-6 * time.Hour)
	countries := []string{"US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "AU", "ES"}
	devices := []string{"mobile", "desktop", "tablet", "tv", "bot"}
	fi := func(name string) int { return s.FieldIndex(name) }
	ev := schemas.Event{Values: make([]schemas.Value, len(s.Fields))}
	row := func(country, device string) schemas.Aggregate {
		a := v.NewAggregate()
		n := 1 + rng.IntN(5)
		for i := 0; i < n; i++ {
			for k := range ev.Values {
				ev.Values[k] = schemas.Value{}
			}
			ev.Values[fi("country")] = schemas.Value{Set: true, Str: country}
			ev.Values[fi("device")] = schemas.Value{Set: true, Str: device}
			ev.Values[fi("user_id")] = schemas.Value{Set: true, Str: fmt.Sprintf("u%d", rng.IntN(10000))}
			ev.Values[fi("amount")] = schemas.Value{Set: true, Float: float64(rng.IntN(10000)) / 100}
			ev.Values[fi("latency_ms")] = schemas.Value{Set: true, Float: math.Exp(rng.NormFloat64() + 4)}
			v.Add(a, &ev)
		}
		return a
	}
	d := benchData{from: from, to: to}
	m := &schemas.Manifest{View: v.Name, RunID: "bench-run", Fingerprint: v.Fingerprint(), ChunkSize: cfg.ChunkSize,
		CreatedAt: time.Now().UTC(), Absorbed: map[int32]int64{0: 1000 * cfg.ChunkSize, 1: 1000 * cfg.ChunkSize}}
	for day := from; day.Before(seam); day = day.Add(24 * time.Hour) {
		var buf bytes.Buffer
		w := parquet.NewViewWriter(&buf, v, parquet.ViewWriterOptions{RowGroupRows: 8192})
		var rows int64
		var lo, hi time.Time
		for ws := day; ws.Before(day.Add(24*time.Hour)) && ws.Before(seam); ws = ws.Add(time.Minute) {
			for _, c := range countries {
				for _, dv := range devices {
					require.NoError(b, w.Write(parquet.ViewRow{WindowStart: ws, Dims: []string{c, dv}, Cells: cellsOf(v, row(c, dv))}))
					rows++
				}
			}
			if lo.IsZero() {
				lo = ws
			}
			hi = ws
		}
		require.NoError(b, w.Close())
		key := schemas.ViewDayKey(v.Name, m.RunID, day, 0)
		require.NoError(b, objstore.PutBytes(ctx, store, key, buf.Bytes()))
		m.Files = append(m.Files, schemas.ManifestFile{Key: key, Day: day, Rows: rows, Bytes: int64(buf.Len()), MinTime: lo, MaxTime: hi})
		d.batchRows += int(rows)
		d.batchBytes += int64(buf.Len())
	}
	addLevels(b, store, v, m)
	publishManifest(b, store, m)

	cols := []string{"window_start", "country", "device"}
	for _, ms := range v.Measures {
		cols = append(cols, ms.Name)
	}
	cols = append(cols, "kafka_partition", "chunk", "version")
	batch, err := db.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO tandem.%s_speed (%s)", v.Name, strings.Join(cols, ", ")))
	require.NoError(b, err)
	for ws := seam; ws.Before(to); ws = ws.Add(time.Minute) {
		for _, c := range countries {
			for _, dv := range devices {
				p := uint32(rng.IntN(2))
				args := []any{ws, c, dv}
				for _, cell := range cellsOf(v, row(c, dv)) {
					if bs, ok := cell.([]byte); ok {
						cell = string(bs)
					}
					args = append(args, cell)
				}
				chunk := uint64(1000 + ws.Sub(seam)/time.Hour)
				args = append(args, p, chunk, chunk*uint64(cfg.ChunkSize))
				require.NoError(b, batch.Append(args...))
				d.speedRows++
			}
		}
	}
	require.NoError(b, batch.Send())
	return d
}

// BenchmarkServingQuery measures GET /v1/views/{view}/query for a 7-day
// range at 1h granularity grouped by country, all six measures, over ~500k
// batch rows (7 Parquet day files in S3) and ~18k speed rows (ClickHouse),
// through HTTP. It reports warm-cache latency percentiles and requests/s,
// the first (cold-cache) query as the baseline, and the exact measures
// alone.
func BenchmarkServingQuery(b *testing.B) {
	cfg := loadConfig(b, configYAML(b))
	cfg.Serve.CacheBytes = 2 << 30
	cfg.Serve.WarmCache = false // the first query is the cold baseline
	_, store, _, db := newBackends(b, cfg.Config, false)
	t0 := time.Now()
	d := buildBenchData(b, cfg.Config, store, db)
	b.Logf("data: %d batch rows (%.1f MiB Parquet), %d speed rows, built in %s",
		d.batchRows, float64(d.batchBytes)/(1<<20), d.speedRows, time.Since(t0).Round(time.Millisecond))
	_, base, logs := startService(b, cfg)
	defer func() {
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		for _, l := range lines[max(0, len(lines)-3):] {
			b.Log(l)
		}
	}()
	params := url.Values{"from": {d.from.Format(time.RFC3339)}, "to": {d.to.Format(time.RFC3339)}, "granularity": {"1h"}, "group_by": {"country"}}
	do := func(p url.Values) time.Duration {
		t := time.Now()
		resp, err := http.Get(queryURL(base, p))
		require.NoError(b, err)
		var buf bytes.Buffer
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		require.NoError(b, err)
		require.Equal(b, http.StatusOK, resp.StatusCode, "%s", buf.String())
		require.NotContains(b, buf.String(), "warnings")
		return time.Since(t)
	}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	cold := do(params)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	exactParams := url.Values{}
	for k, v := range params {
		exactParams[k] = v
	}
	exactParams.Set("measures", "views,revenue,min_latency,max_latency")
	var exact, raw []time.Duration
	for i := 0; i < 5; i++ {
		exact = append(exact, do(exactParams))
	}
	// Baseline: the same query merging every one-minute row (no levels).
	restore := serving.SetUseLevels(false)
	for i := 0; i < 3; i++ {
		raw = append(raw, do(params))
	}
	restore()

	b.ResetTimer()
	lat := make([]time.Duration, 0, b.N)
	cpu0 := cpuTime()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		lat = append(lat, do(params))
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	sort.Slice(raw, func(i, j int) bool { return raw[i] < raw[j] })
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(exact, func(i, j int) bool { return exact[i] < exact[j] })
	pct := func(p float64) time.Duration { return lat[int(math.Ceil(p*float64(len(lat))))-1] }
	msOf := func(t time.Duration) float64 { return float64(t) / float64(time.Millisecond) }
	b.ReportMetric(msOf(pct(0.5)), "p50_ms")
	b.ReportMetric(msOf(pct(0.99)), "p99_ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(msOf(cold), "cold_ms")
	b.ReportMetric(float64(cold)/float64(pct(0.5)), "cold/warm")
	b.ReportMetric(msOf(exact[len(exact)/2]), "exact_only_p50_ms")
	b.ReportMetric(msOf(raw[len(raw)/2]), "no_levels_p50_ms")
	b.ReportMetric(float64(raw[len(raw)/2])/float64(pct(0.5)), "no_levels/levels")
	b.ReportMetric(msOf(cpu)/float64(len(lat)), "serve_cpu_ms/op")
	b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/float64(d.batchRows), "cached_B/row")
	used := metricValue(b, base, "tandem_serve_cache_bytes")
	b.ReportMetric(used/float64(d.batchRows), "estimated_B/row")
}

// cpuTime is the user+system CPU time of this process (service, HTTP client
// and in-process S3; ClickHouse runs apart), less sensitive than wall time to
// other load on the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func metricValue(b testing.TB, base, name string) float64 {
	for _, line := range strings.Split(metricsText(b, base), "\n") {
		if strings.HasPrefix(line, name+" ") {
			var f float64
			fmt.Sscan(strings.TrimPrefix(line, name+" "), &f)
			return f
		}
	}
	b.Fatalf("metric %s not found", name)
	return 0
}
