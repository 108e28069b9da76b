package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tandem-analytics/tandem/schemas"
)

// Coarse levels for analysts. A view with levels (views[].levels) gets
//
//   - <view>_levels: the exact measures (count, sum, min, max) and the SQL
//     states of the distinct and quantiles measures (StateType, after the
//     exact ones) of each run rolled up to every level, one partition per
//     run, built inside ClickHouse from that run's rows of <view>_batch
//     (LoadLevels), so a level holds exactly the chunks the run absorbed;
//   - <view>_<level> (for example clicks_by_country_1h): a merged SQL view
//     like <view>, at the level's windows: the current run's level rows and
//     the speed rows of the chunks that run did not absorb, floored to the
//     level's windows, merged.
//
// tandem's own sketch bytes are left out as in <view>: they are opaque to
// SQL; the SQL states stand for them.

// LevelsTable is the table of a view's level rows.
func LevelsTable(view string) string { return view + "_levels" }

// LevelView is the merged SQL view of a view at one coarse level.
func LevelView(view string, level schemas.Granularity) string { return view + "_" + level.String() }

// exactCols are viewCols without the sketch measures (whose stored sketch
// bytes SQL cannot read; <view>_levels holds their SQL states instead).
func exactCols(view *schemas.View, v Version) []col {
	var out []col
	for _, c := range viewCols(view, v) {
		if i := view.MeasureIndex(c.name); i >= 0 && !view.Measures[i].Type.Exact() {
			continue
		}
		out = append(out, c)
	}
	return out
}

// levelStateCols are the AggregateFunction columns of <view>_levels: one
// per sketch measure, named as the measure. Filled only by INSERT …
// SELECT inside ClickHouse, which is why they can be AggregateFunction.
func levelStateCols(view *schemas.View) []col {
	var out []col
	for i := range view.Measures {
		if t := StateType(&view.Measures[i]); t != "" {
			out = append(out, col{view.Measures[i].Name, t})
		}
	}
	return out
}

// levelColumnNames are the measures as <view>_levels orders them: the
// exact ones, then the SQL states.
func levelColumnNames(view *schemas.View) []string {
	var exact, states []string
	for _, m := range view.Measures {
		if m.Type.Exact() {
			exact = append(exact, ident(m.Name))
		} else {
			states = append(states, ident(m.Name))
		}
	}
	return append(exact, states...)
}

