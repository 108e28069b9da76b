package speed

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the speed section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, section, want string }{
		{"zero flush interval", "speed:\n  flush_interval: 0", `t.yaml:3: speed.flush_interval must be positive`},
		{"unknown key", "speed: { flush: 1s }", `t.yaml:2: field "flush" not recognised`},
		{"tuning is not a key", "speed: { max_fetch_bytes: 1 }", `t.yaml:2: field "max_fetch_bytes" not recognised`},
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
