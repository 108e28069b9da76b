package batch

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestOnlyWhatChangedIsRecomputed: a view added to a stream whose other
// view has runs (a new view, or a new version of a changed one) is
// computed over all history while the other view's run stays incremental,
// both up to the same absorbed chunks; the next run continues
// incrementally for both; and every file equals a --full run's, byte for
// byte.
func TestOnlyWhatChangedIsRecomputed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 3, srv)
	st := testStore(t, cfg)
	s := cfg.Stream("pv")
	// At first the stream has only the hourly view.
	at := strings.Index(testYAML, "  - name: pv_daily")
	require.Positive(t, at)
	first, err := schemas.Parse("test.yaml", []byte(strings.Replace(strings.Replace(testYAML[:at], "%d", "100", 1), "%d", "3", 1)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	first.S3 = cfg.S3

	rng := rand.New(rand.NewPCG(5, 6))
	msgs := map[int32][]genMsg{}
	ids := map[int32]*[]string{0: {}, 1: {}, 2: {}}
	for p := int32(0); p < 3; p++ {
		msgs[p] = genPartition(rng, p, 0, 300, ids[p])
		writeRaw(t, ctx, st, s, p, msgs[p], 70)
	}
	bc, err := ConfigFrom(cfg)
	require.NoError(t, err)
	run := func(c *schemas.Config, full bool) *Result {
		t.Helper()
		res, err := Run(ctx, Options{Config: c, Batch: &bc, Store: st, Full: full, Log: testLog(), TempDir: t.TempDir()})
		require.NoError(t, err)
		return res
	}
	more := func(n int64) {
		t.Helper()
		for p := int32(0); p < 3; p++ {
			m := genPartition(rng, p, int64(len(msgs[p])), n, ids[p])
			msgs[p] = append(msgs[p], m...)
			writeRaw(t, ctx, st, s, p, m, 50)
		}
	}
	byView := func(res *Result) map[string]ViewResult {
		out := map[string]ViewResult{}
		for _, vr := range res.Views {
			out[vr.View] = vr
		}
		return out
	}

	run(first, false)
	more(100)
	// The daily view is added: the hourly view continues incrementally.
	res := byView(run(cfg, false))
	require.True(t, res["pv_hourly"].Incremental, "the unchanged view stays incremental")
	require.Positive(t, res["pv_hourly"].DaysKept)
	require.False(t, res["pv_daily"].Incremental, "the new view is computed over all history")
	require.Equal(t, res["pv_hourly"].Manifest.Absorbed, res["pv_daily"].Manifest.Absorbed, "both absorb the same chunks")
	require.NotEqual(t, res["pv_hourly"].Manifest.RunID, res["pv_daily"].Manifest.RunID)
	want := map[int32]int64{0: 400, 1: 400, 2: 400}
	require.Equal(t, want, res["pv_daily"].Manifest.Absorbed)
	_, rows, _ := publishedRows(t, ctx, st, cfg.View("pv_hourly"))
	tr, events, dups, invalid := truth(msgs, want, time.Hour, true)
	checkAgainstTruth(t, cfg.View("pv_hourly"), rows, tr)
	_, drows, _ := publishedRows(t, ctx, st, cfg.View("pv_daily"))
	dtr, _, _, _ := truth(msgs, want, 24*time.Hour, false)
	checkAgainstTruth(t, cfg.View("pv_daily"), drows, dtr)
	for _, v := range []string{"pv_hourly", "pv_daily"} {
		m := res[v].Manifest
		require.Equal(t, []int64{events, dups, invalid}, []int64{m.Events, m.Duplicates, m.Invalid}, v)
	}

	// The next run continues incrementally for both.
	more(100)
	res = byView(run(cfg, false))
	require.True(t, res["pv_hourly"].Incremental)
	require.True(t, res["pv_daily"].Incremental)
	require.Equal(t, res["pv_hourly"].Manifest.RunID, res["pv_daily"].Manifest.RunID)
	m3h, m3d := res["pv_hourly"].Manifest, res["pv_daily"].Manifest

	// And equals a full run byte for byte.
	full := byView(run(cfg, true))
	for _, pair := range [][2]*schemas.Manifest{{m3h, full["pv_hourly"].Manifest}, {m3d, full["pv_daily"].Manifest}} {
		a, b := fileBytes(t, ctx, st, pair[0]), fileBytes(t, ctx, st, pair[1])
		require.Len(t, b, len(a))
		for k, data := range a {
			require.True(t, bytes.Equal(data, b[k]), "file %s of %s differs between the incremental and the full run", k, pair[0].View)
		}
	}
}
