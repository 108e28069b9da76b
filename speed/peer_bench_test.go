package speed_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/speed"
)

// The peer: ClickHouse's own Kafka engine feeding a materialized view
// into an AggregatingMergeTree, the way a ClickHouse user would build the
// example view without tandem.
//
// What it does differently (and less exactly) than the speed layer:
//   - no dedup: a resent event (same id) is counted again;
//   - at-least-once: offsets are committed after the block reaches the
//     view, so a crash between the two replays the block and counts it twice;
//   - no validation: a malformed message stops the table (18.16 has no
//     kafka_skip_broken_messages), so the peer's load has no invalid events;
//   - late events are fine (they merge into their window like any other).

// peerSettings tune the Kafka engine for throughput and freshness. The
// <kafka> section of config.xml is librdkafka's configuration (names with
// '_' for '.'); its defaults throttle the consumer. stream_flush_interval_ms
// (a profile setting, default 7.5 s) bounds how long the engine collects a
// block before writing it to the views.
const (
	peerKafkaConfig = `<kafka>
        <auto_offset_reset>smallest</auto_offset_reset>
        <queued_min_messages>1000000</queued_min_messages>
        <queued_max_messages_kbytes>1048576</queued_max_messages_kbytes>
        <fetch_wait_max_ms>100</fetch_wait_max_ms>
        <session_timeout_ms>6000</session_timeout_ms>
    </kafka>`
	peerFlushMillis = 500
	// The Kafka engine writes a block when it holds kafka_max_block_size
	// rows, when stream_flush_interval_ms has passed, or when a poll finds
	// nothing for 500 ms. Big blocks (the default is max_block_size,
	// 65,536) suit a backlog; small ones give freshness at the cost of an
	// insert, and new parts, per block. The benchmark runs both.
	peerBigBlock   = 65536
	peerSmallBlock = 1000
)

// peerEnv is newEnv with a ClickHouse server configured for the peer:
// started once, stopped, its rendered config patched, started again.
func peerEnv(b testing.TB, partitions int) *env {
	b.Helper()
	ch := testenv.ClickHouse(b)
	ch.Stop()
	patchFile(b, filepath.Join(ch.DataDir, "config.xml"), func(s string) string {
		i, j := strings.Index(s, "<kafka>"), strings.Index(s, "</kafka>")
		require.True(b, i >= 0 && j > i, "config.xml has no <kafka> section to tune")
		return s[:i] + peerKafkaConfig + s[j+len("</kafka>"):]
	})
	patchFile(b, filepath.Join(ch.DataDir, "users.xml"), func(s string) string {
		const anchor = "<default>\n"
		i := strings.Index(s, "<profiles>")
		j := strings.Index(s[i:], anchor)
		require.True(b, i >= 0 && j >= 0, "users.xml has no default profile")
		at := i + j + len(anchor)
		return s[:at] + fmt.Sprintf("            <stream_flush_interval_ms>%d</stream_flush_interval_ms>\n", peerFlushMillis) + s[at:]
	})
	ch.Start()
	var flush string
	require.NoError(b, ch.Conn(b).QueryRow(context.Background(), "SELECT value FROM system.settings WHERE name = 'stream_flush_interval_ms'").Scan(&flush))
	require.Equal(b, strconv.Itoa(peerFlushMillis), flush, "the default profile's stream_flush_interval_ms")

	k := testenv.Kafka(b)
	topic := testenv.UniqueName(b, "pv")
	group := testenv.UniqueName(b, "g")
	text := configText(b, k.Brokers, ch.Addr, ch.Database, topic, group, envOptions{partitions: partitions, chunkSize: 10000, flush: "1s"})
	text = strings.Replace(text, "flush_rows: 5000", "flush_rows: 50000", 1)
	cfg, err := schemas.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	require.NoError(b, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(b, kafka.EnsureTopics(ctx, k.Brokers, cfg))
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(b, err)
	return &env{ch: ch, kafka: k, cfg: cfg, cfgText: text, conn: ch.Conn(b), db: db}
}

func patchFile(b testing.TB, path string, edit func(string) string) {
	b.Helper()
	data, err := os.ReadFile(path)
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(path, []byte(edit(string(data))), 0o644))
}

