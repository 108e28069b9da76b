package clickhouse

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/tandem-analytics/tandem/schemas"
)

// Names of the shared tables.
const (
	TableSchemaMeta   = "schema_meta"
	TableRuns         = "runs"
	TableAbsorbed     = "absorbed"
	TableViewVersions = "view_versions"
)

// SpeedTable is the table of a view's speed rows.
func SpeedTable(view string) string { return view + "_speed" }

// BatchTable is the table of a view's batch rows (one partition per run).
func BatchTable(view string) string { return view + "_batch" }

// LocalTable is, on a cluster (clickhouse.cluster), the table on each
// server that holds that server's shard of a sharded table's rows; the
// table of the plain name is then the Distributed table over them, which
// every reader and writer uses. Without a cluster the plain name is the
// table itself.
func LocalTable(table string) string { return table + "_local" }

// SQLName is the name a version's merged SQL views are called by (<name>,
// <name>_<level>): the logical view's name for its current version, so
// analysts' queries keep their names across a change, and the physical
// name for a pending version (docs/analysts.md), which analysts may query
// while it is computed.
func SQLName(view *schemas.View) string {
	if view.Pending() {
		return view.Name
	}
	return view.Logical()
}

// MergedView is the SQL view answering a view's exact measures from batch
// and speed rows; it has the view's own name.
func MergedView(view string) string { return view }

// RawTable is the table of a stream's recent raw events (raw_events: true).
func RawTable(stream string) string { return stream + "_events" }

// ObjectKind says what a Statement creates.
type ObjectKind string

const (
	KindDatabase ObjectKind = "database"
	KindTable    ObjectKind = "table"
	KindView     ObjectKind = "view"
	// KindFields is no ClickHouse object: a record in schema_meta of a
	// stream's declared fields and types, so that a changed type is
	// caught before any component validates events under it.
	KindFields ObjectKind = "fields"
)

// fieldsRecord is the schema_meta object name of a stream's fields
// record; not an identifier, so it names no table.
func fieldsRecord(stream string) string { return "stream " + stream }

// Statement is one DDL statement of tandem's ClickHouse layout.
type Statement struct {
	// Object is the table or view created, without the database; empty
	// for the database itself.
	Object string
	Kind   ObjectKind
	// Owner is the view or stream the object belongs to ("" for shared
	// tables); `tandem migrate --recreate OWNER` drops and recreates them.
	Owner string
	SQL   string
}

// object is a Statement plus what Migrate records about it.
type object struct {
	Statement
	// definition is the human-readable description of what the object
	// stores ("key: value" lines), shown when it changes.
	definition string
	// fingerprint identifies definition and the Baseline DDL together.
	fingerprint string
	// columns are the column names, in order, to recognise a table that
	// exists without a schema_meta record; types are their types.
	columns []string
	types   []string
	// appendable is how many of the last columns a table created by an
	// older tandem may lack (the SQL state columns), which Migrate adds.
	appendable int
	// shardKey is the sharding expression of a table of one view or
	// stream on a cluster (clustered); "" for the shared tables, which
	// every server holds whole.
	shardKey string
}

// DDL returns every statement that creates tandem's ClickHouse objects for
// cfg on a server of version v, in an order that runs as is: the database,
// the shared tables, then per view its speed table, batch table and merged
// view, then per stream with raw_events its events table. Every statement
// is idempotent (IF NOT EXISTS). DDL does no I/O.
func DDL(cfg *schemas.Config, v Version) []Statement {
	var out []Statement
	for _, o := range objects(cfg, v) {
		if o.Kind != KindFields {
			out = append(out, o.Statement)
		}
	}
	return out
}

func objects(cfg *schemas.Config, v Version) []object {
	base := buildObjects(cfg, Baseline)
	objs := buildObjects(cfg, v)
	for i := range objs {
		// Fingerprints come from the Baseline DDL, so upgrading the server
		// does not look like a changed definition.
		sum := sha256.Sum256([]byte(objs[i].definition + "\n" + base[i].SQL))
		objs[i].fingerprint = hex.EncodeToString(sum[:8])
	}
	return objs
}

