//go:build chdb

package chstate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chdb-io/chdb-go/chdb"
	"github.com/stretchr/testify/require"
)

// chdbEngine is the current ClickHouse engine in-process (libchdb.so). It
// has no port to send a RowBinary body to, so Insert passes the rows as a
// string literal to the format() table function.
type chdbEngine struct{ s *chdb.Session }

func (c *chdbEngine) query(t *testing.T, sql, format string) []byte {
	t.Helper()
	res, err := c.s.Query(sql, format)
	shown := sql
	if len(shown) > 300 {
		shown = shown[:300] + " …"
	}
	require.NoError(t, err, shown)
	if res == nil {
		return nil
	}
	return append([]byte(nil), res.Buf()...)
}

func (c *chdbEngine) Exec(t *testing.T, sql string) { t.Helper(); c.query(t, sql, "TSV") }

func (c *chdbEngine) Insert(t *testing.T, table, structure string, rows []byte) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s SELECT * FROM format(RowBinary, '%s', '", table, structure)
	for _, x := range rows {
		if x >= 0x20 && x < 0x7f && x != '\'' && x != '\\' {
			b.WriteByte(x)
		} else {
			fmt.Fprintf(&b, `\x%02x`, x)
		}
	}
	b.WriteString("')")
	c.Exec(t, b.String())
}

func (c *chdbEngine) Query(t *testing.T, sql string) []byte {
	t.Helper()
	return c.query(t, sql, "RowBinary")
}

// TestCHDBOracle compares Go's states with the current engine's own; run by
// TestOracleCurrentEngine (oracle_server_test.go).
func TestCHDBOracle(t *testing.T) {
	s, err := chdb.NewSession(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(s.Close)
	e := &chdbEngine{s: s}
	e.Exec(t, "SELECT version()")
	// One thread, so an aggregate sees rows in ORDER BY order; room for the
	// 10^5-row literal.
	e.Exec(t, "SET max_threads = 1")
	e.Exec(t, "SET max_query_size = 100000000")
	e.Exec(t, "CREATE DATABASE IF NOT EXISTS chstate")
	e.Exec(t, "USE chstate")
	t.Logf("current engine: %s", e.query(t, "SELECT version()", "TSV"))
	runOracle(t, e, true)
}
