package clickhouse

import (
	"fmt"
	"math"
	"regexp"
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

// speedColumns are the columns of <view>_speed in insert and select order.
func speedColumns(v *schemas.View) []string {
	return append(rowColumnNames(v), schemas.ColKafkaPartition, schemas.ColChunk, schemas.ColVersion)
}

func insertSQL(database, table string, cols []string) string {
	return fmt.Sprintf("INSERT INTO %s (%s)", qualified(database, table), joinIdents(cols))
}

// speedInsertSQL is the batch insert of a view's speed rows.
func speedInsertSQL(database string, v *schemas.View) (string, []string) {
	cols := speedColumns(v)
	return insertSQL(database, SpeedTable(v.Name), cols), cols
}

// windowBounds turns [from, to) into whole seconds for a DateTime
// comparison: window starts are whole seconds, so flooring from and
// ceiling to keeps exactly the windows whose start is in [from, to).
// Bounds before 1970 clamp to 0; a zero or far-future to means no end.
func windowBounds(from, to time.Time) (int64, int64) {
	lo := int64(0)
	if from.Unix() > 0 {
		lo = from.Unix()
	}
	hi := int64(math.MaxUint32) // DateTime ends in 2106
	if !to.IsZero() {
		s := to.Unix()
		if to.Nanosecond() > 0 {
			s++
		}
		if s < hi {
			hi = max(s, 0)
		}
	}
	return lo, hi
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

// selectSpeedSQL reads a view's speed rows FINAL (the newest version of
// each row) with window_start in [from, to) and chunk >= K_p.
func selectSpeedSQL(database string, v *schemas.View, from, to time.Time, absorbed map[int32]int64) (string, []any, error) {
	lo, hi := windowBounds(from, to)
	sql := fmt.Sprintf("SELECT %s FROM %s FINAL WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?)",
		joinIdents(speedColumns(v)), qualified(database, SpeedTable(v.Name)))
	cond, err := unabsorbedCondition(absorbed)
	if err != nil {
		return "", nil, err
	}
	if cond != "" {
		sql += " AND " + cond
	}
	return sql, []any{lo, hi}, nil
}

// speedProgressSQL reads the highest version per partition of a view's
// speed rows.
func speedProgressSQL(database string, v *schemas.View) string {
	return fmt.Sprintf("SELECT kafka_partition, max(version) FROM %s GROUP BY kafka_partition ORDER BY kafka_partition",
		qualified(database, SpeedTable(v.Name)))
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
	return append([]string{"run_id"}, rowColumnNames(v)...)
}

func batchInsertSQL(database string, v *schemas.View) (string, []string) {
	cols := batchColumns(v)
	return insertSQL(database, BatchTable(v.Name), cols), cols
}

var absorbedColumns = []string{"view", "run_id", "kafka_partition", "chunks", "absorbed_offset"}
var runsColumns = []string{"view", "run_id", "published_at", "version"}

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
