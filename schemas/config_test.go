package schemas

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func noEnv(string) (string, bool) { return "", false }

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadFile("../tandem.example.yaml")
	require.NoError(t, err)
	require.Len(t, cfg.Streams, 1)
	v := cfg.View("pageviews_by_country")
	require.NotNil(t, v)
	require.Equal(t, "1m", v.Granularity.String())
	require.Same(t, cfg.Stream("pageviews"), v.StreamDef())
	require.Equal(t, "tandem", cfg.S3.AccessKey, "default from ${S3_ACCESS_KEY:-tandem}")
	require.Equal(t, int64(10000), cfg.ChunkSize)
	require.Equal(t, 2, v.StreamDef().FieldIndex("country"))
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := string(ExpandEnv([]byte("${A} ${B} ${B:-def} ${EMPTY:-e} $A ${A:-z}"), lookup))
	require.Equal(t, "x  def e $A x", got)
}

// base is a small valid config each case breaks in one way.
const base = `
chunk_size: 100
streams:
  - name: s
    partitions: 2
    id_field: id
    time_field: ts
    fields:
      - { name: id, type: string }
      - { name: ts, type: timestamp }
      - { name: c, type: string }
      - { name: n, type: float64 }
      - { name: b, type: bool }
views:
  - name: v
    stream: s
    granularity: 1m
    dimensions: [c]
    measures:
      - { name: cnt, type: count }
      - { name: total, type: sum, field: n }
`

