package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// OwnerState is what a configuration does to the ClickHouse objects of one
// view or raw_events stream, compared with what the database holds.
type OwnerState string

const (
	// OwnerNew: none of its objects exist; Migrate creates them. A new view
	// on a stream that batch runs have absorbed is backfilling until the
	// next run publishes it.
	OwnerNew OwnerState = "new"
	// OwnerUnchanged: its tables hold the configured definition (merged SQL
	// views whose query changed are replaced; they hold no data).
	OwnerUnchanged OwnerState = "unchanged"
	// OwnerChanged: a table was created for another definition; Migrate
	// refuses it unless asked to recreate it, which drops its rows.
	OwnerChanged OwnerState = "changed"
	// OwnerRemoved: tandem created its objects, and the configuration no
	// longer names it. Migrate leaves them; RemoveOwners drops them.
	OwnerRemoved OwnerState = "removed"
	// OwnerConflict: an object it needs exists with other columns and no
	// record of tandem creating it.
	OwnerConflict OwnerState = "conflict"
	// OwnerNewVersion: the view's configured definition is (or Migrate
	// registers it as) a pending version, computed beside the current one,
	// which answers until the new one is exact (schemas/versions.go).
	OwnerNewVersion OwnerState = "new version"
)

// OwnerPlan is the plan for one view or raw_events stream.
type OwnerPlan struct {
	Owner string
	// Kind is "view" or "stream".
	Kind  string
	State OwnerState
	// Diffs are "key: old → new" lines, for OwnerChanged.
	Diffs []string
	// Objects are its tables and views that exist (OwnerRemoved) or that
	// the configuration needs (otherwise).
	Objects []string
	// TypeChanged: a stream whose field types changed (ErrFieldTypeChanged).
	TypeChanged bool
	// Added are columns its events table gains in place (fields added).
	Added []string
	// Version and Current are, for OwnerNewVersion, the pending version's
	// number and the current one's; Diffs then say what changed.
	Version, Current int
	// Physical is the pending version's physical name (schemas.PhysicalName).
	Physical string
}

// Plan says what a configuration would do to the database, without
// changing it: `tandem migrate --dry-run` prints it, `tandem dev` acts on it.
type Plan struct {
	Database       string
	ServerVersion  Version
	DatabaseExists bool
	Owners         []OwnerPlan
}

// With returns the owners in state s.
func (p Plan) With(s OwnerState) []string {
	var out []string
	for _, o := range p.Owners {
		if o.State == s {
			out = append(out, o.Owner)
		}
	}
	return out
}

// Owner returns the plan of one owner, or nil.
func (p Plan) Owner(name string) *OwnerPlan {
	for i := range p.Owners {
		if p.Owners[i].Owner == name {
			return &p.Owners[i]
		}
	}
	return nil
}

