package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// View versions (schemas/versions.go; docs/architecture.md, "Versioned
// view definitions"): the registry is view_versions; tandem migrate
// registers a changed definition as a pending version, the batch job
// switches it to current once a run of it is published (SwitchVersions)
// and collects retired versions after batch.removed_view_grace
// (CollectRetired).

var versionColumns = []string{"view", "version", "fingerprint", "definition", "state", "since", "updated"}

// ViewVersions returns every stored version, by view and version; none
// before the first migration.
func (db *DB) ViewVersions(ctx context.Context) ([]schemas.ViewVersion, error) {
	var n uint64
	if err := db.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db.db, TableViewVersions).Scan(&n); err != nil {
		return nil, fmt.Errorf("clickhouse: looking for %s: %w", TableViewVersions, err)
	}
	if n == 0 {
		return nil, nil
	}
	rows, err := db.conn.Query(ctx, fmt.Sprintf("SELECT view, version, fingerprint, definition, state, since FROM %s FINAL ORDER BY view, version", qualified(db.db, TableViewVersions)))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: reading %s: %w", TableViewVersions, err)
	}
	defer rows.Close()
	var out []schemas.ViewVersion
	for rows.Next() {
		var vv schemas.ViewVersion
		var version uint32
		var state string
		if err := rows.Scan(&vv.View, &version, &vv.Fingerprint, &vv.Definition, &state, &vv.Since); err != nil {
			return nil, fmt.Errorf("clickhouse: reading %s: %w", TableViewVersions, err)
		}
		vv.Version, vv.State = int(version), schemas.VersionState(state)
		out = append(out, vv)
	}
	return out, rows.Err()
}

// Versioned returns cfg's Versioned configuration under the stored
// versions: the views every component computes and serves.
func (db *DB) Versioned(ctx context.Context, cfg *schemas.Config) (*schemas.Config, error) {
	vs, err := db.ViewVersions(ctx)
	if err != nil {
		return nil, err
	}
	return cfg.Versioned(vs)
}

func (db *DB) writeVersions(ctx context.Context, vs []schemas.ViewVersion) error {
	rows := make([][]any, len(vs))
	now := uint64(time.Now().UnixNano())
	for i, vv := range vs {
		rows[i] = []any{vv.View, uint32(vv.Version), vv.Fingerprint, vv.Definition, string(vv.State), vv.Since.UTC().Truncate(time.Second), now}
	}
	if err := db.insert(ctx, insertSQL(db.db, TableViewVersions, versionColumns), rows); err != nil {
		return fmt.Errorf("clickhouse: writing %s: %w", TableViewVersions, err)
	}
	return nil
}

// planVersions is what Migrate changes in the registry for cfg (pure):
//   - a view with no version gets version 1, current, unless its tables
//     were recorded for another definition before versions existed (legacy:
//     Migrate refuses it as before, until --recreate);
//   - a definition that is neither the current nor the pending version
//     becomes a new pending version (a previous pending one is retired);
//   - a definition back to the current version retires the pending one;
//   - --recreate makes the configured definition the current version in
//     place (its tables are dropped and created again) and retires a
//     pending one.
//
// legacyDef returns the definition a view's batch table was recorded
// with, if any.
func planVersions(cfg *schemas.Config, stored []schemas.ViewVersion, legacyDef func(*schemas.View) (string, bool), recreate []string, now time.Time) []schemas.ViewVersion {
	var out []schemas.ViewVersion
	for _, v := range cfg.Views {
		var cur, pend *schemas.ViewVersion
		top := 0
		for i := range stored {
			vv := &stored[i]
			if vv.View != v.Name {
				continue
			}
			top = max(top, vv.Version)
			switch vv.State {
			case schemas.VersionCurrent:
				cur = vv
			case schemas.VersionPending:
				pend = vv
			}
		}
		fp, def := v.Fingerprint(), v.DefinitionYAML()
		retire := func(vv *schemas.ViewVersion) {
			if vv != nil {
				r := *vv
				r.State, r.Since = schemas.VersionRetired, now
				out = append(out, r)
			}
		}
		switch {
		case slices.Contains(recreate, v.Name):
			n := 1
			if cur != nil {
				n = cur.Version
			}
			out = append(out, schemas.ViewVersion{View: v.Name, Version: n, Fingerprint: fp, Definition: def, State: schemas.VersionCurrent, Since: now})
			retire(pend)
		case cur == nil:
			if old, ok := legacyDef(v); ok && old != viewDefinition(v) {
				continue
			}
			out = append(out, schemas.ViewVersion{View: v.Name, Version: max(top+1, 1), Fingerprint: fp, Definition: def, State: schemas.VersionCurrent, Since: now})
		case cur.Fingerprint == fp:
			retire(pend)
		case pend != nil && pend.Fingerprint == fp:
		default:
			retire(pend)
			out = append(out, schemas.ViewVersion{View: v.Name, Version: top + 1, Fingerprint: fp, Definition: def, State: schemas.VersionPending, Since: now})
		}
	}
	return out
}

