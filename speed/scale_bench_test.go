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
// the machine is the limit. Rates are from the moment the group is stable
// with every instance to the last row visible.
//
// Run: go test ./speed -run '^$' -bench SpeedInstances -benchtime 1x
// TANDEM_BENCH_SCALE_EVENTS sets the backlog (default 600,000).
func BenchmarkSpeedInstances(b *testing.B) {
	n := 600_000
	if v := os.Getenv("TANDEM_BENCH_SCALE_EVENTS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	for _, instances := range []int{1, 2} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			e := newEnv(b, envOptions{partitions: 6, chunkSize: 10000, flush: "1s"})
			e.cfg.Speed.FlushRows = 50000
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
			for visibleViews(b, e, 0) < int64(want) {
				require.Less(b, time.Since(start), 10*time.Minute, "the speed layer did not finish the backlog")
				time.Sleep(20 * time.Millisecond)
			}
			rate := float64(n) / time.Since(joined()).Seconds()
			withJoin := float64(n) / time.Since(start).Seconds()
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
