package deploy

// What the deployment files are checked against, read from the
// repository's own Go sources: the metric names the code exports, the
// tandem subcommands and their flags, and the health report's check names.
// Reading the sources (instead of a list kept here) means a renamed metric
// or flag fails this package's tests at once.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the module root: go test runs in deploy/.
const repoRoot = ".."

var metricNamePattern = regexp.MustCompile(`^tandem_[a-z0-9_]*[a-z0-9]$`)

// exportedMetrics returns every series name tandem's non-test Go sources
// can export, mapped to how it was found. It understands:
//   - prometheus.*Opts{Name: "tandem_x"} and {Namespace: "tandem",
//     Subsystem: "s", Name: "x"} (strings or constants of the package),
//   - prometheus.BuildFQName("tandem", "s", "x"),
//   - any other "tandem_…" string literal, which covers helpers such as
//     counter("tandem_archive_records_total", ...).
//
// Histograms and summaries add their _bucket/_sum/_count series; a name
// found only as a bare literal inside a call whose name mentions a
// histogram or summary gets them too.
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	fset := token.NewFileSet()
	shared := packageConsts(t, fset, "schemas")
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "vendor", "node_modules", ".tandem", "deploy":
				if path != repoRoot {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			// A file another engineer is in the middle of editing: skip
			// it rather than fail on code this package does not own.
			t.Logf("metric scan: skipping %s: %v", path, err)
			return nil
		}
		cs := consts(f)
		for k, v := range shared {
			cs[k] = v
		}
		scanMetrics(f, cs, path, out)
		return nil
	})
	require.NoError(t, err)
	return out
}

// packageConsts maps the string constants of the repository's package
// dir to their values, keyed "dir.Name" as other packages write them.
func packageConsts(t *testing.T, fset *token.FileSet, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(filepath.Join(repoRoot, dir))
	if err != nil {
		return out
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(repoRoot, dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			continue
		}
		for k, v := range consts(f) {
			out[dir+"."+k] = v
		}
	}
	return out
}

// consts maps the file's string constants to their values.
func consts(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if s, ok := stringLit(vs.Values[i]); ok {
						m[name.Name] = s
					}
				}
			}
		}
	}
	return m
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

func stringValue(e ast.Expr, cs map[string]string) (string, bool) {
	if s, ok := stringLit(e); ok {
		return s, true
	}
	if id, ok := e.(*ast.Ident); ok {
		s, ok := cs[id.Name]
		return s, ok
	}
	// schemas.MetricX.String(), or schemas.MetricX: a name declared in the
	// vocabulary package (cs holds its constants as "schemas.MetricX").
	if call, ok := e.(*ast.CallExpr); ok && len(call.Args) == 0 {
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "String" {
			e = sel.X
		}
	}
	if sel, ok := e.(*ast.SelectorExpr); ok {
		if pkg, ok := sel.X.(*ast.Ident); ok {
			s, ok := cs[pkg.Name+"."+sel.Sel.Name]
			return s, ok
		}
	}
	return "", false
}

func fqName(ns, sub, name string) string {
	var parts []string
	for _, p := range []string{ns, sub, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func addMetric(out map[string]string, name, where string, withSeries bool) {
	if !metricNamePattern.MatchString(name) {
		return
	}
	out[name] = where
	if withSeries {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			out[name+s] = where
		}
	}
}

func scanMetrics(f *ast.File, cs map[string]string, path string, out map[string]string) {
	var stack []ast.Node
	ast.Inspect(f, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		switch x := n.(type) {
		case *ast.CompositeLit:
			sel, ok := x.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			var ns, sub, name string
			for _, el := range x.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				if key == nil {
					continue
				}
				v, _ := stringValue(kv.Value, cs)
				switch key.Name {
				case "Namespace":
					ns = v
				case "Subsystem":
					sub = v
				case "Name":
					name = v
				}
			}
			hist := sel.Sel.Name == "HistogramOpts" || sel.Sel.Name == "SummaryOpts"
			addMetric(out, fqName(ns, sub, name), path, hist)
		case *ast.CallExpr:
			if sel, ok := x.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "BuildFQName" && len(x.Args) == 3 {
				var p [3]string
				for i, a := range x.Args {
					p[i], _ = stringValue(a, cs)
				}
				addMetric(out, fqName(p[0], p[1], p[2]), path, false)
			}
		case *ast.BasicLit:
			s, ok := stringLit(x)
			if !ok || !metricNamePattern.MatchString(s) {
				return true
			}
			hist := false
			for i := len(stack) - 1; i >= 0; i-- {
				if call, ok := stack[i].(*ast.CallExpr); ok {
					name := strings.ToLower(callName(call))
					hist = strings.Contains(name, "histogram") || strings.Contains(name, "summary")
					break
				}
			}
			if _, known := out[s]; !known || hist {
				addMetric(out, s, path, hist)
			}
		}
		return true
	})
}

