package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kgo "github.com/segmentio/kafka-go"

	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

const benchHeaderYAML = `
kafka: { brokers: ["%s"] }
ingest: { listen: "127.0.0.1:0", max_future_skew: 1h }
`

const (
	benchBatch   = 1000 // events per request / per WriteMessages call
	benchBodies  = 16   // distinct batches, reused round-robin
	benchWorkers = 4    // concurrent clients on each side
)

type benchBatchData struct {
	body         []byte // NDJSON
	keys, values [][]byte
}

func benchSetup(b *testing.B, codec string) (*testenv.KafkaCluster, *schemas.Config, []benchBatchData) {
	b.Helper()
	k := testenv.KafkaWith(b, testenv.KafkaOptions{InMemory: true})
	topic := testenv.UniqueName(b, "tandem.bench")
	cfg, err := schemas.Parse("bench.yaml", []byte(fmt.Sprintf(benchHeaderYAML, k.Brokers[0])+testenv.ExampleStreamsYAML(b, "topic: tandem.pageviews", "topic: "+topic)), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, k.Brokers, cfg); err != nil {
		b.Fatal(err)
	}
	g, err := gen.New(gen.Options{Stream: cfg.Streams[0], Seed: 1, Events: benchBatch * benchBodies})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]benchBatchData, benchBodies)
	for i := range data {
		var buf bytes.Buffer
		for j := 0; j < benchBatch; j++ {
			ev := g.Next()
			buf.Write(ev.Raw)
			buf.WriteByte('\n')
			data[i].keys = append(data[i].keys, []byte(ev.ID))
			data[i].values = append(data[i].values, ev.Raw)
		}
		data[i].body = buf.Bytes()
	}
	return k, cfg, data
}

// runWorkers runs n batches split over benchWorkers goroutines and returns
// the elapsed time.
func runWorkers(b *testing.B, n int, do func(i int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	start := time.Now()
	for w := 0; w < benchWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return el
}

// BenchmarkGatewayVsBareProducer sends NDJSON batches of 1,000 generated
// pageviews through the gateway over real HTTP on loopback to the in-process
// broker, and the same bytes through a bare kafka-go Writer with the same
// producer settings, in the same run, from 4 concurrent clients each. One
// b.N iteration is one batch on each side; the sides alternate in rounds of
// 16 batches so that both see the same load. Reported: events/s of each side
// and gateway/bare (target: at least 0.5 on 2 cores).
func BenchmarkGatewayVsBareProducer(b *testing.B) {
	k, cfg, data := benchSetup(b, "lz4")
	topic := cfg.Streams[0].Topic

	p, err := kafka.NewProducer(k.Brokers, kafka.ProducerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	conf, err := ingest.ConfigFrom(cfg)
	if err != nil {
		b.Fatal(err)
	}
	gw, err := ingest.New(conf, ingest.Deps{Schema: cfg, Log: p, Registry: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler), MaxMessageBytes: p.MaxMessageBytes()})
	if err != nil {
		b.Fatal(err)
	}
	if err := gw.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	defer func() { stop(); <-done }()
	url := "http://" + gw.Addr() + "/v1/streams/pageviews/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchWorkers,
		DialContext: (&net.Dialer{}).DialContext}}

	// The baseline: kafka-go's Writer as our Producer configures it.
	bare := &kgo.Writer{
		Addr: kgo.TCP(k.Brokers...), Topic: topic, Balancer: kgo.Murmur2Balancer{}, RequiredAcks: kgo.RequireAll,
		BatchTimeout: 2 * time.Millisecond, BatchSize: 10000, BatchBytes: 1 << 20, Compression: kgo.Lz4, MaxAttempts: 3,
		Transport: &kgo.Transport{},
	}
	defer bare.Close()
	now := time.Now()
	headers := []kgo.Header{{Key: ingest.HeaderSchema, Value: []byte(cfg.Streams[0].SchemaVersion())}, {Key: ingest.HeaderStream, Value: []byte("pageviews")}}

	post := func(i int) error {
		res, err := client.Post(url, "application/x-ndjson", bytes.NewReader(data[i%benchBodies].body))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !bytes.HasPrefix(body, []byte(`{"accepted":1000,`)) {
			return fmt.Errorf("gateway answered %d: %s", res.StatusCode, body)
		}
		return nil
	}
	write := func(i int) error {
		d := data[i%benchBodies]
		msgs := make([]kgo.Message, len(d.values))
		for j := range msgs {
			msgs[j] = kgo.Message{Key: d.keys[j], Value: d.values[j], Time: now, Headers: headers}
		}
		return bare.WriteMessages(context.Background(), msgs...)
	}
	// Warm up connections and metadata on both sides.
	runWorkers(b, benchWorkers, post)
	runWorkers(b, benchWorkers, write)

	// Alternate rounds of both sides, so both see the same machine load
	// (other processes, GC, the broker's own work).
	b.ResetTimer()
	var gwTime, bareTime time.Duration
	const round = 4 * benchWorkers
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		gwTime += runWorkers(b, n, post)
		bareTime += runWorkers(b, n, write)
	}
	b.StopTimer()

	events := float64(b.N * benchBatch)
	gwRate, bareRate := events/gwTime.Seconds(), events/bareTime.Seconds()
	b.ReportMetric(gwRate, "gateway_events/s")
	b.ReportMetric(bareRate, "bare_events/s")
	b.ReportMetric(gwRate/bareRate, "gateway/bare")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkProducerCompression compares codecs for the Producer on the same
// batches (loopback: this measures CPU cost, not network savings).
func BenchmarkProducerCompression(b *testing.B) {
	for _, codec := range []string{"none", "lz4", "snappy", "zstd"} {
		b.Run(codec, func(b *testing.B) {
			k, cfg, data := benchSetup(b, codec)
			p, err := kafka.NewProducer(k.Brokers, kafka.ProducerOptions{Compression: codec})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			h := map[string]string{ingest.HeaderStream: "pageviews", ingest.HeaderSchema: cfg.Streams[0].SchemaVersion()}
			write := func(i int) error {
				d := data[i%benchBodies]
				return p.Append(context.Background(), cfg.Streams[0].Topic, time.Now(), h, d.keys, d.values)
			}
			runWorkers(b, benchWorkers, write)
			b.ResetTimer()
			el := runWorkers(b, b.N, write)
			b.ReportMetric(float64(b.N*benchBatch)/el.Seconds(), "events/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
