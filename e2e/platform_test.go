package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// Names in the configuration every e2e test uses (tandem.example.yaml's
// stream and view on a test-unique topic).
const (
	streamName = "pageviews"
	viewName   = "pageviews_by_country"
	partitions = 6
)

// platformOptions shape one platform. Zero values are the defaults below.
type platformOptions struct {
	chunkSize        int64  // default 500
	maxBodyBytes     int64  // ingest.max_body_bytes, default 8 MiB
	maxInflightBytes int64  // ingest.max_inflight_bytes, default 64 MiB
	produceTimeout   string // ingest.produce_timeout, default 5s
	lockTTL          string // batch.lock_ttl, default 10s
	maxFileAge       string // archive.max_file_age, default 1s
	kafkaInMemory    bool
	ingestExtra      string // more ingest keys, each with a leading ", "
	serveExtra       string // more serve keys, each with a leading ", "
	auth             string // the auth section's flow mapping; default none
	// shards > 0 runs ClickHouse as that many servers, the shards of one
	// cluster (clickhouse.cluster); p.ch is the first, which every
	// component connects to.
	shards int
}

// platform is one deployment of tandem for a test: the three services and
// the configuration every `tandem` process of the test reads.
type platform struct {
	t       *testing.T
	bin     string
	dir     string
	ch      *testenv.ClickHouseServer
	cluster *testenv.ClickHouseCluster // nil without platformOptions.shards
	kafka   *testenv.KafkaCluster
	s3      *testenv.S3Server
	cfgPath string
	cfg     *schemas.Config
	topic   string

	ingestURL, serveURL, speedURL, archiveURL string

	// env adds environment variables to a component's processes.
	env map[string][]string

	mu    sync.Mutex
	procs map[string]*proc
}

// newPlatform starts ClickHouse, the broker and MinIO and writes the
// configuration. Components are started by the test (start).
func newPlatform(t *testing.T, o platformOptions) *platform {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: starts ClickHouse, Kafka, MinIO and tandem processes")
	}
	if o.chunkSize == 0 {
		o.chunkSize = 500
	}
	if o.maxBodyBytes == 0 {
		o.maxBodyBytes = 8 << 20
	}
	if o.maxInflightBytes == 0 {
		o.maxInflightBytes = 64 << 20
	}
	if o.produceTimeout == "" {
		o.produceTimeout = "5s"
	}
	if o.lockTTL == "" {
		o.lockTTL = "10s"
	}
	if o.maxFileAge == "" {
		o.maxFileAge = "1s"
	}
	if o.auth == "" {
		o.auth = "{}"
	}
	p := &platform{t: t, dir: t.TempDir(), procs: map[string]*proc{}, env: map[string][]string{}}
	p.bin = testenv.BuildTandem(t)
	clusterKey := ""
	if o.shards > 0 {
		p.cluster = testenv.ClickHouseShards(t, o.shards)
		p.ch = p.cluster.Servers[0]
		clusterKey = fmt.Sprintf(", cluster: %s", p.cluster.Name)
	} else {
		p.ch = testenv.ClickHouse(t)
	}
	p.kafka = testenv.KafkaWith(t, testenv.KafkaOptions{InMemory: o.kafkaInMemory})
	p.s3 = testenv.MinIO(t)
	p.topic = testenv.UniqueName(t, "tandem.pv")
	group := testenv.UniqueName(t, "tandem")
	port := func() string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) }
	ingest, serve, speed, archive := port(), port(), port(), port()
	p.ingestURL, p.serveURL, p.speedURL, p.archiveURL = "http://"+ingest, "http://"+serve, "http://"+speed, "http://"+archive

	text := fmt.Sprintf(`kafka:      { brokers: [%s], group_prefix: %q }
clickhouse: { addr: %q, database: %s, username: %s, password: %q, analyst_user: %s%s }
s3:         { endpoint: %q, bucket: %s, access_key: %q, secret_key: %q, secure: false }
ingest:     { listen: %q, max_body_bytes: %d, max_inflight_bytes: %d, max_future_skew: 1h, produce_timeout: %s%s }
serve:      { listen: %q, manifest_poll: 500ms%s }
auth:       %s
speed:      { listen: %q, flush_interval: 200ms, session_timeout: 6s }
archive:    { listen: %q, max_file_bytes: 1048576, max_file_age: %s }
batch:      { every: 0, lock_ttl: %s, keep_runs: 3 }
chunk_size: %d
`,
		quoteList(p.kafka.Brokers), group,
		p.ch.Addr, p.ch.Database, p.ch.Username, p.ch.Password, p.ch.AnalystUser, clusterKey,
		p.s3.Endpoint, p.s3.Bucket, p.s3.AccessKey, p.s3.SecretKey,
		ingest, o.maxBodyBytes, o.maxInflightBytes, o.produceTimeout, o.ingestExtra,
		serve, o.serveExtra, o.auth, speed, archive, o.maxFileAge, o.lockTTL, o.chunkSize,
	) + testenv.ExampleStreamsYAML(t, "topic: tandem.pageviews", "topic: "+p.topic, "partitions: 6", fmt.Sprintf("partitions: %d", partitions))
	p.cfgPath = filepath.Join(p.dir, "tandem.yaml")
	require.NoError(t, os.WriteFile(p.cfgPath, []byte(text), 0o600))
	cfg, err := schemas.LoadFile(p.cfgPath)
	require.NoError(t, err, "the test's configuration must be valid")
	p.cfg = cfg
	t.Cleanup(p.stopAll)
	return p
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// componentArgs are the arguments of each long-running component.
func (p *platform) componentArgs(name string) []string {
	switch name {
	case "archive":
		return []string{"archive", "--config", p.cfgPath, "--tmp-dir", filepath.Join(p.dir, "archive-tmp"), "--session-timeout", "6s"}
	default:
		return []string{name, "--config", p.cfgPath}
	}
}

