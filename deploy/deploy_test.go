// Package deploy holds no Go code of tandem: only tests that check the
// deployment files (Dockerfile, compose, Kubernetes, Prometheus rules,
// Grafana dashboard) against the code they deploy, with the parsers the
// real tools use, so a renamed flag, port, metric or config key fails here
// instead of in someone's cluster.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/loader"
	composetypes "github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	promql "github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/schemas"
)

// components are the long-running tandem commands and how each one's
// listen address is found in the configuration.
var components = map[string]func(*config.Config) string{
	"ingest":  func(c *config.Config) string { return c.Ingest.Listen },
	"serve":   func(c *config.Config) string { return c.Serve.Listen },
	"speed":   func(c *config.Config) string { return c.Speed.Listen },
	"archive": func(c *config.Config) string { return c.Archive.Listen },
}

func listenPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, "listen address %q", addr)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// parseConfig parses a tandem.yaml the way the binary does, with env as
// its environment, and requires that every ${NAME} it references without
// a default is set in env (a missing secret would otherwise expand to "").
func parseConfig(t *testing.T, name string, data []byte, env map[string]string) *config.Config {
	t.Helper()
	ref := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, m := range ref.FindAllStringSubmatch(line, -1) {
			if m[2] == "" {
				assertf(t, env[m[1]] != "", "%s:%d references ${%s}, which the environment of the container does not set", name, i+1, m[1])
			}
		}
	}
	cfg, err := config.Parse(name, data, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	require.NoError(t, err, "%s does not pass config.Parse", name)
	for cmd, listen := range components {
		host, _, err := net.SplitHostPort(listen(cfg))
		require.NoError(t, err)
		assertf(t, host == "0.0.0.0" || host == "" || host == "::", "%s: %s listens on %q; in a container it must listen on all interfaces", name, cmd, listen(cfg))
	}
	return cfg
}

