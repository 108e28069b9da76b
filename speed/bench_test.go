package speed_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/kafka"
)

// benchEvents is the backlog each side reads; large enough that joining
// the group and the last flush are small beside it. TANDEM_BENCH_EVENTS
// overrides it (a multiple of 50,000).
var benchEvents = func() int {
	if n, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_EVENTS")); err == nil && n >= 50_000 {
		return n / 50_000 * 50_000
	}
	return 200_000
}()

// BenchmarkSpeedVsBareConsumer measures, in one run against the same
// topic: a bare kafka-go consumer (one Reader per partition, counting
// messages) and the speed layer end to end (Kafka → decode, dedup, fold
// into tandem.example.yaml's view → rows visible in ClickHouse). It
// reports both rates and their ratio (pct_of_bare: the target of issue 4
// is against this kafka-go Reader baseline), then the ingest-to-visible
// freshness at moderate load (p50, p99) and peak RSS. For transparency it
// also reads the topic with a second bare consumer that uses
// kafka.BatchFetcher, the speed layer's own fetch path, and reports the
// ratio against it (pct_of_bare_batchfetch).
//
// Run: go test ./speed -run '^$' -bench SpeedVsBareConsumer -benchtime 1x
func BenchmarkSpeedVsBareConsumer(b *testing.B) {
	e := newEnv(b, envOptions{partitions: 6, chunkSize: 10000, flush: "1s"})
	e.cfgText = strings.Replace(e.cfgText, "flush_rows: 5000", "flush_rows: 50000", 1)
	e.conf.FlushRows = 50000
	topic := e.cfg.Streams[0].Topic

	// The backlog: like ingest/gen's load, in batches so the test holds
	// little of it.
	base := time.Now().UTC()
	var want int
	for seed := uint64(0); int(seed)*50_000 < benchEvents; seed++ {
		evs := generate(genOptions{n: 50_000, seed: 100 + seed, base: base, dupRate: 0.01, lateRate: 0.05, invalidRate: 0.005})
		valid, _, _ := countValid(evs)
		want += valid
		produce(b, e.kafka.Brokers, topic, evs)
	}
	b.Logf("produced %d events (%d valid and unique)", benchEvents, want)
	chPID := findPID(b, e.ch.DataDir)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu0 := selfCPU()
		bare := bareConsume(b, e.kafka.Brokers, topic, e.cfg.Streams[0].Partitions, benchEvents)
		bareCPU := selfCPU() - cpu0
		b.Logf("bare consumer: %.0f events/s", bare)

		clearPeakRSS()
		rssBefore := procStatus("VmRSS")
		consumed := &consumedCounter{Registry: prometheus.NewRegistry()}
		cpu0, chCPU0 := selfCPU(), procCPU(chPID)
		stopProfile := profileSpeedPhase(b)
		_, stop := startServiceWith(b, e, consumed)
		start := time.Now()
		// Until every message is consumed the test watches the layer's
		// own counter (cheap, in-process), so its polling does not load
		// ClickHouse while the layer writes; then it polls ClickHouse.
		var firstMsg, allConsumed time.Time
		for allConsumed.IsZero() {
			n := consumed.value()
			if firstMsg.IsZero() && n > 0 {
				firstMsg = time.Now()
			}
			if n >= float64(benchEvents) {
				allConsumed = time.Now()
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("the speed layer did not consume the backlog: %.0f of %d", n, benchEvents)
			}
			time.Sleep(5 * time.Millisecond)
		}
		for visibleViews(b, e, 0) < int64(want) {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("the speed layer did not finish the backlog: %d of %d visible, %.0f consumed", visibleViews(b, e, 0), want, consumed.value())
			}
			time.Sleep(20 * time.Millisecond)
		}
		done := time.Since(start)
		steady := time.Since(firstMsg)
		speedRate := float64(benchEvents) / steady.Seconds()
		consumeRate := float64(benchEvents) / allConsumed.Sub(firstMsg).Seconds()
		tail := time.Since(allConsumed)
		speedCPU, chCPU := selfCPU()-cpu0, procCPU(chPID)-chCPU0
		stopProfile()
		peak := procStatus("VmHWM")

		p50, p99 := freshness(b, e)
		stop()

		// The second baseline runs last, so that the speed phase starts
		// (and its peak RSS is measured) as it did before there was one.
		cpu0 = selfCPU()
		bareBF := bareBatchConsume(b, e.kafka.Brokers, topic, e.cfg.Streams[0].Partitions, benchEvents)
		bareBFCPU := selfCPU() - cpu0
		b.Logf("bare BatchFetcher consumer: %.0f events/s", bareBF)

		b.ReportMetric(bare, "bare_events/s")
		b.ReportMetric(speedRate, "speed_events/s")
		b.ReportMetric(float64(benchEvents)/done.Seconds(), "speed_with_join_events/s")
		b.ReportMetric(consumeRate, "speed_consume_events/s")
		b.ReportMetric(bareCPU.Seconds()*1e6/float64(benchEvents), "bare_cpu_us/event")
		b.ReportMetric(speedCPU.Seconds()*1e6/float64(benchEvents), "speed_cpu_us/event")
		b.ReportMetric(chCPU.Seconds()*1e6/float64(benchEvents), "clickhouse_cpu_us/event")
		b.ReportMetric(tail.Seconds(), "last_visible_after_consumed_s")
		b.ReportMetric(100*speedRate/bare, "pct_of_bare")
		b.ReportMetric(bareBF, "bare_batchfetch_events/s")
		b.ReportMetric(bareBFCPU.Seconds()*1e6/float64(benchEvents), "bare_batchfetch_cpu_us/event")
		b.ReportMetric(100*speedRate/bareBF, "pct_of_bare_batchfetch")
		b.ReportMetric(p50.Seconds(), "fresh_p50_s")
		b.ReportMetric(p99.Seconds(), "fresh_p99_s")
		b.ReportMetric(float64(peak)/1024, "peak_rss_MiB")
		b.ReportMetric(float64(peak-rssBefore)/1024, "peak_rss_over_baseline_MiB")
		b.Logf("CPU per event: bare %.1f µs (BatchFetcher bare %.1f µs), speed %.1f µs in this process (the in-process broker's share included in all) + %.1f µs in ClickHouse",
			bareCPU.Seconds()*1e6/float64(benchEvents), bareBFCPU.Seconds()*1e6/float64(benchEvents), speedCPU.Seconds()*1e6/float64(benchEvents), chCPU.Seconds()*1e6/float64(benchEvents))
		b.Logf("second baseline: bare BatchFetcher consumer %.0f ev/s; speed is %.0f%% of it", bareBF, 100*speedRate/bareBF)
		b.Logf("bare %.0f ev/s; speed %.0f ev/s steady (%.0f%% of bare), %.0f ev/s with group join, %.0f ev/s consumed (last rows visible %s after the last message was consumed); freshness p50 %s p99 %s; VmHWM %d MiB (baseline before the speed layer %d MiB, broker in-process)",
			bare, speedRate, 100*speedRate/bare, float64(benchEvents)/done.Seconds(), consumeRate, tail.Round(time.Millisecond), p50, p99, peak/1024, rssBefore/1024)
		// Later iterations start over on empty tables and a new group.
		require.NoError(b, e.conn.Exec(context.Background(), fmt.Sprintf("TRUNCATE TABLE %s.%s_speed", e.cfg.ClickHouse.Database, e.cfg.Views[0].Name)))
		e.cfg.Kafka.GroupPrefix += "x"
	}
}

