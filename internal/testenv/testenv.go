// Package testenv starts the real services that tandem's integration tests
// run against: a dedicated ClickHouse server per test, an in-process Kafka
// broker (or an external Apache Kafka), a real MinIO process or an in-process
// fake S3. Every helper takes a testing.TB, listens on loopback only, keeps
// its data in t.TempDir() and stops what it started in t.Cleanup.
//
// A missing prerequisite (the clickhouse-server package, the MinIO build,
// libchdb.so) fails the test with a message naming the command that installs
// it (`make deps` or a script under scripts/). Only with -short does a missing
// prerequisite skip the test instead, so a green full run always means the
// tests really ran.
//
// Typical use:
//
//	ch := testenv.ClickHouse(t)      // ch.Addr, ch.Conn(t), ch.Stop(), ch.Start()
//	k := testenv.Kafka(t)            // k.Brokers, k.Restart()
//	s3 := testenv.MinIO(t)           // s3.Endpoint, s3.AccessKey, s3.SecretKey, s3.Bucket
//	topic := testenv.UniqueName(t, "tandem.pageviews")
//
// Services start in about a second or less each (MinIO 0.6-1.3 s,
// ClickHouse 0.1-0.4 s, kfake ~20 ms), so tests start their own rather
// than share.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before returning, so another process can in principle
// take it first; helpers that start servers retry with a new port when that
// happens.
func FreePort(t testing.TB) int {
	t.Helper()
	// The kernel may hand out a port again once its listener is closed;
	// two components of one test given the same port would then race for
	// it ("address already in use"). A port is given out once per process.
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: finding a free loopback port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := portsGiven.LoadOrStore(port, true); !taken {
			return port
		}
	}
}

// portsGiven holds every port FreePort has returned in this process.
var portsGiven sync.Map

var (
	repoRootOnce sync.Once
	repoRoot     string
	repoRootErr  error
)

// RepoRoot returns the directory holding tandem's go.mod, found by walking
// up from the working directory (go test runs each package in its own
// directory, so this works from any package of the module).
func RepoRoot(t testing.TB) string {
	t.Helper()
	repoRootOnce.Do(func() { repoRoot, repoRootErr = findRepoRoot() })
	if repoRootErr != nil {
		t.Fatalf("testenv: %v", repoRootErr)
	}
	return repoRoot
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locating the repository root: %w", err)
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(data), "module github.com/tandem-analytics/tandem\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/tandem-analytics/tandem above the working directory")
		}
		dir = parent
	}
}

// CacheDir is where `make deps` keeps downloads and builds outside the repo:
// $TANDEM_CACHE, else $HOME/.cache/tandem. The scripts use the same rule.
func CacheDir() string {
	if d := os.Getenv("TANDEM_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "tandem")
}

// missing reports a prerequisite that is not installed: a failure normally,
// a skip under -short (see the package comment for why).
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if testing.Short() {
		t.Skipf("testenv (-short): %s", msg)
	}
	t.Fatalf("testenv: %s", msg)
}

var unsafeNameChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// UniqueName returns prefix plus the test's name plus a random suffix, made
// only of characters valid in Kafka topic, consumer group, ClickHouse table
// and S3 key names ([a-zA-Z0-9._-]). Use it for every topic and group a test
// creates: against an external broker (TANDEM_TEST_KAFKA=apache) topics
// outlive the test and other tests share the broker.
//
// The result is at most 200 characters (Kafka allows 249). Note that it may
// contain '.' and '-', which ClickHouse identifiers need quoted.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv: random name suffix: %v", err)
	}
	name := unsafeNameChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 150 {
		name = name[len(name)-150:]
	}
	s := name + "." + hex.EncodeToString(b[:])
	if prefix != "" {
		s = prefix + "." + s
	}
	if len(s) > 200 {
		s = s[len(s)-200:]
	}
	return s
}
