package batch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// retentionConfig is testConfig with streams[].retention 4d and both
// views' retention 2d (the most 4d allows with max_future_skew 1h).
func retentionConfig(t *testing.T, srv *testenv.S3Server, skew string) *schemas.Config {
	t.Helper()
	y := fmt.Sprintf(testYAML, 100, 2)
	y = strings.Replace(y, "max_future_skew: 1h", "max_future_skew: "+skew, 1)
	y = strings.Replace(y, "    id_field: event_id\n", "    id_field: event_id\n    retention: 4d\n", 1)
	y = strings.Replace(y, "    granularity: 1h\n", "    granularity: 1h\n    retention: 2d\n", 1)
	y = strings.Replace(y, "    granularity: 1d\n", "    granularity: 1d\n    retention: 2d\n", 1)
	cfg, err := schemas.Parse("test.yaml", []byte(y), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg.S3 = schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}
	return cfg
}

// expectedCut is the first raw offset retention keeps in one partition,
// worked out from the generated messages and the documented rule: objects
// (of per messages, the newest always kept) go, oldest first, while the
// highest Kafka time read so far is before now − retention.
func expectedCut(msgs []genMsg, per int, cutoff time.Time) int64 {
	var clock time.Time
	cut := int64(0)
	for i := 0; i+per < len(msgs); i += per { // the last object stays
		for _, m := range msgs[i : i+per] {
			if m.KafkaTS.After(clock) {
				clock = m.KafkaTS
			}
		}
		if !clock.Before(cutoff) {
			break
		}
		cut = msgs[i+per-1].Offset + 1
	}
	return cut
}

// retainedTruth is truth (over the whole history: a repeat of an id first
// seen in a deleted object is still a duplicate) restricted to the windows
// at or after from.
func retainedTruth(msgs map[int32][]genMsg, absorbed map[int32]int64, from time.Time) map[string]*truthRow {
	tr, _, _, _ := truth(msgs, absorbed, time.Hour, true)
	for k := range tr {
		var ms int64
		fmt.Sscanf(k, "%d|", &ms)
		if ms < from.UnixMilli() {
			delete(tr, k)
		}
	}
	return tr
}

func rawFirstOffsets(t *testing.T, ctx context.Context, st *s3.Store, s *schemas.Stream) map[int32]int64 {
	t.Helper()
	out := map[int32]int64{}
	for p := int32(0); p < int32(s.Partitions); p++ {
		objs, err := objstore.List(ctx, st, schemas.RawPrefix(s.Name, p))
		require.NoError(t, err)
		first := int64(-1)
		for _, o := range objs {
			if _, _, f, _, ok := schemas.ParseRawKey(o.Key); ok && (first < 0 || f < first) {
				first = f
			}
		}
		out[p] = first
	}
	return out
}

// checkRetainedCH checks the view's ClickHouse tables hold the current run
// only, with exactly the manifest's rows, none before its retained start.
func checkRetainedCH(t *testing.T, ctx context.Context, db *clickhouse.DB, v *schemas.View, m *schemas.Manifest) {
	t.Helper()
	var runs, rows uint64
	var minWindow time.Time
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT uniqExact(run_id), count(), min(window_start) FROM %s.%s",
		q(db.Database()), q(clickhouse.BatchTable(v.Name)))).Scan(&runs, &rows, &minWindow))
	require.EqualValues(t, 1, runs, "older runs' partitions dropped")
	require.EqualValues(t, m.Rows, rows)
	require.False(t, minWindow.Before(m.Retained()), "%s: no batch row before %s; got %s", v.Name, m.Retained(), minWindow)
	var retained time.Time
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT argMax(retained_from, version) FROM %s.%s WHERE view = ?",
		q(db.Database()), q(clickhouse.TableRuns)), v.Name).Scan(&retained))
	require.True(t, retained.Equal(m.Retained()), "%s: the runs row's retained_from %s, the manifest's %s", v.Name, retained, m.Retained())
	if len(v.Levels()) == 0 {
		return
	}
	var levelRows uint64
	require.NoError(t, db.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s WHERE window_start < toDateTime(?)",
		q(db.Database()), q(clickhouse.LevelsTable(v.Name))), m.Retained().Unix()).Scan(&levelRows))
	require.Zero(t, levelRows, "no level row before the retained start")
}

