package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// servingSample is BenchmarkServingScale output of one 30 M month and a
// smaller speed-only case, in the shape e2e/serving_scale_test.go prints.
const servingSample = `# loadavg: 1.50 1.20 1.00 3/412 12345
pkg: github.com/tandem-analytics/tandem/e2e
BenchmarkServingScale/month/events=30000000/7d_1h_by_country-2         	       1	       0 ns/op	 40.00 ch/tandem	 800.0 ch_p50_ms	 900.0 ch_p99_ms	 30.00 c8_p99_ms	 100.0 c8_req/s	 20.00 exact_p50_ms	 25.00 exact_p99_ms	 400.0 first_after_restart_ms	 20.00 p50_ms	 60.00 p99_ms	 0.8 restart_ready_s	 1680 rows	 200.0 serve_rss_MiB
BenchmarkServingScale/month/events=30000000/30d_1d_by_country-2        	       1	       0 ns/op	 5.000 ch/tandem	 900.0 ch_p50_ms	 900.0 ch_p99_ms	 30.00 c8_p99_ms	 100.0 c8_req/s	 3 c8_rejected	 20.00 exact_p50_ms	 25.00 exact_p99_ms	 1400 first_after_restart_ms	 20.00 p50_ms	 40.00 p99_ms	 0.8 restart_ready_s	 300 rows	 200.0 serve_rss_MiB
BenchmarkServingScale/month/events=30000000/serve-2                    	       1	       0 ns/op	 30000000 events	 1.5 load1_start	 2.5 load1_end	 600.0 serve_peak_rss_MiB	 300.0 serve_rss_MiB	 2000000 view_rows
BenchmarkServingScale/speed24h/events=100000/24h_1h_by_country-2       	       1	       0 ns/op	 3.000 ch/tandem	 30.00 ch_p50_ms	 30.00 ch_p99_ms	 30.00 c8_p99_ms	 100.0 c8_req/s	 10.00 exact_p50_ms	 25.00 exact_p99_ms	 40.00 first_after_restart_ms	 20.00 p50_ms	 400.0 p99_ms	 0.8 restart_ready_s	 240 rows	 100.0 serve_rss_MiB
BenchmarkServingScale/speed24h/events=100000/serve-2                   	       1	       0 ns/op	 100000 events	 1.5 load1_start	 2.5 load1_end	 100.0 serve_peak_rss_MiB	 90.0 serve_rss_MiB	 72000 view_rows
PASS
`

func TestServingSection(t *testing.T) {
	var r Run
	require.NoError(t, Parse(strings.NewReader(servingSample), &r))
	require.Len(t, servingResults(&r), 5)
	require.Empty(t, checkServing(&r))

	s := servingSection(&r, Machine{CPU: "test"})
	// Judged at the stated size: p99 60 ms misses 50 ms, the ratio 40
	// meets 10x, the first query 400 ms meets 1 s.
	require.Contains(t, s, "| month, 30,000,000 events | 7d_1h_by_country | 1,680 | — | 400 | 20.0 / 60.0 | — | 20.0 / 25.0 | 30.0 | 800 / 900 | 40.0 | p99 ≤ 50 ms ✘; ≥ 10× ClickHouse ✔; first ≤ 1 s ✔ |")
	require.Contains(t, s, "| 30d_1d_by_country | 300 | — | 1,400 | 20.0 / 40.0 | — | 20.0 / 25.0 | 30.0 (3 × 503, retried) |")
	require.Contains(t, s, "p99 ≤ 50 ms ✔; ≥ 10× ClickHouse ✘; first ≤ 1 s ✘ |")
	// Below the stated size: the target without a verdict.
	require.Contains(t, s, "| speed24h, 100,000 events | 24h_1h_by_country |")
	require.Contains(t, s, "p99 ≤ 300 ms (at 10 M events) |")
	require.Contains(t, s, "| month | 30,000,000 | 2,000,000 |")
	require.Contains(t, s, "| 300 / 600 MiB | peak ≤ 512 MiB ✘ not met |")
	require.Contains(t, s, "| 90.0 / 100 MiB | peak ≤ 512 MiB (at 30 M events) |")
}

func TestCheckServing(t *testing.T) {
	var r Run
	require.NoError(t, Parse(strings.NewReader(servingSample), &r))
	r.Results = r.Results[:len(r.Results)-1] // the speed case's serve line is lost
	r.Results[0].Metrics = r.Results[0].Metrics[:3]
	p := checkServing(&r)
	require.Contains(t, p, "BenchmarkServingScale/speed24h/events=100000 did not report serve's memory")
	require.Contains(t, p, "BenchmarkServingScale/month/events=30000000/7d_1h_by_country did not report p50_ms")

	require.Equal(t, []string{"BenchmarkServingScale did not report"}, checkServing(&Run{}))
}
