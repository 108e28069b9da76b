package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The benchmark's correctness check must fail on any difference in the
// exact measures, and tolerate only float rounding in sums.
func TestServingScaleDiffExactRows(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	k1, k2 := rowKey{windowMs: 0, dims: "NL"}, rowKey{windowMs: 60_000, dims: "NL"}
	want := map[rowKey]exactRow{k1: {count: 3, sum: 0.1 + 0.2, min: f(1), max: f(9)}, k2: {count: 1}}
	same := map[rowKey]exactRow{k1: {count: 3, sum: 0.3, min: f(1), max: f(9)}, k2: {count: 1}}
	require.Empty(t, diffExactRows(same, want), "0.1+0.2 and 0.3 differ only by float rounding")

	for name, got := range map[string]map[rowKey]exactRow{
		"count":       {k1: {count: 4, sum: 0.3, min: f(1), max: f(9)}, k2: {count: 1}},
		"sum":         {k1: {count: 3, sum: 0.31, min: f(1), max: f(9)}, k2: {count: 1}},
		"min":         {k1: {count: 3, sum: 0.3, min: f(2), max: f(9)}, k2: {count: 1}},
		"max is null": {k1: {count: 3, sum: 0.3, min: f(1)}, k2: {count: 1}},
		"missing row": {k1: {count: 3, sum: 0.3, min: f(1), max: f(9)}},
		"extra row":   {k1: {count: 3, sum: 0.3, min: f(1), max: f(9)}, k2: {count: 1}, {windowMs: 120_000}: {count: 1}},
	} {
		require.Len(t, diffExactRows(got, want), 1, name)
	}
}

func TestServingScaleMergedViewSQL(t *testing.T) {
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(24 * time.Hour)
	sql := mergedViewSQL("tandem", query{from: from, to: to, granularity: "1d", groupBy: []string{"country"}}, exactMeasures)
	require.Contains(t, sql, "intDiv(toUnixTimestamp(window_start), 86400) * 86400")
	require.Contains(t, sql, "toString(country) AS d")
	require.Contains(t, sql, "toInt64(sum(views)), sum(revenue), min(min_latency), max(max_latency) FROM tandem.pageviews_by_country")
	require.Contains(t, sql, "window_start >= toDateTime(1793491200) AND window_start < toDateTime(1793577600)")

	sql = mergedViewSQL("tandem", query{from: from, to: to, granularity: "all", filters: []string{"country:NL", "device:tv", "country:D'E"}}, []string{"views", "revenue"})
	require.Contains(t, sql, "SELECT toInt64(1793491200) AS w, '' AS d, toInt64(sum(views)), sum(revenue) FROM")
	require.Contains(t, sql, "AND country IN ('NL', 'D\\'E') AND device IN ('tv')")
}