// TestRetention runs a deployment over a week of events with
// streams[].retention 4d and views[].retention 2d: the batch run drops the
// views' old days in S3 and ClickHouse and the oldest raw objects, answers
// inside the retained range equal the truth over the whole history, a day
// passing with nothing new publishes without the dropped day, and after
// the cut an incremental run, a --full run and the first run of a view
// added later agree with the truth (the last two take the stored duplicate
// decisions); a full recompute that cannot be exact is refused naming the
// setting.
func TestRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	cfg := retentionConfig(t, srv, "1h")
	st := testStore(t, cfg)
	db := openCH(t, ctx, cfg)
	s := cfg.Stream("pv")
	hourly, daily := cfg.View("pv_hourly"), cfg.View("pv_daily")

	const per = 50
	rng := rand.New(rand.NewPCG(7, 8))
	msgs := map[int32][]genMsg{}
	ids := map[int32]*[]string{0: {}, 1: {}}
	for p := int32(0); p < 2; p++ {
		msgs[p] = genPartition(rng, p, 0, 1000, ids[p]) // Kafka time: 10 min apart, about 7 days
		writeRaw(t, ctx, st, s, p, msgs[p], per)
	}
	now := genBase.Add(7*24*time.Hour + 2*time.Hour)
	run := func(c *schemas.Config, full bool) (*Result, error) {
		return Run(ctx, Options{Config: c, Store: st, ClickHouse: db, Full: full, Log: testLog(), TempDir: t.TempDir(),
			Now: func() time.Time { return now }})
	}

	// Run 1: the first run computes the retained days only, then cuts the
	// master dataset.
	res, err := run(cfg, false)
	require.NoError(t, err)
	require.False(t, res.UpToDate())
	m1, rows, _ := publishedRows(t, ctx, st, hourly)
	v1 := genBase.Add(5 * 24 * time.Hour) // the midnight at or before now − 2d
	require.Equal(t, v1, m1.Retained())
	abs1 := map[int32]int64{0: 1000, 1: 1000}
	require.Equal(t, abs1, m1.Absorbed)
	want := retainedTruth(msgs, abs1, v1)
	require.NotEmpty(t, want)
	checkAgainstTruth(t, hourly, rows, want)
	for _, f := range m1.Files {
		require.False(t, f.Day.Before(v1), f.Key)
	}
	checkRetainedCH(t, ctx, db, hourly, m1)
	checkRetainedCH(t, ctx, db, daily, m1dailyOf(t, ctx, st, daily))
	cut1 := map[int32]int64{}
	for p := int32(0); p < 2; p++ {
		cut1[p] = expectedCut(msgs[p], per, now.Add(-4*24*time.Hour))
		require.Positive(t, cut1[p])
	}
	require.Equal(t, cut1, rawFirstOffsets(t, ctx, st, s), "raw objects before the cutoff deleted, a prefix")

	// Nothing new and the same day: up to date.
	res, err = run(cfg, false)
	require.NoError(t, err)
	require.True(t, res.UpToDate())

	// A day later with nothing new: the retained start moved, so the run
	// publishes without the dropped day.
	now = now.Add(24 * time.Hour)
	res, err = run(cfg, false)
	require.NoError(t, err)
	require.False(t, res.UpToDate())
	mq, rowsq, _ := publishedRows(t, ctx, st, hourly)
	require.Equal(t, v1.Add(24*time.Hour), mq.Retained())
	require.Equal(t, abs1, mq.Absorbed)
	checkAgainstTruth(t, hourly, rowsq, retainedTruth(msgs, abs1, v1.Add(24*time.Hour)))
	checkRetainedCH(t, ctx, db, hourly, mq)

	// Another day later, with more events: incremental, the retained start
	// moves by a day, more raw objects go. Repeats of ids first seen in deleted
	// objects stay duplicates (the truth is over the whole history).
	now = now.Add(24 * time.Hour)
	for p := int32(0); p < 2; p++ {
		more := genPartition(rng, p, 1000, 150, ids[p])
		msgs[p] = append(msgs[p], more...)
		writeRaw(t, ctx, st, s, p, more, per)
	}
	res, err = run(cfg, false)
	require.NoError(t, err)
	require.True(t, res.Views[0].Incremental)
	m2, rows2, _ := publishedRows(t, ctx, st, hourly)
	v2 := v1.Add(2 * 24 * time.Hour)
	require.Equal(t, v2, m2.Retained())
	abs2 := map[int32]int64{0: 1100, 1: 1100}
	require.Equal(t, abs2, m2.Absorbed)
	checkAgainstTruth(t, hourly, rows2, retainedTruth(msgs, abs2, v2))
	checkRetainedCH(t, ctx, db, hourly, m2)
	for p := int32(0); p < 2; p++ {
		c := expectedCut(msgs[p][:1150], per, now.Add(-4*24*time.Hour))
		require.Greater(t, c, cut1[p])
		require.Equal(t, c, rawFirstOffsets(t, ctx, st, s)[p])
	}

	// --full over the cut master dataset: byte-identical to the
	// incremental run.
	res, err = run(cfg, true)
	require.NoError(t, err)
	require.False(t, res.Views[0].Incremental)
	m3, rows3, _ := publishedRows(t, ctx, st, hourly)
	require.NotEqual(t, m2.RunID, m3.RunID)
	require.Equal(t, v2, m3.Retained())
	require.Equal(t, fileBytes(t, ctx, st, m2), fileBytes(t, ctx, st, m3), "--full after the cut equals the incremental run")
	checkAgainstTruth(t, hourly, rows3, retainedTruth(msgs, abs2, v2))
	checkRetainedCH(t, ctx, db, hourly, m3)

	// A view added after the cut: its first run recomputes the retained
	// days with the stored duplicate decisions too.
	// pv_added is pv_hourly again under another name, with the retention.
	hourlyView := testYAML[strings.Index(testYAML, "  - name: pv_hourly\n"):strings.Index(testYAML, "  - name: pv_daily\n")]
	y := fmt.Sprintf(testYAML, 100, 2) + strings.NewReplacer("name: pv_hourly\n", "name: pv_added\n",
		"    granularity: 1h\n", "    granularity: 1h\n    retention: 2d\n").Replace(hourlyView)
	y = strings.Replace(y, "    id_field: event_id\n", "    id_field: event_id\n    retention: 4d\n", 1)
	y = strings.Replace(y, "    granularity: 1h\n", "    granularity: 1h\n    retention: 2d\n", 1)
	y = strings.Replace(y, "    granularity: 1d\n", "    granularity: 1d\n    retention: 2d\n", 1)
	added, err := schemas.Parse("test.yaml", []byte(y), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	added.S3, added.ClickHouse = cfg.S3, cfg.ClickHouse
	_, err = db.Migrate(ctx, added)
	require.NoError(t, err)
	_, err = Run(ctx, Options{Config: added, Store: st, ClickHouse: db, Log: testLog(), TempDir: t.TempDir(), Now: func() time.Time { return now }})
	require.NoError(t, err)
	ma, rowsa, _ := publishedRows(t, ctx, st, added.View("pv_added"))
	require.Equal(t, v2, ma.Retained())
	checkAgainstTruth(t, added.View("pv_added"), rowsa, retainedTruth(msgs, abs2, v2))
	checkRetainedCH(t, ctx, db, added.View("pv_added"), ma)

	// A setting that changes validation verdicts needs the first offset:
	// refused, naming the retention that deleted it.
	other := retentionConfig(t, srv, "2h")
	_, err = run(other, false)
	require.ErrorContains(t, err, "ingest.max_future_skew changed")
	require.ErrorContains(t, err, "streams[pv].retention deleted the master dataset below offset")
	m4, err := ReadManifest(ctx, st, hourly.Name)
	require.NoError(t, err)
	require.Equal(t, ma.RunID, m4.RunID, "nothing published")
}

func m1dailyOf(t *testing.T, ctx context.Context, st *s3.Store, v *schemas.View) *schemas.Manifest {
	t.Helper()
	m, err := ReadManifest(ctx, st, v.Name)
	require.NoError(t, err)
	return m
}
