package clickhouse

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// The SQL of every query the adapter runs, built by pure functions so that
// tests run each of them on 18.16 and on a current ClickHouse (chdb).
// Arguments are bound client-side by clickhouse-go ('?'); numbers the
// adapter formats itself are validated first.

func joinIdents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = ident(n)
	}
	return strings.Join(q, ", ")
}

func rowColumnNames(v *schemas.View) []string {
	cols := v.RowColumns()
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}

// stateColumnNames are the names of viewStateCols.
func stateColumnNames(v *schemas.View) []string { return colNames(viewStateCols(v)) }

// speedColumns are the columns of <view>_speed in insert order: the row,
// the chunk key, then the SQL states (last, as ALTER … ADD COLUMN puts
// them in tables created before they existed).
func speedColumns(v *schemas.View) []string {
	return append(append(rowColumnNames(v), schemas.ColKafkaPartition, schemas.ColChunk, schemas.ColVersion), stateColumnNames(v)...)
}

func insertSQL(database, table string, cols []string) string {
	return fmt.Sprintf("INSERT INTO %s (%s)", qualified(database, table), joinIdents(cols))
}

// speedInsertSQL is the batch insert of a view's speed rows.
func speedInsertSQL(database string, v *schemas.View) (string, []string) {
	cols := speedColumns(v)
	return insertSQL(database, SpeedTable(v.Name), cols), cols
}

// windowBounds turns [from, to) into whole seconds lo, hi such that a
// whole-second window start w satisfies from <= w < to exactly when
// lo <= w < hi: both bounds are rounded up to the next whole second (a
// window starting at 10:00:00 is before a from of 10:00:00.5, and before a
// to of 10:00:00.5). Bounds clamp to DateTime's range, [1970, 2106]; a zero
// from means no start and a zero to means no end.
func windowBounds(from, to time.Time) (int64, int64) {
	const maxDateTime = int64(math.MaxUint32) // DateTime ends in 2106
	lo := int64(0)
	if !from.IsZero() {
		lo = min(max(ceilSeconds(from), 0), maxDateTime)
	}
	hi := maxDateTime
	if !to.IsZero() {
		hi = min(max(ceilSeconds(to), 0), maxDateTime)
	}
	return lo, hi
}

