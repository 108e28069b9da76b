//go:build !chdb

package currentch

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestSpeedSQLOnCurrentClickHouse runs speed_chdb_test.go's checks in a
// child `go test -tags chdb` with CHDB_LIB_PATH set to the library testenv
// finds. chdb-go loads libchdb.so in a package init and panics when it
// cannot, so the ordinary test binary must not link it (the same pattern as
// internal/clickhouse's TestCurrentClickHouse).
func TestSpeedSQLOnCurrentClickHouse(t *testing.T) {
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
	if !strings.Contains(string(out), "--- PASS: TestCHDBSpeedSQL") {
		t.Fatal("the child test binary ran no current-ClickHouse check")
	}
}
