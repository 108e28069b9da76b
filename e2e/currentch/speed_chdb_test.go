//go:build chdb

package currentch

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chdb-io/chdb-go/chdb"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/speed"
)

// configYAML has a view with dimensions and every measure type, one
// without dimensions, and a raw-events stream with every field type, so
// every kind of column the speed layer writes is there.
const configYAML = `
kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { addr: "127.0.0.1:9000", database: tandem }
chunk_size: 100
streams:
  - name: clicks
    partitions: 3
    id_field: id
    time_field: ts
    raw_events: true
    raw_retention: 2d
    fields:
      - { name: id, type: string, required: true }
      - { name: ts, type: timestamp, required: true }
      - { name: country, type: string }
      - { name: device, type: string }
      - { name: user, type: string }
      - { name: amount, type: float64 }
      - { name: qty, type: int64 }
      - { name: ok, type: bool }
views:
  - name: clicks_by_country
    stream: clicks
    granularity: 1m
    dimensions: [country, device]
    measures:
      - { name: n, type: count }
      - { name: revenue, type: sum, field: amount }
      - { name: lo, type: min, field: amount }
      - { name: hi, type: max, field: amount }
      - { name: users, type: distinct, field: user }
      - { name: amount_q, type: quantiles, field: amount }
  - name: clicks_total
    stream: clicks
    granularity: 1h
    measures:
      - { name: n, type: count }
      - { name: items, type: sum, field: qty }
`

type session struct {
	t *testing.T
	s *chdb.Session
}

// query runs one complete statement and returns its rows as TSV fields.
func (c *session) query(sql string) [][]string {
	c.t.Helper()
	res, err := c.s.Query(sql, "TSV")
	if err != nil {
		c.t.Fatalf("on current ClickHouse: %v\n%s", err, sql)
	}
	if res == nil {
		return nil
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimRight(res.String(), "\n"), "\n") {
		if line != "" {
			out = append(out, strings.Split(line, "\t"))
		}
	}
	return out
}

func parseConfig(t *testing.T, yaml string) *schemas.Config {
	t.Helper()
	cfg, err := schemas.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

// TestCHDBSpeedSQL creates tandem's tables with the adapter's DDL, both
// the DDL for this server's version and the 18.16 (Baseline) DDL a server
// upgraded after `tandem migrate` keeps, and runs every statement of
// speed.SQLForCheck on each. Then it checks that the speed layer's progress
// and absorbed queries answer right on rows written to those tables.
func TestCHDBSpeedSQL(t *testing.T) {
	s, err := chdb.NewSession(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(s.Close)
	c := &session{t: t, s: s}
	raw := c.query("SELECT version()")[0][0]
	version, err := clickhouse.ParseVersion(raw)
	require.NoError(t, err)
	t.Logf("current ClickHouse: %s", raw)
	require.True(t, version.HasLowCardinality() && version.HasDateTime64(), "chdb %s should have the newer column types", version)

	for _, tc := range []struct {
		database string
		version  clickhouse.Version
	}{
		{"tandem", version},
		{"tandem_base", clickhouse.Baseline},
	} {
		t.Run(tc.database, func(t *testing.T) {
			c := &session{t: t, s: s}
			cfg := parseConfig(t, strings.Replace(configYAML, "database: tandem", "database: "+tc.database, 1))
			for _, st := range clickhouse.DDL(cfg, tc.version) {
				c.query(st.SQL)
			}
			stmts := speed.SQLForCheck(cfg)
			// Per view: progress, upsert, absorbed; per raw-events stream: insert.
			require.Len(t, stmts, 3*len(cfg.Views)+1)
			for _, q := range stmts {
				c.query(q)
			}
			for _, v := range cfg.Views {
				require.Equal(t, [][]string{{"0"}}, c.query(fmt.Sprintf("SELECT count() FROM %s.%s", tc.database, clickhouse.SpeedTable(v.Name))))
			}
			checkProgressAndAbsorbed(t, c, cfg)
		})
	}
}

// checkProgressAndAbsorbed writes speed rows and an absorbed row with plain
// SQL, and checks the answers of the speed layer's ProgressSQL and
// AbsorbedSQL (its '?' bound as literals, as clickhouse-go binds them).
func checkProgressAndAbsorbed(t *testing.T, c *session, cfg *schemas.Config) {
	db := cfg.ClickHouse.Database
	v := cfg.View("clicks_by_country")
	sink := speed.NewClickHouseSink(nil, db, cfg.ChunkSize)

	// Rows of partition 1: chunk 0 at versions 40 and then 99 (separate
	// inserts, as two flushes), chunk 1 at 130.
	for _, r := range []struct {
		window, country string
		chunk, version  int
	}{
		{"2026-11-25 10:00:00", "US", 0, 40},
		{"2026-11-25 10:00:00", "US", 0, 99},
		{"2026-11-25 10:01:00", "", 1, 130},
	} {
		// window_start, country, device, n, revenue, lo, hi, users, amount_q,
		// kafka_partition, chunk, version
		c.query(fmt.Sprintf("%s VALUES ('%s', '%s', 'web', 1, 2.5, 2.5, NULL, '', '', 1, %d, %d)", sink.UpsertSQL(v), r.window, r.country, r.chunk, r.version))
	}

	progress := func(partition int) [][]string {
		return c.query(strings.Replace(sink.ProgressSQL(v), "?", fmt.Sprint(partition), 1))
	}
	// The row count is only tested for zero (merges may have collapsed the
	// two versions already); the highest version must be exact.
	got := progress(1)
	require.Len(t, got, 1)
	require.NotEqual(t, "0", got[0][0])
	require.Equal(t, "130", got[0][1])
	require.Equal(t, [][]string{{"0", "0"}}, progress(0))

	absorbed := func(partition int) [][]string {
		q := strings.Replace(sink.AbsorbedSQL(), "?", "'"+v.Name+"'", 1)
		return c.query(strings.Replace(q, "?", fmt.Sprint(partition), 1))
	}
	require.Equal(t, [][]string{{"0", "0"}}, absorbed(1))
	c.query(fmt.Sprintf("INSERT INTO %s.%s (view, run_id, kafka_partition, chunks, absorbed_offset) VALUES ('%s', 'r1', 1, 1, 100), ('%s', 'r2', 1, 2, 200)",
		db, clickhouse.TableAbsorbed, v.Name, v.Name))
	require.Equal(t, [][]string{{"2", "2"}}, absorbed(1))
	require.Equal(t, [][]string{{"0", "0"}}, absorbed(0))
}
