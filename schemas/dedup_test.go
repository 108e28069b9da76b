package schemas

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDedupWindowKey(t *testing.T) {
	c, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
	require.Equal(t, int64(math.MaxInt64), c.Streams[0].DedupWindowMs(), "unset: forever")
	c, err = Parse("t.yaml", []byte(strings.Replace(base, "    id_field: id\n", "    id_field: id\n    dedup_window: 7d\n", 1)), noEnv)
	require.NoError(t, err)
	require.Equal(t, int64(7*24*3600*1000), c.Streams[0].DedupWindowMs())
	require.False(t, DedupExpired(0, 7*24*3600*1000-1, c.Streams[0].DedupWindowMs()))
	require.True(t, DedupExpired(0, 7*24*3600*1000, c.Streams[0].DedupWindowMs()))
	require.False(t, DedupExpired(0, 1<<60, math.MaxInt64))

	// Refused with the key named, as TestConfigRejects checks the others.
	for value, want := range map[string]string{
		"500ms":  `stream "s": dedup_window must be`,
		"1500us": `dedup_window must be a whole number of milliseconds, at least 1s`,
		"a week": `"a week" is not a duration`,
	} {
		_, err := Parse("t.yaml", []byte(strings.Replace(base, "    id_field: id\n", "    id_field: id\n    dedup_window: "+value+"\n", 1)), noEnv)
		require.Error(t, err, value)
		require.Contains(t, err.Error(), want, value)
		require.True(t, strings.HasPrefix(err.Error(), "t.yaml:"), err.Error())
	}

	// The clock only moves forward.
	var clk DedupClock
	require.Equal(t, int64(5), clk.Advance(5))
	require.Equal(t, int64(5), clk.Advance(3))
	require.Equal(t, int64(9), clk.Advance(9))
}
