package testenv_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// The streams section, under a test's own header, parses to the example's
// stream and view with the replacements applied.
func TestExampleStreamsYAML(t *testing.T) {
	s := testenv.ExampleStreamsYAML(t, "partitions: 6", "partitions: 2", "topic: tandem.pageviews", "topic: t.pv")
	require.True(t, strings.HasPrefix(s, "streams:\n"), s)
	require.NotContains(t, s, "kafka:")
	cfg, err := schemas.Parse("test.yaml", []byte("chunk_size: 7\n"+s), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	require.EqualValues(t, 7, cfg.ChunkSize)
	require.Len(t, cfg.Streams, 1)
	require.Equal(t, "pageviews", cfg.Streams[0].Name)
	require.Equal(t, "t.pv", cfg.Streams[0].Topic)
	require.EqualValues(t, 2, cfg.Streams[0].Partitions)
	require.Len(t, cfg.Views, 1)
	require.Equal(t, "pageviews_by_country", cfg.Views[0].Name)
}
