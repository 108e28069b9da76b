package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas/schemastest"

	"github.com/tandem-analytics/tandem/schemas"
)

func noEnv(string) (string, bool) { return "", false }

// base is a small valid config each case breaks in one way.
const base = schemastest.ConfigBase

// TestConfigRejects: every problem of every section is refused by the
// whole-file load with the message and line it had when all sections lived
// in schemas (the vocabulary's cases are in schemas/config_test.go too,
// each section's in its package).
func TestConfigRejects(t *testing.T) {
	// The vocabulary's refusals, then the components' sections'.
	cases := append([]schemastest.RejectCase(nil), schemastest.VocabularyRejects...)
	for _, tc := range []struct{ name, from, to, want string }{
		{"zero max result rows", "chunk_size: 100", "chunk_size: 100\nserve: { max_result_rows: 0 }", `serve.max_result_rows must be positive`},
		{"negative max merge groups", "chunk_size: 100", "chunk_size: 100\nserve: { max_merge_groups: -1 }", `serve.max_merge_groups must be positive`},
		{"negative concurrency", "chunk_size: 100", "chunk_size: 100\nserve: { max_concurrent_queries: -1 }", `serve.max_concurrent_queries must be 0 (2 × GOMAXPROCS) or positive; got -1`},
		{"zero read timeout", "chunk_size: 100", "chunk_size: 100\ningest: { read_timeout: 0 }", `:3: ingest.read_timeout must be positive`},
		{"write timeout under read + produce", "chunk_size: 100", "chunk_size: 100\ningest: { read_timeout: 1m, write_timeout: 1m }", `ingest.write_timeout (1m0s) must be at least ingest.read_timeout + ingest.produce_timeout (1m10s)`},
		{"serve header timeout over read timeout", "chunk_size: 100", "chunk_size: 100\nserve: { read_header_timeout: 20s, read_timeout: 10s }", `serve.read_header_timeout (20s) must not be longer than serve.read_timeout (10s)`},
		{"zero events per request", "chunk_size: 100", "chunk_size: 100\ningest: { max_events_per_request: 0 }", `ingest.max_events_per_request must be positive`},
		{"per-client share over the total", "chunk_size: 100", "chunk_size: 100\ningest: { max_inflight_bytes_per_client: 999999999999 }", `ingest.max_inflight_bytes_per_client (999999999999) must be between max_body_bytes`},
	} {
		cases = append(cases, schemastest.RejectCase{Name: tc.name, From: tc.from, To: tc.to, Want: tc.want})
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			src := strings.Replace(base, tc.From, tc.To, 1)
			require.NotEqual(t, base, src, "case must change the config")
			_, err := Parse("t.yaml", []byte(src), noEnv)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.Want)
			require.True(t, strings.HasPrefix(err.Error(), "t.yaml:"), err.Error())
		})
	}
	_, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
}

// TestAllErrorsAtOnce: one load reports the problems of every section,
// each with its line, in line order.
func TestAllErrorsAtOnce(t *testing.T) {
	src := base + `ingest: { max_events_per_request: 0 }
serve: { max_result_rows: 0 }
speed: { flush_interval: 0 }
archive: { max_file_age: 0 }
batch: { keep_runs: 1 }
status: { addrs: { gateway: "x:1" } }
`
	src = strings.Replace(src, "chunk_size: 100", "chunk_size: 0", 1)
	_, err := Parse("t.yaml", []byte(src), noEnv)
	var errs schemas.ConfigErrors
	require.ErrorAs(t, err, &errs)
	want := []string{
		"t.yaml:2: chunk_size must be positive",
		"t.yaml:22: ingest.max_events_per_request must be positive",
		"t.yaml:23: serve.max_result_rows must be positive",
		"t.yaml:24: speed.flush_interval must be positive",
		"t.yaml:25: archive.max_file_bytes and archive.max_file_age must be positive",
		"t.yaml:26: batch.keep_runs must be at least 2",
		`t.yaml:27: status.addrs: "gateway" is not a component`,
	}
	require.Len(t, errs, len(want), err.Error())
	for i, w := range want {
		require.True(t, strings.HasPrefix(errs[i].Error(), w), "error %d: %s", i, errs[i])
	}
}

