package schemas

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWindowStart(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 37, 42, 5e8, time.FixedZone("x", 3600))
	cases := []struct {
		g    string
		want time.Time
	}{
		{"1m", time.Date(2026, 11, 25, 9, 37, 0, 0, time.UTC)},
		{"5m", time.Date(2026, 11, 25, 9, 35, 0, 0, time.UTC)},
		{"15m", time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)},
		{"1h", time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)},
		{"6h", time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)},
		{"1d", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.g, func(t *testing.T) {
			g, err := ParseGranularity(tc.g)
			require.NoError(t, err)
			require.True(t, g.IsViewGranularity())
			require.Equal(t, tc.want, g.WindowStart(ts))
			require.Equal(t, tc.g, g.String())
		})
	}
	// Before the epoch, windows still floor downwards.
	g, _ := ParseGranularity("1h")
	require.Equal(t, time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC), g.WindowStart(time.Date(1969, 12, 31, 23, 59, 0, 0, time.UTC)))
}

func TestParseGranularityRejects(t *testing.T) {
	for _, s := range []string{"", "m", "0m", "-1h", "1s", "1w", "1.5h", "h1", "99999999999d"} {
		_, err := ParseGranularity(s)
		require.Error(t, err, s)
	}
	g, err := ParseGranularity("2h")
	require.NoError(t, err)
	require.False(t, g.IsViewGranularity())
	// Counts whose duration would wrap around are refused as too long, not
	// read as another granularity (9999999d once became "0m").
	for _, s := range []string{"9999999d", "36501d", "876001h", "52560001m", "99999999999999999999999m"} {
		_, err := ParseGranularity(s)
		require.ErrorIs(t, err, ErrGranularityTooLong, s)
	}
	g, err = ParseGranularity("36500d")
	require.NoError(t, err)
	require.Equal(t, MaxGranularity, g)
}

func TestChunks(t *testing.T) {
	require.Equal(t, int64(0), ChunkOf(9999, 10000))
	require.Equal(t, int64(1), ChunkOf(10000, 10000))
	require.Equal(t, int64(20000), ChunkStart(2, 10000))
}