// ---- Dockerfile ----------------------------------------------------------

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	res, err := parser.Parse(bytes.NewReader(data))
	require.NoError(t, err, "the Dockerfile does not parse")
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile warning: %s (line %d)", w.Short, w.Location)
	}

	type stage struct {
		from, name string
		instr      []*parser.Node
	}
	var stages []*stage
	var cur *stage
	for _, n := range res.AST.Children {
		cmd := strings.ToLower(n.Value)
		if cmd == "from" {
			cur = &stage{from: n.Next.Value}
			if n.Next.Next != nil && strings.EqualFold(n.Next.Next.Value, "as") && n.Next.Next.Next != nil {
				cur.name = n.Next.Next.Next.Value
			}
			stages = append(stages, cur)
			continue
		}
		if cur == nil {
			require.Equal(t, "arg", cmd, "line %d: only ARG may come before the first FROM", n.StartLine)
			continue
		}
		cur.instr = append(cur.instr, n)
		if cmd == "add" {
			for a := n.Next; a != nil; a = a.Next {
				assertf(t, !strings.Contains(a.Value, "://"), "line %d: ADD of a remote URL (%s); download in a RUN with a checksum instead", n.StartLine, a.Value)
			}
			t.Errorf("line %d: use COPY, not ADD", n.StartLine)
		}
	}
	require.GreaterOrEqual(t, len(stages), 2, "a multi-stage build: a Go builder and a small runtime stage")

	build := stages[0]
	require.True(t, strings.HasPrefix(build.from, "golang:"), "the builder stage starts from the golang image; got %s", build.from)
	args := map[string]string{}
	for _, n := range res.AST.Children {
		if strings.EqualFold(n.Value, "arg") {
			k, v, _ := strings.Cut(n.Next.Value, "=")
			args[k] = v
		}
	}
	goVersion := strings.NewReplacer("${GO_VERSION}", args["GO_VERSION"], "$GO_VERSION", args["GO_VERSION"]).Replace(strings.TrimPrefix(build.from, "golang:"))
	modGo := goDirective(t)
	assertf(t, strings.HasPrefix(modGo, goVersion), "the builder uses Go %s but go.mod says go %s", goVersion, modGo)

	var buildRun string
	for _, n := range build.instr {
		if strings.EqualFold(n.Value, "run") && strings.Contains(n.Original, "go build") {
			buildRun = n.Original
		}
	}
	require.NotEmpty(t, buildRun, "the builder stage runs go build")
	require.Contains(t, buildRun, "CGO_ENABLED=0", "a static binary: the runtime image has no libc")
	require.Contains(t, buildRun, "./cmd/tandem")
	// The linker variables must exist in package main, or -X does nothing.
	mainSrc, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "tandem", "main.go"))
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`-X main\.(\w+)=`).FindAllStringSubmatch(buildRun, -1) {
		require.Regexp(t, `(?m)^\s*`+m[1]+`\s+=`, string(mainSrc), "-X main.%s: cmd/tandem has no such variable", m[1])
	}

	final := stages[len(stages)-1]
	require.Regexp(t, `^(gcr\.io/distroless/static(-debian\d+)?(:[\w.-]+)?|scratch)$`, final.from, "the runtime stage is distroless/static or scratch")
	var user, entrypoint string
	env := map[string]string{}
	copiedBinary := false
	for _, n := range final.instr {
		switch strings.ToLower(n.Value) {
		case "user":
			user = n.Next.Value
		case "entrypoint":
			require.True(t, n.Attributes["json"], "ENTRYPOINT in exec (JSON) form, so signals reach tandem")
			var parts []string
			for a := n.Next; a != nil; a = a.Next {
				parts = append(parts, a.Value)
			}
			entrypoint = strings.Join(parts, " ")
		case "env":
			for a := n.Next; a != nil && a.Next != nil; a = a.Next.Next.Next {
				env[a.Value] = a.Next.Value
				if a.Next.Next == nil {
					break
				}
			}
		case "copy":
			if flagsContain(n.Flags, "--from="+build.name) && strings.Contains(n.Original, "/tandem") {
				copiedBinary = true
			}
		case "run":
			t.Errorf("line %d: the runtime image has no shell; no RUN in the final stage", n.StartLine)
		}
	}
	require.True(t, copiedBinary, "the final stage copies the binary from the builder stage %q", build.name)
	require.Equal(t, "/tandem", entrypoint)
	require.NotEmpty(t, user, "the runtime stage sets USER")
	uid, _, _ := strings.Cut(user, ":")
	require.NotContains(t, []string{"root", "0"}, uid, "USER must not be root")
	_, err = strconv.Atoi(uid)
	require.NoError(t, err, "USER numeric (%s), so Kubernetes' runAsNonRoot can check it", user)
	require.Equal(t, "/etc/tandem/tandem.yaml", env["TANDEM_CONFIG"], "TANDEM_CONFIG points at the mounted configuration")
	mainGo := string(mainSrc)
	require.Contains(t, mainGo, `"TANDEM_CONFIG"`, "cmd/tandem reads TANDEM_CONFIG")
}

func flagsContain(flags []string, want string) bool {
	return slices.Contains(flags, want)
}

func goDirective(t *testing.T) string {
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^go (\S+)`).FindStringSubmatch(string(data))
	require.NotNil(t, m)
	return m[1]
}

// TestDockerignore checks that the build context keeps everything the
// build needs: go.mod, go.sum and every package ./cmd/tandem imports from
// this module, and that it leaves out the repository's history and local
// state.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	require.NoError(t, err)
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	require.NoError(t, err)
	pm, err := patternmatcher.New(patterns)
	require.NoError(t, err)
	ignored := func(p string) bool {
		ok, err := pm.MatchesOrParentMatches(filepath.ToSlash(p))
		require.NoError(t, err)
		return ok
	}
	for _, p := range []string{".git", ".tandem", "bin", "tandem"} {
		assertf(t, ignored(p), ".dockerignore should leave out %s", p)
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/tandem/main.go"} {
		assertf(t, !ignored(p), ".dockerignore leaves out %s, which the build needs", p)
	}
	// Every non-test Go file of every directory with Go code (other than
	// this one) goes into the context, and so does anything it embeds.
	err = filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".tandem", "testdata", "node_modules", "deploy":
				if rel != "." {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		assertf(t, !ignored(rel), ".dockerignore leaves out %s, which go build needs", rel)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`(?m)^//go:embed (.+)$`).FindAllStringSubmatch(string(src), -1) {
			for _, pat := range strings.Fields(m[1]) {
				pat = strings.TrimPrefix(pat, "all:")
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), pat))
				for _, e := range matches {
					r, _ := filepath.Rel(repoRoot, e)
					assertf(t, !ignored(r), ".dockerignore leaves out %s, which %s embeds", r, rel)
				}
			}
		}
		return nil
	})
	require.NoError(t, err)
}

