package clickhouse

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIsBusy provokes a server's load error (its time limit; 18.16 does
// not enforce a tiny max_memory_usage on a simple query) on a real
// ClickHouse and
// checks that IsBusy tells them from other failures: serving answers the
// first with 503 and Retry-After, the others with the speed warning.
func TestIsBusy(t *testing.T) {
	db, _ := openTest(t, parseConfig(t, testConfigYAML))
	ctx := testCtx(t)
	run := func(sql string) error {
		rows, err := db.Conn().Query(ctx, sql)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
		}
		return rows.Err()
	}
	err := run("SELECT count() FROM system.numbers SETTINGS max_execution_time = 1, timeout_overflow_mode = 'throw'")
	require.Error(t, err)
	require.True(t, IsBusy(err), "time limit: %v", err)
	err = run("SELECT no_such_column FROM system.one")
	require.Error(t, err)
	require.False(t, IsBusy(err), "a wrong query is not load: %v", err)
	require.False(t, IsBusy(nil))
}