func buildObjects(cfg *schemas.Config, v Version) []object {
	db := cfg.ClickHouse.Database
	shared := "layout: tandem shared tables v1"
	objs := []object{
		{Statement: Statement{Kind: KindDatabase, SQL: "CREATE DATABASE IF NOT EXISTS " + ident(db)}, definition: "database: " + db},
		sharedTable(db, TableSchemaMeta, shared, []col{
			{"object", "String"}, {"kind", "String"}, {"owner", "String"}, {"fingerprint", "String"},
			{"definition", "String"}, {"statement", "String"}, {"created_at", "DateTime('UTC')"}, {"version", "UInt64"},
		}, "ReplacingMergeTree(version) ORDER BY object"),
		// retained_from came later: Migrate appends it to older tables,
		// whose rows read 1970 (everything kept).
		sharedTableAppended(db, TableRuns, shared, []col{
			{"view", "String"}, {"run_id", "String"}, {"published_at", "DateTime('UTC')"}, {"version", "UInt64"},
		}, []col{{"retained_from", "DateTime('UTC')"}}, "ReplacingMergeTree(version) ORDER BY view"),
		// Replacing, not plain MergeTree: a batch job that retries a load
		// rewrites the same rows, and they collapse. Readers need no FINAL:
		// every copy of a (view, run_id, kafka_partition) row is identical.
		sharedTable(db, TableAbsorbed, shared, []col{
			{"view", "String"}, {"run_id", "String"}, {"kafka_partition", "UInt32"}, {"chunks", "UInt64"}, {"absorbed_offset", "UInt64"},
		}, "ReplacingMergeTree ORDER BY (view, run_id, kafka_partition)"),
		// The versions of each view's definition (schemas.ViewVersion,
		// versions.go): a row per (view, version), replaced as its state
		// changes.
		sharedTable(db, TableViewVersions, shared, []col{
			{"view", "String"}, {"version", "UInt32"}, {"fingerprint", "String"}, {"definition", "String"},
			{"state", "String"}, {"since", "DateTime('UTC')"}, {"updated", "UInt64"},
		}, "ReplacingMergeTree(updated) ORDER BY (view, version)"),
	}
	for _, s := range cfg.Streams {
		objs = append(objs, fieldsObject(s))
	}
	for _, view := range cfg.Views {
		siblings := streamViews(cfg, view.Stream)
		objs = append(objs, speedObject(db, view, cfg.ChunkSize, v), batchObject(db, view, v), mergedObject(db, view, siblings))
		objs = append(objs, levelObjects(db, view, v, siblings)...)
	}
	for _, s := range cfg.Streams {
		if s.RawEvents {
			objs = append(objs, rawObject(db, s, v))
		}
	}
	if cfg.ClickHouse.Cluster != "" {
		objs = clustered(db, cfg.ClickHouse.Cluster, cfg.ClickHouse.Replicated, objs)
	}
	return objs
}

// clustered turns each sharded table of objs into its local table (the
// same engine, named LocalTable) followed by a Distributed table of the
// plain name over the cluster, sharded by the table's shardKey
// (docs/architecture.md, "ClickHouse clusters"). Shared tables, views and
// field records stay as they are: Migrate creates them on every server.
//
// replicated (clickhouse.replicated) turns the local tables into
// Replicated ones, each shard's replicas sharing a ZooKeeper path by the
// {shard} macro, and the shared tables into Replicated tables that every
// server of the cluster replicates (one path for all).
func clustered(db, cluster string, replicated bool, objs []object) []object {
	out := make([]object, 0, len(objs)+8)
	for _, o := range objs {
		if o.Kind != KindTable {
			out = append(out, o)
			continue
		}
		if o.shardKey == "" {
			if replicated {
				o.SQL = replicatedEngine(o.SQL, fmt.Sprintf("/clickhouse/tables/all/%s/%s", db, o.Object))
				o.definition += "\nreplicated: on every server of " + cluster
			}
			out = append(out, o)
			continue
		}
		local := o
		local.Object = LocalTable(o.Object)
		local.SQL = strings.Replace(o.SQL, qualified(db, o.Object)+" (", qualified(db, local.Object)+" (", 1)
		local.definition += "\ncluster: " + cluster + " (this server's shard)"
		if replicated {
			local.SQL = replicatedEngine(local.SQL, fmt.Sprintf("/clickhouse/tables/{shard}/%s/%s", db, local.Object))
			local.definition += "\nreplicated: by shard"
		}
		cols := make([]col, len(o.columns))
		for i := range cols {
			cols[i] = col{o.columns[i], o.types[i]}
		}
		dist := o
		dist.SQL = createTable(db, o.Object, cols, fmt.Sprintf("Distributed(%s, %s, %s, %s)",
			quoteString(cluster), quoteString(db), quoteString(local.Object), o.shardKey))
		dist.definition += "\ncluster: " + cluster + "\nsharded by: " + o.shardKey
		out = append(out, local, dist)
	}
	return out
}

