//go:build !chdb

package chstate

import (
	"testing"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestOracleCurrentEngine compares Go's states with a current ClickHouse
// engine's (chdb's libchdb.so), in a child `go test -tags chdb`
// (testenv.RunCHDBTests), as in internal/clickhouse.
func TestOracleCurrentEngine(t *testing.T) {
	testenv.RunCHDBTests(t, "^TestCHDBOracle$", "the current-engine oracle")
}
