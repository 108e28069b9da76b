package testenv

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ClickHouse start-up limits. The Debian 18.16 server answers in well under
// a second; the generous limit covers a loaded CI machine.
const (
	clickHouseStartTimeout = 20 * time.Second
	clickHouseStopGrace    = 15 * time.Second
)

// ClickHouseServer is a clickhouse-server process dedicated to one test,
// configured from the same templates as `scripts/clickhouse.sh start`
// (deploy/local/clickhouse/*.xml): loopback only, a `default` user with no
// password and full access, and a read-only `analyst` user.
type ClickHouseServer struct {
	// Addr is the native-protocol address, "127.0.0.1:port". Use it with
	// clickhouse-go v2's native protocol; its HTTP mode does not work with
	// ClickHouse 18.16.
	Addr string
	// HTTPAddr is the HTTP interface, "127.0.0.1:port".
	HTTPAddr string
	// SecureAddr is the secure native port (tcp_port_secure) of a server
	// started by ClickHouseTLS, "127.0.0.1:port"; empty otherwise.
	SecureAddr string
	// Database is the database name tests should use for tandem's tables
	// ("tandem"). It is not created: tandem's migrations create it, and a
	// test that needs it without migrating can CREATE DATABASE itself.
	Database string
	// Username and Password of the full-access user.
	Username, Password string
	// AnalystUser and AnalystPassword of the read-only (readonly=1) user.
	AnalystUser, AnalystPassword string
	// DataDir holds the rendered config, the data and the logs (log/).
	DataDir string

	t          testing.TB
	serverArgv []string // binary (and "server" for the multi-call binary)
	tcpPort    int
	httpPort   int
	securePort int
	certs      *Certs // TLS certificates; nil: no secure port
	proc       *process
	// clusterXML is the rendered config.d/cluster.xml of a server of a
	// ClickHouseShards cluster; "" for a lone server.
	clusterXML string
	// zooKeeperXML is config.d/zookeeper.xml (the ZooKeeper and the
	// macros) of a server of a replicated cluster; "" otherwise.
	zooKeeperXML string
}

// ClickHouse starts a dedicated ClickHouse server for the test on free
// loopback ports with its data in a t.TempDir(), waits until it answers, and
// kills it when the test ends. It takes about a quarter of a second, so each
// test (or test package) can have its own.
//
// It fails the test when clickhouse-server is not installed; run
// `make deps` or `scripts/clickhouse.sh install`.
func ClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	return startClickHouse(t, nil)
}

// ClickHouseTLS is ClickHouse with the secure native port on too, serving
// certs' server certificate (deploy/local/clickhouse/tls.xml). The plain
// port stays, so the test can compare both.
func ClickHouseTLS(t testing.TB, certs *Certs) *ClickHouseServer {
	t.Helper()
	return startClickHouse(t, certs)
}

