package serving

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/schemas"
)

// ClickHouseQuerier is the part of a ClickHouse connection the speed source
// uses; clickhouse-go's driver.Conn (and internal/clickhouse's DB.Conn())
// implement it.
type ClickHouseQuerier interface {
	Query(ctx context.Context, query string, args ...any) (driver.Rows, error)
	Ping(ctx context.Context) error
}

// ClickHouseSpeed reads speed rows from `<database>.<view>_speed` (the table
// internal/clickhouse creates: the view's row columns, then
// kafka_partition UInt32, chunk UInt64, version UInt64, in a
// ReplacingMergeTree(version)).
//
// Its SQL never contains client input: table and column names come from the
// validated configuration (and are checked again here), time bounds and
// absorbed chunks are numbers it formats itself, and filter values are
// bound '?' parameters.
type ClickHouseSpeed struct {
	conn     ClickHouseQuerier
	database string
}

var _ SpeedSource = (*ClickHouseSpeed)(nil)

// NewClickHouseSpeed returns a speed source over conn for tandem's database.
func NewClickHouseSpeed(conn ClickHouseQuerier, database string) (*ClickHouseSpeed, error) {
	if !identRE.MatchString(database) {
		return nil, fmt.Errorf("serving: clickhouse database name %q is not a plain identifier", database)
	}
	return &ClickHouseSpeed{conn: conn, database: database}, nil
}

var identRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

func ident(name string) (string, error) {
	if !identRE.MatchString(name) {
		return "", fmt.Errorf("serving: %q is not a plain identifier", name)
	}
	return "`" + name + "`", nil
}

// Ping checks that ClickHouse answers.
func (c *ClickHouseSpeed) Ping(ctx context.Context) error { return c.conn.Ping(ctx) }

func (c *ClickHouseSpeed) table(v *schemas.View) (string, error) {
	t, err := ident(v.Name + "_speed")
	if err != nil {
		return "", err
	}
	db, _ := ident(c.database)
	return db + "." + t, nil
}

// unabsorbed returns the condition selecting rows of chunks not absorbed:
// chunk >= K_p of the row's partition (0 for partitions not listed). The
// arrays start with a sentinel partition no stream has, since 18.16's
// transform() refuses empty arrays.
func unabsorbed(absorbed map[int32]int64) string {
	parts := make([]int32, 0, len(absorbed))
	for p := range absorbed {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	ps := []string{"toUInt32(4294967295)"}
	ks := []string{"toUInt64(0)"}
	for _, p := range parts {
		if p < 0 || absorbed[p] < 0 {
			continue // DecodeManifest refuses these; never build SQL from them
		}
		ps = append(ps, strconv.FormatInt(int64(p), 10))
		ks = append(ks, strconv.FormatInt(absorbed[p], 10))
	}
	return fmt.Sprintf("chunk >= transform(kafka_partition, [%s], [%s], toUInt64(0))", strings.Join(ps, ", "), strings.Join(ks, ", "))
}

// ceilSeconds converts a millisecond bound to whole seconds such that a
// whole-second window start w satisfies w*1000 >= ms exactly when
// w >= ceilSeconds(ms). Negative bounds clamp to 0 (DateTime starts at 1970).
func ceilSeconds(ms int64) int64 {
	if ms <= 0 {
		return 0
	}
	return (ms + 999) / 1000
}

// ScanSpeed implements SpeedSource. It reads the table FINAL (the newest
// version of each row) and lets ClickHouse apply the time range, the chunk
// seam and the filters.
func (c *ClickHouseSpeed) ScanSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Row) error) error {
	v := q.View
	table, err := c.table(v)
	if err != nil {
		return err
	}
	need := make([]bool, len(v.Measures))
	for _, mi := range q.Measures {
		need[mi] = true
	}
	cols := []string{"`window_start`"}
	for _, d := range v.Dimensions {
		id, err := ident(d)
		if err != nil {
			return err
		}
		cols = append(cols, id)
	}
	var measureCols []int // view measure index of each selected measure column
	for i, m := range v.Measures {
		if !need[i] {
			continue
		}
		id, err := ident(m.Name)
		if err != nil {
			return err
		}
		cols = append(cols, id)
		measureCols = append(measureCols, i)
	}
	var where []string
	var args []any
	where = append(where,
		fmt.Sprintf("window_start >= toDateTime(%d)", ceilSeconds(q.FromMs())),
		fmt.Sprintf("window_start < toDateTime(%d)", ceilSeconds(q.ToMs())),
		unabsorbed(absorbed))
	for di, accept := range q.Filters {
		if accept == nil {
			continue
		}
		id, err := ident(v.Dimensions[di])
		if err != nil {
			return err
		}
		vals := make([]string, 0, len(accept))
		for s := range accept {
			vals = append(vals, s)
		}
		sort.Strings(vals)
		marks := make([]string, len(vals))
		for k, s := range vals {
			marks[k] = "?"
			args = append(args, s)
		}
		where = append(where, fmt.Sprintf("%s IN (%s)", id, strings.Join(marks, ", ")))
	}
	sql := fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s", strings.Join(cols, ", "), table, strings.Join(where, " AND "))
	rows, err := c.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", table, err)
	}
	defer rows.Close()

	// Scan targets, one per column, typed as the table stores them.
	var ws time.Time
	dims := make([]string, len(v.Dimensions))
	dest := []any{&ws}
	for i := range dims {
		dest = append(dest, &dims[i])
	}
	vals := make([]any, len(measureCols))
	for k, mi := range measureCols {
		switch v.Measures[mi].Type {
		case schemas.MeasureCount:
			vals[k] = new(int64)
		case schemas.MeasureSum:
			vals[k] = new(float64)
		case schemas.MeasureMin, schemas.MeasureMax:
			vals[k] = new(*float64)
		default:
			vals[k] = new(string)
		}
		dest = append(dest, vals[k])
	}
	cells := make([]any, len(v.Measures))
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("reading %s: %w", table, err)
		}
		for k, mi := range measureCols {
			switch p := vals[k].(type) {
			case *int64:
				cells[mi] = *p
			case *float64:
				cells[mi] = *p
			case **float64:
				cells[mi] = *p
			case *string:
				cells[mi] = *p
			}
		}
		r, err := DecodeRow(v, ws.UnixMilli(), dims, cells, need)
		if err != nil {
			return fmt.Errorf("reading %s: %w", table, err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", table, err)
	}
	return nil
}

// MaxWindow implements SpeedSource. It needs no FINAL: every version of a
// row has the same window.
func (c *ClickHouseSpeed) MaxWindow(ctx context.Context, v *schemas.View, absorbed map[int32]int64) (time.Time, error) {
	table, err := c.table(v)
	if err != nil {
		return time.Time{}, err
	}
	sql := fmt.Sprintf("SELECT toUInt32(max(window_start)), count() FROM %s WHERE %s", table, unabsorbed(absorbed))
	rows, err := c.conn.Query(ctx, sql)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading %s: %w", table, err)
	}
	defer rows.Close()
	var maxSec uint32
	var n uint64
	if rows.Next() {
		if err := rows.Scan(&maxSec, &n); err != nil {
			return time.Time{}, fmt.Errorf("reading %s: %w", table, err)
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, fmt.Errorf("reading %s: %w", table, err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(int64(maxSec), 0).UTC(), nil
}
