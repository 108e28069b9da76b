package clickhouse

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestMigrateCommand runs `tandem migrate` as a user would: dry run, first
// run, second run, a changed view, --recreate.
func TestMigrateCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the tandem binary")
	}
	bin := testenv.BuildTandem(t)
	srv := testenv.ClickHouse(t)
	dir := t.TempDir()
	yaml := strings.Replace(testConfigYAML, `addr: "127.0.0.1:9000"`, `addr: "`+srv.Addr+`"`, 1)
	path := filepath.Join(dir, "tandem.yaml")
	write := func(s string) { require.NoError(t, os.WriteFile(path, []byte(s), 0o644)) }
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"migrate", "--config", path}, args...)...)
		cmd.Env = append(os.Environ(), "TANDEM_CONFIG=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	write(yaml)

	out, err := run("--dry-run", "--server-version", "18.16")
	require.NoError(t, err, out)
	require.Contains(t, out, "CREATE TABLE IF NOT EXISTS `tandem`.`clicks_by_country_speed`")
	require.NotContains(t, out, "LowCardinality")
	out, err = run("--dry-run", "--server-version", "24.8")
	require.NoError(t, err, out)
	require.Contains(t, out, "LowCardinality(String)")
	require.Contains(t, out, "TTL toDateTime(_kafka_ts) + INTERVAL 172800 SECOND")
	// A dry run against the server changes nothing.
	out, err = run("--dry-run")
	require.NoError(t, err, out)
	require.Contains(t, out, "server version 18.16")
	conn := srv.Conn(t)
	var n uint64
	require.NoError(t, conn.QueryRow(testCtx(t), "SELECT count() FROM system.databases WHERE name = 'tandem'").Scan(&n))
	require.Zero(t, n)

	out, err = run()
	require.NoError(t, err, out)
	require.Contains(t, out, "created    table    tandem.clicks_by_country_speed")
	require.Contains(t, out, "created    view     tandem.clicks_by_country")
	require.Contains(t, out, "created    database tandem\n")
	out, err = run()
	require.NoError(t, err, out)
	require.Contains(t, out, "up to date (16 objects)")

	write(strings.Replace(yaml, "granularity: 1h", "granularity: 1d", 1))
	out, err = run()
	require.Error(t, err)
	require.Equal(t, 1, err.(*exec.ExitError).ExitCode())
	require.Contains(t, out, `view "clicks_total"`)
	require.Contains(t, out, "granularity: 1h → 1d")
	require.Contains(t, out, "--recreate clicks_total")
	out, err = run("--recreate", "clicks_total")
	require.NoError(t, err, out)
	require.Contains(t, out, "recreated  table    tandem.clicks_total_speed")
	out, err = run()
	require.NoError(t, err, out)
	require.Contains(t, out, "up to date")
}
