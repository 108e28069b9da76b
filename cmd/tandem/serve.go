package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
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
	setServeMemoryLimit(cfg.Serve, log)
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
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer db.Close()
	return ops.RunAll(ctx, log, ops.Named{Name: "serve", Component: svc},
		ops.Named{Name: "version-watch", Component: &versionWatch{cfg: cfg, svc: svc, db: db, every: definitionWatchEvery}})
}

// setServeMemoryLimit sets the Go runtime's soft memory limit to
// serve.memory_limit (docs/operations.md, "Sizing serve") unless
// GOMEMLIMIT is set: without it the collector lets the heap grow to twice
// the live data (the caches), and transient work on top of that.
func setServeMemoryLimit(conf serving.Config, log *slog.Logger) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("serve: memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return
	}
	limit := conf.EffectiveMemoryLimit()
	debug.SetMemoryLimit(limit)
	log.Info("serve: memory limit", "bytes", limit, "key", "serve.memory_limit")
}

// versionWatch stops a serve process when a version it answers from is no
// longer computed (retired by a switch this process was not started for,
// such as a pending version registered again while pods rolled): its
// answers would go stale. A normal switch never stops it: by then it
// answers from the new version already (serving.Service.resolve).
type versionWatch struct {
	cfg   *config.Config
	svc   *serving.Service
	db    *clickhouse.DB
	every time.Duration
}

func (w *versionWatch) Run(ctx context.Context) error {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		vs, err := w.db.ViewVersions(ctx)
		if err != nil || len(vs) == 0 {
			continue // ClickHouse unreachable is the queries' concern
		}
		computed, registered := map[string]bool{}, map[string]bool{}
		for _, vv := range vs {
			registered[vv.View] = true
			if vv.State == schemas.VersionCurrent || vv.State == schemas.VersionPending {
				computed[vv.Physical()] = true
			}
		}
		for _, v := range w.svc.AnsweringVersions(ctx) {
			if registered[v.Logical()] && !computed[v.Name] {
				return fmt.Errorf("view %s: version %d, which this process answers from, is no longer computed (another version was switched to); it stops so that its restart answers from the current one", v.Logical(), v.Version())
			}
		}
	}
}

// servedVersions returns the views serving answers: every version of the
// configured views (clickhouse.DB.Versioned), read once at start — a
// changed definition reaches serving with a restart, after tandem migrate
// registered it. Both are waited for, up to two minutes.
func servedVersions(ctx context.Context, cfg *config.Config, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) (*schemas.Config, error) {
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for backoff := 500 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		db, err := clickhouse.Open(octx, cfg.ClickHouse)
		if err == nil {
			var eff *schemas.Config
			eff, err = db.Versioned(octx, cfg.Config)
			db.Close()
			if err == nil {
				return eff, nil
			}
		}
		// ClickHouse not up yet, or the configuration's changed
		// definitions not registered yet (the migrate Job, or a speed pod
		// migrating, registers them in a moment).
		log.Warn("serve: waiting for ClickHouse and the view versions of this configuration", "err", err)
		select {
		case <-octx.Done():
			return nil, err
		case <-time.After(backoff):
		}
	}
}