// levelObjects are the levels table and one merged view per level; none
// for a view without levels.
func levelObjects(db string, view *schemas.View, v Version, streamViews []string) []object {
	if len(view.Levels()) == 0 {
		return nil
	}
	cols := append([]col{{"run_id", "String"}, {"level", "UInt32"}}, exactCols(view, v)...)
	cols = append(cols, levelStateCols(view)...)
	engine := fmt.Sprintf("MergeTree PARTITION BY run_id ORDER BY (level, window_start%s)", dimsKey(view))
	name := LevelsTable(view.Name)
	objs := []object{{
		shardKey:   batchShardKey,
		Statement:  Statement{Object: name, Kind: KindTable, Owner: view.Logical(), SQL: createTable(db, name, cols, engine)},
		definition: viewDefinition(view) + "\nlevels: exact measures",
		columns:    colNames(cols),
		types:      colTypes(cols),
		appendable: len(levelStateCols(view)),
	}}
	for _, l := range view.Levels() {
		name := LevelView(SQLName(view), l)
		objs = append(objs, object{
			Statement:  Statement{Object: name, Kind: KindView, Owner: view.Logical(), SQL: fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s AS\n%s", qualified(db, name), LevelViewQuery(db, view, l, streamViews))},
			definition: viewDefinition(view) + "\nlevel: " + l.String(),
		})
	}
	return objs
}

// levelSeconds is a level's window size in seconds, as <view>_levels
// stores it.
func levelSeconds(l schemas.Granularity) int64 { return int64(l.D().Seconds()) }

// floorWindow floors a DateTime column to the level's windows (aligned to
// the Unix epoch, as schemas.Granularity.WindowStart), in SQL that runs on
// 18.16 and on current ClickHouse.
func floorWindow(column string, l schemas.Granularity) string {
	n := levelSeconds(l)
	return fmt.Sprintf("toDateTime(intDiv(toUInt32(%s), %d) * %d, 'UTC')", column, n, n)
}

// levelAggregates returns, per measure in the view's order, its merge in
// SQL as "agg(m) AS m" over a column named m: the kind's SQLMerge of an exact
// measure's value, mergeState of a sketch measure's SQL state (a level
// row's stored state, or a speed row's rebuilt by rowMeasureColumns).
func levelAggregates(view *schemas.View) []string {
	var aggs []string
	for i := range view.Measures {
		m := &view.Measures[i]
		if m.Type.Exact() {
			aggs = append(aggs, fmt.Sprintf("%s(%s) AS %s", m.Kind().SQLMerge, ident(m.Name), ident(m.Name)))
		} else {
			aggs = append(aggs, mergeState(m, ident(m.Name))+" AS "+ident(m.Name))
		}
	}
	return aggs
}

// orderAsLevels reorders per-measure expressions (in measure order) as
// levelColumnNames orders the measures.
func orderAsLevels(view *schemas.View, exprs []string) []string {
	var exact, states []string
	for i, m := range view.Measures {
		if m.Type.Exact() {
			exact = append(exact, exprs[i])
		} else {
			states = append(states, exprs[i])
		}
	}
	return append(exact, states...)
}

// rowMeasureColumns are the expressions a level query reads from a speed or
// batch row, per measure, named as the measure: the stored column of an
// exact measure, a sketch measure's state rebuilt by rowState.
func rowMeasureColumns(view *schemas.View) []string {
	var out []string
	for i := range view.Measures {
		m := &view.Measures[i]
		if m.Type.Exact() {
			out = append(out, ident(m.Name))
		} else {
			out = append(out, rowState(m)+" AS "+ident(m.Name))
		}
	}
	return out
}

// LevelViewQuery returns the SELECT behind <view>_<level>: what
// MergedViewQuery answers, rolled up to the level's windows, reading the
// current run's level rows instead of its base rows. The inner window is
// named ws, not window_start: an alias naming the column it is computed
// from is refused by older servers.
func LevelViewQuery(db string, view *schemas.View, l schemas.Granularity, streamViews []string) string {
	name := quoteString(view.Name)
	currentRun := currentRunQuery(db, view)
	absorbedOf := func(column, sentinel string) string {
		return fmt.Sprintf("arrayConcat([%s], (SELECT groupArray(%s) FROM %s WHERE view = %s AND run_id = %s))",
			sentinel, column, qualified(db, TableAbsorbed), name, currentRun)
	}
	dims := make([]string, 0, len(view.Dimensions))
	for _, d := range view.Dimensions {
		dims = append(dims, ident(d))
	}
	aggs := levelAggregates(view)
	levelInner := strings.Join(append(append([]string{}, dims...), levelColumnNames(view)...), ", ")
	speedInner := strings.Join(append(append([]string{}, dims...), orderAsLevels(view, rowMeasureColumns(view))...), ", ")
	group := strings.Join(append([]string{"ws"}, dims...), ", ")
	outer := strings.Join(append(append([]string{"ws AS " + ident(schemas.ColWindowStart)}, dims...), aggs...), ", ")
	return fmt.Sprintf(`SELECT %s
FROM (
    SELECT window_start AS ws, %s
    FROM %s
    WHERE run_id = %s AND level = %d
    UNION ALL
    SELECT %s AS ws, %s
    FROM %s FINAL
    WHERE chunk >= transform(kafka_partition,
        %s,
        %s,
        toUInt64(0))
      AND window_start >= %s
      AND %s
)
GROUP BY %s`,
		outer,
		levelInner, qualified(db, LevelsTable(view.Name)), currentRun, levelSeconds(l),
		floorWindow("window_start", l), speedInner, qualified(db, SpeedTable(view.Name)),
		absorbedOf("kafka_partition", "toUInt32(4294967295)"),
		absorbedOf("chunks", "toUInt64(0)"),
		retainedStartQuery(db, view),
		answeredCondition(db, view, streamViews),
		group)
}

// levelRows counts a run's rows in <view>_levels, by level in seconds.
func (db *DB) levelRows(ctx context.Context, v *schemas.View, runID string) (map[int64]int64, error) {
	rows, err := db.conn.Query(ctx, fmt.Sprintf("SELECT toInt64(level), toInt64(count()) FROM %s WHERE run_id = ? GROUP BY level",
		qualified(db.db, LevelsTable(v.Name))), runID)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: counting the level rows of run %s of %s: %w", runID, v.Name, err)
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var l, n int64
		if err := rows.Scan(&l, &n); err != nil {
			return nil, err
		}
		out[l] = n
	}
	return out, rows.Err()
}

