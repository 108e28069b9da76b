//go:build !chdb

package clickhouse

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestCurrentClickHouse runs every DDL statement and every query of this
// package on a current ClickHouse engine (chdb's libchdb.so, in-process;
// see chdb_current_test.go).
//
// chdb-go loads libchdb.so in a package init and panics when it cannot, so
// a test binary that imports it cannot even start without CHDB_LIB_PATH.
// This test therefore runs those checks in a child `go test -tags chdb`
// with CHDB_LIB_PATH set to the library testenv finds, and the ordinary
// test binary never links chdb-go. Under -short it is skipped.
func TestCurrentClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the current-ClickHouse checks build and run a chdb test binary")
	}
	lib := testenv.CHDBLibPath(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "test", "-tags", "chdb", "-count=1", "-run", "^TestCHDB", "-v", ".")
	cmd.Env = append(os.Environ(), "CHDB_LIB_PATH="+lib)
	out, err := cmd.CombinedOutput()
	t.Logf("go test -tags chdb (CHDB_LIB_PATH=%s):\n%s", lib, out)
	if err != nil {
		t.Fatalf("the current-ClickHouse checks failed: %v", err)
	}
}
