package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// Action is what Migrate did to one object.
type Action string

const (
	ActionUnchanged Action = "up to date"
	ActionCreated   Action = "created"
	// ActionReplaced: a merged SQL view whose query changed (it holds no
	// data, so it is dropped and created again).
	ActionReplaced Action = "replaced"
	// ActionRecorded: a table that existed with the expected columns but
	// without a schema_meta record (a migration interrupted between CREATE
	// and the record) was recorded.
	ActionRecorded Action = "recorded"
	// ActionRecreated: dropped and created again, as --recreate asked.
	ActionRecreated Action = "recreated"
	// ActionColumnsAdded: a table of an unchanged definition created by an
	// older tandem gained the columns this version adds at the end (ALTER
	// TABLE … ADD COLUMN: its rows stay, the new columns read as their
	// defaults in them).
	ActionColumnsAdded Action = "columns added"
	// ActionAltered: a stream's events table gained the columns of fields
	// added to the stream; older rows read them as NULL.
	ActionAltered Action = "altered"
)

// Change is one line of a migration report.
type Change struct {
	Object string // without the database; "" for the database
	Kind   ObjectKind
	Owner  string
	Action Action
	// Server is the server of the cluster the change was made on
	// (host:port); "" on one server.
	Server string
}

// Report says what Migrate did.
type Report struct {
	Database      string
	ServerVersion Version
	Changes       []Change
	// Notes are what the operator must do after this migration, one
	// sentence each (for example a full batch run after columns were
	// added).
	Notes []string
}

// UpToDate reports whether Migrate changed nothing.
func (r Report) UpToDate() bool {
	for _, c := range r.Changes {
		if c.Action != ActionUnchanged {
			return false
		}
	}
	return true
}

