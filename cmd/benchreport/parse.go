package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Result is one benchmark result line of `go test -bench` output.
type Result struct {
	Pkg  string // import path, from the "pkg:" line before it
	Name string // "BenchmarkX/sub", without the -GOMAXPROCS suffix
	N    int64  // iterations
	// Metrics are the value/unit pairs in the order printed, including
	// ns/op, B/op and allocs/op and every b.ReportMetric unit.
	Metrics []Metric
	Logs    []string // the b.Log lines printed under it
}

// Metric is one value and its unit.
type Metric struct {
	Unit  string
	Value float64
}

// Get returns the metric with the unit, and whether it was reported.
func (r *Result) Get(unit string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

// Run is everything parsed from one or more outputs.
type Run struct {
	Results []*Result
	CPU     string    // "cpu:" line of go test
	Loads   []float64 // 1-minute load averages recorded by scripts/bench.sh
	Failed  []string  // "FAIL" lines
}

// Find returns the last result of the named benchmark (in any package).
func (r *Run) Find(name string) *Result {
	for i := len(r.Results) - 1; i >= 0; i-- {
		if r.Results[i].Name == name {
			return r.Results[i]
		}
	}
	return nil
}

// All returns every result of the named benchmark, in order.
func (r *Run) All(name string) []*Result {
	var out []*Result
	for _, res := range r.Results {
		if res.Name == name {
			out = append(out, res)
		}
	}
	return out
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark\S*?)(?:-\d+)?\s+(\d+)\s+(.*)$`)
	logLine   = regexp.MustCompile(`^\s+\S+_test\.go:\d+: (.*)$`)
)

// Parse reads `go test -bench` text output (several packages may follow
// each other) and the "# loadavg:" lines scripts/bench.sh adds.
func Parse(r io.Reader, run *Run) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var pkg string
	var last *Result
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimSpace(strings.TrimPrefix(line, "pkg: "))
		case strings.HasPrefix(line, "cpu: "):
			run.CPU = strings.TrimSpace(strings.TrimPrefix(line, "cpu: "))
		case strings.HasPrefix(line, "# loadavg: "):
			f := strings.Fields(strings.TrimPrefix(line, "# loadavg: "))
			if len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil {
					run.Loads = append(run.Loads, v)
				}
			}
		case strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "--- FAIL"):
			run.Failed = append(run.Failed, line)
		case strings.HasPrefix(line, "--- BENCH"):
			// Its log lines follow.
		default:
			if m := benchLine.FindStringSubmatch(line); m != nil {
				res, err := parseResult(pkg, m)
				if err != nil {
					return err
				}
				run.Results = append(run.Results, res)
				last = res
				continue
			}
			if m := logLine.FindStringSubmatch(line); m != nil && last != nil {
				last.Logs = append(last.Logs, m[1])
			}
		}
	}
	return sc.Err()
}

func parseResult(pkg string, m []string) (*Result, error) {
	n, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("benchmark %s: iterations %q: %w", m[1], m[2], err)
	}
	res := &Result{Pkg: pkg, Name: m[1], N: n}
	f := strings.Fields(m[3])
	if len(f)%2 != 0 {
		return nil, fmt.Errorf("benchmark %s: metrics %q are not value/unit pairs", m[1], m[3])
	}
	for i := 0; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil, fmt.Errorf("benchmark %s: metric value %q: %w", m[1], f[i], err)
		}
		res.Metrics = append(res.Metrics, Metric{Unit: f[i+1], Value: v})
	}
	return res, nil
}
