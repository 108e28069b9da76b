package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas/openapi"
	"github.com/tandem-analytics/tandem/serving"
)

// apiOp is the part of one documented operation the route tests read.
type apiOp struct {
	Tags       []string `json:"tags"`
	Parameters []struct {
		Name string `json:"name"`
		In   string `json:"in"`
	} `json:"parameters"`
}

// apiDoc is the document's operations by path and lower-case method.
type apiDoc struct{ Paths map[string]map[string]apiOp }

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func loadAPIDoc(t *testing.T) apiDoc {
	t.Helper()
	var raw struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openapi.Document(), &raw))
	d := apiDoc{Paths: map[string]map[string]apiOp{}}
	for path, item := range raw.Paths {
		d.Paths[path] = map[string]apiOp{}
		for _, m := range httpMethods {
			if b, ok := item[m]; ok {
				var op apiOp
				require.NoError(t, json.Unmarshal(b, &op), "%s %s", m, path)
				d.Paths[path][m] = op
			}
		}
	}
	require.NotEmpty(t, d.Paths)
	return d
}

// notAPI are routes registered on a listener on purpose left out of the
// document, with the reason.
var notAPI = map[string]string{
	"GET /":                    "the web dashboard's HTML page and assets (serving/dashboard), not part of the REST API",
	"GET /debug/pprof/":        "Go's profiles for operators, only with serve.pprof (docs/operations.md), not part of the REST API",
	"GET /debug/pprof/profile": "Go's CPU profile for operators, only with serve.pprof (docs/operations.md), not part of the REST API",
}

// routeSources are the non-test Go files' directories whose Handle,
// HandleFunc and Mount calls register the routes of the ingest and serve
// listeners.
var routeSources = []string{"serving", "ingest", "internal/ops", "cmd/tandem", "status"}

var patternRE = regexp.MustCompile(`^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/\S*)$`)

// registeredPatterns reads every route pattern registered in the sources:
// the string literals passed as first argument to Handle, HandleFunc or
// Mount. A registration whose pattern is not a literal fails the test,
// since it could not be checked against the document.
func registeredPatterns(t *testing.T) map[string]string {
	t.Helper()
	root := testenv.RepoRoot(t)
	found := map[string]string{} // pattern -> file:line
	fset := token.NewFileSet()
	for _, dir := range routeSources {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		require.NoError(t, err)
		require.NotEmpty(t, files, dir)
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, file, nil, 0)
			require.NoError(t, err)
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Mount") {
					return true
				}
				where := fset.Position(call.Pos()).String()
				switch a := call.Args[0].(type) {
				case *ast.BasicLit:
					if a.Kind != token.STRING {
						return true
					}
					p, err := strconv.Unquote(a.Value)
					require.NoError(t, err)
					require.Regexp(t, patternRE, p, "route pattern at %s", where)
					found[p] = where
				case *ast.Ident:
					// Service.Mount's own body passes its parameter on; the
					// callers' literals are what is checked. ops.Mount(mux,
					// ...) takes a mux first.
					if a.Name != "pattern" && a.Name != "mux" {
						t.Errorf("%s: a route registered with a non-literal pattern %s; the OpenAPI route test cannot check it", where, a.Name)
					}
				case *ast.SelectorExpr:
					if a.Sel.Name != "mux" { // ops.Mount(s.mux, ...)
						t.Errorf("%s: a route registered with a non-literal pattern; the OpenAPI route test cannot check it", where)
					}
				default:
					t.Errorf("%s: a route registered with a non-literal pattern; the OpenAPI route test cannot check it", where)
				}
				return true
			})
		}
	}
	return found
}

