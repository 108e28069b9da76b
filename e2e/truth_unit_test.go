package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTruthAndDiff checks the test's own truth and comparison: the
// whole-platform tests are only as good as these.
func TestTruthAndDiff(t *testing.T) {
	raw := []string{
		`{"event_id":"a","ts":"2026-11-25T10:00:59.999Z","country":"US","device":"mobile","user_id":"u1","amount":1.5,"latency_ms":10}`,
		`{"event_id":"b","ts":1795600860000,"country":"US","device":"desktop","user_id":"u2","latency_ms":30}`, // 10:01:00
		`{"event_id":"c","ts":"2026-11-25T10:01:30+01:00","device":"mobile","user_id":"u1","amount":2}`,        // 09:01:30Z, no country
		`{"event_id":"d","ts":"2026-11-25T10:02:00Z","country":"DE"}`,
	}
	var evs []event
	for _, r := range raw {
		ev, err := parseEvent([]byte(r))
		require.NoError(t, err)
		evs = append(evs, ev)
	}
	require.Equal(t, int64(1795600860000), evs[1].TimeMs)
	require.Equal(t, time.Date(2026, 11, 25, 9, 1, 30, 0, time.UTC).UnixMilli(), evs[2].TimeMs)
	require.Nil(t, evs[3].User)
	require.Nil(t, evs[1].Amount)

	from := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	q := query{from: from, to: from.Add(24 * time.Hour), granularity: "1h", groupBy: []string{"country"}}
	want := expect(evs, q)
	h9, h10 := from.Add(9*time.Hour).UnixMilli(), from.Add(10*time.Hour).UnixMilli()
	require.Len(t, want, 3)
	us := want[rowKey{h10, "US"}]
	require.Equal(t, int64(2), us.count)
	require.Equal(t, 1.5, us.sum)
	require.Equal(t, 10.0, *us.min)
	require.Equal(t, 30.0, *us.max)
	require.Len(t, us.users, 2)
	require.Equal(t, int64(1), want[rowKey{h9, ""}].count, "a missing dimension groups as \"\"")
	require.Nil(t, want[rowKey{h10, "DE"}].min, "no latency: min is null")

	// Filters: same dimension ORs, different dimensions AND; windows are
	// the view's (1m) and must start in [from, to).
	f := expect(evs, query{from: from, to: from.Add(24 * time.Hour), granularity: "all", filters: []string{"country:US", "country:DE", "device:mobile"}})
	require.Equal(t, int64(1), f[rowKey{from.UnixMilli(), ""}].count)
	cut := expect(evs, query{from: from.Add(10*time.Hour + time.Minute), to: from.Add(10*time.Hour + 2*time.Minute)})
	require.Len(t, cut, 1, "only the 10:01 window")

	// diff: equal answers pass, each kind of difference is caught.
	got := func() map[rowKey]*gotRow {
		out := map[rowKey]*gotRow{}
		for k, w := range want {
			g := &gotRow{count: w.count, sum: w.sum, min: w.min, max: w.max, users: uint64(len(w.users))}
			if len(w.latencies) > 0 {
				v := w.latencies[0]
				g.quantiles = &struct{ P50, P90, P99 float64 }{v, v, v}
				if len(w.latencies) == 2 {
					g.quantiles.P50, g.quantiles.P90, g.quantiles.P99 = 10, 30, 30
				}
			}
			out[k] = g
		}
		return out
	}
	require.Empty(t, diff(want, got()))
	for name, mutate := range map[string]func(m map[rowKey]*gotRow){
		"count":    func(m map[rowKey]*gotRow) { m[rowKey{h10, "US"}].count++ },
		"sum":      func(m map[rowKey]*gotRow) { m[rowKey{h10, "US"}].sum += 1e-6 },
		"min":      func(m map[rowKey]*gotRow) { v := 9.0; m[rowKey{h10, "US"}].min = &v },
		"max null": func(m map[rowKey]*gotRow) { m[rowKey{h10, "US"}].max = nil },
		"distinct": func(m map[rowKey]*gotRow) { m[rowKey{h10, "US"}].users = 5 }, // beyond DistinctBound(2) = 2
		"p99":      func(m map[rowKey]*gotRow) { m[rowKey{h10, "US"}].quantiles.P99 = 31 },
		"missing":  func(m map[rowKey]*gotRow) { delete(m, rowKey{h9, ""}) },
		"extra":    func(m map[rowKey]*gotRow) { m[rowKey{h9, "FR"}] = &gotRow{count: 1} },
	} {
		g := got()
		mutate(g)
		require.NotEmpty(t, diff(want, g), name)
	}
	// Sums compare within 1e-9 relative, not bit for bit.
	g := got()
	g[rowKey{h10, "US"}].sum = 1.5 * (1 + 1e-12)
	require.Empty(t, diff(want, g))
}