type col struct{ name, typ string }

func createTable(db, name string, cols []col, engine string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (\n", qualified(db, name))
	for i, c := range cols {
		sep := ","
		if i == len(cols)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "    %s %s%s\n", ident(c.name), c.typ, sep)
	}
	fmt.Fprintf(&b, ") ENGINE = %s", engine)
	return b.String()
}

func colTypes(cols []col) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.typ
	}
	return out
}

func colNames(cols []col) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.name
	}
	return out
}

func sharedTable(db, name, def string, cols []col, engine string) object {
	return sharedTableAppended(db, name, def, cols, nil, engine)
}

// sharedTableAppended is a shared table whose last columns (appended) a
// table created by an older tandem may lack: its definition names only
// cols, so such a table is extended in place (Migrate's ADD COLUMN).
func sharedTableAppended(db, name, def string, cols, appended []col, engine string) object {
	all := append(append([]col(nil), cols...), appended...)
	return object{
		Statement:  Statement{Object: name, Kind: KindTable, SQL: createTable(db, name, all, engine)},
		definition: def + "\ncolumns: " + strings.Join(colNames(cols), ", "),
		columns:    colNames(all),
		types:      colTypes(all),
		appendable: len(appended),
	}
}

// replicatedEngine rewrites the engine of a CREATE TABLE statement
// (createTable's "ENGINE = X…" at its end) to its Replicated form with the
// ZooKeeper path and the {replica} macro as the first arguments:
// "ReplacingMergeTree(version) ORDER BY …" becomes
// "ReplicatedReplacingMergeTree('path', '{replica}', version) ORDER BY …".
func replicatedEngine(sql, path string) string {
	i := strings.LastIndex(sql, ") ENGINE = ") + len(") ENGINE = ")
	engine := sql[i:]
	name := engine
	if j := strings.IndexAny(engine, " ("); j >= 0 {
		name = engine[:j]
	}
	rest := engine[len(name):]
	args := quoteString(path) + ", '{replica}'"
	if strings.HasPrefix(rest, "(") {
		if strings.HasPrefix(rest, "()") {
			rest = "(" + args + rest[1:]
		} else {
			rest = "(" + args + ", " + rest[1:]
		}
	} else {
		rest = "(" + args + ")" + rest
	}
	return sql[:i] + "Replicated" + name + rest
}

// ColumnType returns the ClickHouse type tandem stores a column as on a
// server of version v:
//
//	ColTimestamp  DateTime('UTC'), whole seconds (view windows are whole minutes)
//	ColString     String
//	ColInt64      Int64 (counts too: a count never nears 2^63)
//	ColInt32      Int32
//	ColFloat64    Float64
//	ColBool       UInt8 (0 or 1)
//	ColBytes      String: opaque binary sketch bytes (HyperLogLog, DDSketch)
//
// Nullable columns are wrapped in Nullable(...).
func ColumnType(c schemas.Column, v Version) string {
	t := baseType(c.Type)
	if c.Nullable {
		return "Nullable(" + t + ")"
	}
	return t
}

func baseType(t schemas.ColumnType) string {
	switch t {
	case schemas.ColTimestamp:
		return "DateTime('UTC')"
	case schemas.ColInt64:
		return "Int64"
	case schemas.ColInt32:
		return "Int32"
	case schemas.ColFloat64:
		return "Float64"
	case schemas.ColBool:
		return "UInt8"
	}
	return "String" // ColString, ColBytes
}

