package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// CHDBLibPath returns the path of libchdb.so, a current ClickHouse engine
// that github.com/chdb-io/chdb-go loads in-process (set CHDB_LIB_PATH to
// this path before the first chdb call). Tests use it to check that tandem's
// DDL and queries also run on a current ClickHouse, not only on 18.16.
//
// It honours CHDB_LIB_PATH when that names an existing file, else looks
// where `make chdb-lib` (scripts/chdb.sh) installs the npm package
// @chdb/lib-linux-x64-gnu. A missing library fails the test (skips it under
// -short).
func CHDBLibPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CHDB_LIB_PATH"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(CacheDir(), "chdb", "node_modules", "@chdb", "lib-linux-x64-gnu", "libchdb.so")
	if _, err := os.Stat(p); err != nil {
		missing(t, "libchdb.so is not installed at %s; install it with `make chdb-lib` (scripts/chdb.sh, ~180 MB)", p)
	}
	return p
}

// RunCHDBTests runs the tests of the package in the current directory whose
// names match run in a child `go test -tags chdb` with CHDB_LIB_PATH set to
// CHDBLibPath, and fails t (naming what they check) when they fail.
//
// chdb-go loads libchdb.so in a package init and panics when it cannot, so
// a test binary that imports it cannot even start without CHDB_LIB_PATH;
// running the chdb checks in a child keeps the ordinary test binary free of
// chdb-go. Under -short it is skipped: the child builds a test binary.
func RunCHDBTests(t testing.TB, run, what string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: " + what + " run in a chdb test binary that must be built")
	}
	lib := CHDBLibPath(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "test", "-tags", "chdb", "-count=1", "-run", run, "-v", ".")
	cmd.Env = append(os.Environ(), "CHDB_LIB_PATH="+lib)
	out, err := cmd.CombinedOutput()
	t.Logf("go test -tags chdb (CHDB_LIB_PATH=%s):\n%s", lib, out)
	if err != nil {
		t.Fatalf("%s failed: %v", what, err)
	}
}