// mergeVersions applies changes over stored.
func mergeVersions(stored, changes []schemas.ViewVersion) []schemas.ViewVersion {
	out := append([]schemas.ViewVersion(nil), stored...)
	for _, c := range changes {
		i := slices.IndexFunc(out, func(vv schemas.ViewVersion) bool { return vv.View == c.View && vv.Version == c.Version })
		if i < 0 {
			out = append(out, c)
		} else {
			out[i] = c
		}
	}
	return out
}

// legacyDefs reads what a view's existing batch table was recorded with
// in schema_meta, for planVersions.
func legacyDefs(meta map[string]metaRecord, existing map[string][]string) func(*schemas.View) (string, bool) {
	return func(v *schemas.View) (string, bool) {
		rec, ok := meta[BatchTable(v.Name)]
		if _, exists := existing[BatchTable(v.Name)]; !exists {
			return "", false
		}
		return rec.definition, ok
	}
}

// planRegistry returns planVersions' changes for cfg and the Versioned
// configuration they make, reading the registry and schema_meta where they
// exist (before the first migration they do not). Nothing is written.
func (db *DB) planRegistry(ctx context.Context, cfg *schemas.Config, recreate []string) ([]schemas.ViewVersion, *schemas.Config, error) {
	stored, err := db.ViewVersions(ctx)
	if err != nil {
		return nil, nil, err
	}
	meta := map[string]metaRecord{}
	var n uint64
	if err := db.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db.db, TableSchemaMeta).Scan(&n); err != nil {
		return nil, nil, fmt.Errorf("clickhouse: looking for %s: %w", TableSchemaMeta, err)
	}
	existing := map[string][]string{}
	if n > 0 {
		if meta, err = db.readMeta(ctx); err != nil {
			return nil, nil, err
		}
		if existing, err = db.existingColumns(ctx); err != nil {
			return nil, nil, err
		}
	}
	changes := planVersions(cfg, stored, legacyDefs(meta, existing), recreate, time.Now())
	eff, err := cfg.Versioned(mergeVersions(stored, changes))
	return changes, eff, err
}

// SwitchVersions makes every pending version of eff (a Versioned
// configuration) whose run is published in ClickHouse the current one: the
// logical SQL views (<view>, <view>_<level>) are replaced by the new
// version's, the pending version's own SQL views are dropped, and the
// registry says current for it and retired for the previous one. REST has
// answered from it since its manifest was published (serving picks the
// newest answerable version), so both surfaces answer it from here on.
// It returns the logical views switched; a failure leaves the version
// pending, and the next batch run switches it again.
func (db *DB) SwitchVersions(ctx context.Context, eff *schemas.Config) ([]string, error) {
	var switched []string
	for _, p := range slices.Clone(eff.Views) {
		if !p.Pending() {
			continue
		}
		runID, _, err := db.currentRun(ctx, p)
		if err != nil {
			return switched, err
		}
		if runID == "" {
			continue
		}
		logical := p.Logical()
		post, old := eff.Switched(logical)
		before := objects(eff, db.version)
		after := objects(post, db.version)
		keep, was := map[string]bool{}, map[string]string{}
		for _, o := range before {
			was[o.Object] = o.SQL
		}
		for _, o := range after {
			// The other views of the stream name its views in their
			// answered condition: theirs change too.
			if o.Kind != KindView || (o.Owner != logical && was[o.Object] == o.SQL) {
				continue
			}
			keep[o.Object] = true
			if err := db.replaceView(ctx, o); err != nil {
				return switched, err
			}
			// Every server records the view it now has: on a cluster
			// each one is migrated against its own schema_meta.
			version := uint64(time.Now().UnixNano())
			if err := db.forEach(func(s *DB) error { return s.record(ctx, o, version) }); err != nil {
				return switched, err
			}
		}
		for _, o := range before {
			if o.Owner == logical && o.Kind == KindView && !keep[o.Object] {
				if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, o.Object)); err != nil {
					return switched, fmt.Errorf("clickhouse: dropping %s after switching view %s: %w", describe(o), logical, err)
				}
			}
		}
		now := time.Now()
		vs := []schemas.ViewVersion{{View: logical, Version: p.Version(), Fingerprint: p.Fingerprint(), Definition: p.DefinitionYAML(), State: schemas.VersionCurrent, Since: now}}
		if old != nil {
			vs = append(vs, schemas.ViewVersion{View: logical, Version: max(old.Version(), 1), Fingerprint: old.Fingerprint(), Definition: old.DefinitionYAML(), State: schemas.VersionRetired, Since: now})
		}
		if err := db.writeVersions(ctx, vs); err != nil {
			return switched, err
		}
		switched = append(switched, logical)
		eff = post // the next switch starts from this one's layout
	}
	return switched, nil
}