// String is the plan as `tandem migrate --dry-run` prints it: one line per
// view or stream saying what applying the configuration does to it.
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ClickHouse %s, database %s", p.ServerVersion, p.Database)
	if !p.DatabaseExists {
		b.WriteString(" (does not exist yet: created)")
	}
	b.WriteString(":\n")
	for _, o := range p.Owners {
		fmt.Fprintf(&b, "  %-6s %-28s ", o.Kind, o.Owner)
		switch o.State {
		case OwnerNew:
			b.WriteString("new: its tables are created")
			if o.Kind == "view" {
				b.WriteString("; if batch runs already absorbed its stream, it is backfilling (REST 503, SQL empty) until the next batch run publishes it")
			}
		case OwnerUnchanged:
			b.WriteString("unchanged")
			if len(o.Added) > 0 {
				fmt.Fprintf(&b, "; fields added, its events table gains the columns %s (older events read them as NULL)", strings.Join(o.Added, ", "))
			}
		case OwnerChanged:
			fmt.Fprintf(&b, "definition changed; `tandem migrate` refuses it until you choose:\n%s\n", strings.Join(o.Diffs, "\n"))
			fmt.Fprintf(&b, "         tandem migrate --recreate %s drops and recreates its tables (tandem dev does this itself)", o.Owner)
			switch {
			case o.Kind == "view":
				b.WriteString("; the view is then backfilling (REST 503, SQL empty) until the next batch run publishes it")
			case o.TypeChanged:
				b.WriteString("; events already accepted were validated under the old type: the next batch run recomputes every view of the stream under the new one (prefer a new field with another name)")
			default:
				b.WriteString("; its recent raw events are lost from ClickHouse (the master dataset keeps them)")
			}
		case OwnerNewVersion:
			fmt.Fprintf(&b, "new version %d (tables %s, %s, …):\n%s\n", o.Version, SpeedTable(o.Physical), BatchTable(o.Physical), strings.Join(o.Diffs, "\n"))
			fmt.Fprintf(&b, "         the old version %d serves REST and SQL until the new one is exact (its batch run over all history published); then both switch to it, and the old one's tables and objects are collected after batch.removed_view_grace", o.Current)
		case OwnerRemoved:
			fmt.Fprintf(&b, "removed from the configuration; its objects stay until `tandem migrate --drop-removed`: %s", strings.Join(o.Objects, ", "))
		case OwnerConflict:
			b.WriteString("an object it needs exists and was not created by tandem: `tandem migrate` says which")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Plan compares cfg with the database and says, per view and raw_events
// stream, what Migrate would do. It changes nothing.
func (db *DB) Plan(ctx context.Context, cfg *schemas.Config) (Plan, error) {
	p := Plan{Database: db.db, ServerVersion: db.version}
	if cfg.ClickHouse.Database != db.db {
		return p, fmt.Errorf("clickhouse: configuration names database %q but the connection was opened for %q", cfg.ClickHouse.Database, db.db)
	}
	if err := checkNames(cfg); err != nil {
		return p, err
	}
	logical := cfg
	var databases uint64
	if err := db.conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", db.db).Scan(&databases); err != nil {
		return p, fmt.Errorf("clickhouse: listing databases: %w", err)
	}
	p.DatabaseExists = databases > 0
	existing := map[string][]string{}
	meta := map[string]metaRecord{}
	if p.DatabaseExists {
		var err error
		if existing, err = db.existingColumns(ctx); err != nil {
			return p, err
		}
		if _, ok := existing[TableSchemaMeta]; ok {
			if meta, err = db.readMeta(ctx); err != nil {
				return p, err
			}
		}
	}
	// The versions Migrate would register, and the objects of every
	// version that would then be computed.
	if _, ok := existing[TableViewVersions]; ok {
		stored, err := db.ViewVersions(ctx)
		if err != nil {
			return p, err
		}
		if eff, err := cfg.Versioned(mergeVersions(stored, planVersions(cfg, stored, legacyDefs(meta, existing), nil, time.Now()))); err == nil {
			cfg = eff
		}
	}
	byOwner := map[string]int{} // index in p.Owners
	for _, o := range objects(cfg, db.version) {
		if o.Owner == "" {
			continue
		}
		i, ok := byOwner[o.Owner]
		if !ok {
			kind := "view"
			if logical.View(o.Owner) == nil {
				kind = "stream"
			}
			i = len(p.Owners)
			p.Owners = append(p.Owners, OwnerPlan{Owner: o.Owner, Kind: kind, State: OwnerNew})
			byOwner[o.Owner] = i
		}
		op := &p.Owners[i]
		rec, recorded := meta[o.Object]
		if o.Kind == KindFields {
			if changes := fieldTypeChanges(rec.definition, o.definition); recorded && len(changes) > 0 {
				op.State = OwnerChanged
				op.Diffs = append(op.Diffs, changes...)
				op.TypeChanged = true
			} else if recorded && op.State == OwnerNew {
				op.State = OwnerUnchanged
			}
			continue
		}
		op.Objects = append(op.Objects, o.Object)
		cols, exists := existing[o.Object]
		switch {
		case !exists:
		case o.Kind == KindView:
			if op.State == OwnerNew {
				op.State = OwnerUnchanged
			}
		case recorded && rec.fingerprint != o.fingerprint && o.Object == RawTable(o.Owner) && len(fieldTypeChanges(rec.definition, o.definition)) == 0 && tableAhead(o, cols):
			if op.State == OwnerNew {
				op.State = OwnerUnchanged
			}
		case recorded && rec.fingerprint != o.fingerprint && fieldsOnlyAdded(o, rec.definition, cols):
			_, added, _ := addedColumns(o, cols)
			op.Added = append(op.Added, added...)
			if op.State == OwnerNew {
				op.State = OwnerUnchanged
			}
		case recorded && rec.fingerprint != o.fingerprint:
			if op.State != OwnerConflict {
				op.State = OwnerChanged
				for _, d := range definitionDiffs(o, rec.definition) {
					if !slices.Contains(op.Diffs, d) {
						op.Diffs = append(op.Diffs, d)
					}
				}
			}
		case !recorded && !slices.Equal(cols, o.columns):
			op.State = OwnerConflict
		default:
			if op.State == OwnerNew {
				op.State = OwnerUnchanged
			}
		}
	}
	for _, v := range cfg.Views {
		if !v.Pending() {
			continue
		}
		op := p.Owner(v.Logical())
		vs := cfg.VersionsOf(v.Logical())
		if op == nil || op.State == OwnerConflict || op.State == OwnerChanged || len(vs) != 2 {
			continue
		}
		op.State, op.Version, op.Current, op.Physical = OwnerNewVersion, v.Version(), max(vs[0].Version(), 1), v.Name
		op.Diffs = versionDiffs(vs[0], v)
	}
	// Owners tandem recorded creating whose objects still exist but the
	// configuration no longer names.
	removed := map[string]*OwnerPlan{}
	for object, rec := range meta {
		if _, configured := byOwner[rec.owner]; rec.owner == "" || configured {
			continue
		}
		if _, exists := existing[object]; !exists {
			continue
		}
		op := removed[rec.owner]
		if op == nil {
			kind := "view"
			if object == RawTable(rec.owner) {
				kind = "stream"
			}
			op = &OwnerPlan{Owner: rec.owner, Kind: kind, State: OwnerRemoved}
			removed[rec.owner] = op
		}
		if object == RawTable(rec.owner) {
			op.Kind = "stream"
		}
		op.Objects = append(op.Objects, object)
	}
	names := make([]string, 0, len(removed))
	for n := range removed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sort.Strings(removed[n].Objects)
		p.Owners = append(p.Owners, *removed[n])
	}
	return p, nil
}

