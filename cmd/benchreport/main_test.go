package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sample is real `go test -bench` output of two packages, as
// scripts/bench.sh captures it (with its load-average lines).
const sample = `# loadavg: 7.79 14.18 15.61 3/412 12345
goos: linux
goarch: amd64
pkg: github.com/tandem-analytics/tandem/ingest
cpu: AMD EPYC
BenchmarkGatewayVsBareProducer-2   	     300	         0 ns/op	     41114 bare_events/s	    13238 gateway_events/s	         0.3220 gateway/bare
PASS
ok  	github.com/tandem-analytics/tandem/ingest	21.2s
# loadavg: 23.63 22.08 19.11 3/412 12345
goos: linux
goarch: amd64
pkg: github.com/tandem-analytics/tandem/speed
cpu: AMD EPYC
BenchmarkClickHouseKafkaEnginePeer-2   	       1	         0.9963 peer/speed	     41437 peer_events/s	         7.078 peer_fresh_p50_s	        11.97 peer_fresh_p99_s	      1032 peer_overcount	       205.4 peer_peak_rss_MiB	     46496 peer_small_events/s	         0.6472 peer_small_fresh_p50_s	         1.503 peer_small_fresh_p99_s	      1032 peer_small_overcount	     41050 peer_with_join_events/s	     41590 speed_events/s	         0.5740 speed_fresh_p50_s	         1.051 speed_fresh_p99_s	     39355 speed_with_join_events/s
--- BENCH: BenchmarkClickHouseKafkaEnginePeer-2
    peer_bench_test.go:233: Kafka engine, blocks of 65536 rows: 41437 ev/s
BenchmarkSpeedVsBareConsumer-2   	       1	17844834411 ns/op	    161844 bare_events/s	         0.6540 fresh_p50_s	         1.093 fresh_p99_s	        22.15 pct_of_bare	       165.2 peak_rss_MiB	     35855 speed_events/s
BenchmarkSpeedInstances/instances=1-2         	       1	     10823 events/s	         1.000 instances	     10795 with_join_events/s
BenchmarkSpeedInstances/instances=2-2         	       1	     10455 events/s	         2.000 instances	     10450 with_join_events/s
BenchmarkBatchRecomputeVsScan-2   	       1	 9000000 ns/op	   5000000 events	    400000 recompute_events/s	   1000000 scan_rows/s	         0.4000 recompute/scan	       900.0 peak_rss_MB
BenchmarkBatchRecomputeVsScan-2   	       1	 9000000 ns/op	   1000000 events	    500000 recompute_events/s	   1000000 scan_rows/s	         0.5000 recompute/scan	       300.0 peak_rss_MB
PASS
`

func parsed(t *testing.T) *Run {
	t.Helper()
	var r Run
	require.NoError(t, Parse(strings.NewReader(sample), &r))
	return &r
}

func TestParse(t *testing.T) {
	r := parsed(t)
	require.Len(t, r.Results, 7)
	require.Equal(t, "AMD EPYC", r.CPU)
	require.Equal(t, []float64{7.79, 23.63}, r.Loads)

	gw := r.Find("BenchmarkGatewayVsBareProducer")
	require.NotNil(t, gw)
	require.Equal(t, "github.com/tandem-analytics/tandem/ingest", gw.Pkg)
	require.EqualValues(t, 300, gw.N)
	v, ok := gw.Get("gateway/bare")
	require.True(t, ok)
	require.InDelta(t, 0.322, v, 1e-9)

	peer := r.Find("BenchmarkClickHouseKafkaEnginePeer")
	require.Equal(t, "github.com/tandem-analytics/tandem/speed", peer.Pkg)
	require.Equal(t, []string{"Kafka engine, blocks of 65536 rows: 41437 ev/s"}, peer.Logs)
	require.NotNil(t, r.Find("BenchmarkSpeedInstances/instances=2"), "sub-benchmark names keep their path, lose the -procs suffix")
	require.Len(t, r.All("BenchmarkBatchRecomputeVsScan"), 2)

	var bad Run
	require.Error(t, Parse(strings.NewReader("BenchmarkX-2 1 12 ns/op 5\n"), &bad), "a value without a unit")
}