func callName(c *ast.CallExpr) string {
	switch f := c.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

// externalMetrics are the series the deployment files may use that tandem
// itself does not export, each with its source.
var externalMetrics = map[string]string{
	// ops.NewRegistry registers the Go and process collectors.
	"process_resident_memory_bytes": "client_golang process collector",
	"process_cpu_seconds_total":     "client_golang process collector",
	"process_start_time_seconds":    "client_golang process collector",
	"go_goroutines":                 "client_golang Go collector",
	// The batch and export jobs exit when done; their success is what
	// Kubernetes records, read through kube-state-metrics.
	"kube_job_status_failed":                   "kube-state-metrics",
	"kube_cronjob_status_last_successful_time": "kube-state-metrics",
	"up": "Prometheus",
}

// checkMetricKnown fails when name is neither exported by tandem's code nor
// an allowed external series.
func checkMetricKnown(t *testing.T, exported map[string]string, name, where string) {
	t.Helper()
	if _, ok := exported[name]; ok {
		return
	}
	if _, ok := externalMetrics[name]; ok {
		return
	}
	t.Errorf("%s uses metric %q, which no Go source of tandem exports (and it is not a listed external series); close: %v",
		where, name, closeNames(exported, name))
}

func closeNames(exported map[string]string, name string) []string {
	// Suggest the names of the same component: tandem_<component>_….
	prefix := name
	if rest, ok := strings.CutPrefix(name, "tandem_"); ok {
		if j := strings.Index(rest, "_"); j > 0 {
			prefix = "tandem_" + rest[:j] + "_"
		}
	}
	var out []string
	for n := range exported {
		if strings.HasPrefix(n, prefix) && !strings.HasSuffix(n, "_bucket") && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// cliInfo is what cmd/tandem offers: subcommand → the flags its file
// declares, and whether the command is still the errNotYet stub.
type cliInfo struct {
	flags map[string]map[string]bool
	stub  map[string]bool
	// literals are the string literals of each command's file (to find
	// sub-subcommands such as "run" of `tandem batch run`).
	literals map[string]map[string]bool
}

// commonFlags are declared by newFlags for every command.
var commonFlags = []string{"config", "log-level", "log-json"}

// tandemCLI reads cmd/tandem: the command table in main.go's commands()
// and, for each command, the flags declared in the file of its handler.
func tandemCLI(t *testing.T) cliInfo {
	t.Helper()
	dir := filepath.Join(repoRoot, "cmd", "tandem")
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	files := map[string]*ast.File{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		require.NoError(t, err, "cmd/tandem/%s does not parse", e.Name())
		files[e.Name()] = f
	}
	// handler func name → file
	funcFile := map[string]string{}
	for name, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
				funcFile[fd.Name.Name] = name
			}
		}
	}
	handlers := map[string]string{} // command → handler
	main := files["main.go"]
	require.NotNil(t, main, "cmd/tandem/main.go")
	for _, d := range main.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != "commands" {
			continue
		}
		ast.Inspect(fd, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok || len(cl.Elts) != 3 {
				return true
			}
			name, ok := stringLit(cl.Elts[0])
			if !ok {
				return true
			}
			if id, ok := cl.Elts[2].(*ast.Ident); ok {
				handlers[name] = id.Name
			}
			return true
		})
	}
	require.NotEmpty(t, handlers, "no command table found in cmd/tandem/main.go commands()")

	info := cliInfo{flags: map[string]map[string]bool{}, stub: map[string]bool{}, literals: map[string]map[string]bool{}}
	flagMethods := map[string]int{ // method → index of the name argument
		"String": 0, "Bool": 0, "Int": 0, "Int64": 0, "Uint": 0, "Uint64": 0, "Float64": 0, "Duration": 0, "Func": 0, "BoolFunc": 0,
		"StringVar": 1, "BoolVar": 1, "IntVar": 1, "Int64Var": 1, "UintVar": 1, "Uint64Var": 1, "Float64Var": 1, "DurationVar": 1, "Var": 1, "TextVar": 1,
	}
	for cmd, handler := range handlers {
		fl := map[string]bool{}
		for _, c := range commonFlags {
			fl[c] = true
		}
		lits := map[string]bool{}
		file := files[funcFile[handler]]
		require.NotNil(t, file, "handler %s of command %q not found in cmd/tandem", handler, cmd)
		ast.Inspect(file, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				sel, ok := x.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if i, ok := flagMethods[sel.Sel.Name]; ok && len(x.Args) > i {
					if s, ok := stringLit(x.Args[i]); ok {
						fl[s] = true
					}
				}
			case *ast.BasicLit:
				if s, ok := stringLit(x); ok {
					lits[s] = true
				}
			}
			return true
		})
		info.flags[cmd] = fl
		info.literals[cmd] = lits
		// The stub every command starts as returns errNotYet.
		for _, d := range file.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == handler {
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					if id, ok := n.(*ast.Ident); ok && id.Name == "errNotYet" {
						info.stub[cmd] = true
					}
					return true
				})
			}
		}
	}
	return info
}