// viewCols returns a view's RowColumns as ClickHouse columns. Dimensions are
// LowCardinality(String) where the server has it: they repeat a handful of
// values across millions of rows.
func viewCols(view *schemas.View, v Version) []col {
	var cols []col
	for _, c := range view.RowColumns() {
		t := ColumnType(c, v)
		if c.Type == schemas.ColString && view.DimensionIndex(c.Name) >= 0 && v.HasLowCardinality() {
			t = "LowCardinality(String)"
		}
		cols = append(cols, col{c.Name, t})
	}
	return cols
}

// viewDefinition describes what a view's tables mean, one "key: value" line
// each, so a changed definition can be reported key by key.
func viewDefinition(view *schemas.View) string {
	ms := make([]string, len(view.Measures))
	for i, m := range view.Measures {
		ms[i] = fmt.Sprintf("%s=%s", m.Name, m.Type)
		if m.Field != "" {
			ms[i] += "(" + m.Field + ")"
		}
	}
	fieldTypes := []string{}
	if s := view.StreamDef(); s != nil {
		for _, m := range view.Measures {
			if f, ok := s.Field(m.Field); ok {
				fieldTypes = append(fieldTypes, f.Name+":"+string(f.Type))
			}
		}
	}
	return strings.Join([]string{
		"stream: " + view.Stream,
		"granularity: " + view.Granularity.String(),
		"dimensions: [" + strings.Join(view.Dimensions, ", ") + "]",
		"measures: [" + strings.Join(ms, ", ") + "]",
		"measure field types: [" + strings.Join(fieldTypes, ", ") + "]",
	}, "\n")
}

func dimsKey(view *schemas.View) string {
	var b strings.Builder
	for _, d := range view.Dimensions {
		b.WriteString(", ")
		b.WriteString(ident(d))
	}
	return b.String()
}

// speedObject: the speed layer upserts cumulative rows per (window, dims,
// partition, chunk); version is the highest Kafka offset folded in, so the
// newest write of a row wins when parts merge, and readers use FINAL.
func speedObject(db string, view *schemas.View, chunkSize int64, v Version) object {
	cols := append(viewCols(view, v), col{schemas.ColKafkaPartition, "UInt32"}, col{schemas.ColChunk, "UInt64"}, col{schemas.ColVersion, "UInt64"})
	cols = append(cols, viewStateCols(view)...)
	engine := fmt.Sprintf("ReplacingMergeTree(version) PARTITION BY kafka_partition ORDER BY (kafka_partition, chunk, window_start%s)", dimsKey(view))
	name := SpeedTable(view.Name)
	return object{
		// Sharded by partition: every version of a row, and every row of
		// a chunk, is on one shard, so FINAL on each shard is FINAL.
		shardKey:  schemas.ColKafkaPartition,
		Statement: Statement{Object: name, Kind: KindTable, Owner: view.Logical(), SQL: createTable(db, name, cols, engine)},
		// chunk numbers mean offsets/chunk_size: another chunk_size makes
		// stored rows meaningless.
		definition: viewDefinition(view) + fmt.Sprintf("\nchunk_size: %d", chunkSize),
		columns:    colNames(cols),
		types:      colTypes(cols),
		appendable: len(viewStateCols(view)),
	}
}

// batchShardKey shards batch and level rows over a cluster by their
// window: nothing upserts them (a run is loaded once, copied and dropped
// whole), so any key that spreads them works, and a hash of the window
// spreads every time range a query asks for over all shards. It leaves
// run_id out, so a row carried into the next run stays on its shard.
const batchShardKey = "cityHash64(toUInt32(window_start))"

// batchObject: one partition per run, so a run is loaded beside the current
// one and old runs are dropped whole.
func batchObject(db string, view *schemas.View, v Version) object {
	cols := append(append([]col{{"run_id", "String"}}, viewCols(view, v)...), viewStateCols(view)...)
	engine := fmt.Sprintf("MergeTree PARTITION BY run_id ORDER BY (window_start%s)", dimsKey(view))
	name := BatchTable(view.Name)
	return object{
		shardKey:   batchShardKey,
		Statement:  Statement{Object: name, Kind: KindTable, Owner: view.Logical(), SQL: createTable(db, name, cols, engine)},
		definition: viewDefinition(view),
		columns:    colNames(cols),
		types:      colTypes(cols),
		appendable: len(viewStateCols(view)),
	}
}

