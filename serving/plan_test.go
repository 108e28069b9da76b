package serving

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

var (
	lvHour = schemas.Granularity(time.Hour)
	lvDay  = schemas.Granularity(24 * time.Hour)
)

// TestPlanSegmentsRaggedRange: the worked example of docs/architecture.md.
func TestPlanSegmentsRaggedRange(t *testing.T) {
	d := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	q := &Query{From: d.Add(10*time.Hour + 17*time.Minute), To: d.Add(3*24*time.Hour + 10*time.Hour + 17*time.Minute)}
	got := planSegments(q, []schemas.Granularity{lvDay, lvHour})
	require.Equal(t, []segment{
		{0, ms(q.From), ms(d.Add(11 * time.Hour))},
		{lvHour, ms(d.Add(11 * time.Hour)), ms(d.Add(24 * time.Hour))},
		{lvDay, ms(d.Add(24 * time.Hour)), ms(d.Add(3 * 24 * time.Hour))},
		{lvHour, ms(d.Add(3 * 24 * time.Hour)), ms(d.Add(3*24*time.Hour + 10*time.Hour))},
		{0, ms(d.Add(3*24*time.Hour + 10*time.Hour)), ms(q.To)},
	}, got)

	// At 1h a day window would hold 24 buckets: only the hour level is used.
	q.Granularity = lvHour
	for _, s := range planSegments(q, []schemas.Granularity{lvDay, lvHour}) {
		require.NotEqual(t, lvDay, s.level)
	}
	// No levels (an old manifest): one base segment.
	require.Equal(t, []segment{{0, ms(q.From), ms(q.To)}}, planSegments(q, nil))
}

// TestPlanSegmentsCoverExactly: over random ranges and granularities, the
// segments are contiguous, cover [From, To) exactly, align to their level
// and never cross a bucket boundary.
func TestPlanSegmentsCoverExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	grans := []schemas.Granularity{0, schemas.Granularity(time.Minute), schemas.Granularity(5 * time.Minute), lvHour,
		schemas.Granularity(2 * time.Hour), schemas.Granularity(90 * time.Minute), lvDay, schemas.Granularity(7 * 24 * time.Hour)}
	levelSets := [][]schemas.Granularity{nil, {lvHour}, {lvDay}, {lvDay, lvHour}, {lvDay, schemas.Granularity(6 * time.Hour), schemas.Granularity(15 * time.Minute)}}
	for i := 0; i < 5000; i++ {
		from := base.Add(time.Duration(rng.Int64N(int64(40 * 24 * time.Hour))))
		if rng.IntN(3) == 0 {
			from = from.Truncate(time.Hour)
		}
		to := from.Add(time.Duration(1 + rng.Int64N(int64(20*24*time.Hour))))
		q := &Query{From: from, To: to, Granularity: grans[rng.IntN(len(grans))]}
		levels := levelSets[rng.IntN(len(levelSets))]
		segs := planSegments(q, levels)
		require.NotEmpty(t, segs)
		at := q.FromMs()
		g := q.Granularity.D().Milliseconds()
		for _, s := range segs {
			require.Equal(t, at, s.lo, "contiguous")
			require.Less(t, s.lo, s.hi)
			if s.level != 0 {
				l := s.level.D().Milliseconds()
				require.Zero(t, s.lo%l)
				require.Zero(t, s.hi%l)
				if g != 0 {
					require.Zero(t, g%l, "level %s inside %s buckets", s.level, q.Granularity)
				}
			}
			at = s.hi
		}
		require.Equal(t, q.ToMs(), at)
	}
}