// String is the report as `tandem migrate` prints it.
func (r Report) String() string {
	var b strings.Builder
	if r.UpToDate() {
		fmt.Fprintf(&b, "ClickHouse %s, database %s: up to date (%d objects)\n", r.ServerVersion, r.Database, len(r.Changes))
		return b.String()
	}
	fmt.Fprintf(&b, "ClickHouse %s, database %s:\n", r.ServerVersion, r.Database)
	for _, c := range r.Changes {
		if c.Action == ActionUnchanged {
			continue
		}
		name := r.Database
		switch {
		case c.Kind == KindFields:
			name = c.Object
		case c.Object != "":
			name += "." + c.Object
		}
		if c.Server != "" {
			name += " on " + c.Server
		}
		fmt.Fprintf(&b, "  %-10s %-8s %s\n", c.Action, c.Kind, name)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// ErrDefinitionChanged is wrapped by Migrate's error when a view or stream
// differs from the definition its ClickHouse objects were created for.
var ErrDefinitionChanged = errors.New("definition changed since its ClickHouse tables were created")

// ErrForeignObject is wrapped by Migrate's error when an object tandem needs
// exists with other columns and no record of tandem creating it.
var ErrForeignObject = errors.New("exists but was not created by tandem")

type metaRecord struct {
	fingerprint, definition string
	owner, kind             string
	version                 uint64
}

// Migrate creates every object of DDL(cfg, server version) that is missing
// and checks those that exist against the definitions recorded in
// schema_meta when they were created. It is idempotent: on an up-to-date
// database it changes nothing and the report says so.
//
// A view or raw-events stream whose definition changed (granularity,
// dimensions, measures, field types, chunk_size) is an error naming it and
// what changed; nothing of it is touched. recreate lists views or streams
// whose objects are to be dropped and created empty instead: their speed
// rows, batch runs and raw events are lost (the batch layer recomputes them
// from the master dataset on its next run). Merged SQL views hold no data,
// so a changed one is simply replaced.
//
// On a cluster (clickhouse.cluster) it migrates every server of the
// cluster in turn, each against its own schema_meta, as ON CLUSTER would
// without ZooKeeper: the report lists each server's changes (Change.Server)
// and is up to date when every server was.
func (db *DB) Migrate(ctx context.Context, cfg *schemas.Config, recreate ...string) (Report, error) {
	if cfg.ClickHouse.Cluster != db.cluster {
		return Report{Database: db.db, ServerVersion: db.version}, fmt.Errorf("clickhouse: configuration names cluster %q (clickhouse.cluster) but the connection was opened for %q", cfg.ClickHouse.Cluster, db.cluster)
	}
	if cfg.ClickHouse.Database != db.db {
		return Report{Database: db.db, ServerVersion: db.version}, fmt.Errorf("clickhouse: configuration names database %q but the connection was opened for %q", cfg.ClickHouse.Database, db.db)
	}
	if err := checkNames(cfg); err != nil {
		return Report{Database: db.db, ServerVersion: db.version}, err
	}
	// A changed definition becomes a pending version with tables of its
	// own; the objects below are those of every version computed. The
	// registry is written once they exist (and not when Migrate refuses).
	versions, cfg, err := db.planRegistry(ctx, cfg, recreate)
	if err != nil {
		return Report{Database: db.db, ServerVersion: db.version}, err
	}
	rep, err := db.migrateObjects(ctx, cfg, recreate)
	if err != nil {
		return rep, err
	}
	for i, vv := range versions {
		// A recreated view starts over: a pending version it had goes
		// with its tables now, not after a grace period.
		if vv.State == schemas.VersionRetired && slices.Contains(recreate, vv.View) {
			if err := db.dropVersion(ctx, cfg, vv); err != nil {
				return rep, err
			}
			versions[i].State = schemas.VersionCollected
		}
	}
	return rep, db.writeVersions(ctx, versions)
}

// migrateObjects is Migrate of a Versioned configuration's objects.
func (db *DB) migrateObjects(ctx context.Context, cfg *schemas.Config, recreate []string) (Report, error) {
	if len(db.servers) == 0 {
		return db.migrateServer(ctx, cfg, recreate)
	}
	all := Report{Database: db.db, ServerVersion: db.version}
	// The recreated objects go on every server before any is created
	// again: a Replicated table created anew beside a replica that still
	// has the old one would fetch the old rows from it.
	if len(recreate) > 0 && checkNames(cfg) == nil {
		for _, o := range objects(cfg, db.version) {
			if o.Kind == KindFields || !slices.Contains(recreate, o.Owner) {
				continue
			}
			if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, o.Object)); err != nil {
				return all, fmt.Errorf("clickhouse: dropping %s: %w", describe(o), err)
			}
		}
	}
	for _, s := range db.servers {
		rep, err := s.migrateServer(ctx, cfg, recreate)
		for _, c := range rep.Changes {
			c.Server = s.addr
			all.Changes = append(all.Changes, c)
		}
		for _, n := range rep.Notes {
			if !slices.Contains(all.Notes, n) {
				all.Notes = append(all.Notes, n)
			}
		}
		if err != nil {
			return all, fmt.Errorf("on server %s: %w", s.addr, err)
		}
	}
	if cfg.ClickHouse.Replicated {
		return all, db.waitReplicasActive(ctx)
	}
	return all, nil
}

// replicaStartTimeout bounds how long Migrate waits for the replicas of
// a replicated cluster to be active.
const replicaStartTimeout = time.Minute

