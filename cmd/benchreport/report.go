package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// stage is one row of the summary table: a tandem stage and the baseline
// its benchmark measures in the same run.
type stage struct {
	Stage, Bench string
	// Rate is tandem's figure (metric unit) and Base the baseline's, with
	// labels for the table.
	Rate, RateLabel string
	Base, BaseLabel string
	// Ratio is the metric holding tandem/baseline, scaled by RatioScale
	// (e.g. a percentage times 0.01); empty to compute Rate/Base.
	Ratio      string
	RatioScale float64
	// Target is the stated goal for the ratio; TargetMin its number (0 for
	// none).
	Target    string
	TargetMin float64
	// Mem is the peak-RSS metric (MiB or MB as named), P50/P99 latency or
	// freshness metrics, LatUnit their unit as shown.
	Mem, P50, P99, LatUnit string
	// P99Max is the stated bound on P99 (0 for none), P99Target its text.
	P99Max    float64
	P99Target string
}

// stages are the benchmarks of the earlier issues, in pipeline order.
var stages = []stage{
	{Stage: "Ingest gateway", Bench: "BenchmarkGatewayVsBareProducer",
		Rate: "gateway_events/s", RateLabel: "gateway", Base: "bare_events/s", BaseLabel: "bare kafka-go producer",
		Ratio: "gateway/bare", Target: "≥ 0.50", TargetMin: 0.5},
	{Stage: "Archiver (Kafka → raw Parquet in S3)", Bench: "BenchmarkArchiverVsBareParquet",
		Rate: "archiver_events/s", RateLabel: "archiver", Base: "bare_parquet_events/s", BaseLabel: "bare parquet-go write",
		Ratio: "ratio_%", RatioScale: 0.01, Target: "≥ 0.60", TargetMin: 0.6},
	{Stage: "Speed layer (Kafka → ClickHouse rows)", Bench: "BenchmarkSpeedVsBareConsumer",
		Rate: "speed_events/s", RateLabel: "speed layer", Base: "bare_events/s", BaseLabel: "bare kafka-go consumer",
		Ratio: "pct_of_bare", RatioScale: 0.01, Target: "≥ 0.70", TargetMin: 0.7,
		Mem: "peak_rss_MiB", P50: "fresh_p50_s", P99: "fresh_p99_s", LatUnit: "s freshness", P99Max: 2, P99Target: "p99 ≤ 2 s"},
	{Stage: "Batch recompute (raw Parquet → views)", Bench: "BenchmarkBatchRecomputeVsScan",
		Rate: "recompute_events/s", RateLabel: "recompute", Base: "scan_rows/s", BaseLabel: "bare parquet-go scan",
		Ratio: "recompute/scan", Target: "≥ 0.40", TargetMin: 0.4, Mem: "peak_rss_MB"},
	{Stage: "Serving query (7 days, 1h, by country)", Bench: "BenchmarkServingQuery",
		Rate: "req/s", RateLabel: "warm queries/s", Base: "no_levels_p50_ms", BaseLabel: "p50 ms merging 1-minute rows (no levels)",
		Ratio: "no_levels/levels", P50: "p50_ms", P99: "p99_ms", LatUnit: "ms latency"},
	{Stage: "ClickHouse speed-row insert", Bench: "BenchmarkInsertSpeedRows",
		Rate: "rows/s", RateLabel: "adapter", BaseLabel: "clickhouse-go batch of the same rows",
		Ratio: "overhead_ratio"},
	{Stage: "ClickHouse merged SQL view", Bench: "BenchmarkMergedView",
		Rate: "merged_µs/query", RateLabel: "µs/query", BaseLabel: "speed table FINAL alone",
		Ratio: "merged_ratio"},
}

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU, Memory, Go, Date, Kernel string
	Cores                         int
	Load                          string
}

func machine(run *Run, now time.Time) Machine {
	m := Machine{CPU: run.CPU, Cores: runtime.NumCPU(), Go: runtime.Version(), Date: now.UTC().Format("2006-01-02 15:04 MST")}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if len(run.Loads) > 0 {
		lo, hi := run.Loads[0], run.Loads[0]
		for _, l := range run.Loads {
			lo, hi = math.Min(lo, l), math.Max(hi, l)
		}
		m.Load = fmt.Sprintf("%.1f–%.1f", lo, hi)
	}
	return m
}

