package main

import (
	"context"

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
	reg := ops.NewRegistry()
	svc, closeFn, err := serving.FromConfig(cfg.Serve, cfg.Config, reg, log)
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
