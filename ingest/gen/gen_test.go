package gen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

func exampleConfig(t *testing.T) *schemas.Config {
	t.Helper()
	cfg, err := schemas.LoadFile(filepath.Join(testenv.RepoRoot(t), "tandem.example.yaml"))
	require.NoError(t, err)
	return cfg
}

var start = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestDeterministicForSeed(t *testing.T) {
	s := exampleConfig(t).Stream("pageviews")
	mk := func(seed uint64) []Event {
		g, err := New(Options{Stream: s, Seed: seed, Start: start, Late: 0.05, OutOfOrder: 0.05, Dups: 0.02, Invalid: 0.01, MaxFutureSkew: time.Hour})
		require.NoError(t, err)
		out := make([]Event, 5000)
		for i := range out {
			out[i] = g.Next()
		}
		return out
	}
	a, b, c := mk(7), mk(7), mk(8)
	require.Equal(t, a, b)
	same := 0
	for i := range a {
		if bytes.Equal(a[i].Raw, c[i].Raw) {
			same++
		}
	}
	require.Zero(t, same, "another seed gives other events (and other ids)")
}

func TestFractionsAndValidity(t *testing.T) {
	s := exampleConfig(t).Stream("pageviews")
	const n = 50_000
	o := Options{Stream: s, Seed: 42, Start: start, Late: 0.05, OutOfOrder: 0.04, Dups: 0.02, Invalid: 0.01, MaxFutureSkew: time.Hour}
	g, err := New(o)
	require.NoError(t, err)
	dec := schemas.NewDecoder(s, time.Hour)
	var late, ooo, dups, invalid int
	reasons := map[string]int{}
	var valid [][]byte // in order, for the duplicate window
	ids := map[string]bool{}
	countries := map[string]int{}
	missingAmount, withLatency := 0, 0
	var latencies []float64
	for i := 0; i < n; i++ {
		ev := g.Next()
		if bytes.IndexByte(ev.Raw, '\n') >= 0 {
			t.Fatalf("event %q has a newline", ev.Raw)
		}
		ingest := g.Clock() // what a gateway would stamp, about now for this clock
		got, err := dec.Decode(ev.Raw, ingest)
		switch {
		case ev.Invalid != "":
			invalid++
			reasons[ev.Invalid]++
			if err == nil {
				t.Fatalf("event %s of reason %s must be invalid", ev.Raw, ev.Invalid)
			}
			continue
		default:
			if err != nil || ev.ID != got.ID || !ev.Time.Equal(got.Time) {
				t.Fatalf("event %s: %v; decoded id %q time %v, generated %q %v", ev.Raw, err, got.ID, got.Time, ev.ID, ev.Time)
			}
		}
		if ev.Dup {
			dups++
			found := -1
			for j := len(valid) - 1; j >= 0 && j >= len(valid)-DupWindow; j-- {
				if bytes.Equal(valid[j], ev.Raw) {
					found = j
					break
				}
			}
			require.GreaterOrEqual(t, found, 0, "a duplicate repeats one of the last %d valid events byte for byte", DupWindow)
			continue
		}
		if ids[ev.ID] {
			t.Fatalf("id %s repeats outside a duplicate", ev.ID)
		}
		ids[ev.ID] = true
		valid = append(valid, ev.Raw)
		lag := ingest.Sub(ev.Time)
		switch {
		case ev.Late:
			late++
			if lag < time.Hour || lag > 6*time.Hour+time.Second {
				t.Fatalf("late by %s", lag)
			}
		case ev.OutOfOrder:
			ooo++
			if lag < time.Second || lag > 2*time.Minute+time.Second {
				t.Fatalf("out of order by %s", lag)
			}
		default:
			if lag > time.Millisecond+o.Spacing {
				t.Fatalf("in-order event lags the clock by %s", lag)
			}
		}
		countries[got.Values[s.FieldIndex("country")].Str]++
		if !got.Values[s.FieldIndex("amount")].Set {
			missingAmount++
		}
		if v := got.Values[s.FieldIndex("latency_ms")]; v.Set {
			withLatency++
			latencies = append(latencies, v.Float)
		}
	}
	within := func(name string, got int, p float64) {
		mean := p * n
		sd := math.Sqrt(n * p * (1 - p))
		require.InDelta(t, mean, float64(got), 5*sd, "%s: %d of %d", name, got, n)
	}
	within("late", late, o.Late)
	within("out-of-order", ooo, o.OutOfOrder)
	within("dups", dups, o.Dups)
	within("invalid", invalid, o.Invalid)
	require.Len(t, reasons, 7, "every kind of invalid event appears: %v", reasons)
	// Skew: the top country far ahead of the tail; some events lack a country.
	require.Greater(t, countries["US"], 10*countries["AR"])
	require.Greater(t, countries[""], 0)
	nv := len(valid)
	require.InDelta(t, 0.75, float64(missingAmount)/float64(nv), 0.02)
	require.InDelta(t, 0.97, float64(withLatency)/float64(nv), 0.01)
	// Long tail: the maximum latency is far above the median.
	med, maxv := quantile(latencies, 0.5), quantile(latencies, 1)
	require.Greater(t, maxv, 20*med)
}