func TestConfigRejects(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "chunk_size: 100", "chunk_size: 100\nchunk_sise: 3", `:3: field "chunk_sise" not recognised`},
		{"unknown nested key", "    partitions: 2", "    partitions: 2\n    partitons: 2", `:6: field "partitons" not recognised`},
		{"duplicate stream", "views:", "  - { name: s, partitions: 1, id_field: id, time_field: ts, fields: [{name: id, type: string}, {name: ts, type: timestamp}] }\nviews:", `stream "s" is defined twice`},
		{"duplicate view", "      - { name: total, type: sum, field: n }", "      - { name: total, type: sum, field: n }\n  - { name: v, stream: s, granularity: 1h, measures: [{name: c2, type: count}] }", `view "v" is defined twice`},
		{"unknown stream", "    stream: s", "    stream: nope", `:16: view "v" is on unknown stream "nope"`},
		{"dimension not string", "dimensions: [c]", "dimensions: [n]", `dimension "n" must be a string field; it is float64`},
		{"dimension unknown", "dimensions: [c]", "dimensions: [zz]", `dimension "zz" is not a field`},
		{"sum over string", "type: sum, field: n", "type: sum, field: c", `measure "total" (sum) needs a numeric field; "c" is string`},
		{"min over bool", "type: sum, field: n", "type: min, field: b", `(min) needs a numeric field`},
		{"quantiles over string", "type: sum, field: n", "type: quantiles, field: c", `(quantiles) needs a numeric field`},
		{"unknown measure", "type: sum, field: n", "type: avg, field: n", `unknown type "avg"`},
		{"unknown granularity", "granularity: 1m", "granularity: 2m", `:17: granularity "2m" is not one of`},
		{"zero chunk size", "chunk_size: 100", "chunk_size: 0", `:2: chunk_size must be positive`},
		{"negative chunk size", "chunk_size: 100", "chunk_size: -5", `chunk_size must be positive`},
		{"no id field", "    id_field: id\n", "", `stream "s" has no id_field`},
		{"no time field", "    time_field: ts\n", "", `stream "s" has no time_field`},
		{"id field undeclared", "id_field: id", "id_field: uid", `id_field "uid" is not a declared field`},
		{"time field not timestamp", "time_field: ts", "time_field: c", `time_field "c" must be a timestamp field`},
		{"bad field type", "{ name: b, type: bool }", "{ name: b, type: boolean }", `unknown type "boolean"`},
		{"bad duration", "chunk_size: 100", "chunk_size: 100\ningest: { max_future_skew: soon }", `"soon" is not a duration`},
		{"zero max result rows", "chunk_size: 100", "chunk_size: 100\nserve: { max_result_rows: 0 }", `serve.max_result_rows must be positive`},
		{"negative max merge groups", "chunk_size: 100", "chunk_size: 100\nserve: { max_merge_groups: -1 }", `serve.max_merge_groups must be positive`},
		{"negative concurrency", "chunk_size: 100", "chunk_size: 100\nserve: { max_concurrent_queries: -1 }", `serve.max_concurrent_queries must be 0 (2 × GOMAXPROCS) or positive; got -1`},
		{"not yaml", "chunk_size: 100", "chunk_size: [", `:3:`},
		{"wrong type", "chunk_size: 100", "chunk_size: lots", `:2: cannot`},
		{"level not a granularity", "dimensions: [c]", "dimensions: [c]\n    levels: [1h, 2x]", `:19: view "v": views[].levels: granularity "2x": unit must be m, h or d`},
		{"level not coarser", "dimensions: [c]", "dimensions: [c]\n    levels: [1m]", `views[].levels: level 1m must be coarser than the view's granularity 1m`},
		{"level not dividing a day", "dimensions: [c]", "dimensions: [c]\n    levels: [7m]", `views[].levels: level 7m must divide one day`},
		{"level twice", "dimensions: [c]", "dimensions: [c]\n    levels: [1h, 60m]", `views[].levels: level 1h is listed twice`},
		{"level not a multiple", "granularity: 1m", "granularity: 15m\n    levels: [10m]", `level 10m must be coarser than the view's granularity 15m and a multiple of it`},
		{"zero read timeout", "chunk_size: 100", "chunk_size: 100\ningest: { read_timeout: 0 }", `:3: ingest.read_timeout must be positive`},
		{"write timeout under read + produce", "chunk_size: 100", "chunk_size: 100\ningest: { read_timeout: 1m, write_timeout: 1m }", `ingest.write_timeout (1m0s) must be at least ingest.read_timeout + ingest.produce_timeout (1m10s)`},
		{"serve header timeout over read timeout", "chunk_size: 100", "chunk_size: 100\nserve: { read_header_timeout: 20s, read_timeout: 10s }", `serve.read_header_timeout (20s) must not be longer than serve.read_timeout (10s)`},
		{"zero events per request", "chunk_size: 100", "chunk_size: 100\ningest: { max_events_per_request: 0 }", `ingest.max_events_per_request must be positive`},
		{"per-client share over the total", "chunk_size: 100", "chunk_size: 100\ningest: { max_inflight_bytes_per_client: 999999999999 }", `ingest.max_inflight_bytes_per_client (999999999999) must be between max_body_bytes`},
		{"example secret", "chunk_size: 100", "chunk_size: 100\nclickhouse: { password: change-me-clickhouse }", `clickhouse.password is still the example value "change-me-clickhouse"`},
		{"example token", "chunk_size: 100", "chunk_size: 100\nauth: { query_tokens: [fine, Change-Me-Query] }", `auth.query_tokens[1] is still the example value`},
		{"bad cluster name", "chunk_size: 100", "chunk_size: 100\nclickhouse: { cluster: \"two shards\" }", `:3: clickhouse.cluster "two shards" must name a cluster of the servers' remote_servers`},
		{"replicated without a cluster", "chunk_size: 100", "chunk_size: 100\nclickhouse: { replicated: true }", `:3: clickhouse.replicated needs clickhouse.cluster`},
		{"empty metrics token", "chunk_size: 100", "chunk_size: 100\nauth: { metrics_tokens: [\"\"] }", `auth.metrics_tokens[0] is empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(base, tc.from, tc.to, 1)
			require.NotEqual(t, base, src, "case must change the config")
			_, err := Parse("t.yaml", []byte(src), noEnv)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.True(t, strings.HasPrefix(err.Error(), "t.yaml:"), err.Error())
		})
	}
	_, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
}

// TestViewLevels: views[].levels defaults to 1h and 1d where they are
// coarser than and a multiple of the view's granularity, may be set (kept
// coarsest first), and [] turns levels off.
func TestViewLevels(t *testing.T) {
	h, d := Granularity(time.Hour), Granularity(24*time.Hour)
	for _, tc := range []struct {
		name, from, to string
		want           []Granularity
	}{
		{"default, 1m view", "", "", []Granularity{d, h}},
		{"default, 6h view", "granularity: 1m", "granularity: 6h", []Granularity{d}},
		{"default, 1d view", "granularity: 1m", "granularity: 1d", nil},
		{"set", "dimensions: [c]", "dimensions: [c]\n    levels: [15m, 1d]", []Granularity{d, Granularity(15 * time.Minute)}},
		{"off", "dimensions: [c]", "dimensions: [c]\n    levels: []", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("t.yaml", []byte(strings.Replace(base, tc.from, tc.to, 1)), noEnv)
			require.NoError(t, err)
			got := cfg.View("v").Levels()
			if len(tc.want) == 0 {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	_, err := LoadFile("does-not-exist.yaml")
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestMergeGroupsNeverBelowResultRows: a cut query may always merge as
// many groups as an uncut one.
func TestMergeGroupsNeverBelowResultRows(t *testing.T) {
	require.Equal(t, 1000000, Default().Serve.MergeGroups())
	require.Equal(t, 2000000, ServeConfig{MaxResultRows: 2000000, MaxMergeGroups: 1000000}.MergeGroups())
	require.Equal(t, 5000, ServeConfig{MaxResultRows: 10, MaxMergeGroups: 5000}.MergeGroups())
}

// TestDoubleUnderscoreNamesReserved: tandem derives a measure's SQL state
// columns from its name with __, so no measure or dimension may have one.
func TestDoubleUnderscoreNamesReserved(t *testing.T) {
	example, err := os.ReadFile("../tandem.example.yaml")
	require.NoError(t, err)
	yaml := strings.Replace(string(example), "{ name: users,       type: distinct,  field: user_id }", "{ name: users__uniq_keys, type: distinct, field: user_id }", 1)
	require.NotEqual(t, string(example), yaml)
	_, err = Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.ErrorContains(t, err, `measure name "users__uniq_keys"`)
	require.ErrorContains(t, err, "__")
}
