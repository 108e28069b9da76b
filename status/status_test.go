package status

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
	"github.com/tandem-analytics/tandem/speed"
)

// testCfg is a test's tandem.yaml: the vocabulary and the sections the
// report reads, decoded by their owners as package config does (status
// cannot import config, which imports status).
type testCfg struct {
	*schemas.Config
	Ingest  ingest.Config
	Serve   serving.Config
	Speed   speed.Config
	Archive archive.Config
	Batch   batch.Config
	Status  Config
}

// deployment is config.Config.Deployment for the test's configuration.
func (c *testCfg) deployment() Deployment {
	return Deployment{
		Endpoints: map[string]Endpoint{
			"ingest": {Listen: c.Ingest.Listen, TLS: c.Ingest.TLS}, "speed": {Listen: c.Speed.Listen},
			"archive": {Listen: c.Archive.Listen}, "serve": {Listen: c.Serve.Listen, TLS: c.Serve.TLS},
		},
		BatchEvery: c.Batch.Every.D(), ArchiveMaxFileAge: c.Archive.MaxFileAge.D(),
	}
}

// monitor is New for the test's configuration, with conf's tuning.
func (c *testCfg) monitor(t *testing.T, conf Config, deps Deps) *Monitor {
	t.Helper()
	conf.Thresholds = c.Status.Thresholds
	if conf.Addrs == nil {
		conf.Addrs = c.Status.Addrs
	}
	deps.Schema, deps.Deployment = c.Config, c.deployment()
	m, err := New(conf, deps)
	require.NoError(t, err)
	return m
}

// testConfig is the example configuration with every store on a closed
// loopback port and status thresholds from extra YAML.
func testConfig(t *testing.T, extra string) *testCfg {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "tandem.example.yaml"))
	require.NoError(t, err)
	text := string(data)
	for _, def := range []string{"127.0.0.1:9092", "127.0.0.1:9000", "127.0.0.1:9100", "127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"} {
		text = strings.Replace(text, def, fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), 1)
	}
	cfg, err := schemas.Parse("test.yaml", []byte(text+extra), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	c := &testCfg{Config: cfg}
	c.Ingest, err = ingest.ConfigFrom(cfg)
	require.NoError(t, err)
	c.Serve, err = serving.ConfigFrom(cfg)
	require.NoError(t, err)
	c.Speed, err = speed.ConfigFrom(cfg)
	require.NoError(t, err)
	c.Archive, err = archive.ConfigFrom(cfg)
	require.NoError(t, err)
	c.Batch, err = batch.ConfigFrom(cfg)
	require.NoError(t, err)
	c.Status, err = ConfigFrom(cfg)
	require.NoError(t, err)
	return c
}

// component is a real registry served over HTTP the way ops.Mount does.
func component(t *testing.T) (*prometheus.Registry, *httptest.Server) {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ready\n")) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return reg, srv
}

func TestRatesBetweenGathers(t *testing.T) {
	cfg := testConfig(t, "")
	reg, srv := component(t)
	accepted := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_ingest_events_accepted_total"}, []string{"stream"})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_ingest_events_rejected_total"}, []string{"stream", "reason"})
	produce := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tandem_ingest_produce_duration_seconds", Buckets: []float64{.01, .1, 1}})
	reg.MustRegister(accepted, rejected, produce)
	accepted.WithLabelValues("pageviews").Add(1000)

	m := cfg.monitor(t, Config{Interval: 200 * time.Millisecond, Timeout: time.Second,
		Addrs: map[string]string{"ingest": strings.TrimPrefix(srv.URL, "http://")}}, Deps{Skip: []string{"speed", "archive", "serve"}})
	defer m.Close()
	first := m.Gather(context.Background())
	require.Equal(t, 0.0, *first.Check("ingest.events_per_second").Value, "nothing happened between the two scrapes")

	// Between this and the next Gather: 600 accepted, 200 rejected (two
	// reasons) and 100 slow produces.
	accepted.WithLabelValues("pageviews").Add(600)
	rejected.WithLabelValues("pageviews", "bad_field").Add(150)
	rejected.WithLabelValues("pageviews", "missing_field").Add(50)
	for i := 0; i < 100; i++ {
		produce.Observe(0.5)
	}
	time.Sleep(1100 * time.Millisecond) // past the one-second report cache
	rep := m.Gather(context.Background())
	require.Greater(t, rep.Window, 1.0, "the previous Gather's scrape is the baseline")
	eps := *rep.Check("ingest.events_per_second").Value
	require.InEpsilon(t, 600/rep.Window, eps, 1e-9)
	rr := rep.Check("ingest.reject_ratio")
	require.InEpsilon(t, 200.0/800, *rr.Value, 1e-9)
	require.Equal(t, Red, rr.Verdict) // 25% reaches the default red of 25%
	require.Contains(t, rr.Detail, "bad_field 150")
	p99 := *rep.Check("ingest.produce_latency_p99_seconds").Value
	require.True(t, p99 > 0.1 && p99 <= 1, "p99 %v must fall in the (0.1, 1] bucket", p99)
	require.Equal(t, Yellow, rep.Check("ingest.produce_latency_p99_seconds").Verdict)
}