// waitReplicasActive waits until every Replicated table of the database
// has all its replicas active on every server: a replica created a moment
// ago is not active yet, and a quorum insert into it would be refused.
func (db *DB) waitReplicasActive(ctx context.Context) error {
	deadline := time.Now().Add(replicaStartTimeout)
	return db.forEach(func(s *DB) error {
		for {
			var missing uint64
			var example string
			err := s.conn.QueryRow(ctx, "SELECT count(), any(table) FROM system.replicas WHERE database = ? AND active_replicas < total_replicas", s.db).Scan(&missing, &example)
			if err != nil {
				return fmt.Errorf("clickhouse: reading system.replicas: %w", err)
			}
			if missing == 0 {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("clickhouse: %d Replicated table(s) (%s, …) still lack active replicas after %s: is every server of the cluster up and on ZooKeeper?", missing, example, replicaStartTimeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

// migrateServer is Migrate on one server.
func (db *DB) migrateServer(ctx context.Context, cfg *schemas.Config, recreate []string) (Report, error) {
	rep := Report{Database: db.db, ServerVersion: db.version}
	if cfg.ClickHouse.Database != db.db {
		return rep, fmt.Errorf("clickhouse: configuration names database %q but the connection was opened for %q", cfg.ClickHouse.Database, db.db)
	}
	if err := checkNames(cfg); err != nil {
		return rep, err
	}
	objs := objects(cfg, db.version)
	owners := map[string]bool{}
	for _, o := range objs {
		if o.Owner != "" {
			owners[o.Owner] = true
		}
	}
	for _, name := range recreate {
		if !owners[name] {
			return rep, fmt.Errorf("clickhouse: --recreate %s: no view or raw_events stream of that name in the configuration", name)
		}
	}

	// What exists before anything is created, so the report can tell a
	// created shared table from one that was there.
	existing, err := db.existingColumns(ctx)
	if err != nil {
		return rep, err
	}
	var databases uint64
	if err := db.conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", db.db).Scan(&databases); err != nil {
		return rep, fmt.Errorf("clickhouse: listing databases: %w", err)
	}
	// The database and the shared tables first: schema_meta must exist to
	// be read.
	for _, o := range objs {
		if o.Owner == "" {
			if err := db.exec(ctx, o.SQL); err != nil {
				return rep, fmt.Errorf("clickhouse: creating %s: %w", describe(o), err)
			}
		}
	}
	meta, err := db.readMeta(ctx)
	if err != nil {
		return rep, err
	}

	for _, owner := range recreate {
		if err := db.dropOwner(ctx, cfg, owner, objs); err != nil {
			return rep, err
		}
		for _, o := range objs {
			if o.Owner == owner {
				delete(existing, o.Object)
			}
		}
	}

	var problems []error
	var upgraded []string       // views whose tables gained columns
	failed := map[string]bool{} // owners with a problem: their views are not touched
	for _, o := range objs {
		if o.Kind == KindDatabase {
			action := ActionUnchanged
			if databases == 0 {
				action = ActionCreated
			}
			rep.Changes = append(rep.Changes, Change{Kind: o.Kind, Action: action})
			continue
		}
		if failed[o.Owner] && o.Owner != "" {
			continue
		}
		if o.Kind == KindFields {
			rec, recorded := meta[o.Object]
			action := ActionUnchanged
			switch {
			case !recorded || rec.fingerprint != o.fingerprint:
				if changes := fieldTypeChanges(rec.definition, o.definition); len(changes) > 0 && !slices.Contains(recreate, o.Owner) {
					failed[o.Owner] = true
					problems = append(problems, fieldTypeMessage(o.Owner, changes))
					continue
				}
				action = ActionRecorded
				if !recorded {
					action = ActionCreated
				}
				if err := db.record(ctx, o, rec.version+1); err != nil {
					return rep, err
				}
			}
			rep.Changes = append(rep.Changes, Change{Object: o.Object, Kind: o.Kind, Owner: o.Owner, Action: action})
			continue
		}
		rec, recorded := meta[o.Object]
		cols, exists := existing[o.Object]
		action := ActionUnchanged
		switch {
		case recorded && exists && rec.fingerprint == o.fingerprint:
		case recorded && exists && o.Kind == KindView:
			if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, o.Object)); err != nil {
				return rep, fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
			}
			action = ActionReplaced
		case recorded && exists && rec.definition == o.definition && addableColumns(cols, o) != nil:
			// The same definition, a layout this version extends: the
			// columns it adds are appended, the rows stay.
			for _, i := range addableColumns(cols, o) {
				if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", qualified(db.db, o.Object), ident(o.columns[i]), o.types[i])); err != nil {
					return rep, fmt.Errorf("clickhouse: adding column %s to %s: %w", o.columns[i], describe(o), err)
				}
			}
			action = ActionColumnsAdded
			// A shared table (runs' retained_from) needs no recomputation:
			// its older rows read 1970, everything kept, as before.
			if o.Owner != "" && !slices.Contains(upgraded, o.Owner) {
				upgraded = append(upgraded, o.Owner)
			}
		case recorded && exists && o.Object == RawTable(o.Owner) && len(fieldTypeChanges(rec.definition, o.definition)) == 0 && tableAhead(o, cols):
			// A newer configuration added fields: keep its record.
		case recorded && exists && fieldsOnlyAdded(o, rec.definition, cols):
			clauses, _, _ := addedColumns(o, cols)
			for _, c := range clauses {
				if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, o.Object), c)); err != nil {
					return rep, fmt.Errorf("clickhouse: adding a column to %s: %w", describe(o), err)
				}
			}
			action = ActionAltered
		case recorded && exists:
			failed[o.Owner] = true
			problems = append(problems, changedMessage(o, rec.definition))
			continue
		case exists && o.Kind == KindTable:
			if !slices.Equal(cols, o.columns) {
				failed[o.Owner] = true
				problems = append(problems, fmt.Errorf("%s %w: it has columns (%s), tandem needs (%s); drop or rename it", describe(o), ErrForeignObject,
					strings.Join(cols, ", "), strings.Join(o.columns, ", ")))
				continue
			}
			action = ActionRecorded
		case exists: // a view without a record: replace it
			if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, o.Object)); err != nil {
				return rep, fmt.Errorf("clickhouse: replacing %s: %w", describe(o), err)
			}
			action = ActionReplaced
		default:
			action = ActionCreated
			if slices.Contains(recreate, o.Owner) {
				action = ActionRecreated
			}
		}
		if action != ActionUnchanged && action != ActionRecorded && action != ActionColumnsAdded && action != ActionAltered {
			if err := db.exec(ctx, o.SQL); err != nil {
				return rep, fmt.Errorf("clickhouse: creating %s: %w", describe(o), err)
			}
		}
		if action != ActionUnchanged || !recorded {
			if err := db.record(ctx, o, rec.version+1); err != nil {
				return rep, err
			}
		}
		rep.Changes = append(rep.Changes, Change{Object: o.Object, Kind: o.Kind, Owner: o.Owner, Action: action})
	}
	for _, v := range upgraded {
		rep.Notes = append(rep.Notes, fmt.Sprintf("view %s: its rows written before this migration have empty SQL states "+
			"(distinct and quantiles answer 0 and nan in SQL for them) until a full batch run recomputes them: tandem batch run --full "+
			"(restart the speed layer first, so that it writes the states of the open chunks)", v))
	}
	if len(problems) > 0 {
		return rep, fmt.Errorf("clickhouse: %d object(s) need attention:\n%w", len(problems), errors.Join(problems...))
	}
	return rep, nil
}

