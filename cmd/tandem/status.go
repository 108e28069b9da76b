package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/serving"
	"github.com/tandem-analytics/tandem/serving/dashboard"
	"github.com/tandem-analytics/tandem/status"
)

// errRed makes `tandem status` exit non-zero when something is red.
var errRed = errors.New("the health report has red checks")

// cmdStatus prints the health report: every question of the operator's
// "hour 6" with its measured value, threshold and verdict. It reads the
// components' /metrics at their listen addresses and the stores the
// configuration names, and exits 1 when anything is red.
func cmdStatus(ctx context.Context, args []string) error {
	f := newFlags("status", "status [--config FILE] [--json] [--interval 2s] [--addr name=host:port] [--skip name,...]")
	asJSON := f.Bool("json", false, "print the report as JSON (for machines) instead of a table")
	interval := f.Duration("interval", 2*time.Second, "time between the two scrapes rates are computed over")
	timeout := f.Duration("timeout", 3*time.Second, "how long each component and store may take to answer")
	skip := f.String("skip", "", "comma-separated components not deployed (ingest, speed, archive, serve)")
	addrs := map[string]string{} // --addr wins over status.addrs of the config
	f.Func("addr", "where to reach a component, name=host:port (repeatable; default its listen address from the config)", func(s string) error {
		name, addr, ok := strings.Cut(s, "=")
		if !ok || name == "" || addr == "" {
			return fmt.Errorf("want name=host:port, got %q", s)
		}
		addrs[name] = addr
		return nil
	})
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	for _, name := range status.UnknownThresholds(cfg.Status) {
		log.Warn("status.thresholds names no check; it is ignored", "name", name)
	}
	for name, addr := range cfg.Status.Addrs {
		if _, set := addrs[name]; !set {
			addrs[name] = addr
		}
	}
	var skipped []string
	if *skip != "" {
		skipped = strings.Split(*skip, ",")
	}
	conf := cfg.Status
	conf.Interval, conf.Timeout, conf.Addrs = *interval, *timeout, addrs
	// The stores hold each view version by its physical name; when
	// ClickHouse cannot say which versions are computed, the configured
	// names are checked (the report then shows ClickHouse down anyway).
	schema := cfg.Config
	octx, cancel := context.WithTimeout(ctx, *timeout)
	if db, err := clickhouse.Open(octx, cfg.ClickHouse); err == nil {
		if eff, err := db.Versioned(octx, cfg.Config); err == nil {
			schema = eff
		}
		db.Close()
	}
	cancel()
	mon, err := status.New(conf, status.Deps{Schema: schema, Deployment: cfg.Deployment(), Skip: skipped, Log: log})
	if err != nil {
		return err
	}
	defer mon.Close()
	rep := mon.Gather(ctx)
	if *asJSON {
		err = status.WriteJSON(os.Stdout, rep)
	} else {
		err = status.WriteText(os.Stdout, rep)
	}
	if err != nil {
		return err
	}
	if rep.Red() {
		return errRed
	}
	return nil
}

// mountStatus adds GET /v1/status and the web dashboard (/) to the serving
// API. serve reads its own metrics in-process and the other components over
// HTTP. The returned func releases the monitor's store connections.
func mountStatus(svc *serving.Service, cfg *config.Config, reg *prometheus.Registry, log *slog.Logger) (func(), error) {
	conf := cfg.Status
	conf.Interval = time.Second
	// The stores hold each version by its physical name: the status reads
	// what this replica serves.
	mon, err := status.New(conf, status.Deps{Schema: svc.Schema(), Deployment: cfg.Deployment(), Local: map[string]prometheus.Gatherer{"serve": reg}, Log: log})
	if err != nil {
		return nil, err
	}
	svc.Mount("GET /v1/status", status.Handler(mon, status.HandlerOptions{Tokens: cfg.Auth.QueryTokens, Registry: reg, Log: log.With("component", "serve")}))
	svc.Mount("GET /", dashboard.Handler())
	return func() { mon.Close() }, nil
}
