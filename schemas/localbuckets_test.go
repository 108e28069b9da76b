package schemas

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bruteBuckets walks [from, to) a minute at a time and says where each
// bucket starts, by the rule LocalBuckets documents, read off the wall
// clock directly: a minute starts a bucket when its wall time is a
// multiple of the size (sub-day), or when it is the first minute of a
// new run of N local days (days); a jump forward over such a wall time
// starts a bucket at the jump.
func bruteBuckets(loc *time.Location, size int64, from, to int64) map[int64]int64 {
	wall := func(t int64) int64 { _, o := time.Unix(t, 0).In(loc).Zone(); return t + int64(o) }
	out := map[int64]int64{}
	cur := int64(-1)
	maxRun := int64(-1 << 62)
	for t := from - 3*size - 3*day; t < to; t += 60 {
		w, prev := wall(t), wall(t-60)
		start := false
		if size < day {
			start = w%size == 0 || (w-prev > 60 && floorDiv(w-1, size) > floorDiv(prev, size))
		} else if run := floorDiv(floorDiv(w, day), size/day); run > maxRun {
			start, maxRun = true, run
		}
		if start {
			cur = t
		}
		if t >= from {
			out[t] = cur
		}
	}
	return out
}

// TestLocalBucketsMatchTheWallClock holds LocalBuckets to the brute force
// around DST changes of zones with whole-hour, half-hour and 45-minute
// offsets, a 30-minute DST (Lord Howe), changes at midnight (Santiago, Havana: midnight skipped, and twice),
// and a skipped day (Apia, 2011-12-30).
func TestLocalBucketsMatchTheWallClock(t *testing.T) {
	cases := []struct {
		zone     string
		from, to string
	}{
		{"Europe/Amsterdam", "2026-03-26", "2026-04-01"},
		{"Europe/Amsterdam", "2026-10-22", "2026-10-28"},
		{"America/New_York", "2026-10-30", "2026-11-03"},
		{"Asia/Kolkata", "2026-03-26", "2026-03-30"},
		{"Asia/Kathmandu", "2026-03-26", "2026-03-30"},
		{"Australia/Lord_Howe", "2026-04-03", "2026-04-07"},
		{"Australia/Lord_Howe", "2026-10-02", "2026-10-06"},
		{"America/Santiago", "2026-04-03", "2026-04-07"},
		{"America/Santiago", "2026-09-04", "2026-09-08"},
		{"Pacific/Apia", "2011-12-28", "2012-01-02"},
		{"America/Havana", "2026-03-06", "2026-03-10"},
		{"America/Havana", "2026-10-30", "2026-11-03"},
		{"UTC", "2026-03-26", "2026-03-28"},
	}
	for _, c := range cases {
		loc, err := time.LoadLocation(c.zone)
		require.NoError(t, err)
		from, _ := time.Parse("2006-01-02", c.from)
		to, _ := time.Parse("2006-01-02", c.to)
		from, to = from.Add(7*time.Hour+13*time.Minute), to.Add(5*time.Hour) // not on a boundary
		for _, g := range []time.Duration{15 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour} {
			t.Run(fmt.Sprint(c.zone, " ", c.from, " ", g), func(t *testing.T) {
				lb, err := NewLocalBuckets(loc, g, from, to)
				require.NoError(t, err)
				require.Less(t, len(lb.Pieces), 12, "few pieces: %+v", lb.Pieces)
				want := bruteBuckets(loc, int64(g/time.Second), from.Unix(), to.Unix())
				for sec := from.Unix(); sec < to.Unix(); sec += 60 {
					require.Equal(t, time.Unix(want[sec], 0).In(loc), time.Unix(lb.Bucket(sec), 0).In(loc), "window %s", time.Unix(sec, 0).In(loc))
				}
			})
		}
	}
	amsterdam, _ := time.LoadLocation("Europe/Amsterdam")
	lb, err := NewLocalBuckets(amsterdam, 24*time.Hour, time.Date(2026, 3, 28, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	spring := time.Date(2026, 3, 29, 12, 0, 0, 0, amsterdam).Unix()
	require.Equal(t, time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC).Unix(), lb.Bucket(spring))
	require.Equal(t, time.Date(2026, 3, 29, 22, 0, 0, 0, time.UTC).Unix(), lb.Bucket(spring+12*3600), "a 23-hour day")

	for _, g := range []time.Duration{7 * time.Minute, 5 * time.Hour, 36 * time.Hour, 7 * time.Second} {
		_, err := NewLocalBuckets(amsterdam, g, time.Unix(0, 0), time.Unix(day, 0))
		require.ErrorIs(t, err, ErrLocalGranularity, "%s", g)
	}
}

// TestLocalBucketsAlignedTo: whole-hour offsets keep every boundary on
// the hour; a half-hour offset does not.
func TestLocalBucketsAlignedTo(t *testing.T) {
	from, to := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)
	for zone, want := range map[string]bool{"Europe/Amsterdam": true, "America/New_York": true, "Asia/Kolkata": false, "Asia/Kathmandu": false, "UTC": true} {
		loc, err := time.LoadLocation(zone)
		require.NoError(t, err)
		lb, err := NewLocalBuckets(loc, 24*time.Hour, from, to)
		require.NoError(t, err)
		ok, _ := lb.AlignedTo(3600)
		require.Equal(t, want, ok, zone)
		ok, _ = lb.AlignedTo(15 * 60)
		require.True(t, ok, zone)
		ok, _ = lb.AlignedTo(day)
		require.Equal(t, zone == "UTC", ok, "%s: local days on UTC days", zone)
	}
}