// addableColumns returns the indexes of o's columns that an existing table
// with columns have lacks, when have is o's columns without some of the
// last o.appendable ones (the SQL state columns, which tables of an older
// tandem lack): nil when the table differs otherwise, or lacks nothing.
func addableColumns(have []string, o object) []int {
	if o.Kind != KindTable || len(have) >= len(o.columns) || len(have) < len(o.columns)-o.appendable ||
		!slices.Equal(have, o.columns[:len(have)]) || len(o.types) != len(o.columns) {
		return nil
	}
	var out []int
	for i := len(have); i < len(o.columns); i++ {
		out = append(out, i)
	}
	return out
}

func describe(o object) string {
	if o.Kind == KindDatabase {
		return "database"
	}
	return fmt.Sprintf("%s %s", o.Kind, o.Object)
}

// fieldsOnlyAdded reports whether o is a stream's events table whose
// definition differs from stored only by fields added (no type changed,
// none removed), and the table's columns have only gain new ones: then
// it is altered in place instead of refused.
func fieldsOnlyAdded(o object, stored string, have []string) bool {
	if o.Object != RawTable(o.Owner) || len(fieldTypeChanges(stored, o.definition)) > 0 {
		return false
	}
	_, _, ok := addedColumns(o, have)
	return ok
}

