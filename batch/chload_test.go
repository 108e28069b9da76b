package batch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestClickHouseLoadRepairedByNextRun: ClickHouse trouble after a run's
// manifest is written (the server down during the load; later, the current
// run losing rows) leaves S3 published and ClickHouse behind; the next
// run brings ClickHouse to the published run, also when it has nothing
// new to compute.
func TestClickHouseLoadRepairedByNextRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := testConfig(t, 100, 2, testenv.MinIO(t))
	st := testStore(t, cfg)
	chsrv := testenv.ClickHouse(t)
	cfg.ClickHouse.Addr = chsrv.Addr
	cfg.ClickHouse.Username, cfg.ClickHouse.Password = chsrv.Username, chsrv.Password
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	s := cfg.Stream("pv")
	hourly := cfg.View("pv_hourly")

	rng := rand.New(rand.NewPCG(5, 6))
	msgs := map[int32][]genMsg{}
	for p := int32(0); p < 2; p++ {
		var ids []string
		msgs[p] = genPartition(rng, p, 0, 300, &ids)
		writeRaw(t, ctx, st, s, p, msgs[p], 100)
	}
	absorbed := map[int32]int64{0: 300, 1: 300}
	run := func() (*Result, error) {
		return Run(ctx, Options{Config: cfg, Store: st, ClickHouse: db, Log: testLog(), TempDir: t.TempDir()})
	}

	// The server is down when the run starts: it cannot read the view
	// versions, and computes and publishes nothing.
	chsrv.Stop()
	_, err = run()
	require.ErrorContains(t, err, "batch:")
	chsrv.Start()
	m, err := ReadManifest(ctx, st, hourly.Name)
	require.NoError(t, err)
	require.Nil(t, m)

	// The server goes down while the run loads: the run fails after its
	// manifest is published.
	var once sync.Once
	_, err = Run(ctx, Options{Config: cfg, Store: st, ClickHouse: db, Log: testLog(), TempDir: t.TempDir(),
		crashBeforeManifest: func(string) error { once.Do(chsrv.Stop); return nil }})
	require.Error(t, err)
	chsrv.Start()
	m, err = ReadManifest(ctx, st, hourly.Name)
	require.NoError(t, err)
	require.Equal(t, absorbed, m.Absorbed)
	cur, _, err := db.CurrentRun(ctx, hourly)
	require.NoError(t, err)
	require.Empty(t, cur, "nothing reached ClickHouse")

	// The next run repairs it: ClickHouse holds the current run, every
	// row read from its files.
	_, err = run()
	require.NoError(t, err)
	m2, err := ReadManifest(ctx, st, hourly.Name)
	require.NoError(t, err)
	checkClickHouse(t, ctx, db, cfg, m2, msgs, absorbed)
	m = m2

	// The current run loses rows: the next run reloads it.
	require.NoError(t, db.Conn().Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DELETE WHERE views > 1", q(db.Database()), q(clickhouse.BatchTable(hourly.Name)))))
	require.Eventually(t, func() bool {
		n, err := db.BatchRunRows(ctx, hourly, m.RunID)
		return err == nil && n < m.Rows
	}, 30*time.Second, 50*time.Millisecond)
	res, err := run()
	require.NoError(t, err)
	require.True(t, res.UpToDate())
	n, err := db.BatchRunRows(ctx, hourly, m.RunID)
	require.NoError(t, err)
	require.Equal(t, m.Rows, n)
	checkClickHouse(t, ctx, db, cfg, m, msgs, absorbed)
}
