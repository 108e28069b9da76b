package clickhouse

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

func TestAnalystCanReadButNotWrite(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, srv := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	evs := makeEvents(cfg.Stream("clicks"), 300, 2, 4)
	require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs, cfg.ChunkSize)))
	want := truth(v, evs)

	analyst := srv.AnalystConn(t)
	rows, err := analyst.Query(ctx, "SELECT window_start, country, device, n, revenue, lo, hi FROM tandem.clicks_by_country")
	require.NoError(t, err)
	got := map[schemas.RowKey]exact{}
	for rows.Next() {
		var w time.Time
		var c, d string
		var e exact
		require.NoError(t, rows.Scan(&w, &c, &d, &e.n, &e.sum, &e.lo, &e.hi))
		e.present = true
		got[schemas.RowKey{WindowMs: w.UnixMilli(), Dims: schemas.JoinDims([]string{c, d})}] = e
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.Equal(t, want, got)

	var n uint64
	require.NoError(t, analyst.QueryRow(ctx, "SELECT count() FROM tandem.clicks_by_country_speed FINAL").Scan(&n))
	require.Positive(t, n)

	for name, stmt := range map[string]string{
		"drop":   "DROP TABLE tandem.clicks_by_country_speed",
		"alter":  "ALTER TABLE tandem.clicks_by_country_speed DELETE WHERE 1",
		"create": "CREATE TABLE tandem.x (a UInt8) ENGINE = Memory",
		"set":    "SET max_threads = 1",
		"insert": "INSERT INTO tandem.runs (view, run_id, published_at, version) SELECT 'clicks_by_country', 'evil', now(), 999",
	} {
		t.Run(name, func(t *testing.T) {
			err := analyst.Exec(ctx, stmt)
			require.Error(t, err)
			require.Contains(t, err.Error(), "readonly")
		})
	}
	t.Run("batch insert", func(t *testing.T) {
		b, err := analyst.PrepareBatch(ctx, "INSERT INTO tandem.runs (view, run_id, published_at, version)")
		if err == nil {
			require.NoError(t, b.Append("clicks_by_country", "evil", time.Now(), uint64(999)))
			err = b.Send()
		}
		require.Error(t, err)
	})
	// Nothing the analyst tried changed anything.
	run, _, err := db.CurrentRun(ctx, v)
	require.NoError(t, err)
	require.Empty(t, run)
	require.Contains(t, queryStrings(t, db, "SELECT name FROM system.tables WHERE database = 'tandem'"), "clicks_by_country_speed")
}

func TestRawEventsDeduplicateReplaysAndExpire(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	s := cfg.Stream("clicks")
	evs := makeEvents(s, 200, 2, 5)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	raw := func(from, to int) []RawEvent {
		var out []RawEvent
		for i, e := range evs[from:to] {
			// Days: today, yesterday, 2 and 3 days ago (retention is 2d).
			kts := now.Add(-time.Duration((from+i)%4) * 24 * time.Hour)
			out = append(out, RawEvent{Event: &e.ev, Raw: []byte(`{"id":"` + e.ev.ID + `"}`), Partition: e.partition, Offset: e.offset, KafkaTime: kts})
		}
		return out
	}
	require.NoError(t, db.InsertRawEvents(ctx, s, raw(0, 150)))
	require.NoError(t, db.InsertRawEvents(ctx, s, raw(100, 200))) // 50 replayed
	var n uint64
	require.NoError(t, db.Conn().QueryRow(ctx, "SELECT count() FROM tandem.clicks_events FINAL").Scan(&n))
	require.EqualValues(t, 200, n)

	// Values round-trip, nulls included.
	var sumAmount float64
	var withAmount, okTrue uint64
	require.NoError(t, db.Conn().QueryRow(ctx, "SELECT sum(amount), count(amount), count(ok) FROM tandem.clicks_events FINAL").Scan(&sumAmount, &withAmount, &okTrue))
	var wantSum float64
	var wantWith uint64
	ai := s.FieldIndex("amount")
	for _, e := range evs {
		if e.ev.Values[ai].Set {
			wantSum += e.ev.Values[ai].Float
			wantWith++
		}
	}
	require.Equal(t, wantSum, sumAmount)
	require.Equal(t, wantWith, withAmount)
	require.Zero(t, okTrue) // makeEvents never sets ok

	days, err := db.DeleteExpiredRawEvents(ctx, s, now)
	require.NoError(t, err)
	// Cut-off is 2026-11-23 12:00: the 22nd ends before it, the 23rd does not.
	require.Equal(t, []int{20261122}, days)
	require.NoError(t, db.Conn().QueryRow(ctx, "SELECT count() FROM tandem.clicks_events FINAL").Scan(&n))
	require.EqualValues(t, 150, n)
	days, err = db.DeleteExpiredRawEvents(ctx, s, now)
	require.NoError(t, err)
	require.Empty(t, days)
}