// muxes builds the serve and ingest handlers as `tandem serve` and
// `tandem ingest` do, without starting them (no I/O happens).
func muxes(t *testing.T) (serve, ing http.Handler) {
	t.Helper()
	cfg, err := config.Parse("example.yaml", []byte(testenv.ExampleConfigYAML(t)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := ops.NewRegistry()
	// Every route a listener can have: the profiles too.
	cfg.Serve.Pprof = true
	svc, closeFn, err := serving.FromConfig(cfg.Serve, cfg.Config, reg, log)
	require.NoError(t, err)
	t.Cleanup(func() { closeFn() })
	closeStatus, err := mountStatus(svc, cfg, reg, log)
	require.NoError(t, err)
	t.Cleanup(closeStatus)
	p, err := kafka.NewProducer(cfg.Kafka.Brokers, kafka.ProducerOptions{ClientID: "openapi-test"})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	gw, err := ingest.New(cfg.Ingest, ingest.Deps{Schema: cfg.Config, Log: p, Registry: ops.NewRegistry(), Logger: log})
	require.NoError(t, err)
	return svc.Handler(), gw.Handler()
}

// matched is the pattern h routes method+path to ("" when none).
func matched(h http.Handler, method, path string) string {
	mux := h.(*http.ServeMux)
	_, pattern := mux.Handler(httptest.NewRequest(method, path, nil))
	return pattern
}

var pathParamRE = regexp.MustCompile(`\{[^}]+\}`)

// TestOpenAPIRoutesMatchHandlers fails when a route is registered on the
// serve or ingest listener but not documented, or documented but not
// registered on the listener its tag names.
func TestOpenAPIRoutesMatchHandlers(t *testing.T) {
	doc := loadAPIDoc(t)
	serve, ing := muxes(t)

	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			pattern := strings.ToUpper(method) + " " + path
			documented[pattern] = true
			require.Len(t, op.Tags, 1, "%s: one tag, naming its listener", pattern)
			concrete := pathParamRE.ReplaceAllString(path, "x")
			var on map[string]http.Handler
			switch op.Tags[0] {
			case "ingest":
				on = map[string]http.Handler{"ingest": ing}
			case "query":
				on = map[string]http.Handler{"serve": serve}
			case "ops":
				on = map[string]http.Handler{"serve": serve, "ingest": ing}
			default:
				t.Fatalf("%s: unknown tag %q", pattern, op.Tags[0])
			}
			for name, h := range on {
				require.Equal(t, pattern, matched(h, strings.ToUpper(method), concrete),
					"documented %s is not routed by the %s listener", pattern, name)
			}
		}
	}

	registered := registeredPatterns(t)
	require.Contains(t, registered, "GET /v1/views/{view}/query", "the source scan found the query route")
	require.Contains(t, registered, "POST /v1/streams/{stream}/events", "the source scan found the ingest route")
	var undocumented []string
	for pattern, where := range registered {
		m := patternRE.FindStringSubmatch(pattern)
		concrete := pathParamRE.ReplaceAllString(m[2], "x")
		// The scan must find real routes: each routes to itself on a listener.
		require.True(t, matched(serve, m[1], concrete) == pattern || matched(ing, m[1], concrete) == pattern,
			"%s (%s) is routed by neither listener", pattern, where)
		if !documented[pattern] && notAPI[pattern] == "" {
			undocumented = append(undocumented, pattern+" ("+where+")")
		}
	}
	sort.Strings(undocumented)
	require.Empty(t, undocumented, "routes missing from schemas/openapi/openapi.json")
	for pattern := range documented {
		require.Contains(t, registered, pattern, "documented but registered nowhere in %v", routeSources)
	}
}

