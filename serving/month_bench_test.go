package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// BenchmarkServingMonth is issue 11's month of events at a size that runs
// in a minute or two in process: TANDEM_BENCH_MONTH_EVENTS events (default
// 300,000) spread evenly over 30 days, 10 countries × 5 devices,
// TANDEM_BENCH_MONTH_USERS users (default 100,000), written as raw objects,
// absorbed by a real batch run (which publishes the 1h and 1d levels) into
// the in-process S3, then served by a service built as `tandem serve`
// builds it. It reports, per query shape with all six measures, warm
// p50/p99 over TANDEM_BENCH_MONTH_REQUESTS sequential requests (default
// 30) and the CPU per query of this process (service and HTTP client), and
// the batch cache's estimated bytes. TANDEM_BENCH_MONTH_CPUPROFILE=P writes
// a CPU profile of each shape's measured requests (not the set-up) to
// P.<shape>.
// The end-to-end form through real processes is e2e's
// BenchmarkServingScale.
func BenchmarkServingMonth(b *testing.B) {
	events := benchEnvInt(b, "TANDEM_BENCH_MONTH_EVENTS", 300_000)
	users := benchEnvInt(b, "TANDEM_BENCH_MONTH_USERS", 100_000)
	reqs := benchEnvInt(b, "TANDEM_BENCH_MONTH_REQUESTS", 30)
	yaml := testenv.ExampleConfigYAML(b,
		`serve:      { listen: "127.0.0.1:8081" }`, `serve:      { listen: "127.0.0.1:0", max_query_range: 31d, manifest_poll: 100ms }`,
		"partitions: 6", "partitions: 2",
		"auth:       { ingest_tokens: [], query_tokens: [] }", "")
	cfg := loadConfig(b, yaml)
	_, store, _, _ := newBackends(b, cfg.Config, false)
	end := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	start := end.Add(-30 * 24 * time.Hour)
	t0 := time.Now()
	writeMonth(b, cfg.Config, store, events, users, start, end)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	res, err := runBatch(ctx, b.TempDir(), cfg.Config, store)
	require.NoError(b, err)
	m := res.Views[0].Manifest
	var baseRows, levelRows int64
	for _, f := range m.Files {
		if f.Level == 0 {
			baseRows += f.Rows
		} else {
			levelRows += f.Rows
		}
	}
	b.Logf("%d events, %d users: %d base rows, %d level rows; written and absorbed in %s",
		events, users, baseRows, levelRows, time.Since(t0).Round(time.Second))

	_, base, _ := startService(b, cfg)
	waitRun(b, base, m.RunID)

	last := func(d time.Duration) string { return end.Add(-d).Format(time.RFC3339) }
	shapes := []struct {
		name string
		p    url.Values
		// slide moves from and to by this much at each request: a
		// dashboard's now-7d → now, whose interior buckets stay.
		slide time.Duration
	}{
		{"7d_1h_by_country", url.Values{"from": {last(7 * 24 * time.Hour)}, "granularity": {"1h"}, "group_by": {"country"}}, 0},
		{"30d_1d_by_country", url.Values{"from": {start.Format(time.RFC3339)}, "granularity": {"1d"}, "group_by": {"country"}}, 0},
		{"30d_all_by_device", url.Values{"from": {start.Format(time.RFC3339)}, "granularity": {"all"}, "group_by": {"device"}}, 0},
		{"24h_1m_country_NL", url.Values{"from": {last(24 * time.Hour)}, "granularity": {"1m"}, "filter": {"country:NL"}}, 0},
		{"7d_1h_by_country_sliding", url.Values{"granularity": {"1h"}, "group_by": {"country"}}, 61 * time.Second},
	}
	prof := os.Getenv("TANDEM_BENCH_MONTH_CPUPROFILE")
	if os.Getenv("TANDEM_BENCH_MONTH_NO_BUCKET_CACHE") != "" { // the baseline of the bucket cache
		defer serving.SetUseBucketCache(false)()
	}
	for _, s := range shapes {
		s.p.Set("to", end.Format(time.RFC3339))
		b.Run(s.name, func(b *testing.B) {
			n := 0
			get := func() time.Duration {
				if s.slide > 0 { // ending an hour before the data's end, moving towards it
					to := end.Add(-time.Hour).Add(time.Duration(n) * s.slide)
					s.p.Set("from", to.Add(-7*24*time.Hour).Format(time.RFC3339))
					s.p.Set("to", to.Format(time.RFC3339))
					n++
				}
				t := time.Now()
				resp, err := http.Get(queryURL(base, s.p))
				require.NoError(b, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(b, err)
				require.Equal(b, http.StatusOK, resp.StatusCode, "%s", body)
				require.NotContains(b, string(body), "warnings")
				return time.Since(t)
			}
			first := get() // after the start-up warm-up; may read files
			lat := make([]time.Duration, reqs)
			if prof != "" {
				f, err := os.Create(prof + "." + s.name)
				require.NoError(b, err)
				require.NoError(b, pprof.StartCPUProfile(f))
				defer func() {
					pprof.StopCPUProfile()
					f.Close()
				}()
			}
			cpu0 := cpuTime()
			for i := range lat {
				lat[i] = get()
			}
			cpu := cpuTime() - cpu0
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			pct := func(p float64) time.Duration { return lat[int(math.Ceil(p*float64(len(lat))))-1] }
			b.ReportMetric(ms(first), "first_ms")
			b.ReportMetric(ms(pct(0.5)), "p50_ms")
			b.ReportMetric(ms(pct(0.99)), "p99_ms")
			b.ReportMetric(ms(cpu)/float64(reqs), "cpu_ms/op")
			// So far, over the shapes asked: per shape by difference.
			b.ReportMetric(metricValue(b, base, "tandem_serve_bucket_cache_bytes"), "bucket_cache_bytes")
			b.ReportMetric(0, "ns/op")
		})
	}
	b.ReportMetric(metricValue(b, base, "tandem_serve_cache_bytes"), "cache_bytes")
}

// writeMonth writes events raw events, evenly spread over [start, end), as
// the archiver would: one object per chunk of each partition.
func writeMonth(b *testing.B, cfg *schemas.Config, store objstore.Bucket, events, users int, start, end time.Time) {
	b.Helper()
	ctx := context.Background()
	s := cfg.View(viewName).StreamDef()
	dec := schemas.NewDecoder(s, cfg.MaxFutureSkew.D())
	countries := []string{"US", "DE", "FR", "GB", "JP", "BR", "IN", "NL", "ES", "CA"}
	devices := []string{"mobile", "desktop", "tablet", "tv", "bot"}
	rng := rand.New(rand.NewPCG(11, 11))
	step := float64(end.Sub(start)) / float64(events)
	parts := int64(s.Partitions)
	perPart := (int64(events) + parts - 1) / parts
	kts := end.Add(time.Hour)
	for p := int32(0); int64(p) < parts; p++ {
		for first := int64(0); first < perPart; first += cfg.ChunkSize {
			var buf bytes.Buffer
			w := parquet.NewRawWriter(&buf, s, parquet.RawWriterOptions{Partition: p, Decoder: dec})
			last := min(first+cfg.ChunkSize, perPart) - 1
			for off := first; off <= last; off++ {
				i := off*parts + int64(p)
				if i >= int64(events) {
					break
				}
				ts := start.Add(time.Duration(float64(i) * step)).Truncate(time.Millisecond)
				obj := map[string]any{"event_id": "e" + strconv.FormatInt(i, 10), "ts": ts.Format(time.RFC3339Nano),
					"country": countries[rng.IntN(len(countries))], "device": devices[rng.IntN(len(devices))],
					"user_id": fmt.Sprintf("u%d", rng.IntN(users))}
				if rng.IntN(4) == 0 {
					obj["amount"] = float64(1+rng.IntN(20000)) / 100
				}
				if rng.IntN(32) != 0 {
					obj["latency_ms"] = math.Round(math.Exp(3.7+0.8*rng.NormFloat64())*10) / 10
				}
				raw, err := json.Marshal(obj)
				require.NoError(b, err)
				rec := parquet.RawRecord{Raw: raw, Partition: p, Offset: off, KafkaTime: kts}
				if ev, err := dec.Decode(raw, kts); err == nil {
					rec.Event = &ev
				}
				require.NoError(b, w.Write(rec))
			}
			require.NoError(b, w.Close())
			require.NoError(b, objstore.PutBytes(ctx, store, schemas.RawKey(s.Name, p, first, last), buf.Bytes()))
		}
	}
}

func benchEnvInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a whole number of at least 1", name, s)
	}
	return n
}