// ErrFieldTypeChanged is wrapped by Migrate's error when a stream field's
// type (or whether it is required) differs from the one recorded when
// events were accepted.
var ErrFieldTypeChanged = errors.New("the type of a field changed since events were accepted")

// fieldTypeMessage explains a changed field type and the ways out.
func fieldTypeMessage(stream string, changes []string) error {
	return fmt.Errorf("stream %q: %w:\n%s\n  Events already in Kafka and the master dataset were validated under the old declaration; "+
		"under the new one some may turn invalid, and every view of the stream would change its history with them. Either keep the old "+
		"declaration and declare a new field (another name) with the new type — older events read it as missing — or accept the change: "+
		"tandem migrate --recreate %s (tandem dev accepts it itself; a raw_events table is recreated), and the next batch run recomputes "+
		"every view of the stream under it",
		stream, ErrFieldTypeChanged, strings.Join(changes, "\n"), stream)
}

// changedMessage explains a changed definition key by key, and how to
// resolve it.
func changedMessage(o object, stored string) error {
	what := "view"
	if o.Object == RawTable(o.Owner) {
		what = "stream"
	}
	return fmt.Errorf("%s %q: %w\n  table %s:\n%s\n  Its stored rows belong to the old definition. Either give the %s a new name in the configuration "+
		"(the old tables stay; drop them when done), or drop and recreate its tables: tandem migrate --recreate %s "+
		"(a view is then backfilling, not answered, until the next batch run publishes it; tandem dev does this itself). "+
		"See \"Changing views\" in docs/operations.md",
		what, o.Owner, ErrDefinitionChanged, o.Object, strings.Join(definitionDiffs(o, stored), "\n"), what, o.Owner)
}

// definitionDiffs lists the "key: old → new" lines where an object's
// definition differs from the stored one.
func definitionDiffs(o object, stored string) []string {
	old := map[string]string{}
	for _, line := range strings.Split(stored, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			old[k] = v
		}
	}
	var diffs []string
	for _, line := range strings.Split(o.definition, "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if old[k] != v {
			diffs = append(diffs, fmt.Sprintf("    %s: %s → %s", k, orNone(old[k]), v))
		}
	}
	if len(diffs) == 0 {
		diffs = append(diffs, "    the table layout of this tandem version differs from the one that created it")
	}
	return diffs
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func (db *DB) readMeta(ctx context.Context) (map[string]metaRecord, error) {
	rows, err := db.conn.Query(ctx, fmt.Sprintf("SELECT object, fingerprint, definition, owner, kind, version FROM %s FINAL", qualified(db.db, TableSchemaMeta)))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: reading %s: %w", TableSchemaMeta, err)
	}
	defer rows.Close()
	out := map[string]metaRecord{}
	for rows.Next() {
		var name string
		var r metaRecord
		if err := rows.Scan(&name, &r.fingerprint, &r.definition, &r.owner, &r.kind, &r.version); err != nil {
			return nil, fmt.Errorf("clickhouse: reading %s: %w", TableSchemaMeta, err)
		}
		out[name] = r
	}
	return out, rows.Err()
}

// existingColumns returns every table and view of the database with its
// column names in order.
func (db *DB) existingColumns(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	rows, err := db.conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ?", db.db)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: listing tables: %w", err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return nil, err
		}
		out[name] = nil
	}
	rows.Close()
	// system.columns lists a table's columns in their order.
	rows, err = db.conn.Query(ctx, "SELECT table, name FROM system.columns WHERE database = ?", db.db)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: listing columns: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, name string
		if err := rows.Scan(&table, &name); err != nil {
			return nil, err
		}
		out[table] = append(out[table], name)
	}
	return out, rows.Err()
}