func startClickHouse(t testing.TB, certs *Certs) *ClickHouseServer {
	t.Helper()
	s := newClickHouse(t, certs)
	root := RepoRoot(t)
	// FreePort releases the port before the server binds it; if another
	// process grabbed it in between, the server exits at once, and we try
	// again with new ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s.pickPorts(t)
		if err := s.render(root); err != nil {
			t.Fatalf("testenv: rendering ClickHouse config: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
		_ = s.proc.stop(syscall.SIGKILL, 5*time.Second)
	}
	t.Fatalf("testenv: ClickHouse did not start: %v", lastErr)
	return nil
}

// ClickHouseCluster is n ClickHouse servers that each know the others as
// the shards of one cluster.
type ClickHouseCluster struct {
	// Name is the cluster's name in every server's remote_servers, for
	// clickhouse.cluster.
	Name string
	// Servers are the shards, in the order of remote_servers (shard i+1).
	Servers []*ClickHouseServer
}

// ClickHouseShards starts n dedicated ClickHouse servers on free loopback
// ports, each with config.d/cluster.xml rendered from
// deploy/local/clickhouse/cluster.xml (the template scripts/clickhouse.sh
// renders for TANDEM_CH_SHARDS): a cluster named "tandem_test" of n
// shards, one server each. They are killed when the test ends.
func ClickHouseShards(t testing.TB, n int) *ClickHouseCluster {
	t.Helper()
	return startCluster(t, n, 1, nil)
}

// ClickHouseReplicatedShards starts shards × replicas servers as the
// cluster "tandem_test" whose shards each have `replicas` servers
// (internal_replication: a Distributed insert writes one replica, the
// Replicated tables copy it), all on the ZooKeeper zk, each with the
// macros {shard} (1…shards) and {replica} (s<shard>r<replica>). Servers
// lists them shard by shard.
func ClickHouseReplicatedShards(t testing.TB, shards, replicas int, zk *ZooKeeperServer) *ClickHouseCluster {
	t.Helper()
	return startCluster(t, shards, replicas, zk)
}

func startCluster(t testing.TB, shards, replicas int, zk *ZooKeeperServer) *ClickHouseCluster {
	t.Helper()
	root := RepoRoot(t)
	tmpl, err := os.ReadFile(filepath.Join(root, "deploy", "local", "clickhouse", "cluster.xml"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := &ClickHouseCluster{Name: "tandem_test"}
	for i := 0; i < shards*replicas; i++ {
		c.Servers = append(c.Servers, newClickHouse(t, nil))
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		var xml strings.Builder
		for i := 0; i < shards; i++ {
			xml.WriteString("            <shard>")
			if replicas > 1 {
				xml.WriteString("<internal_replication>true</internal_replication>")
			}
			for r := 0; r < replicas; r++ {
				s := c.Servers[i*replicas+r]
				s.pickPorts(t)
				fmt.Fprintf(&xml, "<replica><host>127.0.0.1</host><port>%d</port></replica>", s.tcpPort)
			}
			xml.WriteString("</shard>\n")
		}
		clusterXML := strings.NewReplacer("@CLUSTER@", c.Name, "@SHARDS@", strings.TrimSuffix(xml.String(), "\n")).Replace(string(tmpl))
		lastErr = nil
		for i, s := range c.Servers {
			s.clusterXML = clusterXML
			if zk != nil {
				// Replicas fetch parts from each other over the interserver
				// HTTP port; without it a replica never turns active.
				s.zooKeeperXML = fmt.Sprintf("<?xml version=\"1.0\"?>\n<yandex>\n    <zookeeper><node><host>127.0.0.1</host><port>%d</port></node></zookeeper>\n"+
					"    <macros><shard>%d</shard><replica>s%dr%d</replica></macros>\n"+
					"    <interserver_http_host>127.0.0.1</interserver_http_host>\n    <interserver_http_port>%d</interserver_http_port>\n</yandex>\n",
					zk.Port, i/replicas+1, i/replicas+1, i%replicas+1, FreePort(t))
			}
			if err := s.render(root); err != nil {
				t.Fatalf("testenv: rendering ClickHouse config: %v", err)
			}
			if lastErr = s.start(); lastErr != nil {
				break
			}
		}
		if lastErr == nil {
			return c
		}
		for _, s := range c.Servers {
			_ = s.proc.stop(syscall.SIGKILL, 5*time.Second)
		}
	}
	t.Fatalf("testenv: the ClickHouse cluster did not start: %v", lastErr)
	return nil
}

// pickPorts chooses free loopback ports for the server.
func (s *ClickHouseServer) pickPorts(t testing.TB) {
	s.tcpPort, s.httpPort = FreePort(t), FreePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort))
	s.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.httpPort))
	if s.certs != nil {
		s.securePort = FreePort(t)
		s.SecureAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.securePort))
	}
}

