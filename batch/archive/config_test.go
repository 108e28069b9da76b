package archive

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the archive section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, section, want string }{
		{"zero file age", "archive: { max_file_age: 0 }", `t.yaml:2: archive.max_file_bytes and archive.max_file_age must be positive`},
		{"negative file bytes", "archive: { max_file_bytes: -1 }", `t.yaml:2: archive.max_file_bytes and archive.max_file_age must be positive`},
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
