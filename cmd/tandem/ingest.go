package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
)

// cmdIngest runs the HTTP ingest gateway until SIGTERM/SIGINT, then stops
// accepting, finishes in-flight requests and flushes the producer.
func cmdIngest(ctx context.Context, args []string) error {
	f := newFlags("ingest", "ingest [--config FILE] [--listen ADDR]")
	listen := f.String("listen", "", "address to listen on (default: ingest.listen of the config)")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Ingest.Listen = *listen
	}
	reg := ops.NewRegistry()
	gw, closeLog, err := newIngest(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	err = ops.RunAll(ctx, log, ops.Named{Name: "ingest", Component: gw})
	// The server has stopped and every request has its answer: flush and
	// close the producer last.
	if cerr := closeLog(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the Kafka producer: %w", cerr)
	}
	return err
}

// newIngest ensures the stream topics exist and builds the gateway on a
// producer. The returned func closes the producer; call it after the
// gateway's Run has returned. `tandem dev` uses it too.
func newIngest(ctx context.Context, cfg *config.Config, log *slog.Logger, reg *prometheus.Registry) (*ingest.Gateway, func() error, error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(tctx, cfg.Kafka.Brokers, cfg.Config); err != nil {
		return nil, nil, fmt.Errorf("ensuring the stream topics: %w", err)
	}
	sec, err := kafka.NewSecurity(cfg.Kafka)
	if err != nil {
		return nil, nil, err
	}
	p, err := kafka.NewProducer(cfg.Kafka.Brokers, kafka.ProducerOptions{ClientID: "tandem-ingest", Security: sec})
	if err != nil {
		return nil, nil, err
	}
	gw, err := ingest.New(cfg.Ingest, ingest.Deps{Schema: cfg.Config, Log: p, Registry: reg, Logger: log, MaxMessageBytes: p.MaxMessageBytes()})
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	if err := gw.Listen(); err != nil {
		p.Close()
		return nil, nil, err
	}
	return gw, p.Close, nil
}