// newClickHouse prepares a server's data dir and clean-up; it does not
// start it.
func newClickHouse(t testing.TB, certs *Certs) *ClickHouseServer {
	t.Helper()
	argv, err := clickHouseServerArgv()
	if err != nil {
		missing(t, "%v; install it with `make deps` or `scripts/clickhouse.sh install`", err)
	}
	dir := t.TempDir() // registered before the kill below, so removed after it
	s := &ClickHouseServer{
		Database:        "tandem",
		Username:        "default",
		AnalystUser:     "analyst",
		AnalystPassword: "analyst",
		DataDir:         dir,
		certs:           certs,
		t:               t,
		serverArgv:      argv,
		proc:            &process{name: "clickhouse-server", logPath: filepath.Join(dir, "log", "stdout.log")},
	}
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Test data dirs are thrown away, so a hard kill is the fastest cleanup.
	t.Cleanup(func() { _ = s.proc.stop(syscall.SIGKILL, 5*time.Second) })
	return s
}

// clickHouseServerArgv finds the server binary. Debian's package has a
// clickhouse-server binary in /usr/sbin (not on every user's PATH);
// upstream packages have one multi-call `clickhouse` binary.
func clickHouseServerArgv() ([]string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return []string{p}, nil
	}
	if _, err := os.Stat("/usr/sbin/clickhouse-server"); err == nil {
		return []string{"/usr/sbin/clickhouse-server"}, nil
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return []string{p, "server"}, nil
	}
	return nil, fmt.Errorf("clickhouse-server is not installed (looked for clickhouse-server on PATH, /usr/sbin/clickhouse-server, and clickhouse on PATH)")
}

