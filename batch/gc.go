package batch

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// runManifestKey is the copy of a run's manifest kept in its own folder.
// It marks the run as published (written just before _current.json), so
// garbage collection can tell published runs from a crashed run's leftovers.
func runManifestKey(view, runID string) string {
	return schemas.ViewRunPrefix(view, runID) + "_manifest.json"
}

// listRuns returns the run ids under views/<view>/runs/, sorted (run ids
// sort by start time), and which of them were published.
func listRuns(ctx context.Context, st objstore.Bucket, prefix string, marker string) (ids []string, published map[string]bool, err error) {
	objs, err := objstore.List(ctx, st, prefix)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	published = map[string]bool{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, prefix)
		id, file, ok := strings.Cut(rest, "/")
		if !ok || id == "" {
			continue
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
		if file == marker {
			published[id] = true
		}
	}
	sort.Strings(ids)
	return ids, published, nil
}

// gcView deletes the runs of view beyond the newest keep published ones,
// never the current run, and the leftovers of runs that crashed before
// publishing (unpublished runs older than the current one: a newer one may
// be in progress elsewhere only without the lock, which Run refuses).
// It returns the runs kept.
func gcView(ctx context.Context, st objstore.Bucket, view, current string, keep int) (kept []string, deleted int, err error) {
	prefix := fmt.Sprintf("views/%s/runs/", view)
	ids, published, err := listRuns(ctx, st, prefix, "_manifest.json")
	if err != nil {
		return nil, 0, err
	}
	var pub []string
	for _, id := range ids {
		if published[id] {
			pub = append(pub, id)
		}
	}
	keepSet := map[string]bool{current: true}
	for i := len(pub) - 1; i >= 0 && len(keepSet) < keep; i-- {
		if pub[i] <= current {
			keepSet[pub[i]] = true
		}
	}
	for _, id := range ids {
		if keepSet[id] || id > current {
			continue
		}
		objs, err := objstore.List(ctx, st, prefix+id+"/")
		if err != nil {
			return nil, deleted, err
		}
		// The marker goes first, so a half-deleted run is never taken for
		// a published one.
		sort.Slice(objs, func(i, j int) bool {
			return strings.HasSuffix(objs[i].Key, "/_manifest.json") && !strings.HasSuffix(objs[j].Key, "/_manifest.json")
		})
		for _, o := range objs {
			if err := st.Delete(ctx, o.Key); err != nil {
				return nil, deleted, err
			}
		}
		deleted++
	}
	for id := range keepSet {
		kept = append(kept, id)
	}
	sort.Strings(kept)
	return kept, deleted, nil
}

// gcState deletes the stream state (id indexes) of runs no view keeps.
func gcState(ctx context.Context, st objstore.Bucket, stream string, keepRuns map[string]bool) error {
	prefix := fmt.Sprintf("batch/%s/runs/", stream)
	ids, _, err := listRuns(ctx, st, prefix, "state.json")
	if err != nil {
		return err
	}
	for _, id := range ids {
		if keepRuns[id] {
			continue
		}
		objs, err := objstore.List(ctx, st, prefix+id+"/")
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := st.Delete(ctx, o.Key); err != nil {
				return err
			}
		}
	}
	return nil
}

// gcRemovedViews deletes the objects under views/<view>/ of every view the
// configuration no longer names, once grace has passed since the newest of
// them was written (docs/operations.md, "Changing views"). A view removed
// and configured again within the grace finds its runs where they were;
// its stored fingerprint decides whether serving may use them. It returns
// the views whose objects were deleted. Memory holds the keys of removed
// views only.
func gcRemovedViews(ctx context.Context, st objstore.Bucket, cfg *schemas.Config, grace time.Duration, now time.Time, lk *lock) ([]string, error) {
	if grace <= 0 {
		return nil, nil
	}
	type removed struct {
		keys   []string
		newest time.Time
	}
	found := map[string]*removed{}
	err := st.Iter(ctx, "views/", "", func(oi objstore.ObjectInfo) error {
		name, _, ok := strings.Cut(strings.TrimPrefix(oi.Key, "views/"), "/")
		if !ok || cfg.View(name) != nil {
			return nil
		}
		r := found[name]
		if r == nil {
			r = &removed{}
			found[name] = r
		}
		r.keys = append(r.keys, oi.Key)
		if oi.ModTime.After(r.newest) {
			r.newest = oi.ModTime
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("batch: listing views/ for removed views: %w", err)
	}
	names := make([]string, 0, len(found))
	for n, r := range found {
		if now.Sub(r.newest) >= grace {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var deleted []string
	for _, n := range names {
		if err := lk.check(); err != nil {
			return deleted, err
		}
		// The manifest first: a reader that still finds the view's files
		// then finds no run naming them.
		keys := found[n].keys
		sort.SliceStable(keys, func(i, j int) bool { return keys[i] == schemas.ManifestKey(n) && keys[j] != schemas.ManifestKey(n) })
		for _, k := range keys {
			if err := st.Delete(ctx, k); err != nil {
				return deleted, fmt.Errorf("batch: deleting %s of removed view %s: %w", k, n, err)
			}
		}
		deleted = append(deleted, n)
	}
	return deleted, nil
}