// peerView is the example view built with the Kafka engine: a queue table
// reading the topic and a materialized view aggregating it. The names are
// unique per call so that a test can build it again on the same topic.
type peerView struct {
	db, queue, mv string
	conn          driver.Conn
}

func createPeer(b testing.TB, e *env, name, group string, blockSize int) *peerView {
	b.Helper()
	p := &peerView{db: "peer", queue: name + "_queue", mv: name, conn: e.conn}
	ctx := context.Background()
	require.NoError(b, e.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS peer"))
	// The event time arrives as RFC 3339 text or epoch milliseconds; the
	// load here sends text, which parseDateTimeBestEffort reads on 18.16.
	require.NoError(b, e.conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE peer.%s (
    event_id String, ts String, country String, device String, user_id String,
    amount Nullable(Float64), latency_ms Nullable(Float64)
) ENGINE = Kafka SETTINGS kafka_broker_list = '%s', kafka_topic_list = '%s',
    kafka_group_name = '%s', kafka_format = 'JSONEachRow', kafka_num_consumers = 1,
    kafka_max_block_size = %d`, p.queue, strings.Join(e.kafka.Brokers, ","), e.cfg.Streams[0].Topic, group, blockSize)))
	require.NoError(b, e.conn.Exec(ctx, fmt.Sprintf(`CREATE MATERIALIZED VIEW peer.%s
ENGINE = AggregatingMergeTree() PARTITION BY toYYYYMMDD(window_start) ORDER BY (window_start, country, device)
AS SELECT toStartOfMinute(parseDateTimeBestEffort(ts)) AS window_start, country, device,
    countState() AS views, sumState(amount) AS revenue, minState(latency_ms) AS min_latency,
    maxState(latency_ms) AS max_latency, uniqState(user_id) AS users,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency
FROM peer.%s GROUP BY window_start, country, device`, p.mv, p.queue)))
	return p
}

// stop detaches the queue table, so the engine stops consuming.
func (p *peerView) stop(b testing.TB) {
	b.Helper()
	require.NoError(b, p.conn.Exec(context.Background(), fmt.Sprintf("DROP TABLE IF EXISTS peer.%s", p.queue)))
}

// count is the peer's total of the count measure (every event it folded).
func (p *peerView) count(b testing.TB) int64 {
	b.Helper()
	n, err := p.tryCount()
	require.NoError(b, err)
	return n
}

func (p *peerView) tryCount() (int64, error) {
	var n uint64
	err := p.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT countMerge(views) FROM peer.%s", p.mv)).Scan(&n)
	return int64(n), err
}

// BenchmarkClickHouseKafkaEnginePeer measures, in one run on the same
// broker, ClickHouse and backlog (the speed benchmark's load: 1 %
// duplicates, 5 % late events; no invalid events, which would stop the
// peer): tandem's speed layer and ClickHouse's Kafka engine + materialized
// view computing the same view (count, sum, min, max by minute, country and
// device; uniqState and quantilesState for the sketches). The peer runs
// twice, with big blocks (65,536 rows, its default) and small ones (1,000
// rows), each a new consumer group reading the whole topic. Reported per
// side: events/s from the first row visible to the last (the consumer
// group join excluded, as for the speed layer), freshness p50/p99 at 2,000
// events/s, the peer's peak RSS (clickhouse-server) and how far the peer's
// count is above the truth (it counts every duplicate).
//
// Run: go test ./speed -run '^$' -bench ClickHouseKafkaEnginePeer -benchtime 1x
// TANDEM_BENCH_PEER_EVENTS sets the backlog (default 600,000).
func BenchmarkClickHouseKafkaEnginePeer(b *testing.B) {
	n := 600_000
	if v := os.Getenv("TANDEM_BENCH_PEER_EVENTS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	e := peerEnv(b, 6)
	topic := e.cfg.Streams[0].Topic
	base := time.Now().UTC()
	var evs []event
	for seed := uint64(0); len(evs) < n; seed++ {
		evs = append(evs, generate(genOptions{n: min(50_000, n-len(evs)), seed: 200 + seed, base: base, dupRate: 0.01, lateRate: 0.05})...)
	}
	// Ids are unique across the batches: the seed is part of each id.
	unique, _, dups := countValid(evs)
	msgs := int64(len(evs)) // messages in the topic
	produce(b, e.kafka.Brokers, topic, evs)
	chPid := clickHousePid(b, e.ch)

	// One pass of each side: an iteration takes a minute or more, so b.N
	// is 1 (run with -benchtime 1x).
	b.ResetTimer()

	// tandem speed on the backlog, then freshness.
	_, reg, stop := startService(b, e)
	start := time.Now()
	joined := watchGroup(b, e.kafka.Brokers, speed.GroupID(e.cfg))
	for visibleViews(b, e, 0) < int64(unique) {
		require.Less(b, time.Since(start), 5*time.Minute, "the speed layer did not finish the backlog")
		time.Sleep(20 * time.Millisecond)
	}
	speedRate := float64(len(evs)) / time.Since(joined()).Seconds()
	speedJoin := float64(len(evs)) / time.Since(start).Seconds()
	consumedRate := sumMetric(b, reg, "tandem_speed_events_consumed_total") / time.Since(start).Seconds()
	speedP50, speedP99 := freshnessOf(b, e, func() int64 { return visibleViews(b, e, 0) })
	stop()
	msgs += peerFreshEvents
	unique += peerFreshEvents
	require.Equal(b, int64(unique), visibleViews(b, e, 0), "the speed layer's count is the truth")

	type peerResult struct {
		rate, withJoin float64
		p50, p99       time.Duration
		rss            int64
		over           int64
	}
	runPeer := func(name string, block int) peerResult {
		clearRefs(chPid)
		group := testenv.UniqueName(b, name)
		start := time.Now()
		peer := createPeer(b, e, name, group, block)
		defer peer.stop(b)
		joined := watchGroup(b, e.kafka.Brokers, group)
		for got := int64(0); got < msgs; got = peer.count(b) {
			require.Less(b, time.Since(start), 5*time.Minute, "the Kafka engine did not finish the backlog (count %d of %d)", got, msgs)
			time.Sleep(20 * time.Millisecond)
		}
		r := peerResult{rate: float64(msgs) / time.Since(joined()).Seconds(), withJoin: float64(msgs) / time.Since(start).Seconds()}
		r.p50, r.p99 = freshnessOf(b, e, func() int64 { return peer.count(b) })
		msgs += peerFreshEvents
		unique += peerFreshEvents
		r.rss = procStatusOf(chPid, "VmHWM")
		r.over = peer.count(b) - int64(unique)
		b.Logf("Kafka engine, blocks of %d rows: %.0f ev/s (%.0f with group join), fresh p50 %s p99 %s, count %d = truth %+d, clickhouse-server VmHWM %d MiB",
			block, r.rate, r.withJoin, r.p50, r.p99, peer.count(b), r.over, r.rss/1024)
		return r
	}
	big := runPeer("pv_agg_big", peerBigBlock)
	small := runPeer("pv_agg_small", peerSmallBlock)

	b.ReportMetric(speedRate, "speed_events/s")
	b.ReportMetric(speedJoin, "speed_with_join_events/s")
	b.ReportMetric(big.rate, "peer_events/s")
	b.ReportMetric(big.withJoin, "peer_with_join_events/s")
	b.ReportMetric(big.rate/speedRate, "peer/speed")
	b.ReportMetric(speedP50.Seconds(), "speed_fresh_p50_s")
	b.ReportMetric(speedP99.Seconds(), "speed_fresh_p99_s")
	b.ReportMetric(big.p50.Seconds(), "peer_fresh_p50_s")
	b.ReportMetric(big.p99.Seconds(), "peer_fresh_p99_s")
	b.ReportMetric(small.rate, "peer_small_events/s")
	b.ReportMetric(small.p50.Seconds(), "peer_small_fresh_p50_s")
	b.ReportMetric(small.p99.Seconds(), "peer_small_fresh_p99_s")
	b.ReportMetric(float64(max(big.rss, small.rss))/1024, "peer_peak_rss_MiB")
	b.ReportMetric(float64(big.over), "peer_overcount")
	b.ReportMetric(float64(small.over), "peer_small_overcount")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d messages (%d duplicates); speed layer: %.0f ev/s visible (%.0f with group join, %.0f consumed/s), fresh p50 %s p99 %s, count exact",
		len(evs), dups, speedRate, speedJoin, consumedRate, speedP50, speedP99)
}

// watchGroup polls the consumer group's state in the background and
// returns a function giving the time it was first Stable with members (the
// join done, partitions assigned); time.Now() if that was never seen.
// Rates measured from then leave out the group join, which the two sides'
// clients do differently (kafka-go, librdkafka).
func watchGroup(b testing.TB, brokers []string, group string) func() time.Time {
	return watchGroupN(b, brokers, group, 1)
}

// watchGroupN is watchGroup waiting for at least members members.
func watchGroupN(b testing.TB, brokers []string, group string, members int) func() time.Time {
	b.Helper()
	c := &kgo.Client{Addr: kgo.TCP(brokers...), Timeout: 5 * time.Second, Transport: &kgo.Transport{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan time.Time, 1)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			res, err := c.DescribeGroups(ctx, &kgo.DescribeGroupsRequest{GroupIDs: []string{group}})
			if err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "Stable" && len(res.Groups[0].Members) >= members {
				done <- time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	b.Cleanup(cancel)
	return func() time.Time {
		cancel()
		if t, ok := <-done; ok {
			return t
		}
		return time.Now()
	}
}

// freshCalls numbers the calls of freshnessOf.
var freshCalls atomic.Uint64

// peerFreshEvents is what freshnessOf produces.
const peerFreshEvents = 200 * 100

// freshnessOf produces 100 events every 50 ms for 10 s (2,000/s) and
// polls count (the events visible in a view) every 25 ms; each batch's
// freshness is the time from its acknowledged produce to the first poll
// that shows it. It is bench_test.go's freshness for either side, counting
// the whole view: that one counts from the highest chunk of any partition
// on, which misses the events of partitions still in a lower chunk (and
// then never ends) when partitions are uneven.
func freshnessOf(b *testing.B, e *env, count func() int64) (p50, p99 time.Duration) {
	// Each call its own seeds, so that no event id repeats across calls.
	seed := 2_000_000 + 1000*freshCalls.Add(1)
	before := count()
	type batch struct {
		acked time.Time
		total int64
	}
	var (
		mu      sync.Mutex
		batches []batch
		lat     []time.Duration
		wg      sync.WaitGroup
	)
	stopPoll := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		next := 0
		deadline := time.Time{}
		for {
			seen := count() - before
			now := time.Now()
			mu.Lock()
			for next < len(batches) && batches[next].total <= seen {
				lat = append(lat, now.Sub(batches[next].acked))
				next++
			}
			done := next == len(batches)
			mu.Unlock()
			select {
			case <-stopPoll:
				if deadline.IsZero() {
					deadline = now.Add(time.Minute)
				}
				if done || now.After(deadline) {
					return
				}
			default:
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
	w := &kgo.Writer{Addr: kgo.TCP(e.kafka.Brokers...), Topic: e.cfg.Streams[0].Topic, Balancer: kgo.Murmur2Balancer{},
		RequiredAcks: kgo.RequireAll, BatchTimeout: time.Millisecond, Transport: &kgo.Transport{}}
	defer w.Close()
	var total int64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < peerFreshEvents/100; i++ {
		<-tick.C
		evs := generate(genOptions{n: 100, seed: seed + uint64(i), base: time.Now().UTC()})
		msgs := make([]kgo.Message, len(evs))
		for j, ev := range evs {
			msgs[j] = kgo.Message{Key: []byte(ev.id), Value: ev.raw}
		}
		require.NoError(b, w.WriteMessages(context.Background(), msgs...))
		total += int64(len(evs))
		mu.Lock()
		batches = append(batches, batch{acked: time.Now(), total: total})
		mu.Unlock()
	}
	close(stopPoll)
	wg.Wait()
	require.Len(b, lat, peerFreshEvents/100, "not every freshness batch was visible within a minute")
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// clickHousePid finds the test's clickhouse-server process by its config
// path (testenv does not export the pid).
func clickHousePid(b testing.TB, ch *testenv.ClickHouseServer) int {
	b.Helper()
	want := "--config-file=" + filepath.Join(ch.DataDir, "config.xml")
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmd), want) {
			return pid
		}
	}
	b.Fatalf("no clickhouse-server process with %s", want)
	return 0
}

// procStatusOf reads a "VmXxx: N kB" line of /proc/<pid>/status, in KiB.
func procStatusOf(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// clearRefs resets a process's VmHWM to its current RSS.
func clearRefs(pid int) { _ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) }

// TestClickHouseKafkaEngineDoubleCountsAfterCrash shows the peer's
// at-least-once delivery next to the speed layer's exactly-once, on the
// same events and the same ClickHouse crash. The Kafka engine commits a
// block's offsets after the block reached its views; the test makes the
// broker acknowledge the peer's commits without storing them (the crash
// window between write and commit, held open), then kills ClickHouse
// with SIGKILL and starts it again. The peer resumes from the last stored
// commit and counts the replayed events twice; the speed layer, which
// reads its progress back from ClickHouse, ends exactly at the truth.
// It needs the in-process broker to intercept commits.
func TestClickHouseKafkaEngineDoubleCountsAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ClickHouse twice and replays a topic (-short)")
	}
	if os.Getenv(testenv.EnvKafka) == "apache" {
		t.Skip("needs the in-process broker to hold offset commits back; TANDEM_TEST_KAFKA=apache points at a real one")
	}
	e := peerEnv(t, 3)
	topic := e.cfg.Streams[0].Topic
	base := time.Now().UTC()
	first := generate(genOptions{n: 20_000, seed: 31, base: base, lateRate: 0.05})
	second := generate(genOptions{n: 20_000, seed: 32, base: base, lateRate: 0.05})
	truthCount := int64(len(first) + len(second)) // unique and valid: no duplicates, no invalid events

	_, _, stop := startService(t, e)
	peer := createPeer(t, e, "pv_crash", testenv.UniqueName(t, "peer"), peerSmallBlock)
	waitCount := func(what string, get func() (int64, error), want int64) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			n, err := get()
			if err == nil && n == want {
				return
			}
			require.True(t, time.Now().Before(deadline), "%s: count %d (err %v), want %d", what, n, err, want)
			time.Sleep(100 * time.Millisecond)
		}
	}
	speedCount := func() (int64, error) {
		var n int64
		err := e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT toInt64(sum(views)) FROM %s.%s_speed FINAL",
			e.cfg.ClickHouse.Database, e.cfg.Views[0].Name)).Scan(&n)
		return n, err
	}

	// Phase 1: both sides read the first events and commit normally.
	produce(t, e.kafka.Brokers, topic, first)
	waitCount("speed layer, first events", speedCount, int64(len(first)))
	waitCount("peer, first events", peer.tryCount, int64(len(first)))
	// Let the peer's last asynchronous commit land.
	time.Sleep(2 * time.Second)

	// Phase 2: commits are acknowledged but not stored, as if every one
	// were lost in a crash right after its block was written.
	var holdCommits atomic.Bool
	holdCommits.Store(true)
	cluster := e.kafka.Cluster()
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if !holdCommits.Load() {
			return nil, nil, false
		}
		oc := req.(*kmsg.OffsetCommitRequest)
		res := oc.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range oc.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				st.Partitions = append(st.Partitions, sp)
			}
			res.Topics = append(res.Topics, st)
		}
		return res, nil, true
	})
	produce(t, e.kafka.Brokers, topic, second)
	waitCount("speed layer, all events", speedCount, truthCount)
	waitCount("peer, all events", peer.tryCount, truthCount)
	t.Logf("before the crash both count %d", truthCount)

	// The crash.
	e.ch.Kill()
	holdCommits.Store(false)
	e.ch.Start()

	// The peer rejoins (after the dead member's 6 s session) and replays
	// everything after its last stored commit: the second events again.
	waitCount("peer after the crash", peer.tryCount, truthCount+int64(len(second)))
	waitCount("speed layer after the crash", speedCount, truthCount)
	// Nothing moves any more: give both a few seconds to show otherwise.
	time.Sleep(5 * time.Second)
	waitCount("peer, settled", peer.tryCount, truthCount+int64(len(second)))
	waitCount("speed layer, settled", speedCount, truthCount)
	stop()
	t.Logf("after the crash: speed layer %d (the truth), Kafka engine %d (+%d counted twice)", truthCount, truthCount+int64(len(second)), len(second))
}