// TestOpenAPIQueryParametersMatchParseQuery fails when ParseQuery accepts a
// parameter the document leaves out, or the reverse.
func TestOpenAPIQueryParametersMatchParseQuery(t *testing.T) {
	doc := loadAPIDoc(t)
	var inDoc []string
	for _, p := range doc.Paths["/v1/views/{view}/query"]["get"].Parameters {
		if p.In == "query" {
			inDoc = append(inDoc, p.Name)
		}
	}
	sort.Strings(inDoc)
	require.Equal(t, serving.QueryParameters(), inDoc)

	// And by behaviour: ParseQuery refuses a name as unknown exactly when
	// the document does not list it.
	cfg, err := config.Parse("example.yaml", []byte(testenv.ExampleConfigYAML(t)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	v := cfg.Views[0]
	for _, name := range append(inDoc, "limit", "order_by", "tz", "view", "format") {
		_, err := serving.ParseQuery(v, url.Values{name: {"x"}}.Encode(), 0)
		unknown := err != nil && strings.Contains(err.Error(), "unknown parameter")
		require.Equal(t, !contains(inDoc, name), unknown, "parameter %q: %v", name, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newAPIValidator(t *testing.T) validator.Validator {
	t.Helper()
	doc, err := libopenapi.NewDocument(openapi.Document())
	require.NoError(t, err)
	v, errs := validator.NewValidator(doc)
	require.Empty(t, errs)
	ok, verrs := v.ValidateDocument()
	require.True(t, ok, "the document is not valid OpenAPI 3.1: %v", fmtErrs(verrs))
	return v
}

func fmtErrs[E interface{ Error() string }](errs []E) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("\n  " + e.Error())
	}
	return b.String()
}

// TestOpenAPIDocumentIsValid checks the document against the OpenAPI 3.1
// schema, and that the served copy is the one in the repository.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	newAPIValidator(t)
	serve, ing := muxes(t)
	for name, h := range map[string]http.Handler{"serve": serve, "ingest": ing} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", openapi.Path, nil))
		require.Equal(t, http.StatusOK, rec.Code, name)
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"), name)
		require.Equal(t, openapi.Document(), rec.Body.Bytes(), name)
	}
}

// devAPI is a running `tandem dev` with tokens.
type devAPI struct {
	ingest, serve           string // host:port
	ingestToken, queryToken string
	out                     *bytes.Buffer
}

// startDevWithTokens runs `tandem dev` on free loopback ports with ingest
// and query tokens and a 64 KiB ingest body limit, until the test ends.
func startDevWithTokens(t *testing.T) *devAPI {
	t.Helper()
	bin := testenv.BuildTandem(t)
	root := testenv.RepoRoot(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	port := func() string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) }
	kafkaAddr, chAddr, s3Addr := port(), port(), port()
	d := &devAPI{ingest: port(), serve: port(), ingestToken: "ingest-secret-1", queryToken: "query-secret-1", out: &bytes.Buffer{}}
	speedAddr, archiveAddr := port(), port()
	conf := testenv.ExampleConfigYAML(t,
		`"127.0.0.1:9092"`, `"`+kafkaAddr+`"`,
		`"127.0.0.1:9000"`, `"`+chAddr+`"`,
		`"127.0.0.1:9100"`, `"`+s3Addr+`"`,
		`"127.0.0.1:8080", max_body_bytes: 8388608`, `"`+d.ingest+`", max_body_bytes: 65536`,
		`"127.0.0.1:8081"`, `"`+d.serve+`"`,
		`"127.0.0.1:8082"`, `"`+speedAddr+`"`,
		`"127.0.0.1:8083"`, `"`+archiveAddr+`"`,
		`every: 10m`, `every: 0`,
		`auth:       { ingest_tokens: [], query_tokens: [] }`,
		`auth:       { ingest_tokens: [`+d.ingestToken+`], query_tokens: [`+d.queryToken+`] }`,
	)
	cfgPath := filepath.Join(dir, "tandem.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(conf), 0o600))
	t.Cleanup(func() { stopDevServices(root, dataDir, chAddr) })
	cmd := exec.Command(bin, "dev", "--config", cfgPath, "--data-dir", dataDir, "--gen-rate", "0", "--scripts", filepath.Join(root, "scripts"))
	cmd.Stdout, cmd.Stderr = d.out, d.out
	// MinIO's console port too: its default (9101) may be another MinIO's.
	cmd.Env = append(os.Environ(), fmt.Sprintf("TANDEM_MINIO_CONSOLE_PORT=%d", testenv.FreePort(t)))
	require.NoError(t, cmd.Start())
	// exited is closed once tandem dev has exited, with its error in
	// exitErr: every waiter sees it (a value sent on a channel would reach
	// only one, and the clean-up would wait for it forever).
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	// Starting ClickHouse and MinIO takes long on a loaded machine.
	require.Eventually(t, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		res, err := http.Get("http://" + d.serve + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 180*time.Second, 200*time.Millisecond, "serve never became ready:\n%s", d.out)
	select {
	case <-exited:
		t.Fatalf("tandem dev exited early: %v\n%s", exitErr, d.out)
	default:
	}
	return d
}

// TestOpenAPILiveAnswersMatchDocument sends requests reaching every status
// code a running `tandem dev` can be brought to give on purpose, checks
// each code, and validates each answer (status, content type, headers,
// body) against the document.
func TestOpenAPILiveAnswersMatchDocument(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tandem dev with real Kafka protocol, ClickHouse and MinIO")
	}
	v := newAPIValidator(t)
	d := startDevWithTokens(t)
	client := &http.Client{Timeout: 30 * time.Second}

	type call struct {
		name        string
		method, url string
		token       string
		contentType string
		accept      string
		body        string
		want        int
	}
	// do sends c, checks its status and validates the answer; it returns
	// the body.
	do := func(c call) []byte {
		t.Helper()
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, c.url, body)
		require.NoError(t, err)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		}
		if c.accept != "" {
			req.Header.Set("Accept", c.accept)
		}
		res, err := client.Do(req)
		require.NoError(t, err, c.name)
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, c.want, res.StatusCode, "%s: %s", c.name, b)
		// The validator reads the body again.
		res.Body = io.NopCloser(bytes.NewReader(b))
		vreq, _ := http.NewRequest(c.method, c.url, strings.NewReader(c.body))
		vreq.Header = req.Header.Clone()
		ok, errs := v.ValidateHttpResponse(vreq, res)
		require.True(t, ok, "%s: answer %d %s outside the document: %s\nbody: %.500s", c.name, res.StatusCode, res.Header.Get("Content-Type"), fmtErrs(errs), b)
		return b
	}

	in := "http://" + d.ingest
	sv := "http://" + d.serve
	events := in + "/v1/streams/pageviews/events"
	now := time.Now().UTC().Truncate(time.Minute)
	ev := func(i int) string {
		return fmt.Sprintf(`{"event_id":"oa-%d","ts":%q,"country":"C%d","device":"d","user_id":"u%d","amount":%d.5,"latency_ms":%d}`,
			i, now.Add(-time.Duration(i)*time.Minute).Format(time.RFC3339), i%3, i, i, 10+i)
	}
	var nd strings.Builder
	for i := 0; i < 20; i++ {
		nd.WriteString(ev(i) + "\n")
	}
	b := do(call{name: "ingest NDJSON", method: "POST", url: events, token: d.ingestToken, contentType: "application/x-ndjson", body: nd.String(), want: 200})
	require.JSONEq(t, `{"accepted":20,"rejected":0,"errors":[]}`, string(b))
	b = do(call{name: "ingest array with one invalid event", method: "POST", url: events, token: d.ingestToken, contentType: "application/json",
		body: "[" + ev(20) + `,{"event_id":"oa-bad"}]`, want: 200})
	var ir ingest.Response
	require.NoError(t, json.Unmarshal(b, &ir))
	require.Equal(t, 1, ir.Accepted)
	require.Equal(t, 1, ir.Rejected)
	do(call{name: "ingest one object", method: "POST", url: events, token: d.ingestToken, contentType: "application/json", body: ev(21), want: 200})
	do(call{name: "ingest without token", method: "POST", url: events, contentType: "application/json", body: ev(22), want: 401})
	do(call{name: "ingest unknown stream", method: "POST", url: in + "/v1/streams/nope/events", token: d.ingestToken, contentType: "application/json", body: ev(22), want: 404})
	do(call{name: "ingest bad JSON", method: "POST", url: events, token: d.ingestToken, contentType: "application/json", body: "[{", want: 400})
	do(call{name: "ingest wrong content type", method: "POST", url: events, token: d.ingestToken, contentType: "text/plain", body: ev(22), want: 415})
	do(call{name: "ingest body over max_body_bytes", method: "POST", url: events, token: d.ingestToken, contentType: "application/x-ndjson",
		body: strings.Repeat(ev(23)+"\n", 65536/len(ev(23))+1), want: 413})

	q := sv + "/v1/views/pageviews_by_country/query?" + url.Values{
		"from": {now.Add(-time.Hour).Format(time.RFC3339)}, "to": {now.Add(time.Minute).Format(time.RFC3339)},
		"group_by": {"country"}, "granularity": {"all"},
	}.Encode()
	// The speed layer takes the events within a few flushes.
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest("GET", q, nil)
		req.Header.Set("Authorization", "Bearer "+d.queryToken)
		r, err := client.Do(req)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		var out struct {
			Rows []struct {
				Measures map[string]any `json:"measures"`
			} `json:"rows"`
		}
		if r.StatusCode != 200 || json.NewDecoder(r.Body).Decode(&out) != nil {
			return false
		}
		var views float64
		for _, row := range out.Rows {
			v, _ := row.Measures["views"].(float64)
			views += v
		}
		return views >= 22
	}, 90*time.Second, 250*time.Millisecond, "the ingested events never reached the query API:\n%s", d.out)

	b = do(call{name: "query JSON", method: "GET", url: q, token: d.queryToken, want: 200})
	var qr struct {
		Rows []struct {
			Measures map[string]any `json:"measures"`
		} `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(b, &qr))
	var views float64
	for _, r := range qr.Rows {
		views += r.Measures["views"].(float64)
	}
	require.Equal(t, 22.0, views, "every accepted event is counted once")
	do(call{name: "query CSV", method: "GET", url: q, token: d.queryToken, accept: "text/csv", want: 200})
	do(call{name: "query Arrow", method: "GET", url: q, token: d.queryToken, accept: "application/vnd.apache.arrow.stream", want: 200})
	do(call{name: "query filtered, one measure", method: "GET", url: q + "&filter=country:C1&filter=device:d&measures=latency", token: d.queryToken, want: 200})
	do(call{name: "query top N", method: "GET", url: q + "&order_by=latency.p99:asc&limit=2", token: d.queryToken, want: 200})
	do(call{name: "query filters and having", method: "GET", url: q + "&filter=country!:C9&filter=country^:C&filter=device!^:x&having=views>=1&having=latency.p50>0", token: d.queryToken, want: 200})
	do(call{name: "query local days", method: "GET", url: strings.Replace(q, "granularity=all", "granularity=1d", 1) + "&tz=Europe/Amsterdam", token: d.queryToken, want: 200})
	do(call{name: "query top N CSV", method: "GET", url: q + "&order_by=views&limit=1", token: d.queryToken, accept: "text/csv", want: 200})
	do(call{name: "query without token", method: "GET", url: q, want: 401})
	do(call{name: "query unknown view", method: "GET", url: sv + "/v1/views/nope/query?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", token: d.queryToken, want: 404})
	for _, bad := range []string{"", "from=x&to=y", "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
		"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&granularity=7s", "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&group_by=city",
		"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&nope=1", "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&filter=country",
		"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&order_by=latency", "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&limit=0",
		"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&having=views", "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&filter=country^:", "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&tz=Nowhere/Else"} {
		do(call{name: "query 400 " + bad, method: "GET", url: sv + "/v1/views/pageviews_by_country/query?" + bad, token: d.queryToken, want: 400})
	}
	b = do(call{name: "views", method: "GET", url: sv + "/v1/views", token: d.queryToken, want: 200})
	require.Contains(t, string(b), `"name":"pageviews_by_country"`)
	do(call{name: "views with a parameter", method: "GET", url: sv + "/v1/views?x=1", token: d.queryToken, want: 400})
	do(call{name: "views without token", method: "GET", url: sv + "/v1/views", want: 401})
	do(call{name: "status", method: "GET", url: sv + "/v1/status", token: d.queryToken, want: 200})
	do(call{name: "status without token", method: "GET", url: sv + "/v1/status", want: 401})
	for _, base := range []string{sv, in} {
		do(call{name: "healthz " + base, method: "GET", url: base + "/healthz", want: 200})
		do(call{name: "readyz " + base, method: "GET", url: base + "/readyz", want: 200})
		do(call{name: "metrics " + base, method: "GET", url: base + "/metrics", want: 200})
		b = do(call{name: "openapi " + base, method: "GET", url: base + openapi.Path, want: 200})
		require.Equal(t, openapi.Document(), b)
	}

	// The validator is not vacuous: a query answer without its freshness,
	// and an undocumented status, are refused.
	for name, r := range map[string]*http.Response{
		"query answer without freshness": {StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"view":"v","granularity":"1m","from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z","rows":[]}`))},
		"query answer with status 418": {StatusCode: 418, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"error":"teapot"}`))},
		"error with an extra field": {StatusCode: 400, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"error":"x","code":1}`))},
	} {
		req, _ := http.NewRequest("GET", q, nil)
		ok, _ := v.ValidateHttpResponse(req, r)
		require.False(t, ok, "the validator accepted a %s", name)
	}
}
