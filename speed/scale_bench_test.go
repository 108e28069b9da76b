package speed_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/speed"
)

// BenchmarkSpeedInstances measures the speed layer's throughput on the
// same backlog (the speed benchmark's load, 6 partitions) with one
// instance and with two instances in one consumer group, each in its own
// run with a fresh topic and ClickHouse. The instances share this process
// (and its GOMAXPROCS), so on a 2-core machine the second instance adds no
// CPU: the figure shows what splitting the partitions costs or gains when
// the machine is the limit. The rate is that of the events made visible
// from the moment the group is stable with every instance to the last row
// visible; the rate with the join is that of every valid event from the
// start.
//
// Run: go test ./speed -run '^$' -bench SpeedInstances -benchtime 1x
// TANDEM_BENCH_SCALE_EVENTS sets the backlog (default 3,000,000: the
// first instance starts consuming before the second has joined, so the
// backlog must outlast the join and rebalance by a good margin).
func BenchmarkSpeedInstances(b *testing.B) {
	n := 3_000_000
	if v := os.Getenv("TANDEM_BENCH_SCALE_EVENTS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	for _, instances := range []int{1, 2} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			e := newEnv(b, envOptions{partitions: 6, chunkSize: 10000, flush: "1s"})
			e.conf.FlushRows = 50000
			base := time.Now().UTC()
			var want int
			for seed := uint64(0); seed*50_000 < uint64(n); seed++ {
				evs := generate(genOptions{n: min(50_000, n-int(seed)*50_000), seed: 300 + seed, base: base, dupRate: 0.01, lateRate: 0.05, invalidRate: 0.005})
				valid, _, _ := countValid(evs)
				want += valid
				produce(b, e.kafka.Brokers, e.cfg.Streams[0].Topic, evs)
			}
			b.ResetTimer()
			start := time.Now()
			joined := watchGroupN(b, e.kafka.Brokers, speed.GroupID(e.cfg), instances)
			var stops []func()
			for i := 0; i < instances; i++ {
				_, _, stop := startService(b, e)
				stops = append(stops, stop)
			}
			// Visible events over time, to count what the stable group
			// did alone: the first instance consumes while the others join.
			type sample struct {
				at      time.Time
				visible int64
			}
			var samples []sample
			for {
				v := visibleViews(b, e, 0)
				samples = append(samples, sample{time.Now(), v})
				if v >= int64(want) {
					break
				}
				require.Less(b, time.Since(start), 10*time.Minute, "the speed layer did not finish the backlog")
				time.Sleep(20 * time.Millisecond)
			}
			end := samples[len(samples)-1].at
			stable := joined()
			from := sample{at: start}
			for _, sm := range samples {
				if !sm.at.Before(stable) {
					from = sm
					break
				}
				from = sm
			}
			// A backlog drained before the group was stable leaves nothing
			// to measure the stable group's rate on.
			require.True(b, !stable.IsZero() && end.Sub(from.at) > end.Sub(start)/2,
				"the backlog was mostly consumed before the group of %d was stable (after %s of %s); raise TANDEM_BENCH_SCALE_EVENTS",
				instances, stable.Sub(start).Round(time.Millisecond), end.Sub(start).Round(time.Millisecond))
			rate := float64(int64(want)-from.visible) / end.Sub(from.at).Seconds()
			withJoin := float64(want) / end.Sub(start).Seconds()
			for _, stop := range stops {
				stop()
			}
			require.Equal(b, int64(want), visibleViews(b, e, 0))
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(withJoin, "with_join_events/s")
			b.ReportMetric(float64(instances), "instances")
			b.ReportMetric(0, "ns/op")
			b.Logf("%d instance(s): %.0f events/s from the stable group, %.0f with the join", instances, rate, withJoin)
		})
	}
}