// replaceView puts a merged SQL view in place of the one of the same name
// with one RENAME (18.16 has no CREATE OR REPLACE VIEW nor EXCHANGE): the
// new view is created beside it first, and both renames are one statement,
// which the server runs under its global lock, so a query finds one or the
// other, never none (TestReplaceViewLeavesNoGap; two statements would leave
// a gap).
func (db *DB) replaceView(ctx context.Context, o object) error {
	next, prev := o.Object+"__next", o.Object+"__prev"
	target := qualified(db.db, o.Object)
	sql := strings.Replace(o.SQL, "CREATE VIEW IF NOT EXISTS "+target+" AS", "CREATE VIEW "+qualified(db.db, next)+" AS", 1)
	if sql == o.SQL {
		return fmt.Errorf("clickhouse: replacing %s: unexpected statement", describe(o))
	}
	for _, n := range []string{next, prev} {
		if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, n)); err != nil {
			return fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
		}
	}
	if err := db.exec(ctx, sql); err != nil {
		return fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
	}
	return db.forEach(func(s *DB) error {
		var exists uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", s.db, o.Object).Scan(&exists); err != nil {
			return fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
		}
		rename := fmt.Sprintf("RENAME TABLE %s TO %s", qualified(s.db, next), target)
		if exists > 0 {
			rename = fmt.Sprintf("RENAME TABLE %s TO %s, %s TO %s", target, qualified(s.db, prev), qualified(s.db, next), target)
		}
		if err := s.conn.Exec(ctx, rename); err != nil {
			return fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
		}
		if err := s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+qualified(s.db, prev)); err != nil {
			return fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
		}
		return nil
	})
}

// CollectRetired drops the ClickHouse tables of versions retired more than
// grace ago (the S3 half is the batch job's gcRemovedViews, which sees
// their physical names configured no more) and marks them collected. It
// returns their physical names. A version-1 physical name is the logical
// view's own, so only tables are dropped by it, never SQL views: the
// logical SQL views belong to the current version.
func (db *DB) CollectRetired(ctx context.Context, cfg *schemas.Config, grace time.Duration, now time.Time) ([]string, error) {
	if grace <= 0 {
		return nil, nil // batch.removed_view_grace 0s: kept forever
	}
	vs, err := db.ViewVersions(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, vv := range vs {
		if vv.State != schemas.VersionRetired || now.Sub(vv.Since) < grace {
			continue
		}
		if err := db.dropVersion(ctx, cfg, vv); err != nil {
			return out, err
		}
		c := vv
		c.State, c.Since = schemas.VersionCollected, now
		if err := db.writeVersions(ctx, []schemas.ViewVersion{c}); err != nil {
			return out, err
		}
		phys := vv.Physical()
		out = append(out, phys)
	}
	return out, nil
}

// dropVersion drops a version's ClickHouse tables, its own SQL views
// (a pending version's, named by its physical name) and its absorbed rows.
// A version-1 physical name is the logical view's own, so only tables are
// dropped by it, never SQL views: the logical SQL views belong to the
// current version.
func (db *DB) dropVersion(ctx context.Context, cfg *schemas.Config, vv schemas.ViewVersion) error {
	phys := vv.Physical()
	names := []string{SpeedTable(phys), BatchTable(phys), LevelsTable(phys)}
	if phys != vv.View {
		names = append(names, MergedView(phys))
		if v, err := cfg.VersionView(vv); err == nil {
			for _, l := range v.Levels() {
				names = append(names, LevelView(phys, l))
			}
		}
	}
	if cfg.ClickHouse.Cluster != "" {
		for _, t := range []string{SpeedTable(phys), BatchTable(phys), LevelsTable(phys)} {
			names = append(names, LocalTable(t))
		}
	}
	for _, n := range names {
		if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, n)); err != nil {
			return fmt.Errorf("clickhouse: dropping %s of version %d of view %s: %w", n, vv.Version, vv.View, err)
		}
	}
	return db.mutate(ctx, TableAbsorbed, "DELETE WHERE view = ?", phys)
}
