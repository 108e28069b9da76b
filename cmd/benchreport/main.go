// Command benchreport turns `go test -bench` output of tandem's benchmarks
// into the generated sections of docs/performance.md: a summary table per
// stage (tandem's rate beside its same-run baseline, the ratio and its
// target, peak memory, latency or freshness percentiles), the comparison
// with ClickHouse's Kafka engine, every reported figure, and the machine.
// With -scaling it writes the scaling section and its chart instead; with
// -serving the "Serving at scale" results of BenchmarkServingScale (issue
// 11, `make bench-serving-scale`).
//
//	benchreport -doc docs/performance.md .bench/bench.txt
//	benchreport -scaling -doc docs/performance.md -chart docs/scaling .bench/scaling.txt
//	benchreport -serving -doc docs/performance.md .bench/serving-scale.txt
//	benchreport -check .bench/smoke.txt     # fail unless every stage reported
//	benchreport -serving -check .bench/serving-smoke.txt
//
// Generated text goes between <!-- BEGIN GENERATED: name --> and
// <!-- END GENERATED: name --> markers (name "bench", "scaling" or
// "serving"); the
// rest of the document (hand-written prose) is kept. Missing markers are
// appended at the end.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	doc := fs.String("doc", "", "markdown file to update between the markers (stdout when empty)")
	scaling := fs.Bool("scaling", false, "write the scaling section (and chart) instead of the benchmark summary")
	chart := fs.String("chart", "", "with -scaling: path without extension for the chart (.svg written, .png converted with rsvg-convert)")
	serving := fs.Bool("serving", false, "write the serving-at-scale results (BenchmarkServingScale) instead of the benchmark summary")
	check := fs.Bool("check", false, "only check that every stage's benchmark (with -serving: every query of BenchmarkServingScale) reported its figures")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("name at least one file of `go test -bench` output")
	}
	var r Run
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = Parse(f, &r)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if *check && *serving {
		if problems := checkServing(&r); len(problems) > 0 {
			return errors.New(strings.Join(append(problems, r.Failed...), "; "))
		}
		if len(r.Failed) > 0 {
			return errors.New(strings.Join(r.Failed, "; "))
		}
		fmt.Printf("benchreport: %d results of %s, every query reported\n", len(servingResults(&r)), servingBench)
		return nil
	}
	if *check {
		return checkRun(&r)
	}
	m := machine(&r, time.Now())
	name, text := "bench", ""
	if *serving {
		name, text = "serving", servingSection(&r, m)
	} else if *scaling {
		name = "scaling"
		link := ""
		if *chart != "" {
			var err error
			if link, err = writeChart(*chart, *doc, &r); err != nil {
				return err
			}
		}
		text = scalingSection(&r, m, link)
	} else {
		text = benchSection(&r, m)
	}
	if *doc == "" {
		_, err := os.Stdout.WriteString(text)
		return err
	}
	old, err := os.ReadFile(*doc)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(*doc, []byte(splice(string(old), name, text)), 0o644)
}

// checkRun fails unless every stage's benchmark produced its rate metric,
// and no benchmark failed.
func checkRun(r *Run) error {
	var problems []string
	for _, s := range stages {
		res := r.Find(s.Bench)
		if res == nil {
			problems = append(problems, s.Bench+" did not report")
			continue
		}
		if _, ok := res.Get(s.Rate); !ok {
			problems = append(problems, fmt.Sprintf("%s did not report %s", s.Bench, s.Rate))
		}
	}
	if r.Find("BenchmarkClickHouseKafkaEnginePeer") == nil {
		problems = append(problems, "BenchmarkClickHouseKafkaEnginePeer did not report")
	}
	problems = append(problems, r.Failed...)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	fmt.Printf("benchreport: %d results, every stage reported\n", len(r.Results))
	return nil
}

// splice replaces the text between the named markers, or appends markers
// and text when the document has none.
func splice(doc, name, text string) string {
	begin := fmt.Sprintf("<!-- BEGIN GENERATED: %s (cmd/benchreport; edits here are overwritten) -->", name)
	endMark := fmt.Sprintf("<!-- END GENERATED: %s -->", name)
	beginPrefix := fmt.Sprintf("<!-- BEGIN GENERATED: %s ", name)
	block := begin + "\n" + strings.TrimRight(text, "\n") + "\n" + endMark
	i := strings.Index(doc, beginPrefix)
	if i >= 0 {
		if j := strings.Index(doc[i:], endMark); j >= 0 {
			return doc[:i] + block + doc[i+j+len(endMark):]
		}
	}
	if doc != "" && !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	if doc != "" {
		doc += "\n"
	}
	return doc + block + "\n"
}

// writeChart writes base.svg and converts it to base.png; it returns the
// PNG's path relative to the document's directory.
func writeChart(base, doc string, r *Run) (string, error) {
	svg := base + ".svg"
	png := base + ".png"
	if err := os.WriteFile(svg, []byte(chartSVG("tandem scaling", scalingPanels(r))), 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("rsvg-convert", "-f", "png", "-o", png, svg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("converting %s to PNG with rsvg-convert (apt-get install librsvg2-bin): %v: %s", svg, err, out)
	}
	if doc == "" {
		return png, nil
	}
	rel, err := filepath.Rel(filepath.Dir(doc), png)
	if err != nil {
		return png, nil
	}
	return filepath.ToSlash(rel), nil
}