// bareConsume reads n messages from every partition with plain kafka-go
// Readers, as fast as they go, and returns messages per second. It touches
// every message (sums key and value lengths and checks them), so nothing
// is read for nothing.
func bareConsume(b *testing.B, brokers []string, topic string, partitions, n int) float64 {
	var total, bytes atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < partitions; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kgo.NewReader(kgo.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 4 << 20,
				MaxWait: 200 * time.Millisecond, QueueCapacity: 1000})
			defer r.Close()
			var sum int64
			defer func() { bytes.Add(sum) }()
			for total.Load() < int64(n) {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					return
				}
				sum += int64(len(m.Key) + len(m.Value))
				if total.Add(1) >= int64(n) {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	require.Equal(b, int64(n), total.Load())
	require.Greater(b, bytes.Load(), int64(n)*20, "messages read without their bytes")
	return float64(n) / time.Since(start).Seconds()
}

// bareBatchConsume is bareConsume with kafka.BatchFetcher, the fetch path
// the speed layer uses, instead of kafka-go's Reader: one fetcher per
// partition from the oldest record, reading whole responses, touching
// every record (key and value lengths), until it has read at least n. It
// is the second baseline: the rate of the speed layer's own way of
// reading, with nothing done per record.
func bareBatchConsume(b *testing.B, brokers []string, topic string, partitions, n int) float64 {
	var total, bytes atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < partitions; p++ {
		wg.Go(func() {
			f := kafka.NewBatchFetcher(kafka.BatchFetcherConfig{Brokers: brokers, Topic: topic, Partition: int32(p), Start: kafka.FirstOffset,
				MaxBytes: 4 << 20, MaxWait: 200 * time.Millisecond, Log: slog.New(slog.DiscardHandler)})
			defer f.Close()
			var sum int64
			defer func() { bytes.Add(sum) }()
			var recs []kafka.Record
			for total.Load() < int64(n) {
				var err error
				recs, err = f.Fetch(ctx, recs[:0])
				if err != nil {
					return
				}
				for i := range recs {
					sum += int64(len(recs[i].Key) + len(recs[i].Value))
				}
				if total.Add(int64(len(recs))) >= int64(n) {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	// A response may carry records past the n-th (the topic also holds
	// the freshness phase's events): the rate counts all that were read.
	read := total.Load()
	require.GreaterOrEqual(b, read, int64(n))
	require.Greater(b, bytes.Load(), read*20, "messages read without their bytes")
	return float64(read) / time.Since(start).Seconds()
}

// visibleViews is the count of events visible in the speed table (FINAL),
// from chunk minChunk on.
func visibleViews(b testing.TB, e *env, minChunk uint64) int64 {
	var n int64
	err := e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT toInt64(sum(views)) FROM %s.%s_speed FINAL WHERE chunk >= %d",
		e.cfg.ClickHouse.Database, e.cfg.Views[0].Name, minChunk)).Scan(&n)
	require.NoError(b, err)
	return n
}

// freshness produces 100 events every 50 ms (2,000/s) for 10 s and polls
// ClickHouse; each batch's freshness is the time from its acknowledged
// produce (the gateway's acceptance) to the first poll that sees it.
func freshness(b *testing.B, e *env) (p50, p99 time.Duration) {
	// The new events land in each partition's open chunk, which is at or
	// after the partition's highest chunk so far, so counting from the
	// lowest of those sees them all. (Counting from the highest chunk of
	// any partition missed the events of partitions a chunk behind, when
	// the backlog ended near a chunk boundary, and waited forever.)
	var minChunk uint64
	require.NoError(b, e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT min(c) FROM (SELECT max(chunk) AS c FROM %s.%s_speed GROUP BY kafka_partition)",
		e.cfg.ClickHouse.Database, e.cfg.Views[0].Name)).Scan(&minChunk))
	before := visibleViews(b, e, minChunk)
	type batch struct {
		acked time.Time
		total int64
	}
	var (
		mu      sync.Mutex
		batches []batch
	)
	stopPoll := make(chan struct{})
	var lat []time.Duration
	var pollWG sync.WaitGroup
	var missing atomic.Int64 // events never seen, when the poller gave up
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		next := 0
		var stopped time.Time
		for {
			seen := visibleViews(b, e, minChunk) - before
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
				if done {
					return
				}
				if stopped.IsZero() {
					stopped = now
				} else if now.Sub(stopped) > time.Minute {
					mu.Lock()
					missing.Store(batches[len(batches)-1].total - seen)
					mu.Unlock()
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
	for i := 0; i < 200; i++ {
		<-tick.C
		evs := generate(genOptions{n: 100, seed: 1_000_000 + uint64(i), base: time.Now().UTC()})
		msgs := make([]kgo.Message, len(evs))
		for j, ev := range evs {
			msgs[j] = kgo.Message{Key: []byte(ev.id), Value: ev.raw, Headers: gatewayHeaders}
		}
		require.NoError(b, w.WriteMessages(context.Background(), msgs...))
		total += int64(len(evs))
		mu.Lock()
		batches = append(batches, batch{acked: time.Now(), total: total})
		mu.Unlock()
	}
	close(stopPoll)
	pollWG.Wait()
	if n := missing.Load(); n > 0 {
		b.Fatalf("freshness: %d of the %d events produced were not visible a minute after the last one", n, total)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// procStatus reads a "VmXxx: N kB" line of /proc/self/status, in KiB.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// consumedCounter is a Registerer that keeps the speed layer's
// tandem_speed_events_consumed_total, so the benchmark can read it without
// gathering the whole registry every few milliseconds (which costs the
// layer CPU in this same process).
type consumedCounter struct {
	*prometheus.Registry
	mu sync.Mutex
	c  prometheus.Collector
}

func (r *consumedCounter) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *consumedCounter) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 8)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if strings.Contains(d.String(), `"tandem_speed_events_consumed_total"`) {
			r.mu.Lock()
			r.c = c
			r.mu.Unlock()
		}
	}
	return r.Registry.Register(c)
}

func (r *consumedCounter) value() float64 {
	r.mu.Lock()
	c := r.c
	r.mu.Unlock()
	if c == nil {
		return 0
	}
	ch := make(chan prometheus.Metric, 8)
	go func() { c.Collect(ch); close(ch) }()
	var total float64
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) == nil && pb.Counter != nil {
			total += pb.Counter.GetValue()
		}
	}
	return total
}

// profileSpeedPhase writes a CPU profile of the speed layer's phase alone
// to $TANDEM_BENCH_CPUPROFILE when set (instead of go test -cpuprofile,
// which also covers producing the backlog and the bare consumer).
func profileSpeedPhase(b *testing.B) (stop func()) {
	path := os.Getenv("TANDEM_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	require.NoError(b, err)
	require.NoError(b, pprof.StartCPUProfile(f))
	return func() {
		pprof.StopCPUProfile()
		require.NoError(b, f.Close())
	}
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// findPID is the process whose command line mentions dir (the ClickHouse
// server's data directory), 0 when none is found.
func findPID(b *testing.B, dir string) int {
	ents, err := os.ReadDir("/proc")
	require.NoError(b, err)
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if strings.Contains(string(cmdline), dir) {
			return pid
		}
	}
	b.Logf("ClickHouse server process not found; its CPU is not reported")
	return 0
}

// procCPU is the user+system CPU time of process pid (0 when unknown).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// clearPeakRSS resets VmHWM to the current RSS (Linux clear_refs "5"), so
// the peak measured next belongs to the speed layer's phase.
func clearPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }
