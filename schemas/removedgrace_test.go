package schemas

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRemovedViewGraceKey(t *testing.T) {
	c, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
	require.Equal(t, 7*24*time.Hour, c.Batch.RemovedViewGrace.D(), "default")
	c, err = Parse("t.yaml", []byte(base+"batch: { removed_view_grace: 0s }\n"), noEnv)
	require.NoError(t, err)
	require.Zero(t, c.Batch.RemovedViewGrace.D())
	_, err = Parse("t.yaml", []byte(base+"batch: { removed_view_grace: -1h }\n"), noEnv)
	require.ErrorContains(t, err, `"-1h" is not a duration`)
}
