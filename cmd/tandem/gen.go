package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/kafka"
)

// cmdGen generates load for one stream, through the gateway or straight
// into Kafka, and prints what it sent.
func cmdGen(ctx context.Context, args []string) error {
	f := newFlags("gen", "gen [--config FILE] [--stream NAME] [--target http|kafka] [--rate N] [--events N | --duration D] [flags]")
	stream := f.String("stream", "", "stream to generate events for (default: the first stream of the config)")
	target := f.String("target", "http", "where to send: http (through the ingest gateway) or kafka (straight into the stream's topic)")
	url := f.String("url", "", "gateway base URL for --target http (default: http://<ingest.listen>)")
	token := f.String("token", os.Getenv("TANDEM_INGEST_TOKEN"), "bearer token for the gateway (env TANDEM_INGEST_TOKEN)")
	rate := f.Float64("rate", 0, "events per second (0: as fast as the target takes them)")
	events := f.Int64("events", 0, "stop after this many events")
	duration := f.Duration("duration", 0, "stop after this long")
	batch := f.Int("batch", 1000, "events per request (NDJSON lines) or per Kafka write")
	concurrency := f.Int("concurrency", 1, "batches in flight at once")
	late := f.Float64("late", 0, "fraction of events 1–6 hours late")
	ooo := f.Float64("ooo", 0, "fraction of events 1 s – 2 min out of order")
	dups := f.Float64("dups", 0, "fraction of exact duplicates (same id and bytes, within a few hundred events of the original)")
	invalid := f.Float64("invalid", 0, "fraction of invalid events (bad timestamp, missing id, bad JSON, …)")
	seed := f.Uint64("seed", 0, "random seed; the same seed and --start give the same events (default: from the clock)")
	startAt := f.String("start", "", "event time of the first event, RFC 3339 (default: so the last event is about now)")
	truth := f.String("truth", "", "write every accepted valid event to this file (NDJSON of {\"event\":…, \"dup\":true})")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	if *events == 0 && *duration == 0 {
		return fmt.Errorf("give --events or --duration (or both); gen does not run forever by default")
	}
	s := cfg.Streams[0]
	if *stream != "" {
		if s = cfg.Stream(*stream); s == nil {
			return fmt.Errorf("no stream %q in %s", *stream, cfg.Path)
		}
	}
	if !genSeedSet(f) {
		*seed = uint64(time.Now().UnixNano())
	}
	o := gen.Options{
		Stream: s, Seed: *seed, Rate: *rate, Events: *events, Duration: *duration, Batch: *batch, Concurrency: *concurrency,
		Late: *late, OutOfOrder: *ooo, Dups: *dups, Invalid: *invalid, MaxFutureSkew: cfg.MaxFutureSkew.D(),
	}
	if *startAt != "" {
		if o.Start, err = time.Parse(time.RFC3339Nano, *startAt); err != nil {
			return fmt.Errorf("--start %q is not an RFC 3339 time", *startAt)
		}
	}
	g, err := gen.New(o)
	if err != nil {
		return err
	}

	var sink gen.Sink
	switch *target {
	case "http":
		u := *url
		if u == "" {
			scheme := "http"
			if cfg.Ingest.TLS.Enabled() {
				scheme = "https"
			}
			u = scheme + "://" + cfg.Ingest.Listen
		}
		sink = &gen.HTTPSink{URL: u, Stream: s.Name, Token: *token,
			Client: &http.Client{Timeout: cfg.Ingest.ProduceTimeout.D() + 30*time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency + 1}}}
	case "kafka":
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := kafka.EnsureTopics(tctx, cfg.Kafka.Brokers, cfg.Config)
		cancel()
		if err != nil {
			return err
		}
		sec, err := kafka.NewSecurity(cfg.Kafka)
		if err != nil {
			return err
		}
		p, err := kafka.NewProducer(cfg.Kafka.Brokers, kafka.ProducerOptions{ClientID: "tandem-gen", Security: sec})
		if err != nil {
			return err
		}
		defer p.Close()
		sink = &gen.LogSink{Log: p, Topic: s.Topic, Headers: map[string]string{ingest.HeaderStream: s.Name, ingest.HeaderSchema: s.SchemaVersion()}}
	default:
		return fmt.Errorf("--target %q: use http or kafka", *target)
	}

	ro := gen.RunOptions{Sink: sink}
	if *truth != "" {
		tf, err := os.Create(*truth)
		if err != nil {
			return err
		}
		defer tf.Close()
		ro.Truth = tf
	}
	lastLog := time.Now()
	ro.Progress = func(r gen.Report) {
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			log.Info("progress", "sent", r.Sent, "accepted", r.Accepted, "rejected", r.Rejected, "events_per_s", int(r.EventsPerSecond()))
		}
	}
	log.Info("generating", "stream", s.Name, "target", *target, "seed", *seed, "rate", *rate, "events", *events, "duration", *duration)
	rep, err := g.Run(ctx, ro)
	fmt.Printf("tandem gen: %s\n", rep)
	fmt.Printf("  seed %d (rerun with --seed %d --start %s for the same events)\n", *seed, *seed, g.Options().Start.Format(time.RFC3339Nano))
	if err != nil && !(errors.Is(err, gen.ErrStopped) && ctx.Err() != nil) {
		return err
	}
	return nil
}

// seedSet reports whether --seed was given.
func genSeedSet(f *flags) bool {
	set := false
	f.Visit(func(fl *flag.Flag) {
		if fl.Name == "seed" {
			set = true
		}
	})
	return set
}
