package speed_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/speed"
)

// startService runs the speed layer in-process and returns it with its
// registry and a stop function that waits for Run to return.
func startService(t testing.TB, e *env) (*speed.Service, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	svc, stop := startServiceWith(t, e, reg)
	return svc, reg, stop
}

// startServiceWith runs the speed layer in-process with its metrics on reg.
func startServiceWith(t testing.TB, e *env, reg prometheus.Registerer) (*speed.Service, func()) {
	t.Helper()
	dlq, err := kafka.NewDLQ(e.cfg.Kafka.Brokers, kafka.ProducerOptions{})
	require.NoError(t, err)
	conf := e.conf
	conf.MaxBackoff = 500 * time.Millisecond
	svc, err := speed.New(conf, speed.Deps{
		Schema:      e.cfg,
		Sink:        speed.NewClickHouseSink(e.db, e.cfg.ChunkSize),
		DeadLetters: dlq,
		Registry:    reg,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	return svc, testenv.RunService(t, "the speed layer", svc.Run, func() { dlq.Close() })
}

// TestLateOutOfOrderDuplicatesExact: late (up to days), out-of-order,
// duplicate and invalid events across several partitions and many chunks
// give exactly the truth; late events count in their own window.
func TestLateOutOfOrderDuplicatesExact(t *testing.T) {
	e := newEnv(t, envOptions{partitions: 3, chunkSize: 100})
	base := time.Now().UTC()
	evs := generate(genOptions{n: 3000, seed: 1, base: base, dupRate: 0.05, lateRate: 0.2, invalidRate: 0.03})
	produce(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, evs)
	_, reg, stop := startService(t, e)
	want := truth(evs)
	waitExact(t, e, want, 60*time.Second)

	// A window three days back holds its late events.
	var oldest time.Time
	for k := range want {
		if oldest.IsZero() || k.window.Before(oldest) {
			oldest = k.window
		}
	}
	require.Less(t, oldest, base.Add(-24*time.Hour), "the load must contain events more than a day late")

	valid, invalid, dups := countValid(evs)
	require.Equal(t, float64(valid), sumMetric(t, reg, "tandem_speed_events_folded_total"))
	require.Equal(t, float64(dups), sumMetric(t, reg, "tandem_speed_duplicates_total"))
	require.Eventually(t, func() bool { return sumMetric(t, reg, "tandem_speed_dlq_total") == float64(invalid) }, 10*time.Second, 100*time.Millisecond)
	stop()
}

// TestDeadLetters: invalid events land on <topic>.dlq with the reason, the
// source partition and offset in headers; valid ones do not.
func TestDeadLetters(t *testing.T) {
	e := newEnv(t, envOptions{partitions: 2, chunkSize: 1000})
	base := time.Now().UTC()
	evs := generate(genOptions{n: 400, seed: 2, base: base, invalidRate: 0.1})
	_, invalid, _ := countValid(evs)
	require.Greater(t, invalid, 10)
	produce(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, evs)
	_, reg, _ := startService(t, e)
	waitExact(t, e, truth(evs), 60*time.Second)

	r := kgo.NewReader(kgo.ReaderConfig{Brokers: e.cfg.Kafka.Brokers, Topic: e.cfg.Streams[0].DLQTopic(), Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := map[string]bool{}
	for _, ev := range evs {
		if !ev.valid {
			bad[string(ev.raw)] = true
		}
	}
	reasons := map[string]bool{}
	got := map[string]bool{}
	for len(got) < invalid {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err, "read %d of %d dead letters", len(got), invalid)
		require.True(t, bad[string(m.Value)], "a valid event went to the DLQ: %s", m.Value)
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		require.NotEmpty(t, h[kafka.HeaderDLQReason])
		require.NotEmpty(t, h[kafka.HeaderDLQSourceOffset])
		require.Equal(t, "pageviews", h[kafka.HeaderStream], "the dead letter lost the original headers")
		reasons[h[kafka.HeaderDLQReason]] = true
		got[string(m.Value)+"@"+h[kafka.HeaderDLQSourcePartition]+"/"+h[kafka.HeaderDLQSourceOffset]] = true
	}
	require.Len(t, got, invalid)
	var sawFuture, sawMissing bool
	for reason := range reasons {
		sawFuture = sawFuture || strings.Contains(reason, "too far in the future")
		sawMissing = sawMissing || strings.Contains(reason, "required field is missing")
	}
	require.True(t, sawFuture && sawMissing, "reasons: %v", reasons)

	// The metric counts them under the shared reason labels.
	byReason := map[string]float64{}
	require.Eventually(t, func() bool {
		clear(byReason)
		mfs, err := reg.Gather()
		require.NoError(t, err)
		total := 0.0
		for _, mf := range mfs {
			if mf.GetName() != "tandem_speed_dlq_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" {
						byReason[l.GetValue()] += m.GetCounter().GetValue()
					}
				}
				total += m.GetCounter().GetValue()
			}
		}
		return total == float64(invalid)
	}, 10*time.Second, 50*time.Millisecond)
	for reason := range byReason {
		require.Contains(t, schemas.Reasons, schemas.Reason(reason))
	}
	require.Positive(t, byReason[schemas.ReasonFutureTime.String()], "by reason: %v", byReason)
	require.Positive(t, byReason[schemas.ReasonMissingField.String()], "by reason: %v", byReason)
}

// sumMetric sums every series of a counter or gauge family.
func sumMetric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			}
		}
	}
	return total
}

// TestClickHouseDown: with ClickHouse stopped mid-stream the layer holds
// its state, stops reading, reports the stall on /readyz and in metrics,
// and when ClickHouse returns it catches up to exactly the truth.
func TestClickHouseDown(t *testing.T) {
	e := newEnv(t, envOptions{partitions: 2, chunkSize: 200})
	base := time.Now().UTC()
	evs := generate(genOptions{n: 4000, seed: 3, base: base, dupRate: 0.05, lateRate: 0.1, invalidRate: 0.02})
	first, second := evs[:2000], evs[2000:]
	svc, reg, stop := startService(t, e)
	mux := http.NewServeMux()
	ops.Mount(mux, reg, svc)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	readyz := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	produce(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, first)
	waitExact(t, e, truth(first), 60*time.Second)
	code, body := readyz()
	require.Equal(t, http.StatusOK, code, body)

	e.ch.Stop()
	produce(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, second)
	require.Eventually(t, func() bool {
		code, body = readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "stalled")
	}, 30*time.Second, 100*time.Millisecond, "readyz must report the stall; last answer %d %s", code, body)
	require.Equal(t, 1.0, sumMetric(t, reg, "tandem_speed_stalled"))
	require.Greater(t, sumMetric(t, reg, "tandem_speed_clickhouse_errors_total"), 0.0)
	time.Sleep(2 * time.Second) // stay down across several retries

	e.ch.Start()
	waitExact(t, e, truth(evs), 60*time.Second)
	require.Eventually(t, func() bool { code, _ := readyz(); return code == http.StatusOK }, 10*time.Second, 100*time.Millisecond)
	require.Equal(t, 0.0, sumMetric(t, reg, "tandem_speed_stalled"))
	stop()
}