// LoadLevels builds the coarse levels of a loaded run (LoadBatchRun first)
// in <view>_levels from the run's rows of <view>_batch, one INSERT …
// SELECT … GROUP BY per level inside ClickHouse. Call it before PublishRun:
// <view>_<level> reads the current run's level rows.
//
// It is idempotent like LoadBatchRun: when the run holds, for every level
// of the view, as many level rows as the manifest lists for that level (its
// level files' rows: the same (window, dimension values) combinations), it
// does nothing; otherwise it drops what an earlier attempt left and builds
// again, and fails when the counts then differ. A manifest without levels
// (written before levels existed) gives no counts to check against.
func (db *DB) LoadLevels(ctx context.Context, v *schemas.View, m *schemas.Manifest) error {
	levels := v.Levels()
	if len(levels) == 0 || m == nil {
		return nil
	}
	if err := checkRunID(m.RunID); err != nil {
		return err
	}
	want := map[int64]int64{}
	for _, f := range m.Files {
		if f.Level != 0 {
			want[levelSeconds(f.Level)] += f.Rows
		}
	}
	check := func(have map[int64]int64) error {
		for _, l := range levels {
			if !slices.Contains(m.Levels, l) {
				continue
			}
			if n := levelSeconds(l); have[n] != want[n] {
				return fmt.Errorf("clickhouse: ClickHouse holds %d rows of %s run %s at level %s, the manifest lists %d", have[n], v.Name, m.RunID, l, want[n])
			}
		}
		return nil
	}
	have, err := db.levelRows(ctx, v, m.RunID)
	if err != nil {
		return err
	}
	if len(have) == len(levels) && check(have) == nil {
		return nil
	}
	table := qualified(db.db, db.local(LevelsTable(v.Name)))
	if len(have) > 0 {
		drop, _ := dropRunClause(m.RunID)
		if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", table, drop)); err != nil {
			return fmt.Errorf("clickhouse: clearing an earlier attempt of the levels of run %s of %s: %w", m.RunID, v.Name, err)
		}
	}
	for _, l := range levels {
		if err := db.execHere(ctx, levelInsertSQL(db.db, v, l), m.RunID); err != nil {
			return fmt.Errorf("clickhouse: building level %s of run %s of %s: %w", l, m.RunID, v.Name, err)
		}
	}
	if have, err = db.levelRows(ctx, v, m.RunID); err != nil {
		return err
	}
	if err := check(have); err != nil {
		return err
	}
	return db.waitRunReplicated(ctx, db.local(LevelsTable(v.Name)), m.RunID)
}

// levelInsertSQL builds level l of one run ('?': the run id) in
// <view>_levels from its rows in <view>_batch.
func levelInsertSQL(database string, v *schemas.View, l schemas.Granularity) string {
	dims := make([]string, 0, len(v.Dimensions))
	for _, d := range v.Dimensions {
		dims = append(dims, ident(d))
	}
	var aggs []string
	for i := range v.Measures {
		m := &v.Measures[i]
		if m.Type.Exact() {
			aggs = append(aggs, fmt.Sprintf("%s(%s) AS %s", m.Kind().SQLMerge, ident(m.Name), ident(m.Name)))
		} else {
			aggs = append(aggs, mergeState(m, rowState(m))+" AS "+ident(m.Name))
		}
	}
	aggs = orderAsLevels(v, aggs)
	cols := strings.Join(append(append([]string{"run_id", "level", ident(schemas.ColWindowStart)}, dims...), levelColumnNames(v)...), ", ")
	sel := strings.Join(append(append([]string{"run_id", fmt.Sprint(levelSeconds(l)), floorWindow("window_start", l) + " AS ws"}, dims...), aggs...), ", ")
	return fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s WHERE run_id = ? GROUP BY %s",
		qualified(database, LevelsTable(v.Name)), cols, sel, qualified(database, BatchTable(v.Name)), strings.Join(append([]string{"run_id", "ws"}, dims...), ", "))
}

// dropOldLevels drops the level rows of every run but current and keep.
func (db *DB) dropOldLevels(ctx context.Context, v *schemas.View, current string, keep []string) error {
	if len(v.Levels()) == 0 {
		return nil
	}
	table := qualified(db.db, LevelsTable(v.Name))
	rows, err := db.conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT run_id FROM %s ORDER BY run_id", table))
	if err != nil {
		return fmt.Errorf("clickhouse: listing the runs in %s: %w", LevelsTable(v.Name), err)
	}
	var loaded []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		loaded = append(loaded, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range loaded {
		if id == current || slices.Contains(keep, id) {
			continue
		}
		clause, err := dropRunClause(id)
		if err != nil {
			return err
		}
		if err := db.exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, db.local(LevelsTable(v.Name))), clause)); err != nil {
			return fmt.Errorf("clickhouse: dropping the levels of run %s of %s: %w", id, v.Name, err)
		}
	}
	return nil
}
