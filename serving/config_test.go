package serving

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the serve section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	testenv.CheckSectionConfig(t, schemas.Parse, ConfigFrom, DefaultConfig(), []testenv.SectionReject{
		{Name: "zero max result rows", Section: "serve: { max_result_rows: 0 }", Want: `t.yaml:2: serve.max_result_rows must be positive`},
		{Name: "negative max merge groups", Section: "serve: { max_merge_groups: -1 }", Want: `t.yaml:2: serve.max_merge_groups must be positive`},
		{Name: "negative concurrency", Section: "serve: { max_concurrent_queries: -1 }", Want: `t.yaml:2: serve.max_concurrent_queries must be 0 (2 × GOMAXPROCS) or positive; got -1`},
		{Name: "negative queue", Section: "serve: { max_queued_queries: -1 }", Want: `t.yaml:2: serve.max_queued_queries must be 0 (no queue: refuse at once when full) or positive; got -1`},
		{Name: "queue without a timeout", Section: "serve: { queue_timeout: 0s }", Want: `t.yaml:2: serve.queue_timeout must be positive while serve.max_queued_queries is`},
		{Name: "serve header timeout over read timeout", Section: "serve: { read_header_timeout: 20s, read_timeout: 10s }", Want: `t.yaml:2: serve.read_header_timeout (20s) must not be longer than serve.read_timeout (10s)`},
		{Name: "memory limit under the caches", Section: "serve: { cache_bytes: 268435456, memory_limit: 300000000 }", Want: `t.yaml:2: serve.memory_limit must be 0 (serve.cache_bytes + 192 MiB) or at least serve.cache_bytes + 64 MiB (335544320 bytes)`},
		{Name: "negative memory limit", Section: "serve: { memory_limit: -1 }", Want: `t.yaml:2: serve.memory_limit must be 0`},
		{Name: "unknown nested key", Section: "serve:\n  tls:\n    cert: x", Want: `t.yaml:4: field "cert" not recognised`},
	})
}

// TestEffectiveMemoryLimit: 0 leaves 192 MiB above the caches, as
// docs/configuration.md says; an explicit limit is kept.
func TestEffectiveMemoryLimit(t *testing.T) {
	require.Equal(t, int64(448<<20), DefaultConfig().EffectiveMemoryLimit())
	require.Equal(t, int64(1<<30+192<<20), Config{CacheBytes: 1 << 30}.EffectiveMemoryLimit())
	require.Equal(t, int64(600<<20), Config{CacheBytes: 256 << 20, MemoryLimit: 600 << 20}.EffectiveMemoryLimit())
}

// TestMergeGroupsNeverBelowResultRows: a cut query may always merge as
// many groups as an uncut one.
func TestMergeGroupsNeverBelowResultRows(t *testing.T) {
	require.Equal(t, 1000000, DefaultConfig().MergeGroups())
	require.Equal(t, 2000000, Config{MaxResultRows: 2000000, MaxMergeGroups: 1000000}.MergeGroups())
	require.Equal(t, 5000, Config{MaxResultRows: 10, MaxMergeGroups: 5000}.MergeGroups())
}