// render writes config.xml and users.xml into the data dir from the
// templates shared with scripts/clickhouse.sh.
func (s *ClickHouseServer) render(root string) error {
	r := strings.NewReplacer(
		"@DATA_DIR@", xmlEscape(s.DataDir+"/"),
		"@TCP_PORT@", strconv.Itoa(s.tcpPort),
		"@HTTP_PORT@", strconv.Itoa(s.httpPort),
		"@LISTEN_HOST@", "127.0.0.1",
		"@ANALYST_PASSWORD@", xmlEscape(s.AnalystPassword),
		"@TCP_PORT_SECURE@", strconv.Itoa(s.securePort),
	)
	if s.certs != nil {
		tmpl, err := os.ReadFile(filepath.Join(root, "deploy", "local", "clickhouse", "tls.xml"))
		if err != nil {
			return err
		}
		tr := strings.NewReplacer("@CERT_FILE@", xmlEscape(s.certs.CertFile), "@KEY_FILE@", xmlEscape(s.certs.KeyFile))
		if err := os.MkdirAll(filepath.Join(s.DataDir, "config.d"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.DataDir, "config.d", "tls.xml"), []byte(tr.Replace(r.Replace(string(tmpl)))), 0o644); err != nil {
			return err
		}
	}
	if s.zooKeeperXML != "" {
		// A replicated cluster: tandem reads and writes the first healthy
		// replica of each shard (docs/operations.md).
		if err := os.MkdirAll(filepath.Join(s.DataDir, "users.d"), 0o755); err != nil {
			return err
		}
		profile := "<?xml version=\"1.0\"?>\n<yandex><profiles><default>\n    <load_balancing>in_order</load_balancing>\n    <prefer_localhost_replica>0</prefer_localhost_replica>\n</default></profiles></yandex>\n"
		if err := os.WriteFile(filepath.Join(s.DataDir, "users.d", "replicas.xml"), []byte(profile), 0o644); err != nil {
			return err
		}
	}
	for name, text := range map[string]string{"cluster.xml": s.clusterXML, "zookeeper.xml": s.zooKeeperXML} {
		if text == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(s.DataDir, "config.d"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.DataDir, "config.d", name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	for _, name := range []string{"config.xml", "users.xml"} {
		tmpl, err := os.ReadFile(filepath.Join(root, "deploy", "local", "clickhouse", name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.DataDir, name), []byte(r.Replace(string(tmpl))), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// start runs the server in the foreground (as our child, not daemonized) and
// waits until it answers a ping over the native protocol.
func (s *ClickHouseServer) start() error {
	argv := append(append([]string(nil), s.serverArgv...), "--config-file="+filepath.Join(s.DataDir, "config.xml"))
	if err := s.proc.start(argv, nil, s.DataDir); err != nil {
		return err
	}
	deadline := time.Now().Add(clickHouseStartTimeout)
	for {
		if exited, err := s.proc.hasExited(); exited {
			return fmt.Errorf("clickhouse-server exited during start-up (%v)\n%s\n%s", err,
				tail(filepath.Join(s.DataDir, "log", "clickhouse-server.err.log"), 15), tail(s.proc.logPath, 15))
		}
		if err := s.ping(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("clickhouse-server on %s did not answer within %s: %v\n%s", s.Addr, clickHouseStartTimeout, err,
				tail(filepath.Join(s.DataDir, "log", "clickhouse-server.err.log"), 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *ClickHouseServer) ping() error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{s.Addr},
		Auth:        clickhouse.Auth{Database: "default", Username: s.Username, Password: s.Password},
		DialTimeout: time.Second,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return conn.Ping(ctx)
}

// Stop shuts the server down gracefully (SIGTERM, killed after 15 s), to
// simulate a ClickHouse outage. The port stays reserved for Start only by
// convention: nothing else in the test should bind it.
func (s *ClickHouseServer) Stop() {
	s.t.Helper()
	if err := s.proc.stop(syscall.SIGTERM, clickHouseStopGrace); err != nil {
		s.t.Logf("testenv: %v", err)
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *ClickHouseServer) Kill() {
	s.t.Helper()
	_ = s.proc.stop(syscall.SIGKILL, 5*time.Second)
}

// Start starts a stopped server again on the same ports and data dir, and
// waits until it answers. It fails the test when the server does not come
// back (for example when its port was taken meanwhile).
func (s *ClickHouseServer) Start() {
	s.t.Helper()
	if s.proc.running() != nil {
		s.t.Fatalf("testenv: ClickHouse.Start: the server at %s is already running", s.Addr)
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("testenv: restarting ClickHouse on %s: %v", s.Addr, err)
	}
}

// Options returns clickhouse-go options for the full-access user on the
// native protocol, with database "default" (tandem's database may not exist
// yet). Adjust and pass to clickhouse.Open.
func (s *ClickHouseServer) Options() *clickhouse.Options {
	return &clickhouse.Options{
		Addr:        []string{s.Addr},
		Auth:        clickhouse.Auth{Database: "default", Username: s.Username, Password: s.Password},
		DialTimeout: 5 * time.Second,
	}
}

// Conn opens a native-protocol connection as the full-access user and
// closes it when the test ends.
func (s *ClickHouseServer) Conn(t testing.TB) driver.Conn {
	t.Helper()
	return openClickHouse(t, s.Options())
}

// AnalystConn opens a native-protocol connection as the read-only analyst
// user and closes it when the test ends.
func (s *ClickHouseServer) AnalystConn(t testing.TB) driver.Conn {
	t.Helper()
	o := s.Options()
	o.Auth.Username, o.Auth.Password = s.AnalystUser, s.AnalystPassword
	return openClickHouse(t, o)
}

// QueryStrings returns the first column of a query's rows as strings.
func QueryStrings(t testing.TB, conn driver.Conn, sql string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("testenv: %s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("testenv: %s: %v", sql, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("testenv: %s: %v", sql, err)
	}
	return out
}

func openClickHouse(t testing.TB, o *clickhouse.Options) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(o)
	if err != nil {
		t.Fatalf("testenv: connecting to ClickHouse at %v: %v", o.Addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
