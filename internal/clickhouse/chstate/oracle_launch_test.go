//go:build !chdb

package chstate

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

// TestOracleCurrentEngine compares Go's states with a current ClickHouse
// engine's (chdb's libchdb.so). chdb-go loads the library in a package init
// and panics without it, so, as in internal/clickhouse, the comparison runs
// in a child `go test -tags chdb` with CHDB_LIB_PATH set.
func TestOracleCurrentEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs a chdb test binary")
	}
	lib := testenv.CHDBLibPath(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "test", "-tags", "chdb", "-count=1", "-run", "^TestCHDBOracle$", "-v", ".")
	cmd.Env = append(os.Environ(), "CHDB_LIB_PATH="+lib)
	out, err := cmd.CombinedOutput()
	t.Logf("go test -tags chdb (CHDB_LIB_PATH=%s):\n%s", lib, out)
	if err != nil {
		t.Fatalf("the current-engine oracle failed: %v", err)
	}
}
