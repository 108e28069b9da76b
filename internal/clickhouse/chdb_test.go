//go:build !chdb

package clickhouse

import (
	"testing"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestCurrentClickHouse runs every DDL statement and every query of this
// package on a current ClickHouse engine (chdb's libchdb.so, in-process;
// see chdb_current_test.go), in a child `go test -tags chdb`
// (testenv.RunCHDBTests), so the ordinary test binary never links chdb-go.
// Under -short it is skipped.
func TestCurrentClickHouse(t *testing.T) {
	testenv.RunCHDBTests(t, "^TestCHDB", "the current-ClickHouse checks")
}
