package testenv

import (
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
)

// zooKeeperVersion is the ZooKeeper scripts/zookeeper.sh installs from
// Maven Central (deploy/local/zookeeper/pom.xml).
const zooKeeperVersion = "3.8.4"

// ZooKeeperServer is a standalone ZooKeeper dedicated to one test, for a
// replicated ClickHouse cluster (ClickHouseCluster with Replicas > 1).
type ZooKeeperServer struct {
	// Addr is the client address, "127.0.0.1:port".
	Addr string
	Port int

	proc *process
}

// zooKeeperLib is the directory of ZooKeeper's jars (scripts/zookeeper.sh
// path).
func zooKeeperLib() string {
	if h := os.Getenv("TANDEM_ZK_HOME"); h != "" {
		return filepath.Join(h, "lib")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "tandem", "zookeeper-"+zooKeeperVersion, "lib")
}

// ZooKeeper starts a loopback-only standalone ZooKeeper on a free port
// with its data in a t.TempDir(), from the zoo.cfg template
// scripts/zookeeper.sh renders, and kills it when the test ends. It fails
// the test when ZooKeeper's jars or java are missing: run `make deps`
// (scripts/zookeeper.sh install).
func ZooKeeper(t testing.TB) *ZooKeeperServer {
	t.Helper()
	lib := zooKeeperLib()
	if _, err := os.Stat(filepath.Join(lib, "zookeeper-"+zooKeeperVersion+".jar")); err != nil {
		missing(t, "ZooKeeper's jars are not in %s; install them with `make deps` or `scripts/zookeeper.sh install`", lib)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		missing(t, "java is not installed (ZooKeeper needs it)")
	}
	tmpl, err := os.ReadFile(filepath.Join(RepoRoot(t), "deploy", "local", "zookeeper", "zoo.cfg"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := t.TempDir()
	z := &ZooKeeperServer{proc: &process{name: "zookeeper", logPath: filepath.Join(dir, "zookeeper.log")}}
	t.Cleanup(func() { _ = z.proc.stop(syscall.SIGKILL, 5*time.Second) })
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		z.Port = FreePort(t)
		z.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(z.Port))
		cfg := strings.NewReplacer("@DATA_DIR@", filepath.Join(dir, "data"), "@PORT@", strconv.Itoa(z.Port)).Replace(string(tmpl))
		if err := os.WriteFile(filepath.Join(dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		argv := []string{java, "-Xmx256m", "-cp", lib + "/*", "org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(dir, "zoo.cfg")}
		if lastErr = z.proc.start(argv, nil, dir); lastErr != nil {
			continue
		}
		if lastErr = z.waitListening(20 * time.Second); lastErr == nil {
			return z
		}
		_ = z.proc.stop(syscall.SIGKILL, 5*time.Second)
	}
	t.Fatalf("testenv: ZooKeeper did not start: %v", lastErr)
	return nil
}

func (z *ZooKeeperServer) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if exited, err := z.proc.hasExited(); exited {
			return fmt.Errorf("zookeeper exited during start-up (%v)\n%s", err, tail(z.proc.logPath, 15))
		}
		if c, err := net.DialTimeout("tcp", z.Addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper did not listen on %s within %s\n%s", z.Addr, timeout, tail(z.proc.logPath, 15))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
