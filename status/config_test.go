package status

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the status section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, section, want string }{
		{"not a component", "status:\n  addrs:\n    gateway: x:1", `t.yaml:4: status.addrs: "gateway" is not a component (use ingest, speed, archive or serve)`},
		{"red below yellow", "status:\n  thresholds:\n    speed.freshness_seconds: { yellow: 5, red: 1 }", `t.yaml:4: status.thresholds.speed.freshness_seconds: red (1) must not be below yellow (5)`},
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