// ---- compose -------------------------------------------------------------

func loadCompose(t *testing.T) (*composetypes.Project, map[string]string) {
	t.Helper()
	dir := filepath.Join(repoRoot, "deploy", "compose")
	env, err := dotenv.Read(filepath.Join(dir, ".env.example"))
	require.NoError(t, err)
	abs, err := filepath.Abs(dir)
	require.NoError(t, err)
	p, err := loader.LoadWithContext(context.Background(), composetypes.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []composetypes.ConfigFile{{Filename: filepath.Join(abs, "compose.yaml")}},
		Environment: env,
	}, func(o *loader.Options) {
		o.SetProjectName("tandem", true)
		o.Profiles = []string{"*"}
	})
	require.NoError(t, err, "compose-go refuses deploy/compose/compose.yaml")
	return p, env
}

func TestCompose(t *testing.T) {
	p, dotEnv := loadCompose(t)
	cli := tandemCLI(t)

	// Every required secret is interpolated with :? so compose stops with
	// a message when .env lacks it: loading without .env must fail.
	abs, _ := filepath.Abs(filepath.Join(repoRoot, "deploy", "compose"))
	_, err := loader.LoadWithContext(context.Background(), composetypes.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []composetypes.ConfigFile{{Filename: filepath.Join(abs, "compose.yaml")}},
		Environment: map[string]string{},
	}, func(o *loader.Options) { o.SetProjectName("tandem", true) })
	require.Error(t, err, "compose.yaml must refuse to start without the secrets of .env")

	for _, name := range []string{"kafka", "clickhouse", "minio", "migrate", "ingest", "speed", "archive", "serve", "batch", "export"} {
		require.Contains(t, p.Services, name)
	}
	require.True(t, strings.HasPrefix(p.Services["kafka"].Image, "apache/kafka:"), "official Apache Kafka image")
	require.Equal(t, "broker,controller", deref(p.Services["kafka"].Environment["KAFKA_PROCESS_ROLES"]), "KRaft, no ZooKeeper")
	require.True(t, strings.HasPrefix(p.Services["clickhouse"].Image, "clickhouse/clickhouse-server:"))
	require.True(t, strings.HasPrefix(p.Services["minio"].Image, "minio/minio:"))

	// The configuration each tandem container mounts, parsed with the
	// environment that container gets.
	var cfg *config.Config
	tandemImage := p.Services["ingest"].Image
	for name, svc := range p.Services {
		if svc.Image != tandemImage {
			continue
		}
		where := "compose service " + name
		env := map[string]string{}
		for k, v := range svc.Environment {
			env[k] = deref(v)
		}
		require.Equal(t, "/etc/tandem/tandem.yaml", env["TANDEM_CONFIG"], where)
		// .env.example's secrets work as they are, so tandem refuses them
		// at start-up, naming each; the rest of the test uses real ones.
		var placeholders []string
		for k, v := range env {
			if schemas.IsPlaceholderSecret(v) {
				placeholders = append(placeholders, k)
				env[k] = "secret-of-the-test-" + strings.ToLower(k)
			}
		}
		var mounted string
		for _, v := range svc.Volumes {
			if v.Target == "/etc/tandem/tandem.yaml" {
				mounted = v.Source
				require.True(t, v.ReadOnly, "%s mounts the configuration read-only", where)
			}
		}
		require.NotEmpty(t, mounted, "%s mounts tandem.yaml at /etc/tandem/tandem.yaml", where)
		// The root file system is read-only: /tmp must be writable, by a
		// tmpfs or a volume, never both (docker refuses duplicate mounts).
		if assertf(t, svc.ReadOnly, "%s: read_only root file system", where) {
			targets := map[string]int{}
			for _, v := range svc.Volumes {
				targets[v.Target]++
			}
			for _, tm := range svc.Tmpfs {
				targets[tm]++
			}
			assertf(t, targets["/tmp"] == 1, "%s: exactly one writable mount at /tmp; got %d", where, targets["/tmp"])
		}
		data, err := os.ReadFile(mounted)
		require.NoError(t, err)
		if len(placeholders) > 0 {
			_, err := config.Parse(mounted, data, func(k string) (string, bool) {
				v, ok := env[k]
				if slices.Contains(placeholders, k) {
					v = deref(svc.Environment[k])
				}
				return v, ok
			})
			require.Error(t, err, "%s: tandem must refuse the example secrets of .env.example", where)
			for _, key := range []string{"clickhouse.password", "s3.secret_key", "auth.ingest_tokens[0]", "auth.query_tokens[0]"} {
				require.Contains(t, err.Error(), key+" is still the example value", where)
			}
		}
		c := parseConfig(t, mounted, data, env)
		if cfg == nil {
			cfg = c
		}
		require.NotNil(t, svc.Build, "%s: `docker compose build` builds the tandem image", where)
		dockerfile := filepath.Join(svc.Build.Context, svc.Build.Dockerfile)
		_, err = os.Stat(dockerfile)
		require.NoError(t, err, "%s builds from %s", where, dockerfile)

		cmd := checkArgs(t, cli, where, svc.Command)
		require.Equal(t, name, cmd, "%s runs `tandem %s`", where, name)
		listen, long := components[cmd]
		if !long {
			require.Contains(t, []string{"no", ""}, svc.Restart, "%s is a one-shot job", where)
			continue
		}
		port := listenPort(t, listen(c))
		var published bool
		for _, pc := range svc.Ports {
			if int(pc.Target) == port {
				published = true
			}
			require.Equal(t, port, int(pc.Target), "%s publishes container port %d, but %s listens on %d", where, pc.Target, cmd, port)
		}
		require.True(t, published, "%s publishes its port %d", where, port)
		require.NotNil(t, svc.HealthCheck, "%s has a health check", where)
		require.Equal(t, []string{"CMD", "/tandem", "probe", fmt.Sprintf("http://127.0.0.1:%d/readyz", port)}, []string(svc.HealthCheck.Test),
			"%s checks /readyz on its own port", where)
		require.Contains(t, cli.flags, "probe", "the health check runs `tandem probe`")
		for dep, d := range svc.DependsOn {
			require.Contains(t, p.Services, dep)
			if p.Services[dep].HealthCheck == nil {
				require.Equal(t, composetypes.ServiceConditionCompletedSuccessfully, d.Condition, "%s waits for %s", where, dep)
			} else {
				require.Equal(t, composetypes.ServiceConditionHealthy, d.Condition, "%s waits for %s to be healthy", where, dep)
			}
		}
	}
	require.NotNil(t, cfg)

	// The configuration names the compose services and their ports.
	require.Equal(t, []string{"kafka:9092"}, cfg.Kafka.Brokers)
	require.Contains(t, deref(p.Services["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"]), "PLAINTEXT://kafka:9092")
	require.Equal(t, "clickhouse:9000", cfg.ClickHouse.Addr)
	require.Equal(t, "minio:9000", cfg.S3.Endpoint)
	require.Equal(t, dotEnv["S3_ACCESS_KEY"], cfg.S3.AccessKey)
	// ClickHouse is published on the host's loopback only, the read-write
	// tandem user is accepted from the compose network only, and the
	// server refuses to start with .env.example's passwords.
	for _, pc := range p.Services["clickhouse"].Ports {
		require.Equal(t, "127.0.0.1", pc.HostIP, "ClickHouse port %d is published on 127.0.0.1 only", pc.Target)
	}
	subnet := deref(p.Services["clickhouse"].Environment["TANDEM_SUBNET"])
	require.NotEmpty(t, subnet)
	require.Equal(t, subnet, p.Networks["default"].Ipam.Config[0].Subnet, "users.xml's network is the compose network")
	entry := strings.Join(p.Services["clickhouse"].Entrypoint, " ")
	for _, v := range []string{"CLICKHOUSE_PASSWORD", "CLICKHOUSE_ANALYST_PASSWORD"} {
		require.Contains(t, entry, `case "$`+v+`" in change-me*)`)
		require.True(t, schemas.IsPlaceholderSecret(dotEnv[v]), "the check matches .env.example's %s", v)
	}
	require.Equal(t, dotEnv["S3_ACCESS_KEY"], deref(p.Services["minio"].Environment["MINIO_ROOT_USER"]), "tandem uses MinIO's credentials")
	require.Equal(t, dotEnv["S3_SECRET_KEY"], deref(p.Services["minio"].Environment["MINIO_ROOT_PASSWORD"]))
	require.NotEmpty(t, cfg.Auth.IngestTokens[0], "published ports need tokens")
	require.NotEmpty(t, cfg.Auth.QueryTokens[0])

	// The ClickHouse users file declares tandem's user and the analyst
	// with passwords from the environment the clickhouse service gets.
	users, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "compose", "clickhouse", "users.xml"))
	require.NoError(t, err)
	require.Contains(t, string(users), "<"+cfg.ClickHouse.Username+">")
	require.Regexp(t, `<`+cfg.ClickHouse.Username+`>[^!]*<networks><ip from_env="TANDEM_SUBNET"/></networks>`, string(users),
		"the tandem user is accepted from the compose network only")
	require.NotContains(t, strings.Split(string(users), "<analyst>")[0], "::/0")
	require.Contains(t, string(users), "<"+cfg.ClickHouse.AnalystUser+">")
	for _, m := range regexp.MustCompile(`from_env="(\w+)"`).FindAllStringSubmatch(string(users), -1) {
		require.NotEmpty(t, deref(p.Services["clickhouse"].Environment[m[1]]), "the clickhouse service sets %s for users.xml", m[1])
	}
	require.Equal(t, "secret-of-the-test-clickhouse_password", cfg.ClickHouse.Password, "clickhouse.password is CLICKHOUSE_PASSWORD (replaced above, being .env.example's placeholder)")

	// .env holds the secrets and is never committed.
	ignore, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "compose", ".gitignore"))
	require.NoError(t, err)
	require.Contains(t, strings.Fields(string(ignore)), ".env")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ---- Prometheus rules ----------------------------------------------------