func (m Machine) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s memory, Linux %s; %s; generated %s.", m.CPU, m.Cores, m.Memory, m.Kernel, m.Go, m.Date)
	if m.Load != "" {
		fmt.Fprintf(&b, " 1-minute load average between benchmarks: %s (other work shared the machine; rates vary with it).", m.Load)
	}
	b.WriteString("\n")
	return b.String()
}

// num formats a figure with thousands separators and sensible precision.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		s := strconv.FormatInt(int64(math.Round(v)), 10)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var out []byte
		for i := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				out = append(out, ',')
			}
			out = append(out, s[i])
		}
		if neg {
			return "-" + string(out)
		}
		return string(out)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func metricOr(r *Result, unit string) string {
	if r == nil || unit == "" {
		return "—"
	}
	v, ok := r.Get(unit)
	if !ok {
		return "—"
	}
	return num(v)
}

// summary renders the stage table; missing benchmarks are listed as not run.
func summary(run *Run) string {
	var b strings.Builder
	b.WriteString("| stage | tandem | baseline (same run) | ratio | target | peak RSS | p50 / p99 |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, s := range stages {
		r := run.Find(s.Bench)
		if r == nil {
			fmt.Fprintf(&b, "| %s | not run (`%s`) | | | %s | | |\n", s.Stage, s.Bench, orDash(s.Target))
			continue
		}
		rate := fmt.Sprintf("%s %s", metricOr(r, s.Rate), s.Rate)
		base := s.BaseLabel
		if s.Base != "" {
			base = fmt.Sprintf("%s: %s %s", s.BaseLabel, metricOr(r, s.Base), s.Base)
		}
		ratio := "—"
		var rv float64
		var have bool
		if s.Ratio != "" {
			if v, ok := r.Get(s.Ratio); ok {
				rv, have = v, true
				if s.RatioScale != 0 {
					rv *= s.RatioScale
				}
			}
		} else if x, ok1 := r.Get(s.Rate); ok1 {
			if y, ok2 := r.Get(s.Base); ok2 && y != 0 {
				rv, have = x/y, true
			}
		}
		if have {
			ratio = num(rv)
		}
		target := orDash(s.Target)
		if s.TargetMin > 0 && have {
			if rv >= s.TargetMin {
				target += " ✔ met"
			} else {
				target += " ✘ not met"
			}
		}
		mem := "—"
		if s.Mem != "" {
			if v, ok := r.Get(s.Mem); ok {
				mem = fmt.Sprintf("%s %s", num(v), strings.TrimPrefix(s.Mem, "peak_rss_"))
			}
		}
		lat := "—"
		if s.P50 != "" {
			lat = fmt.Sprintf("%s / %s %s", metricOr(r, s.P50), metricOr(r, s.P99), s.LatUnit)
		}
		if s.P99Max > 0 {
			if v, ok := r.Get(s.P99); ok {
				verdict := "✔ met"
				if v > s.P99Max {
					verdict = "✘ not met"
				}
				target += fmt.Sprintf("; %s %s", s.P99Target, verdict)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.Stage, rate, base, ratio, target, mem, lat)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// peerTable renders the speed layer against ClickHouse's Kafka engine.
func peerTable(run *Run) string {
	r := run.Find("BenchmarkClickHouseKafkaEnginePeer")
	if r == nil {
		return "`BenchmarkClickHouseKafkaEnginePeer` was not run.\n"
	}
	var b strings.Builder
	b.WriteString("| consumer (same broker, ClickHouse and events) | events/s after group join | events/s with join | freshness p50 / p99 | peak RSS | count vs truth |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| tandem speed layer | %s | %s | %s / %s s | (in the Go process; see the speed row) | exact |\n",
		metricOr(r, "speed_events/s"), metricOr(r, "speed_with_join_events/s"), metricOr(r, "speed_fresh_p50_s"), metricOr(r, "speed_fresh_p99_s"))
	fmt.Fprintf(&b, "| Kafka engine + MV, blocks of 65,536 | %s | %s | %s / %s s | %s MiB (clickhouse-server) | +%s (duplicates counted) |\n",
		metricOr(r, "peer_events/s"), metricOr(r, "peer_with_join_events/s"), metricOr(r, "peer_fresh_p50_s"), metricOr(r, "peer_fresh_p99_s"),
		metricOr(r, "peer_peak_rss_MiB"), metricOr(r, "peer_overcount"))
	fmt.Fprintf(&b, "| Kafka engine + MV, blocks of 1,000 | %s | — | %s / %s s | (same server) | +%s (duplicates counted) |\n",
		metricOr(r, "peer_small_events/s"), metricOr(r, "peer_small_fresh_p50_s"), metricOr(r, "peer_small_fresh_p99_s"), metricOr(r, "peer_small_overcount"))
	return b.String()
}

// allMetrics lists every result with every metric, so a figure the
// summary does not pick is still in the document.
func allMetrics(run *Run) string {
	var b strings.Builder
	b.WriteString("| package | benchmark | iterations | metrics |\n|---|---|---|---|\n")
	for _, r := range run.Results {
		var ms []string
		for _, m := range r.Metrics {
			if m.Unit == "ns/op" && m.Value == 0 {
				continue // benchmarks that report rates zero ns/op on purpose
			}
			ms = append(ms, fmt.Sprintf("%s %s", num(m.Value), m.Unit))
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s |\n", strings.TrimPrefix(r.Pkg, "github.com/tandem-analytics/tandem/"), r.Name, r.N, strings.Join(ms, ", "))
	}
	return b.String()
}

// benchSection is the generated part of docs/performance.md for `make bench`.
func benchSection(run *Run, m Machine) string {
	var b strings.Builder
	b.WriteString("## Summary (generated by `make bench`)\n\n")
	b.WriteString(m.markdown())
	b.WriteString("\nEach benchmark measures tandem and its baseline in the same run; the ratio is tandem ÷ baseline (for the serving row: latency without levels ÷ with; for the ClickHouse rows: adapter or merged-view time ÷ the bare driver or FINAL-only time, where lower is better).\n\n")
	b.WriteString(summary(run))
	b.WriteString("\n### Speed layer against ClickHouse's Kafka engine\n\n")
	b.WriteString(peerTable(run))
	b.WriteString("\n### Every reported figure\n\n")
	b.WriteString(allMetrics(run))
	if len(run.Failed) > 0 {
		b.WriteString("\nFailures during the run:\n\n```\n" + strings.Join(run.Failed, "\n") + "\n```\n")
	}
	return b.String()
}

// scalingRows are the batch recompute results at each size, by events.
func scalingRows(run *Run) []*Result {
	rows := run.All("BenchmarkBatchRecomputeVsScan")
	sort.SliceStable(rows, func(i, j int) bool {
		a, _ := rows[i].Get("events")
		c, _ := rows[j].Get("events")
		return a < c
	})
	return rows
}

// scalingSection is the generated part for `scripts/bench.sh scaling`.
func scalingSection(run *Run, m Machine, chart string) string {
	var b strings.Builder
	b.WriteString("## Scaling (generated by `scripts/bench.sh scaling`)\n\n")
	b.WriteString(m.markdown())
	b.WriteString("\nBatch recompute of both test views from a master dataset of N raw events in MinIO (`BenchmarkBatchRecomputeVsScan` with `TANDEM_BENCH_EVENTS=N`, 4 partitions, 3 % duplicates, 0.5 % invalid), full run:\n\n")
	b.WriteString("| events | recompute time | recompute events/s | bare scan rows/s | recompute/scan | peak RSS |\n|---|---|---|---|---|---|\n")
	for _, r := range scalingRows(run) {
		ev, _ := r.Get("events")
		rate, _ := r.Get("recompute_events/s")
		secs := "—"
		if rate > 0 {
			secs = fmt.Sprintf("%s s", num(ev/rate))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s MB |\n", num(ev), secs, num(rate), metricOr(r, "scan_rows/s"), metricOr(r, "recompute/scan"), metricOr(r, "peak_rss_MB"))
	}
	b.WriteString("\nSpeed layer, one instance against two in one consumer group on the same backlog (`BenchmarkSpeedInstances`, 6 partitions; both instances in one process on the same cores):\n\n")
	b.WriteString("| instances | events/s (group stable → all visible) | events/s with join |\n|---|---|---|\n")
	for _, n := range []int{1, 2} {
		r := run.Find(fmt.Sprintf("BenchmarkSpeedInstances/instances=%d", n))
		fmt.Fprintf(&b, "| %d | %s | %s |\n", n, metricOr(r, "events/s"), metricOr(r, "with_join_events/s"))
	}
	if chart != "" {
		fmt.Fprintf(&b, "\n![batch recompute time and peak RSS by events; speed layer events/s by instances](%s)\n", chart)
	}
	return b.String()
}