func (db *DB) record(ctx context.Context, o object, version uint64) error {
	b, err := db.conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s (object, kind, owner, fingerprint, definition, statement, created_at, version)", qualified(db.db, TableSchemaMeta)))
	if err != nil {
		return fmt.Errorf("clickhouse: recording %s: %w", describe(o), err)
	}
	defer b.Abort()
	if err := b.Append(o.Object, string(o.Kind), o.Owner, o.fingerprint, o.definition, o.SQL, time.Now().UTC(), version); err != nil {
		return fmt.Errorf("clickhouse: recording %s: %w", describe(o), err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("clickhouse: recording %s: %w", describe(o), err)
	}
	return nil
}

// dropOwner drops the objects of one view or stream and forgets its runs.
func (db *DB) dropOwner(ctx context.Context, cfg *schemas.Config, owner string, objs []object) error {
	for _, o := range objs {
		if o.Owner != owner || o.Kind == KindFields {
			continue
		}
		if err := db.exec(ctx, "DROP TABLE IF EXISTS "+qualified(db.db, o.Object)); err != nil {
			return fmt.Errorf("clickhouse: dropping %s: %w", describe(o), err)
		}
	}
	// The view's published runs describe batch rows that no longer exist;
	// left in place, the merged view would skip speed rows of chunks a
	// vanished run absorbed. A runs row naming no run takes their place:
	// the view is backfilling (answeredCondition) until its next run, as
	// serving answers REST while its manifest holds the old definition.
	for _, v := range cfg.VersionsOf(owner) {
		if err := db.mutate(ctx, TableAbsorbed, "DELETE WHERE view = ?", v.Name); err != nil {
			return err
		}
		if err := db.unpublish(ctx, v.Name); err != nil {
			return err
		}
	}
	return nil
}

// unpublish makes no run the view's current run, with a runs row of
// an empty run_id above every earlier version (PublishRun's rule).
func (db *DB) unpublish(ctx context.Context, view string) error {
	_, version, err := db.currentRun(ctx, &schemas.View{Name: view})
	if err != nil {
		return err
	}
	now := time.Now()
	row := []any{view, "", now.UTC().Truncate(time.Second), max(version+1, uint64(now.UnixMilli())), sqlDateTime(time.Time{})}
	if err := db.insert(ctx, insertSQL(db.db, TableRuns, runsColumns), [][]any{row}); err != nil {
		return fmt.Errorf("clickhouse: unpublishing the runs of %s: %w", view, err)
	}
	return nil
}

// exec runs a statement that changes what a server holds (DDL, ALTER of
// a table, never an INSERT) on every server of the cluster, or on the one
// server.
func (db *DB) exec(ctx context.Context, sql string, args ...any) error {
	return db.forEach(func(s *DB) error { return s.conn.Exec(ctx, sql, args...) })
}

// execHere runs a statement on the connected server alone: an INSERT …
// SELECT into a Distributed table, which writes each shard's rows to it.
func (db *DB) execHere(ctx context.Context, sql string, args ...any) error {
	return db.conn.Exec(ctx, sql, args...)
}

// mutationPoll is how often mutate checks whether a mutation finished.
const mutationPoll = 50 * time.Millisecond

// mutate runs ALTER TABLE <table> <clause> and waits until the server has
// applied it: 18.16 runs mutations in the background and has no
// mutations_sync setting, so the wait polls system.mutations. On a
// cluster it does so on every server; table names what each server holds
// (db.local of a sharded table).
func (db *DB) mutate(ctx context.Context, table, clause string, args ...any) error {
	shared := table == TableAbsorbed || table == TableRuns || table == TableSchemaMeta
	return db.forEachWriter(shared, func(s *DB) error { return s.mutateHere(ctx, table, clause, args...) })
}

func (db *DB) mutateHere(ctx context.Context, table, clause string, args ...any) error {
	if err := db.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, table), clause), args...); err != nil {
		return fmt.Errorf("clickhouse: ALTER TABLE %s %s: %w", table, clause, err)
	}
	for {
		var pending uint64
		err := db.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0", db.db, table).Scan(&pending)
		if err != nil {
			return fmt.Errorf("clickhouse: waiting for the mutation of %s: %w", table, err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clickhouse: waiting for the mutation of %s: %w", table, ctx.Err())
		case <-time.After(mutationPoll):
		}
	}
}
