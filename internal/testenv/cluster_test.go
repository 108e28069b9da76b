package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"
)

func TestClickHouseShards(t *testing.T) {
	c := ClickHouseShards(t, 2)
	require.Equal(t, "tandem_test", c.Name)
	require.Len(t, c.Servers, 2)
	require.NotEqual(t, c.Servers[0].Addr, c.Servers[1].Addr)
	ctx := context.Background()
	want := []string{c.Servers[0].Addr, c.Servers[1].Addr}
	for _, s := range c.Servers {
		rows, err := s.Conn(t).Query(ctx, "SELECT concat(host_address, ':', toString(port)) FROM system.clusters WHERE cluster = ? ORDER BY shard_num", c.Name)
		require.NoError(t, err)
		var got []string
		for rows.Next() {
			var a string
			require.NoError(t, rows.Scan(&a))
			got = append(got, a)
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Equal(t, want, got, "server %s", s.Addr)
	}
	// A Distributed table on the first server reads every shard: each
	// server holds its own number.
	for i, s := range c.Servers {
		conn := s.Conn(t)
		require.NoError(t, conn.Exec(ctx, "CREATE TABLE default.who (n UInt8) ENGINE = Log"))
		require.NoError(t, conn.Exec(ctx, "INSERT INTO default.who SELECT "+strconv.Itoa(i+1)))
	}
	conn := c.Servers[0].Conn(t)
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE default.who_all (n UInt8) ENGINE = Distributed(tandem_test, default, who)"))
	var got string
	require.NoError(t, conn.QueryRow(ctx, "SELECT arrayStringConcat(groupArray(toString(n)), ',') FROM (SELECT n FROM default.who_all ORDER BY n)").Scan(&got))
	require.Equal(t, "1,2", got)
}

// TestClickHouseScriptShards starts two shards with scripts/clickhouse.sh
// (TANDEM_CH_SHARDS=2), as docs/operations.md shows, and stops them.
func TestClickHouseScriptShards(t *testing.T) {
	if _, err := clickHouseServerArgv(); err != nil {
		missing(t, "%v", err)
	}
	root := RepoRoot(t)
	dir := t.TempDir()
	port := FreePort(t)
	// The script uses port and port+1; the second must be free too.
	env := append(os.Environ(), "TANDEM_CH_DIR="+dir, "TANDEM_CH_PORT="+strconv.Itoa(port), "TANDEM_CH_HTTP_PORT="+strconv.Itoa(FreePort(t)),
		"TANDEM_CH_SHARDS=2", "TANDEM_CH_CLUSTER=pair")
	run := func(cmd string) (string, error) {
		c := exec.Command("bash", filepath.Join(root, "scripts", "clickhouse.sh"), cmd)
		c.Env = env
		out, err := c.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = run("stop") })
	out, err := run("start")
	if err != nil {
		t.Skipf("ports %d and %d were not both free: %s", port, port+1, out)
	}
	out, err = run("status")
	require.NoError(t, err, out)
	for i := 0; i < 2; i++ {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{"127.0.0.1:" + strconv.Itoa(port+i)}, DialTimeout: 5 * time.Second})
		require.NoError(t, err)
		var n uint64
		require.NoError(t, conn.QueryRow(context.Background(), "SELECT count() FROM system.clusters WHERE cluster = 'pair'").Scan(&n))
		require.EqualValues(t, 2, n, "server %d", i+1)
		conn.Close()
	}
	out, err = run("stop")
	require.NoError(t, err, out)
	out, err = run("status")
	require.Error(t, err, out)
}
