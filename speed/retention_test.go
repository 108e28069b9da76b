package speed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

const retentionYAML = `
chunk_size: 100
clickhouse: { addr: "%s", database: "%s" }
streams:
  - name: pv
    partitions: 2
    id_field: id
    time_field: ts
    retention: 30d
    fields:
      - { name: id, type: string }
      - { name: ts, type: timestamp }
      - { name: country, type: string }
views:
  - { name: pv_old, stream: pv, granularity: 1h, retention: 7d, dimensions: [country], measures: [{ name: views, type: count }] }
  - { name: pv_new, stream: pv, granularity: 1d, retention: 7d, measures: [{ name: views, type: count }] }
`

// TestProgressAfterRetention: on a stream with streams[].retention, a view
// with nothing of its own (pv_new, just added) starts where the stream's
// published batch run absorbed through, not at Kafka's first offset, so
// the speed layer never folds again what retention removed below it; a
// view with rows or a run of its own keeps its own resume point.
func TestProgressAfterRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch := testenv.ClickHouse(t)
	cfg, err := schemas.Parse("t.yaml", []byte(fmt.Sprintf(retentionYAML, ch.Addr, ch.Database)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg.ClickHouse.Username, cfg.ClickHouse.Password = ch.Username, ch.Password
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	s, old, fresh := cfg.Stream("pv"), cfg.View("pv_old"), cfg.View("pv_new")
	views := cfg.ViewsOf("pv")
	c := cfg.ChunkSize
	sink := NewClickHouseSink(db, c)
	progress := func(st *schemas.Stream, vs []*schemas.View, p int32) int64 {
		o, err := sink.Progress(ctx, st, vs, p)
		require.NoError(t, err)
		return o
	}

	require.EqualValues(t, -1, progress(s, views, 0), "nothing anywhere: Kafka's first offset")

	// pv_old's run absorbed 12 chunks of partition 0 (retention may have cut
	// the master dataset below them); pv_new has nothing.
	m := &schemas.Manifest{View: old.Name, RunID: "r1", ChunkSize: c, Absorbed: map[int32]int64{0: 12 * c}, Files: []schemas.ManifestFile{}}
	_, err = db.LoadBatchRun(ctx, old, clickhouse.BatchLoad{Manifest: m})
	require.NoError(t, err)
	require.NoError(t, db.PublishRun(ctx, old, "r1", time.Time{}))
	require.EqualValues(t, 12*c-1, progress(s, views, 0))
	o, err := db.SpeedResume(ctx, fresh, 0, c)
	require.NoError(t, err)
	require.EqualValues(t, -1, o, "pv_new has nothing of its own")
	require.EqualValues(t, -1, progress(s, views, 1), "a partition no run absorbed")

	// Without retention the same holds: a view added to a stream whose
	// other views have runs is backfilling until its own first run, which
	// absorbs at least those chunks (TestProgressOfAnAddedView).
	noRet := *s
	noRet.Retention = 0
	require.EqualValues(t, 12*c-1, progress(&noRet, views, 0))
}
