package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// BuildTandem builds ./cmd/tandem once per test binary and returns the path
// of the executable, for tests that run tandem as a subprocess (to kill -9
// it, or to test the CLI). The build is cached by Go's build cache, so
// later calls and other test packages pay only a link.
//
// The binary goes to $TANDEM_CACHE/testbin/<repo hash>/tandem and is
// replaced atomically (rename), so test packages building it in parallel
// never run a half-written file and nothing accumulates in /tmp.
func BuildTandem(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	buildOnce.Do(func() { buildPath, buildErr = buildPackage(root, "./cmd/tandem", "tandem") })
	if buildErr != nil {
		t.Fatalf("testenv: building ./cmd/tandem: %v", buildErr)
	}
	return buildPath
}

// BuildPackage builds the main package pkg (a path relative to the repo
// root, like "./cmd/tandem") into the test cache under name and returns the
// executable's path. Unlike BuildTandem it builds on every call; Go's build
// cache makes repeated builds cheap.
func BuildPackage(t testing.TB, pkg, name string) string {
	t.Helper()
	p, err := buildPackage(RepoRoot(t), pkg, name)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

// buildPackage runs `go build` of pkg (relative to root) into the test cache.
func buildPackage(root, pkg, name string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(CacheDir(), "testbin", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, name+".*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // left over only when the build fails

	cmd := exec.Command(goBin, "build", "-o", tmp.Name(), pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	return final, nil
}
