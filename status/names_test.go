package status

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
	"github.com/tandem-analytics/tandem/speed"
)

// TestReadMetricsAreRegistered: every metric name status reads is
// registered by a component. The four components are built in-process the
// way cmd/tandem wires them, each on its own registry (as in their own
// processes); none of the constructors does I/O, and nothing is run: a
// component registers its metrics when built.
func TestReadMetricsAreRegistered(t *testing.T) {
	cfg := testConfig(t, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	regs := map[string]*prometheus.Registry{}
	for _, name := range Components {
		regs[name] = ops.NewRegistry()
	}

	p, err := kafka.NewProducer(cfg.Kafka.Brokers, kafka.ProducerOptions{ClientID: "status-test"})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	_, err = ingest.New(cfg.Ingest, ingest.Deps{Schema: cfg.Config, Log: p, Registry: regs["ingest"], Logger: log})
	require.NoError(t, err)

	dlq, err := kafka.NewDLQ(cfg.Kafka.Brokers, kafka.ProducerOptions{ClientID: "status-test-dlq"})
	require.NoError(t, err)
	t.Cleanup(func() { dlq.Close() })
	// The sink's store is never reached: the service is built, not run.
	_, err = speed.New(cfg.Speed, speed.Deps{Schema: cfg.Config, Sink: speed.NewClickHouseSink(nil, cfg.ChunkSize), DeadLetters: dlq, Registry: regs["speed"], Log: log})
	require.NoError(t, err)

	store, err := s3.New(cfg.S3, s3.WithRegistry(regs["archive"]), s3.WithLogger(log))
	require.NoError(t, err)
	archiveConf := cfg.Archive
	archiveConf.TmpDir = t.TempDir()
	_, err = archive.New(archiveConf, archive.Deps{Schema: cfg.Config, Store: store, Registry: regs["archive"], Log: log})
	require.NoError(t, err)

	_, closeServe, err := serving.FromConfig(cfg.Serve, cfg.Config, regs["serve"], log)
	require.NoError(t, err)
	t.Cleanup(func() { closeServe() })

	// Gathering proves the registries consistent; a family shows in a
	// gather only once it has a series, so whether a name is taken is asked
	// of the registry itself: registering another collector under it
	// fails exactly when a component registered it.
	for name, reg := range regs {
		_, err := reg.Gather()
		require.NoError(t, err, name)
	}
	for _, m := range schemas.Metrics {
		var by []string
		for name, reg := range regs {
			if registered(reg, m) {
				by = append(by, name)
			}
		}
		require.NotEmpty(t, by, "status reads %s, which no component registers", m)
	}
	require.False(t, registered(regs["ingest"], "tandem_no_such_metric"), "the probe must tell a free name from a taken one")
}

// registered reports whether reg holds a metric named m.
func registered(reg *prometheus.Registry, m schemas.Metric) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: m.String(), Help: "probe of status/names_test.go"})
	if err := reg.Register(probe); err != nil {
		return true
	}
	reg.Unregister(probe)
	return false
}

// TestStatusReadsOnlyDeclaredMetrics: status names no metric in a string
// literal of its own; every name it reads is a schemas.Metric, shared with
// the component that registers it.
func TestStatusReadsOnlyDeclaredMetrics(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	scanned := 0
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		scanned++
		ast.Inspect(f, func(n ast.Node) bool {
			if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				s, _ := strconv.Unquote(bl.Value)
				require.False(t, strings.HasPrefix(s, "tandem_") || strings.HasPrefix(s, "process_"),
					"%s: metric name %q as a literal; declare it in schemas/metrics.go", fset.Position(bl.Pos()), s)
			}
			return true
		})
	}
	require.Greater(t, scanned, 3)
}

// TestCheckNamesDocumented: every check name is a row of docs/status.md,
// and every check has its question, unit and area declared once.
func TestCheckNamesDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", "status.md"))
	require.NoError(t, err)
	names := append([]CheckName{CheckStoreKafka, CheckStoreS3, CheckStoreClickHouse}, CheckNames...)
	for _, n := range names {
		require.Contains(t, string(doc), "`"+string(n)+"`", "docs/status.md does not list check %s", n)
	}
	require.Contains(t, string(doc), "`"+CheckComponentPrefix+"<name>`")
	require.Len(t, checkSpecs, len(CheckNames), "a check in checkSpecs is missing from CheckNames or the other way round")
	for _, n := range CheckNames {
		spec, ok := checkSpecs[n]
		require.True(t, ok, "%s has no spec", n)
		require.NotEmpty(t, spec.question, n)
		require.NotEmpty(t, spec.area, n)
	}
}
