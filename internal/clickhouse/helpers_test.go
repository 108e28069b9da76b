package clickhouse

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// testConfigYAML has every measure type, two dimensions and a raw-events
// stream; tests change it with strings.Replace to simulate edits.
const testConfigYAML = `
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
      - { name: id, type: string }
      - { name: ts, type: timestamp }
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

func parseConfig(t testing.TB, yaml string) *schemas.Config {
	t.Helper()
	cfg, err := schemas.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openTest starts a dedicated ClickHouse server and opens a DB on it for
// cfg (whose address it rewrites).
func openTest(t testing.TB, cfg *schemas.Config) (*DB, *testenv.ClickHouseServer) {
	t.Helper()
	srv := testenv.ClickHouse(t)
	cfg.ClickHouse.Addr = srv.Addr
	cfg.ClickHouse.Username = srv.Username
	cfg.ClickHouse.Password = srv.Password
	db, err := Open(testCtx(t), cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db, srv
}

// migrated opens a DB on a fresh server and migrates cfg.
func migrated(t testing.TB, cfg *schemas.Config) (*DB, *testenv.ClickHouseServer) {
	t.Helper()
	db, srv := openTest(t, cfg)
	_, err := db.Migrate(testCtx(t), cfg)
	require.NoError(t, err)
	return db, srv
}

func queryStrings(t testing.TB, db *DB, sql string, args ...any) []string {
	t.Helper()
	return testenv.QueryStrings(t, db.Conn(), sql, args...)
}