func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1))]
}

func TestOptionsAreChecked(t *testing.T) {
	s := exampleConfig(t).Stream("pageviews")
	for _, o := range []Options{
		{},
		{Stream: s, Late: -0.1},
		{Stream: s, Dups: 1.5},
		{Stream: s, Late: 0.5, Dups: 0.3, Invalid: 0.3},
		{Stream: s, Rate: -1},
	} {
		_, err := New(o)
		require.Error(t, err)
	}
}

// countSink records what it was sent, accepting every event.
type countSink struct {
	mu    sync.Mutex
	got   int
	times []time.Time
}

func (c *countSink) Send(_ context.Context, evs []Event) ([]bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got += len(evs)
	c.times = append(c.times, time.Now())
	acc := make([]bool, len(evs))
	for i := range acc {
		acc[i] = true
	}
	return acc, nil
}

func TestRunKeepsTheRate(t *testing.T) {
	s := exampleConfig(t).Stream("pageviews")
	for _, tc := range []struct {
		rate   float64
		events int64
	}{{2000, 1000}, {10000, 3000}} {
		g, err := New(Options{Stream: s, Seed: 1, Rate: tc.rate, Events: tc.events})
		require.NoError(t, err)
		sink := &countSink{}
		rep, err := g.Run(context.Background(), RunOptions{Sink: sink})
		require.NoError(t, err)
		require.EqualValues(t, tc.events, sink.got)
		require.Equal(t, tc.events, rep.Sent)
		want := time.Duration(float64(tc.events-int64(tc.rate/10)) / tc.rate * float64(time.Second))
		// Never faster than the rate. The upper bound only catches a pacing
		// bug (a loaded machine or -race may well be slower than the rate).
		require.GreaterOrEqual(t, rep.Elapsed, want*9/10, "rate %g", tc.rate)
		require.Less(t, rep.Elapsed, want*10+2*time.Second, "rate %g", tc.rate)
	}
	// Duration bound.
	g, err := New(Options{Stream: s, Seed: 1, Rate: 5000, Duration: 300 * time.Millisecond})
	require.NoError(t, err)
	rep, err := g.Run(context.Background(), RunOptions{Sink: &countSink{}})
	require.NoError(t, err)
	require.LessOrEqual(t, rep.Sent, int64(1500+500))
	require.Greater(t, rep.Sent, int64(0))
	require.Less(t, rep.Elapsed, 2*time.Second)
}

type truthEvent struct {
	Event json.RawMessage `json:"event"`
	Dup   bool            `json:"dup"`
}

func readTruth(t *testing.T, path string) []truthEvent {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []truthEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var l truthEvent
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "line %q", sc.Text())
		out = append(out, l)
	}
	require.NoError(t, sc.Err())
	return out
}

// multiset counts values.
func multiset[T any](xs []T, key func(T) string) map[string]int {
	m := map[string]int{}
	for _, x := range xs {
		m[key(x)]++
	}
	return m
}

