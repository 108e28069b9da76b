package serving_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMeasuresDecodedOnDemand: a query decodes only the measures it asks
// for (the cache holds less: no sketches), a later query asking for more
// reads just those columns into the cached row groups, and every answer
// is exact whatever was cached before it.
func TestMeasuresDecodedOnDemand(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	cfg.Serve.WarmCache = false // the warm-up decodes every measure
	_, store, _, db := newBackends(t, cfg.Config, false)
	d := genDataset(t, cfg.Config, 4000, 21)
	insertSpeed(t, db, d)
	publish(t, store, cfg.Config, d, "run-1", d.chunks())
	_, url, _ := startService(t, cfg)
	waitRun(t, url, "run-1")

	ask := func(measures []string) (bytes, misses float64) {
		t.Helper()
		m0 := metricValue(t, url, "tandem_serve_cache_misses_total")
		for _, c := range []qcase{
			{gran: "1h", groupBy: []string{"country"}, measures: measures, from: base, to: base.Add(4 * time.Hour)},
			{gran: "all", groupBy: []string{"device"}, measures: measures, from: base.Add(7 * time.Minute), to: base.Add(3 * time.Hour)},
		} {
			a := query(t, url, c.params())
			checkAnswer(t, a.Rows, c.truth(d, nil), c.groupBy, c.measureList())
		}
		return metricValue(t, url, "tandem_serve_cache_bytes"), metricValue(t, url, "tandem_serve_cache_misses_total") - m0
	}
	exactBytes, misses := ask([]string{"views", "revenue"})
	require.Positive(t, misses, "cold")
	_, misses = ask([]string{"revenue"})
	require.Zero(t, misses, "a measure already decoded")
	sketchBytes, misses := ask([]string{"users", "views"})
	require.Positive(t, misses, "users was not decoded yet")
	require.Greater(t, sketchBytes, exactBytes, "the distinct sketches take room once decoded, not before")
	allBytes, misses := ask(allMeasures)
	require.Positive(t, misses, "latency and min/max were not decoded yet")
	require.Greater(t, allBytes, sketchBytes)
	againBytes, misses := ask(allMeasures)
	require.Zero(t, misses)
	require.Equal(t, allBytes, againBytes)
	_, misses = ask([]string{"latency"})
	require.Zero(t, misses)
}
