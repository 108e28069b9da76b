package serving_test

import (
	"context"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/serving"
)

// rowsReadStore is the real ClickHouse adapter counting the rows
// ClickHouse reads for rollups (its progress packets): what the
// closed-chunk cache saves.
type rowsReadStore struct {
	*clickhouse.DB
	rows atomic.Uint64
}

func (s *rowsReadStore) ScanSpeedRollup(ctx context.Context, q clickhouse.SpeedRollupQuery, fn func(*clickhouse.SpeedRollupRow) error) error {
	ctx = chgo.Context(ctx, chgo.WithProgress(func(p *chgo.Progress) { s.rows.Add(p.Rows) }))
	return s.DB.ScanSpeedRollup(ctx, q, fn)
}

// TestOversizedShapeKeepsAPrefixCached: a query whose closed-chunk
// rollups exceed the cache keeps a stable part of them cached, so asking
// it again makes ClickHouse read fewer rows, and asking a third time reads
// as many as the second (the same chunks stayed cached). Every answer
// equals the row-by-row merge of the speed rows.
func TestOversizedShapeKeepsAPrefixCached(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, db := migratedClickHouse(ctx, t)
	d := genDataset(t, cfg, 3000, 23)
	// Granules of 16 rows instead of 8192, so that the few thousand rows
	// span many and leaving chunks out shows in the rows read.
	table := db.Database() + "." + clickhouse.SpeedTable(d.view.Name)
	var ddl string
	require.NoError(t, db.Conn().QueryRow(ctx, "SHOW CREATE TABLE "+table).Scan(&ddl))
	require.Contains(t, ddl, "index_granularity = 8192")
	require.NoError(t, db.Conn().Exec(ctx, "DROP TABLE "+table))
	require.NoError(t, db.Conn().Exec(ctx, strings.Replace(ddl, "index_granularity = 8192", "index_granularity = 16", 1)))
	insertSpeed(t, db, d)

	p := url.Values{}
	p.Set("from", base.Add(-time.Hour).Format(time.RFC3339))
	p.Set("to", base.Add(5*time.Hour).Format(time.RFC3339))
	p.Set("granularity", "5m")
	p.Set("group_by", "country,device")
	q, err := serving.ParseQuery(d.view, p.Encode(), 30*24*time.Hour)
	require.NoError(t, err)

	plain, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	rows := serving.NewMerger(q)
	require.NoError(t, plain.ScanSpeed(ctx, q, nil, func(r *serving.Row) error { rows.Add(r); return nil }))
	want := rows.Groups()
	require.NotEmpty(t, want)

	// How much the whole shape's rollups take, with room to spare.
	roomy, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	roomy.CacheClosedChunks(cfg.ChunkSize, 256<<20)
	require.NoError(t, roomy.RollupSpeed(ctx, q, nil, func(*serving.Group) error { return nil }))
	all, whole := roomy.CachedRollups(), roomy.CachedRollupBytes()
	require.Greater(t, all, 3, "the data set must close several chunks")

	// A cache holding about half of them (the spans take a little too).
	store := &rowsReadStore{DB: db}
	small, err := serving.NewClickHouseSpeed(store)
	require.NoError(t, err)
	small.CacheClosedChunks(cfg.ChunkSize, whole/2+int64(64*all*2))
	var read []uint64
	for pass := range 3 {
		store.rows.Store(0)
		m := serving.NewMerger(q)
		require.NoError(t, small.RollupSpeed(ctx, q, nil, func(g *serving.Group) error { m.AddGroup(g); return nil }))
		compare(t, q, "pass "+string(rune('1'+pass)), want, m.Groups())
		read = append(read, store.rows.Load())
	}
	cachedN := small.CachedRollups()
	t.Logf("%d of %d closed chunks cached; ClickHouse read %v rows in the three passes", cachedN, all, read)
	require.Positive(t, cachedN, "an oversized shape must keep part of its chunks cached")
	require.Less(t, cachedN, all, "the cache must be too small for the whole shape")
	require.Positive(t, read[0])
	require.Less(t, read[1], read[0], "the second pass must read fewer rows from ClickHouse")
	require.Equal(t, read[1], read[2], "the cached part must stay the same")
}
