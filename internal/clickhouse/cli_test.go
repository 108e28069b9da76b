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
	require.Contains(t, out, "up to date (18 objects)")

	write(strings.Replace(yaml, "granularity: 1h", "granularity: 1d", 1))
	// The dry run says what applying it would do, per view: a changed
	// definition is a new version, the old one serving meanwhile.
	out, err = run("--dry-run")
	require.NoError(t, err, out)
	require.Contains(t, out, "view   clicks_total                 new version 2 (tables clicks_total__v2_speed, clicks_total__v2_batch, …)")
	require.Contains(t, out, "granularity: 1h → 1d")
	require.Contains(t, out, "the old version 1 serves REST and SQL until the new one is exact")
	require.Contains(t, out, "view   clicks_by_country            unchanged")
	require.Contains(t, out, "stream clicks                       unchanged")
	out, err = run()
	require.NoError(t, err, out)
	require.Contains(t, out, "created    table    tandem.clicks_total__v2_speed")
	require.NotContains(t, out, "tandem.clicks_total_speed")
	// The escape hatch: --recreate drops the view's tables and the
	// pending version's, and computes the configured definition in place.
	out, err = run("--recreate", "clicks_total")
	require.NoError(t, err, out)
	require.Contains(t, out, "recreated  table    tandem.clicks_total_speed")
	require.NotContains(t, out, "recreated  table    tandem.clicks_by_country_speed")
	require.NotContains(t, queryStrings(t, &DB{conn: conn}, "SELECT name FROM system.tables WHERE database = 'tandem'"), "clicks_total__v2_speed")
	out, err = run()
	require.NoError(t, err, out)
	require.Contains(t, out, "up to date")

	// A view removed and one added: the plan says so; migrate keeps the
	// removed one's objects until --drop-removed.
	const total = "  - name: clicks_total\n    stream: clicks\n    granularity: 1d\n"
	cur := strings.Replace(yaml, "granularity: 1h", "granularity: 1d", 1)
	require.Contains(t, cur, total)
	write(strings.Replace(cur, total, "  - name: clicks_daily\n    stream: clicks\n    granularity: 1d\n", 1))
	out, err = run("--dry-run")
	require.NoError(t, err, out)
	require.Contains(t, out, "view   clicks_daily                 new: its tables are created; if batch runs already absorbed its stream, it is backfilling")
	require.Contains(t, out, "view   clicks_total                 removed from the configuration; its objects stay until `tandem migrate --drop-removed`: clicks_total, clicks_total_1d, clicks_total_batch, clicks_total_levels, clicks_total_speed")
	out, err = run()
	require.NoError(t, err, out)
	require.Contains(t, out, "no longer configured, objects kept: clicks_total")
	require.Contains(t, queryStrings(t, &DB{conn: conn}, "SELECT name FROM system.tables WHERE database = 'tandem'"), "clicks_total_speed")
	out, err = run("--drop-removed")
	require.NoError(t, err, out)
	require.Contains(t, out, "dropped    the objects of clicks_total")
	tables := queryStrings(t, &DB{conn: conn}, "SELECT name FROM system.tables WHERE database = 'tandem'")
	require.NotContains(t, tables, "clicks_total_speed")
	require.NotContains(t, tables, "clicks_total")
	require.Contains(t, tables, "clicks_daily_speed")
	out, err = run("--dry-run")
	require.NoError(t, err, out)
	require.NotContains(t, out, "clicks_total")
}