// MergedViewQuery returns the SELECT behind a view's merged SQL view: the
// exact measures (count and sum summed, min and max of min and max) grouped
// by window_start and the dimensions, over the batch rows of the current run
// and the speed rows (FINAL) of the chunks that run did not absorb.
// Partitions the run did not absorb have K_p = 0. streamViews are the
// views of the view's stream (itself included): while the view is
// backfilling (answeredCondition) the speed half is empty, so the merged
// view answers nothing rather than something inexact. A distinct or
// quantiles measure is its SQL state (StateType): each row's state rebuilt
// from its state columns, merged with -MergeState, for analysts to
// finalize with -Merge at any grouping. tandem's own sketch bytes are left
// out: they are opaque to SQL.
//
// It runs on 18.16 and on current ClickHouse. transform() refuses empty
// arrays on 18.16, so both arrays start with a sentinel partition no stream
// can have (4294967295 → 0 chunks).
func MergedViewQuery(db string, view *schemas.View, streamViews []string) string {
	name := quoteString(view.Name)
	currentRun := currentRunQuery(db, view)
	absorbedOf := func(column, sentinel string) string {
		return fmt.Sprintf("arrayConcat([%s], (SELECT groupArray(%s) FROM %s WHERE view = %s AND run_id = %s))",
			sentinel, column, qualified(db, TableAbsorbed), name, currentRun)
	}
	cols := []string{ident(schemas.ColWindowStart)}
	for _, d := range view.Dimensions {
		cols = append(cols, ident(d))
	}
	group := strings.Join(cols, ", ")
	outer := append([]string(nil), cols...)
	for i := range view.Measures {
		m := &view.Measures[i]
		if !m.Type.Exact() {
			cols = append(cols, rowState(m)+" AS "+ident(m.Name))
			outer = append(outer, mergeState(m, ident(m.Name))+" AS "+ident(m.Name))
			continue
		}
		agg := m.Kind().SQLMerge
		cols = append(cols, ident(m.Name))
		outer = append(outer, fmt.Sprintf("%s(%s) AS %s", agg, ident(m.Name), ident(m.Name)))
	}
	inner := strings.Join(cols, ", ")
	return fmt.Sprintf(`SELECT %s
FROM (
    SELECT %s
    FROM %s
    WHERE run_id = %s
    UNION ALL
    SELECT %s
    FROM %s FINAL
    WHERE chunk >= transform(kafka_partition,
        %s,
        %s,
        toUInt64(0))
      AND window_start >= %s
      AND %s
)
GROUP BY %s`,
		strings.Join(outer, ", "),
		inner, qualified(db, BatchTable(view.Name)), currentRun,
		inner, qualified(db, SpeedTable(view.Name)),
		absorbedOf("kafka_partition", "toUInt32(4294967295)"),
		absorbedOf("chunks", "toUInt64(0)"),
		retainedStartQuery(db, view),
		answeredCondition(db, view, streamViews),
		group)
}

// currentRunQuery is the scalar subquery of the view's current run: the
// run_id of its runs row with the highest version.
func currentRunQuery(db string, view *schemas.View) string {
	return fmt.Sprintf("(SELECT argMax(run_id, version) FROM %s WHERE view = %s)", qualified(db, TableRuns), quoteString(view.Name))
}

// retainedStartQuery is the scalar subquery of the first window the view
// answers in SQL: its current run's retained_from (views[].retention; 1970
// when unset or before the first run). Speed rows of late events for days
// the run dropped are hidden behind it, so the merged views answer the
// days REST answers (docs/architecture.md, "Retention").
func retainedStartQuery(db string, view *schemas.View) string {
	return fmt.Sprintf("(SELECT argMax(retained_from, version) FROM %s WHERE view = %s)", qualified(db, TableRuns), quoteString(view.Name))
}

