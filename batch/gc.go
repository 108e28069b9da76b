package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// listRuns returns the run ids under prefix (views/<view>/runs/ or a
// stream's state folder), sorted (run ids sort by start time), and which
// of them were published (hold marker). It lists one key of each run and
// skips the rest of its folder, then asks for each run's marker, so its
// requests follow the number of runs, not the objects (days) each holds.
func listRuns(ctx context.Context, st objstore.Bucket, prefix string, marker string) (ids []string, published map[string]bool, err error) {
	published = map[string]bool{}
	err = eachFolder(ctx, st, prefix, func(id string) error {
		ids = append(ids, id)
		_, err := st.Stat(ctx, prefix+id+"/"+marker)
		switch {
		case err == nil:
			published[id] = true
		case !isNotFound(err):
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(ids)
	return ids, published, nil
}

// errNextFolder stops a listing at the first key of a folder.
var errNextFolder = errors.New("next folder")

// eachFolder calls fn, in key order, with the name of every folder
// directly under prefix (the part of a key up to the next "/"). It reads
// one key of each folder: after it, the listing starts again past the
// folder (name+"0" sorts after every key under name+"/", and before the
// next folder's keys, since '0' follows '/'). One LIST request a folder,
// whatever it holds.
func eachFolder(ctx context.Context, st objstore.BucketReader, prefix string, fn func(name string) error) error {
	after := ""
	for {
		var name string
		err := st.Iter(ctx, prefix, after, func(oi objstore.ObjectInfo) error {
			n, _, ok := strings.Cut(strings.TrimPrefix(oi.Key, prefix), "/")
			if !ok || n == "" {
				return nil // an object directly under prefix: not a folder
			}
			name = n
			return errNextFolder
		})
		if err != nil && !errors.Is(err, errNextFolder) {
			return err
		}
		if name == "" {
			return nil
		}
		if err := fn(name); err != nil {
			return err
		}
		after = prefix + name + "0"
	}
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
		// a published one; the rest at once.
		marker := prefix + id + "/_manifest.json"
		if err := st.Delete(ctx, marker); err != nil {
			return nil, deleted, err
		}
		objs = slices.DeleteFunc(objs, func(o objstore.ObjectInfo) bool { return o.Key == marker })
		if err := deleteKeys(ctx, st, objs); err != nil {
			return nil, deleted, err
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
		if err := deleteKeys(ctx, st, objs); err != nil {
			return err
		}
	}
	return nil
}

// deleteKeys deletes objs, copiesAtOnce at a time (one request each: a
// collected run holds a file per day and level).
func deleteKeys(ctx context.Context, st objstore.Bucket, objs []objstore.ObjectInfo) error {
	return forEachLimit(ctx, len(objs), copiesAtOnce, func(ctx context.Context, i int) error {
		return st.Delete(ctx, objs[i].Key)
	})
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
	// Only the folders of views no longer configured are listed in full:
	// a configured view's folder is skipped after its first key, so the
	// listing does not grow with the runs and days of the views in use.
	err := eachFolder(ctx, st, "views/", func(name string) error {
		if cfg.View(name) != nil {
			return nil
		}
		r := &removed{}
		found[name] = r
		return st.Iter(ctx, "views/"+name+"/", "", func(oi objstore.ObjectInfo) error {
			r.keys = append(r.keys, oi.Key)
			if oi.ModTime.After(r.newest) {
				r.newest = oi.ModTime
			}
			return nil
		})
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

// CheckWithoutRegistry is what a run that cannot read ClickHouse
// (tandem batch run --no-clickhouse) checks first. Which version of a view
// answers, and which is pending, is recorded only in ClickHouse
// (view_versions; docs/architecture.md, "Versioned view definitions"):
// without it the run computes each configured view under its own name,
// version 1's storage. That is right only while no view has changed since
// versions began, so it refuses when S3 shows otherwise: a later
// version's objects (views/<view>__v<n>/), or a published run of the view
// under another definition, which the run would replace with the
// configured one while serving still answers from it.
func CheckWithoutRegistry(ctx context.Context, st objstore.Bucket, cfg *schemas.Config) error {
	later := map[string]string{} // logical view → a later version's folder
	if err := eachFolder(ctx, st, "views/", func(name string) error {
		if logical, _, ok := strings.Cut(name, "__v"); ok && later[logical] == "" {
			later[logical] = name
		}
		return nil
	}); err != nil {
		return err
	}
	for _, v := range cfg.Views {
		if f := later[v.Name]; f != "" {
			return fmt.Errorf("batch: view %s has a later version (s3://%s/views/%s/): which version answers and which is pending is recorded in ClickHouse (view_versions), which --no-clickhouse does not read, and this run would compute the configured definition into version 1's storage; run tandem batch run without --no-clickhouse",
				v.Name, st.Name(), f)
		}
		m, err := readManifest(ctx, st, v.Name)
		if err != nil {
			return err
		}
		if m != nil && m.Fingerprint != v.Fingerprint() {
			return fmt.Errorf("batch: the configured definition of view %s differs from its published run's (fingerprint %s, published %s): with ClickHouse the change becomes a new version, computed beside the one that answers until it is exact, but --no-clickhouse can neither register nor switch it and would replace the answering run; run tandem migrate, then tandem batch run without --no-clickhouse",
				v.Name, v.Fingerprint(), m.Fingerprint)
		}
	}
	return nil
}
