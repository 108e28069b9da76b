package schemas

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// withRetention puts streams[].retention and views[].retention into the
// base configuration ("" leaves a key out).
func withRetention(stream, view string) string {
	cfg := base
	if stream != "" {
		cfg = strings.Replace(cfg, "    id_field: id\n", "    id_field: id\n    retention: "+stream+"\n", 1)
	}
	if view != "" {
		cfg = strings.Replace(cfg, "    granularity: 1m\n", "    granularity: 1m\n    retention: "+view+"\n", 1)
	}
	return cfg
}

func TestRetentionKeys(t *testing.T) {
	c, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
	now := time.Date(2026, 3, 10, 15, 4, 5, 0, time.UTC)
	require.True(t, c.Views[0].RetainedFrom(now).IsZero(), "unset: forever")
	require.True(t, c.Streams[0].RawCutoff(now).IsZero())
	require.True(t, c.Streams[0].LakeRetainedFrom(now, time.Hour).IsZero())

	// The default max_future_skew is 1h: 30d − 1d − 1h leaves 28 whole days.
	c, err = Parse("t.yaml", []byte(withRetention("30d", "28d")), noEnv)
	require.NoError(t, err)
	v, s := c.Views[0], c.Streams[0]
	require.Equal(t, time.Date(2026, 2, 10, 0, 0, 0, 0, time.UTC), v.RetainedFrom(now), "the midnight at or before now − 28d")
	require.Equal(t, now.Add(-30*Day), s.RawCutoff(now))
	require.Equal(t, time.Date(2026, 2, 9, 0, 0, 0, 0, time.UTC), s.LakeRetainedFrom(now, time.Hour), "first whole day after cutoff + skew")
	require.Equal(t, time.Date(2026, 2, 8, 0, 0, 0, 0, time.UTC), s.LakeRetainedFrom(now.Truncate(Day).Add(-time.Hour), time.Hour), "cutoff + skew on a midnight keeps that day")
	// The property validation stands for, over many instants: a retained
	// view day starts at or after the raw cutoff plus the skew.
	for i := 0; i < 2000; i++ {
		at := now.Add(time.Duration(i) * 37 * time.Minute)
		require.False(t, v.RetainedFrom(at).Before(s.RawCutoff(at).Add(time.Hour)), at)
	}

	// A view may have retention on a stream kept forever.
	_, err = Parse("t.yaml", []byte(withRetention("", "7d")), noEnv)
	require.NoError(t, err)

	for _, tc := range []struct{ stream, view, want string }{
		{"30d", "29d", `:19: view "v": views[].retention (29d) must be at most 28d: streams[s].retention (30d) minus one day and ingest.max_future_skew (1h0m0s)`},
		{"30d", "", `view "v": views[].retention must be set when streams[s].retention is (at most 28d)`},
		{"", "36h", `:18: view "v": views[].retention must be a whole number of days`},
		{"12h", "", `:7: stream "s": streams[].retention must be at least 1d`},
		{"2d", "1d", `view "v": streams[s].retention (2d) is too short for any view`},
		{"1 month", "", `"1 month" is not a duration`},
	} {
		_, err := Parse("t.yaml", []byte(withRetention(tc.stream, tc.view)), noEnv)
		require.Error(t, err, tc)
		require.Contains(t, err.Error(), tc.want, tc)
	}
	// Without the skew limit no Kafka-time cutoff keeps a view day whole.
	_, err = Parse("t.yaml", []byte("ingest:\n  max_future_skew: 0\n"+withRetention("30d", "7d")), noEnv)
	require.ErrorContains(t, err, `stream "s": streams[].retention needs ingest.max_future_skew`)
}
