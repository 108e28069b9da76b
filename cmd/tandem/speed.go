package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/speed"
)

// cmdSpeed runs the speed layer: Kafka → windowed aggregates in ClickHouse,
// with /healthz, /readyz and /metrics on speed.listen.
func cmdSpeed(ctx context.Context, args []string) error {
	f := newFlags("speed", "speed [--config FILE]")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	db, err := speedOpenClickHouse(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	rep, err := db.Migrate(ctx, cfg)
	if err != nil {
		return err
	}
	for _, n := range rep.Notes {
		log.Warn("after migrating ClickHouse", "note", n)
	}
	reg := ops.NewRegistry()
	svc, closeSpeed, err := newSpeedService(ctx, cfg, db, reg, log)
	if err != nil {
		return err
	}
	defer closeSpeed()
	srv, err := opsServer("speed-http", cfg.Speed.Listen, cfg.Auth.MetricsTokens, reg, svc, log)
	if err != nil {
		return err
	}
	return ops.RunAll(ctx, log, ops.Named{Name: "speed", Component: svc}, ops.Named{Name: "speed-http", Component: srv})
}

// newSpeedService wires the speed layer over an open ClickHouse database
// (already migrated) and the configured Kafka cluster; `tandem dev` uses it
// too. The returned func closes the dead-letter writer after Run returned.
func newSpeedService(ctx context.Context, cfg *schemas.Config, db *clickhouse.DB, reg prometheus.Registerer, log *slog.Logger) (*speed.Service, func(), error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := kafka.EnsureTopics(tctx, cfg.Kafka.Brokers, cfg)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	sec, err := kafka.NewSecurity(cfg.Kafka)
	if err != nil {
		return nil, nil, err
	}
	dlq, err := kafka.NewDLQ(cfg.Kafka.Brokers, kafka.ProducerOptions{ClientID: "tandem-speed-dlq", Security: sec})
	if err != nil {
		return nil, nil, err
	}
	svc, err := speed.New(cfg, speed.Options{
		Sink:        speed.NewClickHouseSink(db, cfg.ChunkSize),
		DeadLetters: dlq,
		Registry:    reg,
		Log:         log,
	})
	if err != nil {
		dlq.Close()
		return nil, nil, err
	}
	return svc, func() { dlq.Close() }, nil
}

// speedOpenClickHouse opens ClickHouse, waiting for it while it does not
// answer (a pod may start before its database), until ctx ends.
func speedOpenClickHouse(ctx context.Context, cfg *schemas.Config, log *slog.Logger) (*clickhouse.DB, error) {
	// A TLS file that cannot be read is a configuration mistake, not an
	// outage: waiting would only repeat it.
	if _, err := cfg.ClickHouse.TLS.Load("clickhouse.tls"); err != nil {
		return nil, err
	}
	backoff := 500 * time.Millisecond
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		db, err := clickhouse.Open(octx, cfg.ClickHouse)
		cancel()
		if err == nil {
			return db, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("giving up waiting for ClickHouse: %w", err)
		}
		log.Warn("ClickHouse is not reachable yet; retrying", "addr", cfg.ClickHouse.Addr, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("giving up waiting for ClickHouse: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
