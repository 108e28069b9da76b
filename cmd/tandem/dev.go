package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem"
	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/batch/export"
	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/devenv"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/serving"
)

// cmdDev runs the whole platform in one process: the embedded broker, S3 and
// a local ClickHouse (at the addresses the config names, state under
// --data-dir), then the gateway, speed layer, archiver, serving API, a batch
// run every batch.every and, unless --gen-rate 0, sample traffic. Every
// component is built by the same function its own command uses.
func cmdDev(ctx context.Context, args []string) error {
	f := newFlags("dev", "dev [--config FILE] [--data-dir DIR] [--gen-rate N] [--keep-services]")
	dataDir := f.String("data-dir", ".tandem", "where the embedded services keep their state (kept across restarts)")
	genRate := f.Float64("gen-rate", 20, "events per second of sample pageviews sent through the gateway (0: none)")
	keep := f.Bool("keep-services", false, "leave ClickHouse and MinIO running on exit, for a faster next start")
	scripts := f.String("scripts", "scripts", "folder with clickhouse.sh and minio.sh; when it has none, the copies built into the binary are used")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	env, err := devenv.Start(ctx, cfg.Config, devenv.Options{DataDir: dir, ScriptsDir: *scripts, Files: tandem.DevFiles, KeepServices: *keep, Log: log})
	if err != nil {
		return err
	}
	defer env.Close()

	db, err := speedOpenClickHouse(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	backfill, err := devMigrate(ctx, cfg, db, log)
	if err != nil {
		return err
	}

	// One registry per component, as when they run as separate processes:
	// each one's /metrics says only what that component measured.
	ingestReg, speedReg, archiveReg, serveReg := ops.NewRegistry(), ops.NewRegistry(), ops.NewRegistry(), ops.NewRegistry()
	gw, closeProducer, err := newIngest(ctx, cfg, log, ingestReg)
	if err != nil {
		return err
	}
	defer closeProducer()
	sp, closeSpeed, err := newSpeedService(ctx, cfg, db, speedReg, log)
	if err != nil {
		return err
	}
	defer closeSpeed()
	archiveConf := cfg.Archive
	archiveConf.TmpDir = filepath.Join(dir, "archive-tmp")
	arch, err := newArchiver(ctx, cfg, archiveConf, archiveReg, log)
	if err != nil {
		return err
	}
	eff, err := db.Versioned(ctx, cfg.Config)
	if err != nil {
		return err
	}
	svc, closeServe, err := serving.FromConfig(cfg.Serve, eff, serveReg, log)
	if err != nil {
		return err
	}
	defer closeServe()
	closeStatus, err := mountStatus(svc, cfg, serveReg, log)
	if err != nil {
		return err
	}
	defer closeStatus()
	if err := svc.Listen(); err != nil {
		return err
	}
	speedHTTP, err := opsServer("speed-http", cfg.Speed.Listen, cfg.Auth.MetricsTokens, speedReg, sp, log)
	if err != nil {
		return err
	}
	archiveHTTP, err := opsServer("archive-http", cfg.Archive.Listen, cfg.Auth.MetricsTokens, archiveReg, arch, log)
	if err != nil {
		return err
	}
	store, err := s3.New(cfg.S3, s3.WithLogger(log))
	if err != nil {
		return err
	}
	comps := []ops.Named{
		{Name: "ingest", Component: gw},
		{Name: "speed", Component: sp},
		{Name: "speed-http", Component: speedHTTP},
		{Name: "archive", Component: arch},
		{Name: "archive-http", Component: archiveHTTP},
		{Name: "serve", Component: svc},
		{Name: "batch-scheduler", Component: &batchScheduler{cfg: cfg, store: store, db: db, tmp: filepath.Join(dir, "batch-tmp"), log: log.With("component", "batch"), runAtStart: backfill}},
	}
	if *genRate > 0 {
		comps = append(comps, ops.Named{Name: "gen", Component: &sampleTraffic{cfg: cfg, rate: *genRate, log: log.With("component", "gen")}})
	}
	printDevBanner(os.Stdout, cfg, dir, *genRate)
	return ops.RunAll(ctx, log, comps...)
}

// opsServer serves /healthz, /readyz and /metrics for a component that has
// no HTTP API of its own (speed, archive), bound now so a taken port fails
// start-up rather than surfacing later. /metrics needs one of
// metricsTokens when any is set; the listener has ops.DefaultTimeouts.
func opsServer(name, addr string, metricsTokens []string, reg *prometheus.Registry, ready ops.ReadyChecker, log *slog.Logger) (*ops.HTTPServer, error) {
	mux := http.NewServeMux()
	ops.MountAuth(mux, reg, ops.NewBearer(metricsTokens), ready)
	srv := &ops.HTTPServer{Name: name, Addr: addr, Handler: mux, Log: log}
	return srv, srv.Listen()
}

// devMigrate brings ClickHouse to the configuration for the edit-and-restart
// loop: a view or raw_events stream whose definition changed has its
// tables recreated (what `tandem migrate --recreate` does in production; in
// development nobody else holds that data, and the master dataset keeps
// every event). It reports whether a view is backfilling, so that a batch
// run starts at once: one whose definition changed, or a new one on a
// stream whose other views are already there.
func devMigrate(ctx context.Context, cfg *config.Config, db *clickhouse.DB, log *slog.Logger) (backfill bool, err error) {
	plan, err := db.Plan(ctx, cfg.Config)
	if err != nil {
		return false, err
	}
	changed := plan.With(clickhouse.OwnerChanged)
	for _, name := range changed {
		o := plan.Owner(name)
		log.Warn("definition changed: recreating its ClickHouse tables (tandem dev only; in production: tandem migrate --recreate)",
			o.Kind, name, "changes", strings.TrimSpace(strings.Join(o.Diffs, ";")))
	}
	rep, err := db.Migrate(ctx, cfg.Config, changed...)
	if err != nil {
		return false, err
	}
	for _, n := range rep.Notes {
		log.Warn("after migrating ClickHouse", "note", n)
	}
	for _, v := range cfg.Views {
		o := plan.Owner(v.Name)
		switch {
		case o == nil:
		case o.State == clickhouse.OwnerChanged:
			backfill = true
		case o.State == clickhouse.OwnerNewVersion:
			// The old version answers until a run computes the new one.
			log.Info("definition changed: computing it as a new version; the old version answers until the new one is exact",
				"view", v.Name, "version", o.Version, "changes", strings.TrimSpace(strings.Join(o.Diffs, ";")))
			backfill = true
		case o.State == clickhouse.OwnerNew:
			for _, other := range cfg.Views {
				if other.Stream == v.Stream && plan.Owner(other.Name) != nil && plan.Owner(other.Name).State != clickhouse.OwnerNew {
					backfill = true
				}
			}
		}
	}
	if backfill {
		log.Info("a view is new, changed or backfilling until a batch run publishes it: running one now")
	}
	if removed := plan.With(clickhouse.OwnerRemoved); len(removed) > 0 {
		log.Info("no longer configured; their ClickHouse objects stay until `tandem migrate --drop-removed`", "owners", strings.Join(removed, ", "))
	}
	return backfill, nil
}

// batchScheduler runs a batch run every batch.every, the way a CronJob
// would, and logs (does not stop the platform on) a failed run.
type batchScheduler struct {
	cfg   *config.Config
	store *s3.Store
	db    *clickhouse.DB
	tmp   string
	log   *slog.Logger
	// runAtStart runs a batch run at once, not one batch.every after
	// start: a view is backfilling and answers nothing until a run.
	runAtStart bool
}

func (b *batchScheduler) Run(ctx context.Context) error {
	every := b.cfg.Batch.Every.D()
	if every <= 0 {
		if b.runAtStart {
			b.log.Warn("a view is backfilling and batch.every is 0: it answers once you run `tandem batch run`")
		}
		b.log.Info("batch.every is 0: no scheduled batch runs (run `tandem batch run` yourself)")
		<-ctx.Done()
		return nil
	}
	if err := os.MkdirAll(b.tmp, 0o755); err != nil {
		return err
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for first := true; ; first = false {
		if !first || !b.runAtStart {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		conf := b.cfg.Batch
		conf.TempDir = b.tmp
		deps := batch.Deps{Schema: b.cfg.Config, Store: b.store, ClickHouse: b.db, Log: b.log}
		if b.cfg.Batch.ExportAfterRun {
			deps.AfterPublish = func(ctx context.Context, _ *batch.Result) error {
				_, err := export.Run(ctx, export.Options{Config: b.cfg.Config, Store: b.store, Log: b.log, TempDir: b.tmp})
				return err
			}
		}
		var res *batch.Result
		runner, err := batch.New(conf, deps)
		if err == nil {
			res, err = runner.Run(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, batch.ErrLocked):
			b.log.Warn("scheduled batch run skipped: another run holds the lock", "err", err)
		case err != nil:
			b.log.Error("scheduled batch run failed; the next one retries", "err", err)
		default:
			b.log.Info("scheduled batch run done", "run_id", res.RunID, "up_to_date", res.UpToDate(), "duration", res.Duration.Round(time.Millisecond).String())
		}
	}
}

// sampleTraffic sends generated pageviews through the gateway so a new user
// sees numbers move without writing a producer. It is a convenience, never
// a reason to stop the platform: when the generator gives up (the gateway
// kept refusing, or could not be reached) it logs why and starts again
// after a pause that doubles up to maxPause.
type sampleTraffic struct {
	cfg  *config.Config
	rate float64
	log  *slog.Logger
	// pause is the first wait after the generator gave up (0: 5s).
	pause time.Duration
}

// maxPause bounds the wait between restarts of the sample traffic.
const maxPause = time.Minute

func (s *sampleTraffic) Run(ctx context.Context) error {
	stream := s.cfg.Streams[0]
	token := ""
	if len(s.cfg.Auth.IngestTokens) > 0 {
		token = s.cfg.Auth.IngestTokens[0]
	}
	scheme := "http"
	if s.cfg.Ingest.TLS.Enabled() {
		scheme = "https"
	}
	sink := &gen.HTTPSink{URL: scheme + "://" + s.cfg.Ingest.Listen, Stream: stream.Name, Token: token, Client: &http.Client{Timeout: time.Minute}}
	first := s.pause
	if first <= 0 {
		first = 5 * time.Second
	}
	pause := first
	for {
		// A new seed each time: ids of a restarted generator must not
		// repeat the ones already sent (they would be dropped as duplicates).
		g, err := gen.New(gen.Options{Stream: stream, Seed: uint64(time.Now().UnixNano()), Rate: s.rate,
			Batch: min(max(1, int(s.rate)), s.cfg.Ingest.MaxEventsPerRequest),
			Late:  0.02, OutOfOrder: 0.05, Dups: 0.01, Invalid: 0.005, MaxFutureSkew: s.cfg.MaxFutureSkew.D()})
		if err != nil {
			return err // a configuration the generator cannot use: no retry helps
		}
		started := time.Now()
		rep, err := g.Run(ctx, gen.RunOptions{Sink: sink})
		if ctx.Err() != nil {
			s.log.Info("sample traffic stopped", "sent", rep.Sent, "accepted", rep.Accepted)
			return nil
		}
		if err == nil {
			return nil // the generator sent all it was asked to
		}
		if time.Since(started) > maxPause {
			pause = first // it ran well for a while: start over with a short pause
		}
		s.log.Warn("sample traffic gave up; the platform keeps running and the traffic restarts after a pause",
			"err", err, "sent", rep.Sent, "accepted", rep.Accepted, "pause", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		pause = min(2*pause, maxPause)
	}
}

func printDevBanner(w *os.File, cfg *config.Config, dir string, genRate float64) {
	v := cfg.Views[0]
	var b strings.Builder
	fmt.Fprintf(&b, "\ntandem dev is up (state in %s)\n\n", dir)
	fmt.Fprintf(&b, "  ingest     http://%s/v1/streams/%s/events\n", cfg.Ingest.Listen, v.Stream)
	fmt.Fprintf(&b, "  query      http://%s/v1/views/%s/query\n", cfg.Serve.Listen, v.Name)
	fmt.Fprintf(&b, "  dashboard  http://%s/\n", cfg.Serve.Listen)
	fmt.Fprintf(&b, "  metrics    http://%s/metrics (ingest)  http://%s/metrics (speed)  http://%s/metrics (archive)  http://%s/metrics (serve)\n",
		cfg.Ingest.Listen, cfg.Speed.Listen, cfg.Archive.Listen, cfg.Serve.Listen)
	fmt.Fprintf(&b, "  kafka      %s    clickhouse %s (SQL: clickhouse-client --port %s --user analyst --password analyst)    s3 %s bucket %s\n",
		strings.Join(cfg.Kafka.Brokers, ","), cfg.ClickHouse.Addr, portString(cfg.ClickHouse.Addr), cfg.S3.Endpoint, cfg.S3.Bucket)
	if genRate > 0 {
		fmt.Fprintf(&b, "  traffic    %.0f sample %s events/s through the gateway (--gen-rate 0 turns it off)\n", genRate, v.Stream)
	}
	fmt.Fprintf(&b, "  batch      a run every %s (batch.every); or now: tandem batch run --config %s\n\n", cfg.Batch.Every, cfg.Path)
	fmt.Fprintf(&b, "Try:\n  curl -s 'http://%s/v1/views/%s/query?from=%s&to=%s&granularity=1h&group_by=country'\n\nCtrl-C stops everything.\n\n",
		cfg.Serve.Listen, v.Name, time.Now().UTC().Add(-24*time.Hour).Truncate(time.Hour).Format(time.RFC3339),
		time.Now().UTC().Add(2*time.Hour).Truncate(time.Hour).Format(time.RFC3339))
	w.WriteString(b.String())
}

func portString(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}
