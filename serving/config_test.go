package serving

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the serve section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, section, want string }{
		{"zero max result rows", "serve: { max_result_rows: 0 }", `t.yaml:2: serve.max_result_rows must be positive`},
		{"negative max merge groups", "serve: { max_merge_groups: -1 }", `t.yaml:2: serve.max_merge_groups must be positive`},
		{"negative concurrency", "serve: { max_concurrent_queries: -1 }", `t.yaml:2: serve.max_concurrent_queries must be 0 (2 × GOMAXPROCS) or positive; got -1`},
		{"serve header timeout over read timeout", "serve: { read_header_timeout: 20s, read_timeout: 10s }", `t.yaml:2: serve.read_header_timeout (20s) must not be longer than serve.read_timeout (10s)`},
		{"unknown nested key", "serve:\n  tls:\n    cert: x", `t.yaml:4: field "cert" not recognised`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := schemas.Parse("t.yaml", []byte("chunk_size: 100\n"+tc.section), func(string) (string, bool) { return "", false })
			require.NoError(t, err, "the vocabulary is fine")
			_, err = ConfigFrom(sc)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.True(t, strings.HasPrefix(err.Error(), "t.yaml:"), err.Error())
		})
	}
	sc, err := schemas.Parse("t.yaml", []byte("chunk_size: 100\n"), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	c, err := ConfigFrom(sc)
	require.NoError(t, err)
	require.Equal(t, DefaultConfig(), c, "a file without the section has the defaults")
}

// TestMergeGroupsNeverBelowResultRows: a cut query may always merge as
// many groups as an uncut one.
func TestMergeGroupsNeverBelowResultRows(t *testing.T) {
	require.Equal(t, 1000000, DefaultConfig().MergeGroups())
	require.Equal(t, 2000000, Config{MaxResultRows: 2000000, MaxMergeGroups: 1000000}.MergeGroups())
	require.Equal(t, 5000, Config{MaxResultRows: 10, MaxMergeGroups: 5000}.MergeGroups())
}