func TestUnreachableIsRed(t *testing.T) {
	cfg := testConfig(t, "")
	m := cfg.monitor(t, Config{Interval: 100 * time.Millisecond, Timeout: time.Second}, Deps{})
	defer m.Close()
	rep := m.Gather(context.Background())
	require.Equal(t, Red, rep.Verdict)
	for _, name := range Components {
		c := rep.Check("component." + name)
		require.Equal(t, Red, c.Verdict, name)
		require.Contains(t, c.Detail, name+": not reachable at ")
	}
	for _, name := range []string{"store.kafka", "store.s3", "store.clickhouse"} {
		require.Equal(t, Red, rep.Check(name).Verdict, name)
	}
	require.Equal(t, Unknown, rep.Check("serve.query_latency_p99_seconds").Verdict)
	var text strings.Builder
	require.NoError(t, WriteText(&text, rep))
	require.Contains(t, text.String(), "RED")
	require.Contains(t, text.String(), fmt.Sprintf("speed: not reachable at %s", cfg.Speed.Listen))
}

func TestScrapesOverTLSTrustingTheComponentsCertificate(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_serve_cache_hits_total"})
	reg.MustRegister(c)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: manifest store unreachable", http.StatusServiceUnavailable)
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	cert := filepath.Join(t.TempDir(), "cert.pem")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
	addr := strings.TrimPrefix(srv.URL, "https://")
	cfg := testConfig(t, "\nstatus: { thresholds: { serve.cache_miss_ratio: { yellow: 0.2, red: 0.5 } } }\n")
	cfg.Serve.Listen, cfg.Serve.TLS = addr, schemas.TLSConfig{CertFile: cert, KeyFile: "unused"}
	m := cfg.monitor(t, Config{Interval: 100 * time.Millisecond, Timeout: time.Second}, Deps{Skip: []string{"ingest", "speed", "archive"}})
	defer m.Close()
	rep := m.Gather(context.Background())
	sc := rep.Check("component.serve")
	require.Equal(t, Red, sc.Verdict)
	require.Equal(t, "not ready", sc.Display, sc.Detail) // reached over TLS, and its readiness reported
	require.Contains(t, sc.Detail, "manifest store unreachable")
	require.Equal(t, Threshold{Yellow: 0.2, Red: 0.5}, *rep.Check("serve.cache_miss_ratio").Threshold, "configured threshold")
}

func TestThresholds(t *testing.T) {
	th := Threshold{Yellow: 1, Red: math.Inf(1)}
	b, err := json.Marshal(th)
	require.NoError(t, err)
	require.JSONEq(t, `{"yellow":1,"red":null}`, string(b))
	var back Threshold
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, th, back)
	for _, tc := range []struct {
		v    float64
		want Verdict
	}{{0.5, Green}, {1, Yellow}, {1e12, Yellow}} {
		require.Equal(t, tc.want, th.Judge(tc.v))
	}
	require.Equal(t, Red, Threshold{Yellow: 1, Red: 2}.Judge(2))

	cfg := testConfig(t, "\nstatus: { thresholds: { speed.freshness_seconds: { yellow: 5, red: 10 }, speed.freshnes: { yellow: 1, red: 2 } } }\n")
	require.Equal(t, Threshold{Yellow: 5, Red: 10}, Thresholds(cfg.Status, cfg.deployment())["speed.freshness_seconds"])
	require.Equal(t, []string{"speed.freshnes"}, UnknownThresholds(cfg.Status))
	// Every judged default is a documented check name.
	known := map[CheckName]bool{}
	for _, n := range CheckNames {
		known[n] = true
	}
	for n, th := range DefaultThresholds(cfg.deployment()) {
		require.True(t, known[n], string(n))
		require.LessOrEqual(t, th.Yellow, th.Red, string(n))
	}
	// The batch thresholds follow batch.every.
	require.Equal(t, (2*10*time.Minute + time.Minute).Seconds(), DefaultThresholds(cfg.deployment())["batch.last_run_age_seconds"].Yellow)
}

func TestHistogramQuantile(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1, 2, 4, 8}})
	reg.MustRegister(h)
	for i := 0; i < 90; i++ {
		h.Observe(0.5) // bucket (0, 1]
	}
	for i := 0; i < 10; i++ {
		h.Observe(3) // bucket (2, 4]
	}
	fams, err := reg.Gather()
	require.NoError(t, err)
	s := &scrape{fams: map[string]*dto.MetricFamily{}}
	for _, f := range fams {
		s.fams[f.GetName()] = f
	}
	hist := s.hist("h", nil)
	require.InDelta(t, 0.5, hist.quantile(0.45), 1e-9) // linear within (0,1]
	require.True(t, hist.quantile(0.99) > 2 && hist.quantile(0.99) <= 4)
	require.InDelta(t, (90*0.5+10*3)/100.0, hist.mean(), 1e-9)
	require.True(t, math.IsNaN((&histogram{}).quantile(0.5)))
}
