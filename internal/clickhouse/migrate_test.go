package clickhouse

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

func TestMigrateCreatesEveryObjectAndIsIdempotent(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := openTest(t, cfg)
	ctx := testCtx(t)

	rep, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.False(t, rep.UpToDate())

	var want []string
	for _, s := range DDL(cfg, db.ServerVersion()) {
		if s.Object != "" {
			want = append(want, s.Object)
		}
	}
	sort.Strings(want)
	require.Equal(t, []string{
		"absorbed", "clicks_by_country", "clicks_by_country_1d", "clicks_by_country_1h", "clicks_by_country_batch",
		"clicks_by_country_levels", "clicks_by_country_speed", "clicks_events",
		"clicks_total", "clicks_total_1d", "clicks_total_batch", "clicks_total_levels", "clicks_total_speed", "runs", "schema_meta", "view_versions",
	}, want)
	got := queryStrings(t, db, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", cfg.ClickHouse.Database)
	require.Equal(t, want, got)
	for _, c := range rep.Changes {
		if c.Object != "" {
			require.Equal(t, ActionCreated, c.Action, c.Object)
		}
	}
	engines := queryStrings(t, db, "SELECT concat(name, ' ', engine) FROM system.tables WHERE database = ? ORDER BY name", cfg.ClickHouse.Database)
	require.Contains(t, engines, "clicks_by_country View")
	require.Contains(t, engines, "clicks_by_country_speed ReplacingMergeTree")
	require.Contains(t, engines, "clicks_by_country_batch MergeTree")

	metaBefore := queryStrings(t, db, "SELECT concat(object, ' ', fingerprint, ' ', toString(version)) FROM tandem.schema_meta ORDER BY object")
	require.Len(t, metaBefore, len(want)+1, "the objects and the stream's fields record")
	tablesBefore := queryStrings(t, db, "SELECT concat(name, ' ', toString(metadata_modification_time)) FROM system.tables WHERE database = 'tandem' ORDER BY name")

	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
	require.Contains(t, rep.String(), "up to date")
	// Nothing was written or recreated.
	require.Equal(t, metaBefore, queryStrings(t, db, "SELECT concat(object, ' ', fingerprint, ' ', toString(version)) FROM tandem.schema_meta ORDER BY object"))
	require.Equal(t, []string{"17"}, queryStrings(t, db, "SELECT toString(count()) FROM tandem.schema_meta"))
	require.Equal(t, tablesBefore, queryStrings(t, db, "SELECT concat(name, ' ', toString(metadata_modification_time)) FROM system.tables WHERE database = 'tandem' ORDER BY name"))
}

// TestMigrateRegistersChangedDefinitionAsVersion: a changed definition is
// not refused: it becomes a pending version with tables of its own, the
// current version's tables untouched; the plan says so; a second change
// replaces the pending version; a definition back to the current one
// retires it; --recreate makes the configured definition current in place.
func TestMigrateRegistersChangedDefinitionAsVersion(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	with := func(yaml string) *schemas.Config {
		c := parseConfig(t, yaml)
		c.ClickHouse = cfg.ClickHouse
		return c
	}
	states := func() []string {
		return queryStrings(t, db, "SELECT concat(view, ' ', toString(version), ' ', state) FROM tandem.view_versions FINAL ORDER BY view, version")
	}
	require.Equal(t, []string{"clicks_by_country 1 current", "clicks_total 1 current"}, states())

	// Another granularity and another dimension list for one view; the
	// other view and the stream are unchanged.
	changed := with(strings.Replace(testConfigYAML, "granularity: 1m\n    dimensions: [country, device]", "granularity: 5m\n    dimensions: [country]", 1))
	plan, err := db.Plan(ctx, changed)
	require.NoError(t, err)
	o := plan.Owner("clicks_by_country")
	require.Equal(t, OwnerNewVersion, o.State, plan.String())
	require.Equal(t, 2, o.Version)
	require.Contains(t, plan.String(), "new version 2")
	require.Contains(t, plan.String(), "granularity: 1m → 5m")
	require.Contains(t, plan.String(), "dimensions: [country, device] → [country]")
	require.Contains(t, plan.String(), "the old version 1 serves REST and SQL until the new one is exact")
	require.Equal(t, OwnerUnchanged, plan.Owner("clicks_total").State)

	rep, err := db.Migrate(ctx, changed)
	require.NoError(t, err)
	require.Contains(t, rep.String(), "created    table    tandem.clicks_by_country__v2_speed")
	require.Contains(t, rep.String(), "created    view     tandem.clicks_by_country__v2")
	require.Equal(t, []string{"clicks_by_country 1 current", "clicks_by_country 2 pending", "clicks_total 1 current"}, states())
	// The current version's tables and logical SQL view are untouched.
	require.Contains(t, queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'clicks_by_country_speed'"), "device")
	require.Contains(t, queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'clicks_by_country'"), "device")
	require.NotContains(t, queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'clicks_by_country__v2_speed'"), "device")
	rep, err = db.Migrate(ctx, changed)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
	eff, err := db.Versioned(ctx, changed)
	require.NoError(t, err)
	var names []string
	for _, v := range eff.Views {
		names = append(names, fmt.Sprintf("%s v%d pending=%v %s", v.Name, v.Version(), v.Pending(), v.Granularity))
	}
	require.Equal(t, []string{"clicks_by_country v1 pending=false 1m", "clicks_by_country__v2 v2 pending=true 5m", "clicks_total v1 pending=false 1h"}, names)

	// Another change while version 2 is pending: version 3 replaces it.
	third := with(strings.Replace(testConfigYAML, "granularity: 1m\n    dimensions: [country, device]", "granularity: 15m\n    dimensions: [country]", 1))
	_, err = db.Migrate(ctx, third)
	require.NoError(t, err)
	require.Equal(t, []string{"clicks_by_country 1 current", "clicks_by_country 2 retired", "clicks_by_country 3 pending", "clicks_total 1 current"}, states())
	// Back to the current definition: the pending version is retired.
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"clicks_by_country 1 current", "clicks_by_country 2 retired", "clicks_by_country 3 retired", "clicks_total 1 current"}, states())
	// A configuration that migrate has not registered is refused by
	// everything that computes views, naming the way out.
	_, err = db.Versioned(ctx, changed)
	require.ErrorContains(t, err, "run tandem migrate first")

	// --recreate makes the configured definition current in place.
	rep, err = db.Migrate(ctx, changed, "clicks_by_country")
	require.NoError(t, err)
	require.Contains(t, rep.String(), "recreated")
	require.NotContains(t, queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'clicks_by_country_speed'"), "device")
	require.Equal(t, []string{"clicks_by_country 1 current", "clicks_by_country 2 retired", "clicks_by_country 3 retired", "clicks_total 1 current"}, states())
	rep, err = db.Migrate(ctx, changed)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())

	_, err = db.Migrate(ctx, changed, "no_such_view")
	require.ErrorContains(t, err, "no_such_view")

	// A view name with __ is refused: it is how versions are named.
	_, err = schemas.Parse("t.yaml", []byte(strings.Replace(testConfigYAML, "name: clicks_total", "name: clicks__v2", 1)), nil)
	require.ErrorContains(t, err, "reserved for the storage of view versions")
}

func TestMigrateRecordsInterruptedAndRefusesForeignTables(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := openTest(t, cfg)
	ctx := testCtx(t)
	// A migration that died after CREATE and before its record.
	stmts := DDL(cfg, db.ServerVersion())
	for _, s := range stmts[:4] {
		require.NoError(t, db.Conn().Exec(ctx, s.SQL))
	}
	var speed Statement
	for _, s := range stmts {
		if s.Object == "clicks_total_speed" {
			speed = s
		}
	}
	require.NoError(t, db.Conn().Exec(ctx, speed.SQL))
	// Somebody's own table where tandem wants the events table.
	require.NoError(t, db.Conn().Exec(ctx, "CREATE TABLE tandem.clicks_events (x UInt8) ENGINE = MergeTree ORDER BY x"))

	rep, err := db.Migrate(ctx, cfg)
	require.ErrorIs(t, err, ErrForeignObject)
	require.Contains(t, err.Error(), "clicks_events")
	actions := map[string]Action{}
	for _, c := range rep.Changes {
		actions[c.Object] = c.Action
	}
	require.Equal(t, ActionRecorded, actions["clicks_total_speed"])
	require.Equal(t, ActionCreated, actions["clicks_total_batch"])

	require.NoError(t, db.Conn().Exec(ctx, "DROP TABLE tandem.clicks_events"))
	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, []Change{{Object: "clicks_events", Kind: KindTable, Owner: "clicks", Action: ActionCreated}}, changed(rep))
}

func changed(r Report) []Change {
	var out []Change
	for _, c := range r.Changes {
		if c.Action != ActionUnchanged {
			out = append(out, c)
		}
	}
	return out
}

func TestCheckNamesRefusesCollisions(t *testing.T) {
	yaml := strings.Replace(testConfigYAML, "name: clicks_total\n", "name: clicks_by_country_speed\n", 1)
	cfg := parseConfig(t, yaml)
	err := checkNames(cfg)
	require.ErrorContains(t, err, `"clicks_by_country_speed"`)
	require.NoError(t, checkNames(parseConfig(t, testConfigYAML)))
}

// TestMigrateAddsStateColumnsToOlderTables: tables created by a tandem
// without SQL states (simulated: the state columns dropped, schema_meta
// holding another fingerprint for the same definition) gain the columns,
// keep their rows, and the merged views answer again; a table lacking
// other columns is still refused.
func TestMigrateAddsStateColumnsToOlderTables(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 300, 2, 4)
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))

	old := map[string][]string{ // table → the state columns an older tandem lacked
		SpeedTable(v.Name):  colNames(viewStateCols(v)),
		BatchTable(v.Name):  colNames(viewStateCols(v)),
		LevelsTable(v.Name): colNames(levelStateCols(v)),
	}
	for table, cols := range old {
		for _, c := range cols {
			require.NoError(t, db.exec(ctx, "ALTER TABLE tandem."+table+" DROP COLUMN "+ident(c)))
		}
		require.NoError(t, db.exec(ctx, `INSERT INTO tandem.schema_meta (object, kind, owner, fingerprint, definition, statement, created_at, version)
			SELECT object, kind, owner, 'older', definition, statement, created_at, version + 1 FROM tandem.schema_meta FINAL WHERE object = ?`, table))
	}
	rep, err := db.Migrate(ctx, cfg)
	require.NoError(t, err)
	for table := range old {
		require.Contains(t, rep.Changes, Change{Object: table, Kind: KindTable, Owner: v.Name, Action: ActionColumnsAdded}, rep.String())
		require.Equal(t, objectColumns(t, cfg, db, table), queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = ?", table))
	}
	require.Contains(t, rep.String(), "columns added")
	require.Contains(t, rep.String(), "tandem batch run --full")
	// The rows stayed; the views answer, the older rows with empty states.
	require.Equal(t, truth(v, evs), mergedRows(t, db, "SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.clicks_by_country"))
	require.Equal(t, []string{"0"}, queryStrings(t, db, "SELECT toString(uniqHLL12Merge(users)) FROM tandem.clicks_by_country"))
	rep, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())

	// Another missing column is not an upgrade: refused as before.
	require.NoError(t, db.exec(ctx, "ALTER TABLE tandem.clicks_by_country_batch DROP COLUMN "+ident("users__uniq_keys")))
	require.NoError(t, db.exec(ctx, "ALTER TABLE tandem.clicks_by_country_batch DROP COLUMN hi"))
	require.NoError(t, db.exec(ctx, `INSERT INTO tandem.schema_meta (object, kind, owner, fingerprint, definition, statement, created_at, version)
		SELECT object, kind, owner, 'older', definition, statement, created_at, version + 1 FROM tandem.schema_meta FINAL WHERE object = 'clicks_by_country_batch'`))
	_, err = db.Migrate(ctx, cfg)
	require.ErrorIs(t, err, ErrDefinitionChanged)
}

