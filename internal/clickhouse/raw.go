package clickhouse

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// RawEvent is one event for a stream's raw-events table.
type RawEvent struct {
	Event     *schemas.Event
	Raw       []byte // the original JSON
	Partition int32
	Offset    int64
	KafkaTime time.Time
}

// RawInsert returns the INSERT statement for a stream's raw-events table
// and its column names (the stream's RawColumns: the declared fields, _raw,
// _partition, _offset, _kafka_ts). InsertRawBlock and InsertRawEvents run
// it.
func (db *DB) RawInsert(s *schemas.Stream) (sql string, columns []string) {
	return rawInsertSQL(db.db, s)
}

// InsertRawEvents writes events to the stream's raw-events table in one
// batch, through a RawBlock. Writing an event again (same partition and
// offset) replaces it.
func (db *DB) InsertRawEvents(ctx context.Context, s *schemas.Stream, events []RawEvent) error {
	if len(events) == 0 {
		return nil
	}
	b := NewRawBlock(s, len(events))
	for i := range events {
		e := &events[i]
		if err := b.Append(e.Event, e.Raw, e.Partition, e.Offset, e.KafkaTime); err != nil {
			return err
		}
	}
	return db.InsertRawBlock(ctx, b)
}

// DeleteExpiredRawEvents drops the days of the stream's raw-events table
// that lie wholly before now - raw_retention (days are UTC days of the
// Kafka timestamp), and returns them as YYYYMMDD. On servers with TTL the
// table also expires rows by itself; calling this there is harmless. The
// speed layer calls it periodically (hourly is plenty).
func (db *DB) DeleteExpiredRawEvents(ctx context.Context, s *schemas.Stream, now time.Time) ([]int, error) {
	if !s.RawEvents || s.RawRetention <= 0 {
		return nil, nil
	}
	// On a cluster each server drops the days of its own shard.
	var all []int
	err := db.forEach(func(server *DB) error {
		days, err := server.deleteExpiredRawDays(ctx, s, now)
		for _, d := range days {
			if !slices.Contains(all, d) {
				all = append(all, d)
			}
		}
		return err
	})
	slices.Sort(all)
	return all, err
}

// deleteExpiredRawDays is DeleteExpiredRawEvents on the connected server.
func (db *DB) deleteExpiredRawDays(ctx context.Context, s *schemas.Stream, now time.Time) ([]int, error) {
	table := db.local(RawTable(s.Name))
	cutoff := now.UTC().Add(-s.RawRetention.D())
	rows, err := db.conn.Query(ctx, rawDaysSQL(), db.db, table)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: listing the days of %s: %w", table, err)
	}
	var days []int
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return nil, err
		}
		day, err := time.Parse("20060102", p)
		if err != nil {
			continue // not a day partition: not ours to drop
		}
		if !day.AddDate(0, 0, 1).After(cutoff) {
			n, _ := strconv.Atoi(p)
			days = append(days, n)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, d := range days {
		if err := db.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", qualified(db.db, table), dropDayClause(d))); err != nil {
			return days[:i], fmt.Errorf("clickhouse: dropping day %d of %s: %w", d, table, err)
		}
	}
	return days, nil
}
