package batch

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the batch section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, section, want string }{
		{"one kept run", "batch:\n  keep_runs: 1", `t.yaml:3: batch.keep_runs must be at least 2`},
		{"negative duration", "batch: { removed_view_grace: -1h }", `"-1h" is not a duration`},
		{"tuning is not a key", "batch: { full: true }", `t.yaml:2: field "full" not recognised`},
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

func TestRemovedViewGraceKey(t *testing.T) {
	sc, err := schemas.Parse("t.yaml", []byte("chunk_size: 100\nbatch: { removed_view_grace: 0s }\n"), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	c, err := ConfigFrom(sc)
	require.NoError(t, err)
	require.Zero(t, c.RemovedViewGrace.D())
	require.Equal(t, 7*24*time.Hour, DefaultConfig().RemovedViewGrace.D(), "default")
}