// DropRemoved drops the objects of every owner the plan of cfg finds
// removed (tandem created them, the configuration no longer names them),
// and forgets the absorbed chunks of removed views' runs. It returns the
// owners dropped.
func (db *DB) DropRemoved(ctx context.Context, cfg *schemas.Config) ([]string, error) {
	p, err := db.Plan(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var dropped []string
	for _, o := range p.Owners {
		if o.State != OwnerRemoved {
			continue
		}
		for _, object := range o.Objects {
			if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, object)); err != nil {
				return dropped, fmt.Errorf("clickhouse: dropping %s of removed %s %s: %w", object, o.Kind, o.Owner, err)
			}
		}
		if o.Kind == "view" {
			// Were the view configured again, it would be backfilling
			// until its next run, not answered from a dropped run: every
			// version's runs go, and its versions are collected (a
			// version number is never reused).
			physical := []string{o.Owner}
			vs, err := db.ViewVersions(ctx)
			if err != nil {
				return dropped, err
			}
			var collected []schemas.ViewVersion
			for _, vv := range vs {
				if vv.View != o.Owner || vv.State == schemas.VersionCollected {
					continue
				}
				if vv.Physical() != o.Owner {
					physical = append(physical, vv.Physical())
				}
				vv.State, vv.Since = schemas.VersionCollected, time.Now()
				collected = append(collected, vv)
			}
			for _, name := range physical {
				if err := db.mutate(ctx, TableAbsorbed, "DELETE WHERE view = ?", name); err != nil {
					return dropped, err
				}
				if err := db.unpublish(ctx, name); err != nil {
					return dropped, err
				}
			}
			if err := db.writeVersions(ctx, collected); err != nil {
				return dropped, err
			}
		}
		dropped = append(dropped, o.Owner)
	}
	return dropped, nil
}

// versionDiffs lists the "key: old → new" lines between two versions.
func versionDiffs(old, new *schemas.View) []string {
	return definitionDiffs(object{definition: viewDefinition(new)}, viewDefinition(old))
}