// TestUnknownKeysInEverySection: a key no section declares is refused
// with its line, in every section and nested inside one, all at once.
func TestUnknownKeysInEverySection(t *testing.T) {
	src := base + `ingest:
  listen: 127.0.0.1:8080
  lisen: x
  tls: { cert: a }
serve: { cache: 1 }
speed: { flush: 1s }
archive: { max_file: 1 }
batch: { keep: 2 }
status: { thresholds: { speed.freshness_seconds: { yelow: 1 } } }
kafka: { broker: x }
`
	_, err := Parse("t.yaml", []byte(src), noEnv)
	var errs schemas.ConfigErrors
	require.ErrorAs(t, err, &errs)
	want := []string{
		`t.yaml:24: field "lisen" not recognised`,
		`t.yaml:25: field "cert" not recognised`,
		`t.yaml:26: field "cache" not recognised`,
		`t.yaml:27: field "flush" not recognised`,
		`t.yaml:28: field "max_file" not recognised`,
		`t.yaml:29: field "keep" not recognised`,
		`t.yaml:30: field "yelow" not recognised`,
		`t.yaml:31: field "broker" not recognised`,
	}
	got := make([]string, len(errs))
	for i, e := range errs {
		got[i] = e.Error()
	}
	require.Equal(t, want, got)
}

// TestSectionsDecoded: each section's settings reach its owner's Config,
// defaults stay where the file is silent, and max_future_skew (in the
// ingest section of the file) reaches the vocabulary.
func TestSectionsDecoded(t *testing.T) {
	src := base + `ingest: { listen: "0.0.0.0:1", max_future_skew: 2h, read_timeout: 20s }
serve: { max_merge_groups: 7, warm_cache: false }
speed: { flush_rows: 9 }
archive: { max_file_bytes: 5 }
batch: { every: 0, removed_view_grace: 0s }
status: { thresholds: { speed.freshness_seconds: { yellow: 5, red: 10 } }, addrs: { speed: "h:1" } }
`
	c, err := Parse("t.yaml", []byte(src), noEnv)
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:1", c.Ingest.Listen)
	require.Equal(t, 20*time.Second, c.Ingest.ReadTimeout.D())
	require.Equal(t, 2*time.Hour, c.MaxFutureSkew.D())
	require.Equal(t, int64(8<<20), c.Ingest.MaxBodyBytes, "default")
	require.Equal(t, 7, c.Serve.MaxMergeGroups)
	require.False(t, c.Serve.WarmCache)
	require.Equal(t, 9, c.Speed.FlushRows)
	require.Equal(t, time.Second, c.Speed.FlushInterval.D(), "default")
	require.Equal(t, int64(5), c.Archive.MaxFileBytes)
	require.Zero(t, c.Batch.Every)
	require.Zero(t, c.Batch.RemovedViewGrace)
	require.Equal(t, 3, c.Batch.KeepRuns, "default")
	require.Equal(t, 5.0, c.Status.Thresholds["speed.freshness_seconds"].Yellow)
	require.Equal(t, "h:1", c.Status.Addrs["speed"])
	require.Equal(t, "h:1", c.Status.Addrs["speed"])
	require.Equal(t, "0.0.0.0:1", c.Deployment().Endpoints["ingest"].Listen)

	d, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
	require.Equal(t, *Default().Config, schemas.Default(), "Default holds schemas' defaults")
	require.Equal(t, schemas.DefaultMaxFutureSkew, d.MaxFutureSkew)
	require.Equal(t, Default().Ingest, d.Ingest)
	require.Equal(t, Default().Serve, d.Serve)
	require.Equal(t, Default().Batch, d.Batch)
}

// TestEveryShippedConfigLoads: the example, deploy/ and testdata
// configurations load through the whole-file loader (the format did not
// change when the sections moved to their packages).
func TestEveryShippedConfigLoads(t *testing.T) {
	var files []string
	for _, pattern := range []string{"../tandem.example.yaml", "../deploy/*.yaml", "../deploy/*/*.yaml", "../deploy/*/*/*.yaml", "../*/testdata/*.yaml", "../*/*/testdata/*.yaml"} {
		m, err := filepath.Glob(pattern)
		require.NoError(t, err)
		files = append(files, m...)
	}
	env := func(k string) (string, bool) { return "", false }
	loaded := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		if !strings.Contains(string(data), "\nstreams:") && !strings.HasPrefix(string(data), "streams:") {
			continue // not a tandem.yaml (compose, Kubernetes, Prometheus files)
		}
		_, err = Parse(f, data, env)
		require.NoError(t, err, f)
		loaded++
	}
	require.Positive(t, loaded)
	t.Logf("%d configurations loaded", loaded)
}

// TestValidateInCode: a configuration changed in code (tests, flags) is
// checked by the same rules; its errors have no file or line to name.
func TestValidateInCode(t *testing.T) {
	c := Default()
	require.NoError(t, c.Validate())
	c.Serve.MaxResultRows = 0
	c.Batch.KeepRuns = 1
	err := c.Validate()
	require.EqualError(t, err, "serve.max_result_rows must be positive (the most rows one answer may hold); got 0\n"+
		"batch.keep_runs must be at least 2, so serving replicas still on the previous run can finish their queries")
}
