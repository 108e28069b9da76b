package batch

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestRemovedViewsCollectedAfterGrace: the objects of a view no longer
// configured stay until batch.removed_view_grace has passed since the
// newest of them, then all go; configured views' objects and other
// prefixes are never touched; a grace of 0 keeps them forever.
func TestRemovedViewsCollectedAfterGrace(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	cfg := testConfig(t, 100, 1, srv)
	st := testStore(t, cfg)
	kept := cfg.Views[0].Name
	keys := []string{
		schemas.ManifestKey("gone"), schemas.ViewDayKey("gone", "r1", time.Unix(0, 0), 0), "views/gone/runs/r1/_manifest.json",
		schemas.ManifestKey(kept), schemas.ViewDayKey(kept, "r1", time.Unix(0, 0), 0),
		"views/gone_too/_current.json", "raw/gone/x.parquet",
	}
	for _, k := range keys {
		require.NoError(t, objstore.PutBytes(ctx, st, k, []byte("x")))
	}
	exists := func(k string) bool {
		_, err := objstore.GetBytes(ctx, st, k)
		if err != nil {
			require.ErrorIs(t, err, objstore.ErrNotFound)
			return false
		}
		return true
	}
	lk, err := acquireLock(ctx, st, "test", time.Minute, testLog())
	require.NoError(t, err)
	defer lk.release(ctx)

	// Within the grace: nothing goes.
	got, err := gcRemovedViews(ctx, st, cfg, time.Hour, time.Now(), lk)
	require.NoError(t, err)
	require.Empty(t, got)
	// A grace of 0 keeps them forever.
	got, err = gcRemovedViews(ctx, st, cfg, 0, time.Now().Add(1000*time.Hour), lk)
	require.NoError(t, err)
	require.Empty(t, got)
	for _, k := range keys {
		require.True(t, exists(k), k)
	}
	// After it: every object of the removed views, nothing else.
	got, err = gcRemovedViews(ctx, st, cfg, time.Hour, time.Now().Add(2*time.Hour), lk)
	require.NoError(t, err)
	require.Equal(t, []string{"gone", "gone_too"}, got)
	for _, k := range keys {
		require.Equal(t, k == schemas.ManifestKey(kept) || k == schemas.ViewDayKey(kept, "r1", time.Unix(0, 0), 0) || k == "raw/gone/x.parquet", exists(k), k)
	}
}
