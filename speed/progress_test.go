package speed

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestProgressOfAnAddedView: a view with neither speed rows nor a run of
// its own (added, or recreated) resumes where the stream's other views'
// current run ended, not at the topic's start; with no run on the stream,
// or alone, it starts from the beginning as before.
func TestProgressOfAnAddedView(t *testing.T) {
	ch := testenv.ClickHouse(t)
	cfg, err := schemas.Parse("t.yaml", []byte(`kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { addr: "`+ch.Addr+`", database: `+ch.Database+`, username: `+ch.Username+`, password: "`+ch.Password+`" }
chunk_size: 100
streams:
  - name: s
    partitions: 3
    id_field: id
    time_field: ts
    fields:
      - { name: id, type: string }
      - { name: ts, type: timestamp }
      - { name: c, type: string }
views:
  - { name: old, stream: s, granularity: 1m, dimensions: [c], measures: [{ name: n, type: count }] }
  - { name: added, stream: s, granularity: 5m, measures: [{ name: n, type: count }] }
`), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	old, added, s := cfg.View("old"), cfg.View("added"), cfg.Stream("s")
	sink := NewClickHouseSink(db, cfg.ChunkSize)
	progress := func(views []*schemas.View, p int32) int64 {
		o, err := sink.Progress(ctx, s, views, p)
		require.NoError(t, err)
		return o
	}
	both := []*schemas.View{old, added}
	require.EqualValues(t, -1, progress(both, 0), "no run on the stream: from the start")

	m := &schemas.Manifest{View: old.Name, RunID: "r1", ChunkSize: 100, Absorbed: map[int32]int64{0: 300, 1: 100}, Files: []schemas.ManifestFile{}}
	_, err = db.LoadBatchRun(ctx, old, clickhouse.BatchLoad{Manifest: m})
	require.NoError(t, err)
	require.NoError(t, db.PublishRun(ctx, old, "r1", time.Time{}))
	require.EqualValues(t, 299, progress(both, 0), "the added view starts where the other view's run ended")
	require.EqualValues(t, 99, progress(both, 1))
	require.EqualValues(t, -1, progress(both, 2), "a partition the run did not absorb")
	require.EqualValues(t, -1, progress([]*schemas.View{added}, 0), "alone: from the start")
}
