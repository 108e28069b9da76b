package batch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestScanModes runs the same deployment's life (a first run, more data,
// an incremental run, a full run) under every way the scan can be set up:
// ranged reads or whole downloads, tiny batches that split files and row
// groups or the default, one or several partitions at once, one or
// several decode workers. Every mode must publish the truth, and the very
// same rows as every other mode.
func TestScanModes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	defRanged, defRows, defAtOnce := rawReadRanged, batchRows, partitionsAtOnce
	t.Cleanup(func() { rawReadRanged, batchRows, partitionsAtOnce = defRanged, defRows, defAtOnce })

	var want []string // the first mode's rows; every other mode must equal them
	for i, tc := range []struct {
		ranged            bool
		rows, atOnce, dec int
	}{
		{true, 2048, 2, 2},
		{false, 2048, 2, 2},
		{true, 7, 1, 3},
		{false, 5, 3, 1},
	} {
		t.Run(fmt.Sprintf("ranged=%v rows=%d partitions=%d workers=%d", tc.ranged, tc.rows, tc.atOnce, tc.dec), func(t *testing.T) {
			rawReadRanged, batchRows, partitionsAtOnce = tc.ranged, tc.rows, tc.atOnce
			cfg := testConfig(t, 50, 3, srv)
			cfg.S3.Bucket = fmt.Sprintf("%s-mode%d", srv.Bucket, i)
			st := testStore(t, cfg)
			require.NoError(t, st.EnsureBucket(ctx))
			s, hourly := cfg.Stream("pv"), cfg.View("pv_hourly")
			rng := rand.New(rand.NewPCG(3, 4)) // the same data in every mode
			msgs := map[int32][]genMsg{}
			for p := int32(0); p < 3; p++ {
				var ids []string
				msgs[p] = genPartition(rng, p, 0, 900, &ids)
				writeRaw(t, ctx, st, s, p, msgs[p][:600], 170)
			}
			run := func(full bool) *Result {
				res, err := Run(ctx, Options{Config: cfg, Store: st, Full: full, Workers: tc.dec, Log: testLog(), TempDir: t.TempDir()})
				require.NoError(t, err)
				return res
			}
			run(false)
			m1, rows1, _ := publishedRows(t, ctx, st, hourly)
			tr1, events1, dups1, invalid1 := truth(msgs, m1.Absorbed, time.Hour, true)
			checkAgainstTruth(t, hourly, rows1, tr1)
			require.Equal(t, []int64{events1, dups1, invalid1}, []int64{m1.Events, m1.Duplicates, m1.Invalid})

			for p := int32(0); p < 3; p++ {
				writeRaw(t, ctx, st, s, p, msgs[p][600:], 130)
			}
			res := run(false)
			require.True(t, res.Views[0].Incremental)
			m2, rows2, order2 := publishedRows(t, ctx, st, hourly)
			require.Equal(t, map[int32]int64{0: 900, 1: 900, 2: 900}, m2.Absorbed)
			tr2, events2, dups2, invalid2 := truth(msgs, m2.Absorbed, time.Hour, true)
			checkAgainstTruth(t, hourly, rows2, tr2)
			require.Equal(t, []int64{events2, dups2, invalid2}, []int64{m2.Events, m2.Duplicates, m2.Invalid})

			run(true)
			_, _, order3 := publishedRows(t, ctx, st, hourly)
			require.Equal(t, order2, order3, "incremental and full runs give identical rows")
			if want == nil {
				want = order3
			}
			require.Equal(t, want, order3, "every scan mode gives identical rows")
		})
	}
}