func TestSummary(t *testing.T) {
	r := parsed(t)
	s := summary(r)
	// The ingest row: both rates, their ratio and the verdict on ≥ 0.5.
	require.Contains(t, s, "| Ingest gateway | 13,238 gateway_events/s | bare kafka-go producer: 41,114 bare_events/s | 0.322 | ≥ 0.50 ✘ not met |")
	// The batch row comes from the last result of the benchmark.
	require.Contains(t, s, "| 500,000 recompute_events/s | bare parquet-go scan: 1,000,000 scan_rows/s | 0.500 | ≥ 0.40 ✔ met | 300 MB |")
	require.Contains(t, s, "not run (`BenchmarkArchiverVsBareParquet`)")
	// The speed row: ratio from the percentage, both verdicts, memory, freshness.
	require.Contains(t, s, "| 0.222 | ≥ 0.70 ✘ not met; p99 ≤ 2 s ✔ met | 165 MiB | 0.654 / 1.09 s freshness |")

	p := peerTable(r)
	require.Contains(t, p, "| tandem speed layer | 41,590 | 39,355 | 0.574 / 1.05 s |")
	require.Contains(t, p, "| Kafka engine + MV, blocks of 1,000 | 46,496 | — | 0.647 / 1.50 s |")
}

func TestScalingSectionAndChart(t *testing.T) {
	r := parsed(t)
	s := scalingSection(r, Machine{CPU: "AMD EPYC", Cores: 2}, "scaling.png")
	// Sorted by events; time = events / rate.
	i1 := strings.Index(s, "| 1,000,000 | 2.00 s | 500,000 |")
	i5 := strings.Index(s, "| 5,000,000 | 12.5 s | 400,000 |")
	require.True(t, i1 >= 0 && i5 > i1, s)
	require.Contains(t, s, "| 2 | 10,455 | 10,450 |")

	svg := chartSVG("tandem scaling", scalingPanels(r))
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "the chart is well-formed XML")
	}
	require.Equal(t, 2, strings.Count(svg, "<polyline"), "two line panels")
	require.Contains(t, svg, ">2 instances<")
}

func TestSpliceKeepsProse(t *testing.T) {
	doc := "# Performance\n\nHand-written prose.\n"
	once := splice(doc, "bench", "table v1\n")
	require.True(t, strings.HasPrefix(once, doc), "prose first, untouched")
	require.Contains(t, once, "table v1")

	twice := splice(once+"\n## Notes after\n", "bench", "table v2\n")
	require.NotContains(t, twice, "table v1")
	require.Contains(t, twice, "table v2")
	require.Contains(t, twice, "## Notes after")
	require.Equal(t, 1, strings.Count(twice, "BEGIN GENERATED: bench"))

	both := splice(twice, "scaling", "scaling v1\n")
	require.Contains(t, both, "table v2")
	require.Contains(t, both, "scaling v1")
}

func TestRunWritesDoc(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "bench.txt")
	require.NoError(t, os.WriteFile(in, []byte(sample), 0o644))
	doc := filepath.Join(dir, "performance.md")
	require.NoError(t, os.WriteFile(doc, []byte("# Performance\n\nProse.\n"), 0o644))
	require.NoError(t, run([]string{"-doc", doc, in}))
	out, err := os.ReadFile(doc)
	require.NoError(t, err)
	require.Contains(t, string(out), "Prose.")
	require.Contains(t, string(out), "Machine: ")
	require.Contains(t, string(out), "| Ingest gateway |")

	err = run([]string{"-check", in})
	require.ErrorContains(t, err, "BenchmarkArchiverVsBareParquet did not report")
}