// checkArgs checks a container's arguments: a real subcommand (and `run`
// after batch), then only flags that command declares.
func checkArgs(t *testing.T, cli cliInfo, where string, args []string) string {
	t.Helper()
	if !assertf(t, len(args) > 0, "%s: no tandem command in the arguments", where) {
		return ""
	}
	cmd := args[0]
	flags, ok := cli.flags[cmd]
	if !assertf(t, ok, "%s: %q is not a tandem subcommand", where, cmd) {
		return ""
	}
	rest := args[1:]
	if cmd == "batch" {
		assertf(t, len(rest) > 0 && rest[0] == "run", "%s: `tandem batch` needs the run subcommand; got %q", where, rest)
		if cli.stub[cmd] {
			t.Logf("%s: tandem batch is still a stub in cmd/tandem; `run` not checked against it", where)
		} else {
			assertf(t, cli.literals[cmd]["run"], "%s: cmd/tandem's batch command has no \"run\" subcommand", where)
		}
		if len(rest) > 0 {
			rest = rest[1:]
		}
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if !strings.HasPrefix(a, "-") {
			continue // a flag's value
		}
		name := strings.TrimLeft(a, "-")
		name, _, _ = strings.Cut(name, "=")
		assertf(t, flags[name], "%s: `tandem %s` has no flag --%s (it has %v)", where, cmd, name, sortedKeys(flags))
	}
	return cmd
}

func assertf(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
	return ok
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// healthChecks returns the check names of the health report (the
// status.CheckName constants, plus the per-component checks), read
// from the status package's sources; nil when that package is absent.
func healthChecks(t *testing.T) map[string]bool {
	t.Helper()
	dir := filepath.Join(repoRoot, "status")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			// const CheckX CheckName = "area.name" (status/checknames.go)
			if typ, ok := vs.Type.(*ast.Ident); ok && typ.Name == "CheckName" {
				for _, v := range vs.Values {
					if s, ok := stringLit(v); ok {
						out[s] = true
					}
				}
				return true
			}
			for i, name := range vs.Names {
				if name.Name == "Components" && i < len(vs.Values) {
					if cl, ok := vs.Values[i].(*ast.CompositeLit); ok {
						for _, el := range cl.Elts {
							if s, ok := stringLit(el); ok {
								if name.Name == "Components" {
									s = "component." + s
								}
								out[s] = true
							}
						}
					}
				}
			}
			return true
		})
	}
	for _, s := range []string{"store.kafka", "store.s3", "store.clickhouse"} {
		out[s] = true
	}
	return out
}

func TestSourceScanners(t *testing.T) {
	// The scanners must find what is known to be there, or every check
	// built on them would pass vacuously.
	m := exportedMetrics(t)
	for _, name := range []string{
		"tandem_ingest_events_accepted_total",
		"tandem_ingest_produce_duration_seconds_bucket",
		"tandem_speed_consumer_lag",
		"tandem_serve_query_duration_seconds_count",
		"tandem_s3_errors_total",
	} {
		require.Contains(t, m, name)
	}
	require.NotContains(t, m, "tandem_speed_consumer_lag_bucket", "a gauge has no buckets")

	cli := tandemCLI(t)
	for _, c := range []string{"ingest", "speed", "archive", "serve", "batch", "export", "migrate", "status"} {
		require.Contains(t, cli.flags, c)
		require.True(t, cli.flags[c]["config"])
	}
	require.True(t, cli.flags["ingest"]["listen"], "tandem ingest declares --listen")
}

func TestScanMetricsForms(t *testing.T) {
	src := `package x
const sub = "speed"
var a = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tandem", Subsystem: sub, Name: "things_total"})
var b = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tandem_direct_seconds"})
var c = prometheus.BuildFQName("tandem", "batch", "runs_total")
var d = histogram("tandem_helper_seconds", "help")
var e = counter("tandem_helper_total", "help")
var f = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "other", Name: "x"})
`
	f, err := parser.ParseFile(token.NewFileSet(), "x.go", src, 0)
	require.NoError(t, err)
	out := map[string]string{}
	scanMetrics(f, consts(f), "x.go", out)
	require.ElementsMatch(t, []string{
		"tandem_speed_things_total",
		"tandem_direct_seconds", "tandem_direct_seconds_bucket", "tandem_direct_seconds_sum", "tandem_direct_seconds_count",
		"tandem_batch_runs_total",
		"tandem_helper_seconds", "tandem_helper_seconds_bucket", "tandem_helper_seconds_sum", "tandem_helper_seconds_count",
		"tandem_helper_total",
	}, sortedKeys(out))
}