// streamViews returns the names of the configured views of a stream.
func streamViews(cfg *schemas.Config, stream string) []string {
	var out []string
	for _, v := range cfg.Views {
		if v.Stream == stream {
			out = append(out, v.Name)
		}
	}
	return out
}

// answeredCondition is true unless the view is backfilling, the rule
// serving applies to REST (docs/architecture.md, "Adding and changing
// views"): the view has a published run, or no view of its stream has a
// runs row yet (a new stream is answered by the speed layer alone). A view
// whose tables were recreated has a runs row naming no run (an empty run_id),
// so it stays backfilling until its next run is published.
func answeredCondition(db string, view *schemas.View, streamViews []string) string {
	names := make([]string, len(streamViews))
	for i, n := range streamViews {
		names[i] = quoteString(n)
	}
	return fmt.Sprintf("((SELECT argMax(run_id, version) FROM %s WHERE view = %s) != '' OR (SELECT count() FROM %s WHERE view IN (%s)) = 0)",
		qualified(db, TableRuns), quoteString(view.Name), qualified(db, TableRuns), strings.Join(names, ", "))
}

func mergedObject(db string, view *schemas.View, streamViews []string) object {
	name := MergedView(SQLName(view))
	return object{
		Statement:  Statement{Object: name, Kind: KindView, Owner: view.Logical(), SQL: fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s AS\n%s", qualified(db, name), MergedViewQuery(db, view, streamViews))},
		definition: viewDefinition(view),
	}
}

// rawCols returns a stream's RawColumns as ClickHouse columns: declared
// fields Nullable and typed, _raw, _partition, _offset, _kafka_ts.
// Timestamps keep milliseconds (DateTime64(3, 'UTC')) where the server has
// DateTime64; on older servers they are whole seconds.
func rawCols(s *schemas.Stream, v Version) []col {
	var cols []col
	for _, c := range s.RawColumns() {
		t := ColumnType(c, v)
		if c.Type == schemas.ColTimestamp && v.HasDateTime64() {
			t = "DateTime64(3, 'UTC')"
			if c.Nullable {
				t = "Nullable(" + t + ")"
			}
		}
		cols = append(cols, col{c.Name, t})
	}
	return cols
}

// fieldsObject is the record of a stream's fields: "name:type" in
// declared order, " required" where events must carry it.
func fieldsObject(s *schemas.Stream) object {
	return object{
		Statement:  Statement{Object: fieldsRecord(s.Name), Kind: KindFields, Owner: s.Name},
		definition: "stream: " + s.Name + "\nfields: [" + strings.Join(fieldList(s), ", ") + "]",
	}
}

func fieldList(s *schemas.Stream) []string {
	out := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		out[i] = f.Name + ":" + string(f.Type)
		if f.Required {
			out[i] += " required"
		}
	}
	return out
}

// fieldTypeChanges lists the fields declared in both field records (see
// fieldsObject) whose type or required flag differs, as "name: old → new".
// Fields added or removed are not changes of this kind: an added field
// reads as missing in older events, a removed one is ignored.
func fieldTypeChanges(stored, current string) []string {
	parse := func(def string) (names []string, types map[string]string) {
		types = map[string]string{}
		for _, line := range strings.Split(def, "\n") {
			list, ok := strings.CutPrefix(line, "fields: [")
			if !ok {
				continue
			}
			for _, f := range strings.Split(strings.TrimSuffix(list, "]"), ", ") {
				if name, typ, ok := strings.Cut(f, ":"); ok {
					names = append(names, name)
					types[name] = typ
				}
			}
		}
		return names, types
	}
	_, was := parse(stored)
	names, is := parse(current)
	var out []string
	for _, n := range names {
		if old, ok := was[n]; ok && old != is[n] {
			out = append(out, fmt.Sprintf("    %s: %s → %s", n, old, is[n]))
		}
	}
	return out
}