func TestTruthMatchesBrokerThroughGateway(t *testing.T) {
	k := testenv.Kafka(t)
	cfg := exampleConfig(t)
	cfg.Kafka.Brokers = k.Brokers
	s := cfg.Stream("pageviews")
	s.Topic = testenv.UniqueName(t, "tandem.pv")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopics(ctx, k.Brokers, cfg))
	p, err := kafka.NewProducer(k.Brokers, kafka.ProducerOptions{})
	require.NoError(t, err)
	conf, err := ingest.ConfigFrom(cfg)
	require.NoError(t, err)
	conf.Listen = "127.0.0.1:0"
	gw, err := ingest.New(conf, ingest.Deps{Schema: cfg, Log: p, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler), MaxMessageBytes: p.MaxMessageBytes()})
	require.NoError(t, err)
	require.NoError(t, gw.Listen())
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(runCtx) }()
	defer func() { stop(); <-done; p.Close() }()

	g, err := New(Options{Stream: s, Seed: 99, Events: 20_000, Batch: 1000, Concurrency: 3,
		Late: 0.05, OutOfOrder: 0.05, Dups: 0.02, Invalid: 0.01, MaxFutureSkew: cfg.MaxFutureSkew.D()})
	require.NoError(t, err)
	truthPath := filepath.Join(t.TempDir(), "truth.ndjson")
	tf, err := os.Create(truthPath)
	require.NoError(t, err)
	rep, err := g.Run(ctx, RunOptions{Sink: &HTTPSink{URL: "http://" + gw.Addr(), Stream: "pageviews"}, Truth: tf})
	require.NoError(t, err)
	require.NoError(t, tf.Close())
	require.EqualValues(t, 20_000, rep.Sent)
	require.Equal(t, rep.Invalid, rep.Rejected, "the gateway rejects exactly the generated invalid events")
	require.Equal(t, rep.Sent-rep.Invalid, rep.Accepted)

	truth := readTruth(t, truthPath)
	require.Len(t, truth, int(rep.Accepted))
	dups := 0
	for _, l := range truth {
		if l.Dup {
			dups++
		}
	}
	require.EqualValues(t, rep.Duplicates, dups)
	msgs := testenv.ReadTopic(t, k.Brokers, s.Topic, s.Partitions)
	require.Equal(t, multiset(truth, func(l truthEvent) string { return string(l.Event) }),
		multiset(msgs, func(m kgo.Message) string { return string(m.Value) }),
		"Kafka holds exactly the truth file's events, duplicates included")
	for _, m := range msgs {
		ev, err := schemas.NewDecoder(s, 0).Decode(m.Value, time.Time{})
		require.NoError(t, err)
		require.Equal(t, ev.ID, string(m.Key))
	}
}

func TestKafkaTargetWritesGatewayFormat(t *testing.T) {
	k := testenv.Kafka(t)
	cfg := exampleConfig(t)
	s := cfg.Stream("pageviews")
	s.Topic = testenv.UniqueName(t, "tandem.pv")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopics(ctx, k.Brokers, cfg))
	p, err := kafka.NewProducer(k.Brokers, kafka.ProducerOptions{})
	require.NoError(t, err)
	defer p.Close()
	g, err := New(Options{Stream: s, Seed: 5, Events: 5000, Batch: 500, Dups: 0.02, Invalid: 0.02, Late: 0.05})
	require.NoError(t, err)
	var truth bytes.Buffer
	now := time.Now().UTC().Truncate(time.Millisecond)
	sink := &LogSink{Log: p, Topic: s.Topic, Headers: map[string]string{ingest.HeaderStream: s.Name, ingest.HeaderSchema: s.SchemaVersion()},
		Now: func() time.Time { return now }}
	rep, err := g.Run(ctx, RunOptions{Sink: sink, Truth: &truth})
	require.NoError(t, err)
	require.EqualValues(t, 5000, rep.Accepted, "straight into Kafka nothing is rejected")
	msgs := testenv.ReadTopic(t, k.Brokers, s.Topic, s.Partitions)
	require.Len(t, msgs, 5000)
	invalid := 0
	for _, m := range msgs {
		require.True(t, now.Equal(m.Time))
		require.Len(t, m.Headers, 2)
		if _, err := schemas.NewDecoder(s, time.Hour).Decode(m.Value, m.Time); err != nil {
			invalid++
		}
	}
	require.EqualValues(t, rep.Invalid, invalid, "consumers see exactly the generated invalid events as invalid")
	require.Equal(t, int(rep.Sent-rep.Invalid), bytes.Count(truth.Bytes(), []byte("\n")))
}
