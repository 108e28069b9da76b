package batch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// testConfigWindow is testConfig with the stream's dedup_window set.
func testConfigWindow(t testing.TB, chunkSize int64, partitions int, s3srv *testenv.S3Server, window string) *schemas.Config {
	t.Helper()
	yml := strings.Replace(fmt.Sprintf(testYAML, chunkSize, partitions), "    id_field: event_id\n", "    id_field: event_id\n    dedup_window: "+window+"\n", 1)
	cfg, err := schemas.Parse("test.yaml", []byte(yml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	cfg.S3 = schemas.S3Config{Endpoint: s3srv.Endpoint, Bucket: s3srv.Bucket, AccessKey: s3srv.AccessKey, SecretKey: s3srv.SecretKey, Region: s3srv.Region}
	return cfg
}

// genWindowed is genPartition (a message every 10 minutes, 5% repeats of
// any earlier id) plus repeats of an id of the last few hours, so
// duplicates fall on both sides of a window of hours, and Kafka timestamps
// that jump ahead by two hours now and then, so the messages after them
// have timestamps below the partition's clock.
// windowedRaw is a master dataset of two partitions of genWindowed
// messages, written to the store as it grows; msgs holds every message
// written, for the truth.
type windowedRaw struct {
	t      testing.TB
	ctx    context.Context
	st     objstore.Bucket
	s      *schemas.Stream
	rng    *rand.Rand
	msgs   map[int32][]genMsg
	ids    map[int32]*[]string
	recent map[int32]*[]genMsg
}

func newWindowedRaw(t testing.TB, ctx context.Context, st objstore.Bucket, s *schemas.Stream, rng *rand.Rand) *windowedRaw {
	return &windowedRaw{t: t, ctx: ctx, st: st, s: s, rng: rng, msgs: map[int32][]genMsg{},
		ids: map[int32]*[]string{0: {}, 1: {}}, recent: map[int32]*[]genMsg{0: {}, 1: {}}}
}

// add generates the messages at offsets [first, first+n) of each
// partition and writes them as raw objects of 160 messages.
func (w *windowedRaw) add(first, n int64) {
	w.t.Helper()
	for p := int32(0); p < 2; p++ {
		more := genWindowed(w.rng, w.s, p, first, n, w.ids[p], w.recent[p])
		w.msgs[p] = append(w.msgs[p], more...)
		writeRaw(w.t, w.ctx, w.st, w.s, p, more, 160)
	}
}

func genWindowed(rng *rand.Rand, s *schemas.Stream, p int32, first, n int64, ids *[]string, recent *[]genMsg) []genMsg {
	ms := genPartition(rng, p, first, n, ids)
	dec := schemas.NewDecoder(s, time.Hour)
	for i := range ms {
		m := &ms[i]
		if !m.Valid {
			*recent = append(*recent, *m)
			continue
		}
		if len(*recent) > 0 && rng.IntN(100) < 8 {
			back := (*recent)[max(0, len(*recent)-30):] // up to 5 hours back
			if o := back[rng.IntN(len(back))]; o.Valid && o.ID != m.ID {
				m.Raw = bytes.Replace(m.Raw, []byte(fmt.Sprintf(`"event_id":%q`, m.ID)), []byte(fmt.Sprintf(`"event_id":%q`, o.ID)), 1)
				m.ID = o.ID
			}
		}
		if rng.IntN(100) < 5 {
			m.KafkaTS = m.KafkaTS.Add(2 * time.Hour) // event time stays behind: still valid
		}
		_, err := dec.Decode(m.Raw, m.KafkaTS)
		require.NoError(nil, err)
		*recent = append(*recent, *m)
	}
	return ms
}

// windowIDs counts, per partition, the ids a message after the absorbed
// offsets can still be a duplicate of: counted within the window before
// the partition's clock. It follows the rule as truthWindow does.
func windowIDs(msgs map[int32][]genMsg, absorbed map[int32]int64, window time.Duration) int64 {
	var n int64
	for p, ms := range msgs {
		counted := map[string]time.Time{}
		var clock time.Time
		for _, m := range ms {
			if m.Offset >= absorbed[p] {
				continue
			}
			if m.KafkaTS.After(clock) {
				clock = m.KafkaTS
			}
			if !m.Valid {
				continue
			}
			if at, ok := counted[m.ID]; !ok || clock.Sub(at) >= window {
				counted[m.ID] = clock
			}
		}
		for _, at := range counted {
			if clock.Sub(at) < window {
				n++
			}
		}
	}
	return n
}

// TestDedupWindow runs a stream with dedup_window: 6h over ten days of
// messages: repeats inside the window are dropped, repeats after it count;
// an incremental run reads only the window's ids from the previous run and
// publishes the same bytes as a --full run.
func TestDedupWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const window = 6 * time.Hour
	srv := testenv.MinIO(t)
	cfg := testConfigWindow(t, 100, 2, srv, "6h")
	st := testStore(t, cfg)
	s := cfg.Stream("pv")
	hourly, daily := cfg.View("pv_hourly"), cfg.View("pv_daily")
	require.Equal(t, window.Milliseconds(), s.DedupWindowMs())

	// Tables start small, so a full run over ten days must drop expired
	// ids to stay at the smallest table (1,024 slots) instead of growing
	// to hold every id of the history (4,096 slots).
	hint := windowTableHint
	windowTableHint = 64
	t.Cleanup(func() { windowTableHint = hint })

	raw := newWindowedRaw(t, ctx, st, s, rand.New(rand.NewPCG(7, 8)))
	raw.add(0, 1440) // 10 days
	msgs := raw.msgs
	run := func(full bool) *Result {
		t.Helper()
		res, err := Run(ctx, Options{Config: cfg, Store: st, Full: full, Log: testLog(), TempDir: t.TempDir()})
		require.NoError(t, err)
		return res
	}

	res1 := run(false)
	require.False(t, res1.Views[0].Incremental)
	require.Zero(t, res1.Views[0].IDsLoaded)
	require.Equal(t, int64(2*1024), res1.Views[0].IDTableSlots, "the full run's tables hold the window, not the history")
	abs1 := map[int32]int64{0: 1400, 1: 1400}
	m1, rows1, _ := publishedRows(t, ctx, st, hourly)
	require.Equal(t, abs1, m1.Absorbed)
	tr1, events1, dups1, invalid1 := truthWindow(msgs, abs1, time.Hour, true, window)
	checkAgainstTruth(t, hourly, rows1, tr1)
	require.Equal(t, []int64{events1, dups1, invalid1}, []int64{m1.Events, m1.Duplicates, m1.Invalid})
	// Repeats fall on both sides of the window: some are dropped, and some
	// that a forever horizon would drop count again.
	_, eventsForever, dupsForever, _ := truth(msgs, abs1, time.Hour, true)
	require.Positive(t, dups1, "repeats inside the window")
	require.Greater(t, events1, eventsForever, "repeats after the window count")
	require.Equal(t, eventsForever+dupsForever, events1+dups1)

	// Two more days; the incremental run reads the previous run's index of
	// the window only.
	raw.add(1440, 300)
	res2 := run(false)
	require.True(t, res2.Views[0].Incremental)
	wantLoaded := windowIDs(msgs, abs1, window)
	require.Equal(t, wantLoaded, res2.Views[0].IDsLoaded, "the ids of the window's last six hours, no more")
	require.Less(t, wantLoaded*20, events1, "a small part of the history")
	require.Equal(t, int64(2*1024), res2.Views[0].IDTableSlots)
	abs2 := map[int32]int64{0: 1700, 1: 1700}
	m2, rows2, order2 := publishedRows(t, ctx, st, hourly)
	require.Equal(t, abs2, m2.Absorbed)
	tr2, events2, dups2, invalid2 := truthWindow(msgs, abs2, time.Hour, true, window)
	checkAgainstTruth(t, hourly, rows2, tr2)
	require.Equal(t, []int64{events2, dups2, invalid2}, []int64{m2.Events, m2.Duplicates, m2.Invalid})
	_, _, dorder2 := publishedRows(t, ctx, st, daily)

	// --full equals the incremental run byte for byte.
	res3 := run(true)
	require.False(t, res3.Views[0].Incremental)
	m3, _, order3 := publishedRows(t, ctx, st, hourly)
	require.NotEqual(t, m2.RunID, m3.RunID)
	require.Equal(t, order2, order3)
	_, _, dorder3 := publishedRows(t, ctx, st, daily)
	require.Equal(t, dorder2, dorder3)
	require.Equal(t, m2.Rows, m3.Rows)
	require.Equal(t, []int64{m2.Events, m2.Duplicates, m2.Invalid}, []int64{m3.Events, m3.Duplicates, m3.Invalid})

	// Changing the window recomputes in full, under the new rule.
	cfg.Stream("pv").DedupWindow = schemas.Duration(time.Hour)
	res4 := run(false)
	require.False(t, res4.Views[0].Incremental, "a changed dedup_window cannot reuse the index")
	m4, rows4, _ := publishedRows(t, ctx, st, hourly)
	tr4, events4, dups4, _ := truthWindow(msgs, abs2, time.Hour, true, time.Hour)
	checkAgainstTruth(t, hourly, rows4, tr4)
	require.Equal(t, []int64{events4, dups4}, []int64{m4.Events, m4.Duplicates})
}