// rawObject: ReplacingMergeTree by (_partition, _offset), so a replayed
// message replaces itself; partitioned by the day of _kafka_ts (the same for
// every replay of a message), so retention drops whole days.
func rawObject(db string, s *schemas.Stream, v Version) object {
	cols := rawCols(s, v)
	engine := "ReplacingMergeTree PARTITION BY toYYYYMMDD(_kafka_ts) ORDER BY (_partition, _offset)"
	if v.HasTTL() && s.RawRetention > 0 {
		engine += fmt.Sprintf(" TTL toDateTime(_kafka_ts) + INTERVAL %d SECOND", int64(s.RawRetention.D().Seconds()))
	}
	fields := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		fields[i] = f.Name + ":" + string(f.Type)
	}
	name := RawTable(s.Name)
	return object{
		// By partition, as the speed rows: a replayed message lands on the
		// shard of its first copy and replaces it there.
		shardKey:   "_partition",
		Statement:  Statement{Object: name, Kind: KindTable, Owner: s.Name, SQL: createTable(db, name, cols, engine)},
		definition: "stream: " + s.Name + "\nfields: [" + strings.Join(fields, ", ") + "]",
		columns:    colNames(cols),
		types:      colTypes(cols),
	}
}

// tableAhead reports whether table columns have hold o's columns in order
// and more (a newer configuration added fields to the stream's events
// table): a process still on the older configuration writes its columns
// and leaves the others NULL, so it need not stop or refuse.
func tableAhead(o object, have []string) bool {
	if len(o.types) != len(o.columns) || len(have) <= len(o.columns) {
		return false
	}
	i := 0
	for _, c := range have {
		if i < len(o.columns) && o.columns[i] == c {
			i++
		}
	}
	return i == len(o.columns)
}

// addedColumns returns the ALTER TABLE clauses that turn a table with
// columns have into one with o's columns when o only adds columns (have
// is a subsequence of o.columns and o has types), each placed after its
// predecessor; ok is false otherwise.
func addedColumns(o object, have []string) (clauses []string, added []string, ok bool) {
	if len(o.types) != len(o.columns) || len(have) >= len(o.columns) {
		return nil, nil, false
	}
	i := 0
	for j, c := range o.columns {
		if i < len(have) && have[i] == c {
			i++
			continue
		}
		if j == 0 {
			return nil, nil, false // 18.16 has no ADD COLUMN … FIRST
		}
		clauses = append(clauses, "ADD COLUMN "+ident(c)+" "+o.types[j]+" AFTER "+ident(o.columns[j-1]))
		added = append(added, c)
	}
	return clauses, added, i == len(have)
}

// checkNames refuses configurations whose objects would share a name in
// ClickHouse: a view called "runs", a view "x_speed" beside a view "x", a
// view named like a stream's events table.
func checkNames(cfg *schemas.Config) error {
	owner := map[string]string{
		TableSchemaMeta:   "tandem's shared table",
		TableRuns:         "tandem's shared table",
		TableAbsorbed:     "tandem's shared table",
		TableViewVersions: "tandem's shared table",
	}
	var problems []string
	var claim func(name, who string)
	// On a cluster a sharded table has a local table beside it.
	sharded := func(name, who string) {
		claim(name, who)
		if cfg.ClickHouse.Cluster != "" {
			claim(LocalTable(name), who)
		}
	}
	claim = func(name, who string) {
		if !identPattern.MatchString(name) {
			problems = append(problems, fmt.Sprintf("%s needs a ClickHouse object named %q, which is not a valid name (lower-case letters, digits and _, at most 63 characters)", who, name))
			return
		}
		if prev, ok := owner[name]; ok {
			problems = append(problems, fmt.Sprintf("%s and %s both need a ClickHouse object named %q; rename one", prev, who, name))
			return
		}
		owner[name] = who
	}
	for _, v := range cfg.Views {
		who := fmt.Sprintf("view %q", v.Name)
		claim(MergedView(SQLName(v)), who)
		sharded(SpeedTable(v.Name), who)
		sharded(BatchTable(v.Name), who)
		if len(v.Levels()) > 0 {
			sharded(LevelsTable(v.Name), who)
			for _, l := range v.Levels() {
				claim(LevelView(SQLName(v), l), who+" (level "+l.String()+")")
			}
		}
	}
	for _, s := range cfg.Streams {
		if s.RawEvents {
			sharded(RawTable(s.Name), fmt.Sprintf("stream %q (raw_events)", s.Name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("clickhouse: %s", strings.Join(problems, "; "))
	}
	return nil
}