func loadRules(t *testing.T) (*rulefmt.RuleGroups, []byte) {
	t.Helper()
	path := filepath.Join(repoRoot, "deploy", "observability", "prometheus-rules.yaml")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	groups, errs := rulefmt.Parse(data, false, model.UTF8Validation, promql.NewParser(promql.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.Empty(t, errs, "rulefmt refuses %s", path)
	return groups, data
}

// metricsOf returns the metric names an expression selects.
func metricsOf(t *testing.T, expr, where string) []string {
	t.Helper()
	e, err := promql.NewParser(promql.Options{}).ParseExpr(expr)
	require.NoError(t, err, "%s: %q does not parse", where, expr)
	var out []string
	promql.Inspect(e, func(n promql.Node, _ []promql.Node) error {
		if vs, ok := n.(*promql.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == model.MetricNameLabel {
						name = m.Value
					}
				}
			}
			out = append(out, name)
		}
		return nil
	})
	return out
}

var runbookAnchor = regexp.MustCompile(`docs/operations\.md#([a-z0-9-]+)$`)

func TestPrometheusRules(t *testing.T) {
	groups, _ := loadRules(t)
	exported := exportedMetrics(t)
	checks := healthChecks(t)
	anchors := docAnchors(t)
	seen := map[string]bool{}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			where := fmt.Sprintf("rule %s/%s", g.Name, r.Alert)
			require.NotEmpty(t, r.Alert, "%s: only alerting rules here", where)
			require.False(t, seen[r.Alert], "%s: duplicate alert name", where)
			seen[r.Alert] = true
			require.Contains(t, []string{"critical", "warning"}, r.Labels["severity"], "%s: severity", where)
			require.NotEmpty(t, r.Annotations["summary"], where)
			metrics := metricsOf(t, r.Expr, where)
			require.NotEmpty(t, metrics, "%s selects no metric", where)
			for _, m := range metrics {
				checkMetricKnown(t, exported, m, where)
			}
			if checks != nil {
				assertf(t, checks[r.Labels["check"]], "%s: check %q is not a check of the health report (status.CheckNames)", where, r.Labels["check"])
			}
			m := runbookAnchor.FindStringSubmatch(r.Annotations["runbook_url"])
			if assertf(t, m != nil, "%s: runbook_url must point into docs/operations.md", where) {
				assertf(t, anchors[m[1]], "%s: docs/operations.md has no section #%s", where, m[1])
			}
		}
	}
	// Every red condition of the health report (docs/status.md) has a rule.
	for _, c := range []string{
		"ingest.reject_ratio", "ingest.produce_failure_ratio", "ingest.produce_latency_p99_seconds",
		"kafka.speed_lag_messages", "speed.stalled_partitions", "speed.freshness_seconds",
		"clickhouse.insert_error_ratio", "s3.error_ratio", "batch.last_run_age_seconds",
		"serve.error_ratio", "serve.query_latency_p99_seconds", "security.auth_failures_per_minute",
	} {
		found := false
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				found = found || r.Labels["check"] == c
			}
		}
		assertf(t, found, "no alert for the red verdict of %s", c)
	}
	require.Greater(t, n, 15)
}

