package main

import (
	"context"
	"time"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"

	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/serving"
)

// cmdServe runs the query API (serve.listen): GET /v1/views and
// GET /v1/views/{view}/query, merging the published batch run (S3) with the
// speed rows of unabsorbed chunks (ClickHouse), plus /healthz, /readyz and
// /metrics. It shuts down gracefully on SIGTERM.
func cmdServe(ctx context.Context, args []string) error {
	f := newFlags("serve", "serve [--config FILE]")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	eff, err := servedVersions(ctx, cfg, log)
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	svc, closeFn, err := serving.FromConfig(cfg.Serve, eff, reg, log)
	if err != nil {
		return err
	}
	defer closeFn()
	closeStatus, err := mountStatus(svc, cfg, reg, log)
	if err != nil {
		return err
	}
	defer closeStatus()
	if err := svc.Listen(); err != nil {
		return err
	}
	return ops.RunAll(ctx, log, ops.Named{Name: "serve", Component: svc})
}

// servedVersions returns the views serving answers: every version of the
// configured views (clickhouse.DB.Versioned), read once at start — a
// changed definition reaches serving with a restart, after tandem migrate
// registered it. ClickHouse is waited for like the speed layer does.
func servedVersions(ctx context.Context, cfg *config.Config, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) (*schemas.Config, error) {
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for backoff := 500 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		db, err := clickhouse.Open(octx, cfg.ClickHouse)
		if err == nil {
			eff, err := db.Versioned(octx, cfg.Config)
			db.Close()
			return eff, err
		}
		log.Warn("serve: ClickHouse does not answer yet; waiting for it to read the view versions", "err", err)
		select {
		case <-octx.Done():
			return nil, err
		case <-time.After(backoff):
		}
	}
}
