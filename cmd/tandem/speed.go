package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/config"
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
	rep, err := db.Migrate(ctx, cfg.Config)
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
	return ops.RunAll(ctx, log, ops.Named{Name: "speed", Component: svc}, ops.Named{Name: "speed-http", Component: srv},
		ops.Named{Name: "definition-watch", Component: &definitionWatch{cfg: cfg, folded: svc.Schema(), db: db, every: definitionWatchEvery, log: log}})
}

// definitionWatchEvery is how often a speed process compares its views'
// definitions with the tables in ClickHouse.
const definitionWatchEvery = 5 * time.Second

// definitionWatch stops a speed process whose views' tables were recreated
// for another definition (tandem migrate --recreate with an edited
// configuration) or dropped: it would otherwise keep writing rows of its
// old definition into them. The restarted process migrates with whatever
// configuration it is given, and refuses the old one. Stop speed before
// recreating, and this never fires (docs/operations.md, "Changing views");
// it bounds the damage when that order is not kept.
type definitionWatch struct {
	cfg *config.Config
	// folded is the Versioned configuration the process folds.
	folded *schemas.Config
	db     *clickhouse.DB
	every  time.Duration
	log    *slog.Logger
}

func (w *definitionWatch) Run(ctx context.Context) error {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		plan, err := w.db.Plan(ctx, w.cfg.Config)
		if err != nil {
			// ClickHouse unreachable is the sink's concern, not a reason
			// to stop.
			w.log.Debug("definition watch: reading the ClickHouse layout", "err", err)
			continue
		}
		// A switch retires a version this process folds beside the new
		// one; folding it on is harmless until its tables are collected
		// (batch.removed_view_grace after the switch). Half-way there the
		// process stops, and its restart (Kubernetes starts it again)
		// folds the current versions only.
		if err := w.retiredLongAgo(ctx); err != nil {
			return err
		}
		for _, o := range plan.Owners {
			switch o.State {
			case clickhouse.OwnerChanged:
				return fmt.Errorf("the ClickHouse tables of %s %s were recreated for another definition (tandem migrate --recreate); this speed process runs the configuration it started with and stops rather than write rows of that definition into them",
					o.Kind, o.Owner)
			case clickhouse.OwnerNew:
				return fmt.Errorf("the ClickHouse tables of %s %s were dropped (tandem migrate --drop-removed); this speed process still has it configured and stops", o.Kind, o.Owner)
			}
		}
	}
}

// newSpeedService wires the speed layer over an open ClickHouse database
// (already migrated) and the configured Kafka cluster; `tandem dev` uses it
// too. The returned func closes the dead-letter writer after Run returned.
func newSpeedService(ctx context.Context, cfg *config.Config, db *clickhouse.DB, reg prometheus.Registerer, log *slog.Logger) (*speed.Service, func(), error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := kafka.EnsureTopics(tctx, cfg.Kafka.Brokers, cfg.Config)
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
	// Every version of the configured views is folded: the current one
	// answers while a changed definition, the pending version, is computed.
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	eff, err := db.Versioned(vctx, cfg.Config)
	cancel()
	if err != nil {
		dlq.Close()
		return nil, nil, err
	}
	svc, err := speed.New(cfg.Speed, speed.Deps{
		Schema:      eff,
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
func speedOpenClickHouse(ctx context.Context, cfg *config.Config, log *slog.Logger) (*clickhouse.DB, error) {
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

// retiredLongAgo fails when a version this process folds was retired more
// than half of batch.removed_view_grace ago.
func (w *definitionWatch) retiredLongAgo(ctx context.Context) error {
	grace := w.cfg.Batch.RemovedViewGrace.D()
	if w.folded == nil || grace <= 0 {
		return nil
	}
	vs, err := w.db.ViewVersions(ctx)
	if err != nil {
		return nil // ClickHouse unreachable is the sink's concern
	}
	for _, vv := range vs {
		if vv.State != schemas.VersionRetired && vv.State != schemas.VersionCollected {
			continue
		}
		if !slices.ContainsFunc(w.folded.Views, func(v *schemas.View) bool { return v.Name == vv.Physical() && v.Logical() == vv.View }) {
			continue
		}
		if time.Since(vv.Since) >= grace/2 || vv.State == schemas.VersionCollected {
			return fmt.Errorf("view %s: version %d, which this speed process still folds, was retired at %s (batch.removed_view_grace %s collects it): it stops so that its restart folds the current version only",
				vv.View, vv.Version, vv.Since.UTC().Format(time.RFC3339), grace)
		}
	}
	return nil
}
