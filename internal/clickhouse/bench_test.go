package clickhouse

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkInsertSpeedRows measures InsertSpeedRows (SpeedRows into a
// SpeedBlock, each column appended to the driver in one call) against two
// baselines in the same run, both given the rows already converted:
// whole columns appended to a clickhouse-go batch directly (the driver's
// floor: overhead_ratio = adapter time / its time), and the same values
// appended row by row with Batch.Append (how the adapter inserted before
// blocks: rowwise_ratio = adapter time / its time, below 1 when columns
// win).
func BenchmarkInsertSpeedRows(b *testing.B) {
	cfg := parseConfig(b, testConfigYAML)
	db, _ := migrated(b, cfg)
	ctx := testCtx(b)
	v := cfg.View("clicks_by_country")
	rows := speedRowsOf(v, makeEvents(cfg.Stream("clicks"), 20000, 3, 9), cfg.ChunkSize, true)
	sql, _ := db.SpeedInsert(v)
	block := NewSpeedBlock(v, len(rows))
	args := make([][]any, len(rows))
	for i := range rows {
		require.NoError(b, block.AppendRow(&rows[i]))
		a, err := rowArgs(v, &rows[i].ViewRow, 0)
		require.NoError(b, err)
		a = append(a, uint32(rows[i].Partition), uint64(rows[i].Chunk), uint64(rows[i].Version))
		args[i], err = appendStateArgs(a, v, &rows[i].ViewRow)
		require.NoError(b, err)
	}
	cols := block.columns()

	var adapter, columns, rowwise time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		require.NoError(b, db.InsertSpeedRows(ctx, v, rows))
		adapter += time.Since(start)

		start = time.Now()
		batch, err := db.Conn().PrepareBatch(ctx, sql)
		require.NoError(b, err)
		for j, c := range cols {
			require.NoError(b, batch.Column(j).Append(c))
		}
		require.NoError(b, batch.Send())
		columns += time.Since(start)

		start = time.Now()
		batch, err = db.Conn().PrepareBatch(ctx, sql)
		require.NoError(b, err)
		for _, a := range args {
			require.NoError(b, batch.Append(a...))
		}
		require.NoError(b, batch.Send())
		rowwise += time.Since(start)
	}
	b.ReportMetric(float64(len(rows)*b.N)/adapter.Seconds(), "rows/s")
	b.ReportMetric(adapter.Seconds()/columns.Seconds(), "overhead_ratio")
	b.ReportMetric(adapter.Seconds()/rowwise.Seconds(), "rowwise_ratio")
}

// BenchmarkMergedView measures a query of the merged SQL view against the
// same rows read from the speed table with FINAL alone (no batch run, no
// seam): merged_ratio is what the view's union, seam and grouping cost.
func BenchmarkMergedView(b *testing.B) {
	cfg := parseConfig(b, testConfigYAML)
	db, _ := migrated(b, cfg)
	ctx := testCtx(b)
	v := cfg.View("clicks_by_country")
	require.NoError(b, db.InsertSpeedRows(ctx, v, speedRows(v, makeEvents(cfg.Stream("clicks"), 50000, 3, 10), cfg.ChunkSize)))
	count := func(q string) time.Duration {
		start := time.Now()
		var n uint64
		require.NoError(b, db.Conn().QueryRow(ctx, q).Scan(&n))
		require.Positive(b, n)
		return time.Since(start)
	}
	var merged, final time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		merged += count("SELECT count() FROM (SELECT * FROM tandem.clicks_by_country)")
		final += count("SELECT count() FROM (SELECT window_start, country, device, sum(n), sum(revenue), min(lo), max(hi) FROM tandem.clicks_by_country_speed FINAL GROUP BY window_start, country, device)")
	}
	b.ReportMetric(float64(merged.Microseconds())/float64(b.N), "merged_µs/query")
	b.ReportMetric(merged.Seconds()/final.Seconds(), "merged_ratio")
}
