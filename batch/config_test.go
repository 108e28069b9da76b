package batch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the batch section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	testenv.CheckSectionConfig(t, schemas.Parse, ConfigFrom, DefaultConfig(), []testenv.SectionReject{
		{Name: "one kept run", Section: "batch:\n  keep_runs: 1", Want: `t.yaml:3: batch.keep_runs must be at least 2`},
		{Name: "negative duration", Section: "batch: { removed_view_grace: -1h }", Want: `"-1h" is not a duration`},
		{Name: "tuning is not a key", Section: "batch: { full: true }", Want: `t.yaml:2: field "full" not recognised`},
		{Name: "dedup memory below 1 MiB", Section: "batch:\n  dedup_memory: 65536", Want: `t.yaml:3: batch.dedup_memory must be at least 1048576 bytes (1 MiB); got 65536`},
	})
}

func TestRemovedViewGraceKey(t *testing.T) {
	sc, err := schemas.Parse("t.yaml", []byte("chunk_size: 100\nbatch: { removed_view_grace: 0s }\n"), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	c, err := ConfigFrom(sc)
	require.NoError(t, err)
	require.Zero(t, c.RemovedViewGrace.D())
	require.Equal(t, 7*24*time.Hour, DefaultConfig().RemovedViewGrace.D(), "default")
}