// healthURL is where a component answers /healthz and /readyz.
func (p *platform) healthURL(name string) string {
	switch name {
	case "ingest":
		return p.ingestURL
	case "serve":
		return p.serveURL
	case "speed":
		return p.speedURL
	case "archive":
		return p.archiveURL
	}
	return ""
}

// start runs the named components as processes and waits until each
// answers /readyz.
func (p *platform) start(names ...string) {
	p.t.Helper()
	for _, name := range names {
		pr := p.spawn(name)
		p.mu.Lock()
		p.procs[name] = pr
		p.mu.Unlock()
	}
	for _, name := range names {
		p.waitReady(name, 60*time.Second)
	}
}

// spawn starts one process of the named component (not waiting for it).
func (p *platform) spawn(name string) *proc {
	p.t.Helper()
	pr, err := startProc(p.bin, name, p.componentArgs(name), p.env[name], filepath.Join(p.dir, name+".log"))
	require.NoError(p.t, err)
	return pr
}

func (p *platform) proc(name string) *proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.procs[name]
}

// restart replaces the named component's process by a new one.
func (p *platform) restart(name string) *proc {
	pr := p.spawn(name)
	p.mu.Lock()
	p.procs[name] = pr
	p.mu.Unlock()
	return pr
}

// waitReady polls the component's /readyz until 200.
func (p *platform) waitReady(name string, timeout time.Duration) {
	p.t.Helper()
	pr := p.proc(name)
	deadline := time.Now().Add(timeout)
	for {
		if code, _ := httpGet(p.healthURL(name) + "/readyz"); code == http.StatusOK {
			return
		}
		if pr != nil && pr.exited() {
			p.t.Fatalf("tandem %s exited during start-up:\n%s", name, pr.tail(30))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("tandem %s was not ready within %s:\n%s", name, timeout, pr.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopAll kills every component and, when the test failed, logs their tails.
func (p *platform) stopAll() {
	p.mu.Lock()
	procs := p.procs
	p.procs = map[string]*proc{}
	p.mu.Unlock()
	for name, pr := range procs {
		pr.kill()
		if p.t.Failed() {
			p.t.Logf("log of tandem %s (last lines):\n%s", name, pr.tail(25))
		}
	}
}

// batchRun runs `tandem batch run` to completion and returns its output.
func (p *platform) batchRun(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, p.bin, "batch", "run", "--config", p.cfgPath, "--tmp", p.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// proc is one `tandem` process of a test.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	// expected is set before the test stops the process on purpose, so a
	// supervisor can tell a crash from an injected kill.
	expected atomic.Bool
}

func startProc(bin, name string, args, env []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "\n==== %s: tandem %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Killed with the test binary, so a crashed run leaves nothing behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting tandem %s: %w", name, err)
	}
	pr := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		logf.Close()
		close(pr.done)
	}()
	return pr, nil
}

func (pr *proc) pid() int { return pr.cmd.Process.Pid }

func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (pr *proc) kill() {
	if pr == nil {
		return
	}
	pr.expected.Store(true)
	_ = pr.cmd.Process.Signal(syscall.SIGKILL)
	<-pr.done
}

// term sends SIGTERM and waits up to grace for a clean exit.
func (pr *proc) term(grace time.Duration) error {
	pr.expected.Store(true)
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.done:
		return pr.err
	case <-time.After(grace):
		pr.kill()
		return fmt.Errorf("tandem %s did not exit within %s of SIGTERM", pr.name, grace)
	}
}

// tail returns the last n lines of the process's log.
func (pr *proc) tail(n int) string {
	if pr == nil {
		return "(not started)"
	}
	data, err := os.ReadFile(pr.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// httpGet returns the status and body of a GET, or 0 when it failed.
func httpGet(url string) (int, []byte) {
	res, err := httpClient.Get(url)
	if err != nil {
		return 0, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	return res.StatusCode, b
}