func objectColumns(t *testing.T, cfg *schemas.Config, db *DB, table string) []string {
	for _, o := range objects(cfg, db.ServerVersion()) {
		if o.Object == table {
			return o.columns
		}
	}
	t.Fatalf("no object %s", table)
	return nil
}

// TestMigrateRefusesFieldTypeChange: a stream field whose type changed is
// refused with the field, both types and the ways out, even when no view
// measures it (its validity decides whether an event counts at all);
// --recreate of the stream accepts it. An added field is no type change.
func TestMigrateRefusesFieldTypeChange(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	with := func(yaml string) *schemas.Config {
		c := parseConfig(t, yaml)
		c.ClickHouse = cfg.ClickHouse
		return c
	}
	changed := with(strings.Replace(testConfigYAML, "{ name: ok, type: bool }", "{ name: ok, type: string }", 1))
	plan, err := db.Plan(ctx, changed)
	require.NoError(t, err)
	require.Equal(t, OwnerChanged, plan.Owner("clicks").State)
	require.True(t, plan.Owner("clicks").TypeChanged)
	require.Contains(t, plan.String(), "ok: bool → string")
	require.Equal(t, OwnerUnchanged, plan.Owner("clicks_total").State)
	_, err = db.Migrate(ctx, changed)
	require.ErrorIs(t, err, ErrFieldTypeChanged)
	require.Contains(t, err.Error(), `stream "clicks"`)
	require.Contains(t, err.Error(), "ok: bool → string")
	require.Contains(t, err.Error(), "declare a new field")
	require.Contains(t, err.Error(), "tandem migrate --recreate clicks")
	// Nothing was recorded: the refusal stands.
	_, err = db.Migrate(ctx, changed)
	require.ErrorIs(t, err, ErrFieldTypeChanged)
	_, err = db.Migrate(ctx, changed, "clicks")
	require.NoError(t, err)
	rep, err := db.Migrate(ctx, changed)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())

	// A field added: the events table gains its column in place, after
	// its predecessor; views and the fields record follow.
	added := with(strings.Replace(testConfigYAML, "{ name: ok, type: bool }", "{ name: ok, type: string }\n      - { name: ref, type: string }", 1))
	plan, err = db.Plan(ctx, added)
	require.NoError(t, err)
	require.Equal(t, OwnerUnchanged, plan.Owner("clicks").State)
	require.Equal(t, []string{"ref"}, plan.Owner("clicks").Added)
	require.Contains(t, plan.String(), "its events table gains the columns ref")
	rep, err = db.Migrate(ctx, added)
	require.NoError(t, err)
	require.Contains(t, rep.String(), "altered    table    tandem.clicks_events")
	cols := queryStrings(t, db, "SELECT name FROM system.columns WHERE database = 'tandem' AND table = 'clicks_events'")
	require.Equal(t, "ref", cols[slices.Index(cols, "ok")+1])
	rep, err = db.Migrate(ctx, added)
	require.NoError(t, err)
	require.True(t, rep.UpToDate(), rep.String())
	// A process still on the configuration before the field (a speed pod
	// not yet rolled) neither refuses nor stops: the table is ahead of it.
	plan, err = db.Plan(ctx, changed)
	require.NoError(t, err)
	require.Equal(t, OwnerUnchanged, plan.Owner("clicks").State)
	_, err = db.Migrate(ctx, changed)
	require.NoError(t, err)
	rep, err = db.Migrate(ctx, added)
	require.NoError(t, err)
	require.NotContains(t, rep.String(), "clicks_events", "the events table is as the newer configuration left it")

	// A required flag is part of the declaration too.
	required := with(strings.Replace(testConfigYAML, "{ name: ok, type: bool }", "{ name: ok, type: string, required: true }\n      - { name: ref, type: string }", 1))
	_, err = db.Migrate(ctx, required)
	require.ErrorIs(t, err, ErrFieldTypeChanged)
	require.Contains(t, err.Error(), "ok: string → string required")
}