// ceilSeconds is t in Unix seconds, rounded up when t has a fraction.
// (Unix() floors for times before 1970 too, so adding one is a ceiling.)
func ceilSeconds(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// unabsorbedCondition selects rows whose chunk is at or above K_p, the
// absorbed chunk count of the row's partition (0 for partitions absent from
// absorbed). Partitions and counts are numbers formatted here; negative ones
// are refused.
func unabsorbedCondition(absorbed map[int32]int64) (string, error) {
	ps, ks, err := chunkArrays(absorbed)
	if err != nil || len(ps) == 0 {
		return "", err
	}
	return fmt.Sprintf("chunk >= transform(kafka_partition, [%s], [%s], toUInt64(0))", ps, ks), nil
}

// chunkArrays formats absorbed as two ClickHouse array literals (without
// brackets), sorted by partition.
func chunkArrays(absorbed map[int32]int64) (string, string, error) {
	parts := make([]int32, 0, len(absorbed))
	for p, k := range absorbed {
		if p < 0 || k < 0 {
			return "", "", fmt.Errorf("clickhouse: absorbed chunks %d of partition %d: partitions and chunk counts cannot be negative", k, p)
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "", "", nil
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	ps := make([]string, len(parts))
	ks := make([]string, len(parts))
	for i, p := range parts {
		ps[i] = "toUInt32(" + strconv.FormatInt(int64(p), 10) + ")"
		ks[i] = "toUInt64(" + strconv.FormatInt(absorbed[p], 10) + ")"
	}
	return strings.Join(ps, ", "), strings.Join(ks, ", "), nil
}

// SpeedQuery selects speed rows of one view for DB.ScanSpeedRows. Only
// View is required; every other zero field selects everything.
//
// Identifiers in the SQL come only from View (the validated
// configuration): Filters and Measures must name the view's own
// dimensions and measures, and the query is refused otherwise. Filter
// values and time bounds are bound as '?' parameters; absorbed chunk
// counts are numbers the adapter formats itself.
type SpeedQuery struct {
	View *schemas.View
	// From and To bound the window starts, exactly, also for bounds with
	// a sub-second part: From <= window_start < To. A zero From means no
	// start, a zero To no end.
	From, To time.Time
	// Absorbed is K_p, the number of chunks the batch run absorbed, per
	// Kafka partition: only rows with chunk >= Absorbed[p] are read.
	// Partitions not in the map have K_p = 0.
	Absorbed map[int32]int64
	// Filters maps dimension names to their accepted values: a row is read
	// when, for every listed dimension, its value is one of them (values
	// of one dimension ORed, dimensions ANDed). A dimension listed with
	// no values accepts no row.
	Filters map[string][]string
	// Prefixes maps dimension names to prefixes a row's value may start
	// with instead: for a dimension in Filters or Prefixes, a row is read
	// when its value is one of Filters' values or starts with one of these
	// (ORed). Prefixes compare bytes.
	Prefixes map[string][]string
	// NotIn and NotPrefixes map dimension names to values a row's value
	// must not be, and prefixes it must not start with.
	NotIn, NotPrefixes map[string][]string
	// Measures names the measures to read; nil or empty reads them all.
	// The cells of measures not read are nil.
	Measures []string
	// Exclude lists, per partition, chunks not to read (serving has their
	// rollups already). Chunk numbers are formatted by the adapter.
	Exclude map[int32][]int64
}

// need returns which of the view's measures q reads.
func (q *SpeedQuery) need() ([]bool, error) {
	v := q.View
	need := make([]bool, len(v.Measures))
	if len(q.Measures) == 0 {
		for i := range need {
			need[i] = true
		}
		return need, nil
	}
	for _, name := range q.Measures {
		i := v.MeasureIndex(name)
		if i < 0 {
			return nil, fmt.Errorf("clickhouse: view %s has no measure %q", v.Name, name)
		}
		need[i] = true
	}
	return need, nil
}

// speedQuerySQL reads a view's speed rows FINAL (the newest version of each
// row): window_start, the dimensions, the measures q reads (in the view's
// order), kafka_partition, chunk and version, of the rows q selects. need
// says which measures are read.
func speedQuerySQL(database string, q *SpeedQuery) (sql string, args []any, need []bool, err error) {
	v := q.View
	if v == nil {
		return "", nil, nil, fmt.Errorf("clickhouse: a speed query needs a view")
	}
	if need, err = q.need(); err != nil {
		return "", nil, nil, err
	}
	cols := make([]string, 0, 1+len(v.Dimensions)+len(v.Measures)+3)
	cols = append(cols, schemas.ColWindowStart)
	cols = append(cols, v.Dimensions...)
	for i, m := range v.Measures {
		if need[i] {
			cols = append(cols, m.Name)
		}
	}
	cols = append(cols, schemas.ColKafkaPartition, schemas.ColChunk, schemas.ColVersion)
	for _, c := range cols {
		if !identPattern.MatchString(c) {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s: column name %q is not a plain identifier", v.Name, c)
		}
	}

	where, args, err := speedWhere(q)
	if err != nil {
		return "", nil, nil, err
	}
	sql = fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s",
		joinIdents(cols), qualified(database, SpeedTable(v.Name)), strings.Join(where, " AND "))
	return sql, args, need, nil
}

// speedWhere is the WHERE of a speed query: the window range, the chunk
// seam and the filters. Every condition is on a sorting-key column, which
// every version of a row shares, so filtering before FINAL collapses the
// versions keeps exactly the newest version of each selected row.
func speedWhere(q *SpeedQuery) ([]string, []any, error) {
	lo, hi := windowBounds(q.From, q.To)
	where := []string{"window_start >= toDateTime(?)", "window_start < toDateTime(?)"}
	args := []any{lo, hi}
	cond, err := unabsorbedCondition(q.Absorbed)
	if err != nil {
		return nil, nil, err
	}
	if cond != "" {
		where = append(where, cond)
	}
	if ex, err := excludeCondition(q.Exclude, q.Absorbed); err != nil {
		return nil, nil, err
	} else if ex != "" {
		where = append(where, ex)
	}
	fw, fargs, err := filterWhere(q)
	if err != nil {
		return nil, nil, err
	}
	return append(where, fw...), append(args, fargs...), nil
}

// filterWhere is the dimension filters of q as WHERE conditions (ANDed)
// with their arguments; every table holding view rows has the dimension
// columns, so the batch, level and speed reads share it.
func filterWhere(q *SpeedQuery) ([]string, []any, error) {
	v := q.View
	var where []string
	var args []any
	for _, m := range []map[string][]string{q.Filters, q.Prefixes, q.NotIn, q.NotPrefixes} {
		for name := range m {
			if v.DimensionIndex(name) < 0 {
				return nil, nil, fmt.Errorf("clickhouse: view %s has no dimension %q to filter on", v.Name, name)
			}
		}
	}
	for _, d := range v.Dimensions { // the view's order: the same query gives the same SQL
		vals, isIn := q.Filters[d]
		prefixes, hasPrefix := q.Prefixes[d]
		if isIn || hasPrefix {
			var terms []string
			if len(vals) > 0 {
				in, inArgs := inList(d, "IN", vals)
				terms, args = append(terms, in), append(args, inArgs...)
			}
			for _, p := range sortedUnique(prefixes) {
				terms = append(terms, prefixTerm(d, "=", p))
				args = append(args, p)
			}
			switch len(terms) {
			case 0:
				where = append(where, "0") // accepts no value; IN () is not SQL
			case 1:
				where = append(where, terms[0])
			default:
				where = append(where, "("+strings.Join(terms, " OR ")+")")
			}
		}
		if vals := q.NotIn[d]; len(vals) > 0 {
			in, inArgs := inList(d, "NOT IN", vals)
			where, args = append(where, in), append(args, inArgs...)
		}
		for _, p := range sortedUnique(q.NotPrefixes[d]) {
			where = append(where, prefixTerm(d, "!=", p))
			args = append(args, p)
		}
	}
	return where, args, nil
}

// inList is "<d> IN|NOT IN (?, …)" with its arguments, the values sorted
// and deduplicated so the same set gives the same SQL.
func inList(d, op string, vals []string) (string, []any) {
	vals = sortedUnique(vals)
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", ")
	args := make([]any, len(vals))
	for i, s := range vals {
		args[i] = s
	}
	return fmt.Sprintf("%s %s (%s)", ident(d), op, marks), args
}

// prefixTerm compares the first len(p) bytes of d with a bound prefix:
// substring counts bytes, as Go's strings.HasPrefix does, and runs on
// 18.16 (startsWith came later). Only the length, a number, is formatted
// into the SQL; the prefix itself is the '?' argument.
func prefixTerm(d, op, p string) string {
	return fmt.Sprintf("substring(%s, 1, %d) %s ?", ident(d), len(p), op)
}

func sortedUnique(vals []string) []string {
	vals = slices.Clone(vals)
	slices.Sort(vals)
	return slices.Compact(vals)
}

// excludeCondition leaves out the listed (partition, chunk) pairs; "" when
// none. It is written as what remains to be read, in ranges of the
// sorting key's leading columns (kafka_partition, chunk): for each listed
// partition, the chunks from K_p (absorbed) up to the first excluded one,
// between excluded ones and past the last, and every partition not listed
// whole. ClickHouse's primary key then selects only the granules of those
// chunks; a NOT IN of the pairs (or any function of the columns) cannot
// use the key, so every row of the day was read FINAL and tested — with
// every closed chunk's rollup cached, that scan was most of a query's
// time. The ranges are sorted so the same sets give the same SQL.
func excludeCondition(ex map[int32][]int64, absorbed map[int32]int64) (string, error) {
	parts := make([]int32, 0, len(ex))
	for p, cs := range ex {
		if p < 0 {
			return "", fmt.Errorf("clickhouse: excluded chunks of partition %d: partitions cannot be negative", p)
		}
		for _, c := range cs {
			if c < 0 {
				return "", fmt.Errorf("clickhouse: excluded chunk %d of partition %d: chunks cannot be negative", c, p)
			}
		}
		if len(cs) > 0 {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "", nil
	}
	slices.Sort(parts)
	terms := unlistedPartitions(parts)
	for _, p := range parts {
		cs := slices.Clone(ex[p])
		slices.Sort(cs)
		var ranges []string
		from := max(absorbed[p], 0) // chunks below K_p are not read anyway
		for _, c := range slices.Compact(cs) {
			switch {
			case c < from:
				continue
			case c == from+1:
				ranges = append(ranges, fmt.Sprintf("chunk = %d", from))
			case c > from:
				ranges = append(ranges, fmt.Sprintf("(chunk >= %d AND chunk < %d)", from, c))
			}
			from = c + 1
		}
		ranges = append(ranges, fmt.Sprintf("chunk >= %d", from))
		terms = append(terms, fmt.Sprintf("(kafka_partition = %d AND (%s))", p, strings.Join(ranges, " OR ")))
	}
	return "(" + strings.Join(terms, " OR ") + ")", nil
}

// unlistedPartitions selects the partitions not in parts (sorted), whole:
// below the first, between two listed ones, above the last.
func unlistedPartitions(parts []int32) []string {
	var terms []string
	prev := int64(-1)
	for _, p := range parts {
		switch {
		case int64(p) == prev+1:
		case prev < 0:
			terms = append(terms, fmt.Sprintf("kafka_partition < %d", p))
		default:
			terms = append(terms, fmt.Sprintf("(kafka_partition > %d AND kafka_partition < %d)", prev, p))
		}
		prev = int64(p)
	}
	return append(terms, fmt.Sprintf("kafka_partition > %d", prev))
}

// chunksFromCondition selects, of each listed partition, its chunks from
// from[p] on, and every partition not listed whole; "" when none is
// listed. Like excludeCondition it is ranges of the sorting key's leading
// columns, so ClickHouse reads only those chunks' granules.
func chunksFromCondition(from map[int32]int64) (string, error) {
	parts := make([]int32, 0, len(from))
	for p, c := range from {
		if p < 0 || c < 0 {
			return "", fmt.Errorf("clickhouse: chunks from %d of partition %d: partitions and chunks cannot be negative", c, p)
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "", nil
	}
	slices.Sort(parts)
	terms := unlistedPartitions(parts)
	for _, p := range parts {
		terms = append(terms, fmt.Sprintf("(kafka_partition = %d AND chunk >= %d)", p, from[p]))
	}
	return "(" + strings.Join(terms, " OR ") + ")", nil
}

// SpeedRollupQuery asks ClickHouse to roll a view's speed rows up to a
// query's buckets and groups (DB.ScanSpeedRollup): the rows SpeedQuery
// selects, newest version of each only, bucketed and grouped inside
// ClickHouse, so one row per (bucket, group) comes back instead of one per
// (window, dimensions, partition, chunk).
type SpeedRollupQuery struct {
	SpeedQuery
	// Granularity is the bucket size; 0 rolls everything into one bucket
	// (reported as the Unix epoch). It must be whole seconds: window
	// starts are.
	Granularity time.Duration
	// Local, when set, replaces the epoch-aligned buckets of Granularity
	// with these local-time buckets (which must cover the query's range).
	Local *schemas.LocalBuckets
	// GroupBy names the dimensions to group by, in the answer's order.
	GroupBy []string
	// ByChunk also groups by (kafka_partition, chunk), so serving can keep
	// the rollup of each closed chunk; rows then carry their partition and
	// chunk.
	ByChunk bool
}

// SpeedRollupRow is one (bucket, group) of a SpeedRollupQuery: the bucket
// start, the group-by values in GroupBy order, and one cell per measure in
// the view's order (nil for measures not read): count as int64, sum as
// float64, min and max as *float64 (nil when no row had a value), and the
// sketches as [][]byte, every non-empty stored sketch of the group, still
// to be merged (their bytes are opaque to SQL).
type SpeedRollupRow struct {
	Bucket time.Time
	Dims   []string
	Cells  []any
	// Partition and Chunk are set when the query was ByChunk.
	Partition int32
	Chunk     int64
}

// rollupBucketAlias names the bucket column; a leading '_' cannot be a
// dimension name.
const rollupBucketAlias = "_bucket"

// speedRollupSQL is the push-down of a SpeedRollupQuery: exact measures
// aggregated by ClickHouse (count and sum summed, min of min, max of max;
// NULLs — no value — ignored by min and max), sketches gathered with
// groupArrayIf. FINAL applies before the GROUP BY, so each row counts
// once, at its newest version. It runs on 18.16 and current ClickHouse.
func speedRollupSQL(database string, q *SpeedRollupQuery) (sql string, args []any, need []bool, err error) {
	v := q.View
	if v == nil {
		return "", nil, nil, fmt.Errorf("clickhouse: a speed query needs a view")
	}
	if need, err = q.need(); err != nil {
		return "", nil, nil, err
	}
	bucket, err := bucketSQL(v, q.Granularity, q.Local)
	if err != nil {
		return "", nil, nil, err
	}
	sel := []string{bucket + " AS " + rollupBucketAlias}
	group := []string{rollupBucketAlias}
	if q.ByChunk {
		sel = append(sel, "kafka_partition", "chunk")
		group = append(group, "kafka_partition", "chunk")
	}
	for _, d := range q.GroupBy {
		if v.DimensionIndex(d) < 0 {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s has no dimension %q to group by", v.Name, d)
		}
		sel = append(sel, ident(d))
		group = append(group, ident(d))
	}
	for i, m := range v.Measures {
		if !need[i] {
			continue
		}
		if !identPattern.MatchString(m.Name) {
			return "", nil, nil, fmt.Errorf("clickhouse: view %s: column name %q is not a plain identifier", v.Name, m.Name)
		}
		c := ident(m.Name)
		if k := m.Kind(); k.Cell != schemas.CellSketch {
			sel = append(sel, k.SQLMerge+"("+c+")")
		} else {
			sel = append(sel, fmt.Sprintf("groupArrayIf(%s, %s != '')", c, c))
		}
	}
	where, args, err := speedWhere(&q.SpeedQuery)
	if err != nil {
		return "", nil, nil, err
	}
	// HAVING count() > 0: with only constant keys (granularity "all", no
	// group-by) ClickHouse aggregates without keys and returns one row even
	// when no row is selected — a group that does not exist.
	sql = fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s GROUP BY %s HAVING count() > 0",
		strings.Join(sel, ", "), qualified(database, SpeedTable(v.Name)), strings.Join(where, " AND "), strings.Join(group, ", "))
	return sql, args, need, nil
}

// bucketSQL is the bucket start (Unix seconds, UInt32) of window_start
// for granularity g (0: one bucket, 0) or, when set, local buckets.
func bucketSQL(v *schemas.View, g time.Duration, local *schemas.LocalBuckets) (string, error) {
	if g < 0 || g%time.Second != 0 {
		return "", fmt.Errorf("clickhouse: view %s: rollup granularity %s is not whole seconds", v.Name, g)
	}
	if local != nil && g > 0 {
		b, err := localBucketSQL(local)
		if err != nil {
			return "", fmt.Errorf("clickhouse: view %s: %w", v.Name, err)
		}
		return b, nil
	}
	secs := int64(g / time.Second)
	if secs == 0 {
		return "toUInt32(0)", nil
	}
	if secs > math.MaxUint32 {
		secs = math.MaxUint32 // every window (DateTime ends in 2106) in one bucket from 0
	}
	return fmt.Sprintf("toUInt32(intDiv(toUInt32(window_start), %d) * %d)", secs, secs), nil
}

// localBucketSQL is LocalBuckets.Bucket as a ClickHouse expression over
// window_start: a multiIf over the pieces, each a constant or local time
// at a constant offset floored to the size. Every number is the adapter's
// own formatting of an int64; it runs on 18.16.
func localBucketSQL(lb *schemas.LocalBuckets) (string, error) {
	if len(lb.Pieces) == 0 || lb.Size <= 0 {
		return "", fmt.Errorf("local buckets of %s have no pieces", lb.Zone)
	}
	const w = "toInt64(toUInt32(window_start))"
	piece := func(p schemas.BucketPiece) string {
		if p.IsFixed {
			return fmt.Sprintf("toInt64(%d)", p.Fixed)
		}
		return fmt.Sprintf("intDiv(%s + %d, %d) * %d - %d", w, p.Shift, lb.Size, lb.Size, p.Shift)
	}
	if len(lb.Pieces) == 1 {
		return "toUInt32(" + piece(lb.Pieces[0]) + ")", nil
	}
	var b strings.Builder
	b.WriteString("toUInt32(multiIf(")
	for i, p := range lb.Pieces[1:] {
		fmt.Fprintf(&b, "%s < %d, %s, ", w, p.Start, piece(lb.Pieces[i]))
	}
	b.WriteString(piece(lb.Pieces[len(lb.Pieces)-1]))
	b.WriteString("))")
	return b.String(), nil
}

// speedSpansSQL reads the window span of chunks: per (partition, chunk)
// among the chunks of the partitions in chunks (each from its lowest to its
// highest listed chunk), the smallest and largest window start as Unix
// seconds. No FINAL: every version of a row has the same window.
func speedSpansSQL(database string, v *schemas.View, chunks map[int32][]int64) (string, error) {
	parts := make([]int32, 0, len(chunks))
	for p, cs := range chunks {
		if p < 0 || len(cs) == 0 {
			continue
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "", nil
	}
	slices.Sort(parts)
	var conds []string
	for _, p := range parts {
		lo, hi := slices.Min(chunks[p]), slices.Max(chunks[p])
		if lo < 0 {
			return "", fmt.Errorf("clickhouse: chunk %d of partition %d cannot be negative", lo, p)
		}
		conds = append(conds, fmt.Sprintf("(kafka_partition = %d AND chunk >= %d AND chunk <= %d)", p, lo, hi))
	}
	return fmt.Sprintf("SELECT kafka_partition, chunk, toUInt32(min(window_start)), toUInt32(max(window_start)) FROM %s WHERE %s GROUP BY kafka_partition, chunk",
		qualified(database, SpeedTable(v.Name)), strings.Join(conds, " OR ")), nil
}

// speedFreshnessSQL reads the newest window start (Unix seconds) among a
// view's speed rows of unabsorbed chunks, and how many such rows are stored
// (versions not yet merged away count too; 0 means none). It needs no
// FINAL: every version of a row has the same window.
func speedFreshnessSQL(database string, v *schemas.View, absorbed map[int32]int64) (string, error) {
	cond, err := unabsorbedCondition(absorbed)
	if err != nil {
		return "", err
	}
	sql := fmt.Sprintf("SELECT toUInt32(max(window_start)), count() FROM %s", qualified(database, SpeedTable(v.Name)))
	if cond != "" {
		sql += " WHERE " + cond
	}
	return sql, nil
}

// speedProgressSQL reads the highest version per partition of a view's
// speed rows.
func speedProgressSQL(database string, v *schemas.View) string {
	return speedProgressWhereSQL(database, v, "")
}

// speedProgressWhereSQL is speedProgressSQL over the rows cond selects
// ("" for all).
func speedProgressWhereSQL(database string, v *schemas.View, cond string) string {
	where := ""
	if cond != "" {
		where = " WHERE " + cond
	}
	return fmt.Sprintf("SELECT kafka_partition, max(version) FROM %s%s GROUP BY kafka_partition ORDER BY kafka_partition",
		qualified(database, SpeedTable(v.Name)), where)
}

// speedVersionSQL reads, for the partition bound to '?', how many speed
// rows a view has and the highest version among them (every stored
// version counts: no FINAL needed for a maximum).
func speedVersionSQL(database string, v *schemas.View) string {
	return fmt.Sprintf("SELECT count(), max(version) FROM %s WHERE kafka_partition = ?", qualified(database, SpeedTable(v.Name)))
}

// currentAbsorbedSQL reads the absorbed chunks of one partition (the
// second '?') of the current published run of a view (the first and third
// '?'): the run the merged view reads, picked the same way. The subquery
// always returns one row (the empty string when nothing is published,
// which no run id matches); count() is 0 when the run absorbed nothing of
// the partition.
func currentAbsorbedSQL(database string) string {
	return fmt.Sprintf("SELECT count(), max(chunks) FROM %s WHERE view = ? AND kafka_partition = ? AND run_id = (SELECT argMax(run_id, version) FROM %s WHERE view = ?)",
		qualified(database, TableAbsorbed), qualified(database, TableRuns))
}

// deleteAbsorbedClause is the ALTER TABLE clause deleting speed rows of
// chunks below K_p; "" when nothing is absorbed.
func deleteAbsorbedClause(absorbed map[int32]int64) (string, error) {
	ps, ks, err := chunkArrays(absorbed)
	if err != nil || ps == "" {
		return "", err
	}
	return fmt.Sprintf("DELETE WHERE chunk < transform(kafka_partition, [%s], [%s], toUInt64(0))", ps, ks), nil
}

// batchColumns are the columns of <view>_batch in insert order.
func batchColumns(v *schemas.View) []string {
	return append(append([]string{"run_id"}, rowColumnNames(v)...), stateColumnNames(v)...)
}

func batchInsertSQL(database string, v *schemas.View) (string, []string) {
	cols := batchColumns(v)
	return insertSQL(database, BatchTable(v.Name), cols), cols
}

var absorbedColumns = []string{"view", "run_id", "kafka_partition", "chunks", "absorbed_offset"}
var runsColumns = []string{"view", "run_id", "published_at", "version", "retained_from"}

// currentRunSQL reads the current run of the view bound to '?': the runs row
// with the highest version. No row when the view has no published run.
func currentRunSQL(database string) string {
	return fmt.Sprintf("SELECT argMax(run_id, version), max(version) FROM %s WHERE view = ? GROUP BY view", qualified(database, TableRuns))
}

// runAbsorbedSQL reads the absorbed chunks of (view, run_id).
func runAbsorbedSQL(database string) string {
	return fmt.Sprintf("SELECT kafka_partition, any(chunks), any(absorbed_offset) FROM %s WHERE view = ? AND run_id = ? GROUP BY kafka_partition ORDER BY kafka_partition",
		qualified(database, TableAbsorbed))
}

// selectBatchSQL reads the rows of one run with window_start in [from, to).
func selectBatchSQL(database string, v *schemas.View, runID string, from, to time.Time) (string, []any) {
	lo, hi := windowBounds(from, to)
	return fmt.Sprintf("SELECT %s FROM %s WHERE run_id = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)",
		joinIdents(rowColumnNames(v)), qualified(database, BatchTable(v.Name))), []any{runID, lo, hi}
}

// batchRunRowsSQL counts the rows of the run bound to '?' in a view's batch
// table.
func batchRunRowsSQL(database string, v *schemas.View) string {
	return fmt.Sprintf("SELECT count() FROM %s WHERE run_id = ?", qualified(database, BatchTable(v.Name)))
}

// copyBatchSQL copies the rows of run `from` into run `to` inside the
// batch table, except those whose window starts on one of exceptDays (UTC
// dates) or before retainedFrom (views[].retention; zero: none). The run ids and the days ('YYYY-MM-DD' strings, which a Date
// compares with) are bound as '?'.
func copyBatchSQL(database string, v *schemas.View, from, to string, exceptDays []time.Time, retainedFrom time.Time) (string, []any) {
	table := qualified(database, BatchTable(v.Name))
	cols := joinIdents(append(rowColumnNames(v), stateColumnNames(v)...))
	days := make([]string, 0, len(exceptDays))
	for _, d := range exceptDays {
		days = append(days, d.UTC().Format(time.DateOnly))
	}
	slices.Sort(days)
	days = slices.Compact(days)
	sql := fmt.Sprintf("INSERT INTO %s (run_id, %s) SELECT ?, %s FROM %s WHERE run_id = ?", table, cols, cols, table)
	args := []any{to, from}
	if !retainedFrom.IsZero() {
		lo, _ := windowBounds(retainedFrom, time.Time{})
		sql += " AND window_start >= toDateTime(?)"
		args = append(args, lo)
	}
	if len(days) > 0 {
		sql += fmt.Sprintf(" AND toDate(window_start) NOT IN (%s)", strings.TrimSuffix(strings.Repeat("?, ", len(days)), ", "))
		for _, d := range days {
			args = append(args, d)
		}
	}
	return sql, args
}

// absorbedSpeedCountSQL counts the speed rows deleteAbsorbedClause would
// delete (every stored version); "" when nothing is absorbed.
func absorbedSpeedCountSQL(database string, v *schemas.View, absorbed map[int32]int64) (string, error) {
	ps, ks, err := chunkArrays(absorbed)
	if err != nil || ps == "" {
		return "", err
	}
	return fmt.Sprintf("SELECT count() FROM %s WHERE chunk < transform(kafka_partition, [%s], [%s], toUInt64(0))",
		qualified(database, SpeedTable(v.Name)), ps, ks), nil
}

// batchRunsSQL lists the runs loaded into a view's batch table.
func batchRunsSQL(database string, v *schemas.View) string {
	return fmt.Sprintf("SELECT DISTINCT run_id FROM %s ORDER BY run_id", qualified(database, BatchTable(v.Name)))
}

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$`)

// checkRunID refuses run ids that could not be written as a partition
// literal safely; batch run ids are timestamps and random suffixes.
func checkRunID(runID string) error {
	if !runIDPattern.MatchString(runID) {
		return fmt.Errorf("clickhouse: run id %q must be 1-128 letters, digits and _ . : + -", runID)
	}
	return nil
}

// dropRunClause drops one run's partition from a batch table.
func dropRunClause(runID string) (string, error) {
	if err := checkRunID(runID); err != nil {
		return "", err
	}
	return "DROP PARTITION " + quoteString(runID), nil
}

// rawColumns are the columns of <stream>_events in insert order.
func rawColumns(s *schemas.Stream) []string {
	cols := s.RawColumns()
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}

func rawInsertSQL(database string, s *schemas.Stream) (string, []string) {
	cols := rawColumns(s)
	return insertSQL(database, RawTable(s.Name), cols), cols
}

// rawDaysSQL lists the day partitions (YYYYMMDD) of a raw-events table that
// hold active parts.
func rawDaysSQL() string {
	return "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition"
}

// dropDayClause drops one day partition of a raw-events table.
func dropDayClause(day int) string { return "DROP PARTITION " + strconv.Itoa(day) }
