package ingest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the ingest section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, section, want string }{
		{"zero read timeout", "ingest: { read_timeout: 0 }", `t.yaml:2: ingest.read_timeout must be positive`},
		{"write timeout under read + produce", "ingest: { read_timeout: 1m, write_timeout: 1m }", `t.yaml:2: ingest.write_timeout (1m0s) must be at least ingest.read_timeout + ingest.produce_timeout (1m10s)`},
		{"zero events per request", "ingest: { max_events_per_request: 0 }", `t.yaml:2: ingest.max_events_per_request must be positive`},
		{"per-client share over the total", "ingest: { max_inflight_bytes_per_client: 999999999999 }", `t.yaml:2: ingest.max_inflight_bytes_per_client (999999999999) must be between max_body_bytes`},
		{"zero body", "ingest:\n  max_body_bytes: 0", `t.yaml:3: ingest.max_body_bytes must be positive`},
		{"unknown key", "ingest:\n  listen: x\n  lisen: y", `t.yaml:4: field "lisen" not recognised`},
		{"wrong type", "ingest: { max_body_bytes: lots }", `t.yaml:2: cannot read text`},
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