// docAnchors returns the GitHub anchors of docs/operations.md's headings.
func docAnchors(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Errorf("docs/operations.md: %v", err)
		return map[string]bool{}
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+)$`).FindAllStringSubmatch(string(data), -1) {
		out[githubAnchor(m[1])] = true
	}
	return out
}

func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// ---- Grafana dashboard -----------------------------------------------------

// grafanaVars replaces Grafana's template variables with values PromQL
// accepts, so panel queries can be parsed.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "${__rate_interval}", "5m",
	"$__interval", "1m", "${__interval}", "1m",
	"$__range", "1h", "${__range}", "1h",
)

var grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*(:\w+)?\}?`)

func TestGrafanaDashboard(t *testing.T) {
	path := filepath.Join(repoRoot, "deploy", "observability", "grafana-dashboard.json")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var dash struct {
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []grafanaPanel `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	require.NoError(t, dec.Decode(&dash), "%s is not valid JSON", path)
	require.NotEmpty(t, dash.Title)
	require.NotEmpty(t, dash.UID)
	require.Greater(t, dash.SchemaVersion, 30)

	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
	}
	exported := exportedMetrics(t)
	var panels []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			panels = append(panels, p)
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	ids := map[int]bool{}
	titles := map[string]bool{}
	queries := 0
	for _, p := range panels {
		require.False(t, ids[p.ID], "panel id %d is used twice", p.ID)
		ids[p.ID] = true
		titles[strings.ToLower(p.Title)] = true
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			queries++
			expr := grafanaVars.Replace(tg.Expr)
			expr = grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
				name := strings.Trim(v, "${}")
				name, _, _ = strings.Cut(name, ":")
				assertf(t, vars[name], "panel %q uses $%s, which the dashboard does not define", p.Title, name)
				return ".*"
			})
			for _, m := range metricsOf(t, expr, fmt.Sprintf("panel %q", p.Title)) {
				checkMetricKnown(t, exported, m, fmt.Sprintf("dashboard panel %q", p.Title))
			}
		}
	}
	// The questions the health report (docs/status.md) asks each have a panel.
	for _, want := range []string{"throughput", "lag", "freshness", "query latency", "errors", "batch"} {
		found := false
		for title := range titles {
			found = found || strings.Contains(title, want)
		}
		assertf(t, found, "no panel about %s", want)
	}
	require.Greater(t, queries, 15)
}

type grafanaPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}
