package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/batch/export"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/s3"
)

// cmdBatch runs batch-layer jobs. `tandem batch run` is one run: it exits 0
// when every view is published (or up to date), non-zero with the reason
// otherwise, and is safe to retry — made for a Kubernetes CronJob.
func cmdBatch(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, "Usage: tandem batch run [--full] [--export] [--no-clickhouse] [--config FILE]")
		return errUsage
	}
	f := newFlags("batch run", "batch run [--full] [--export] [--no-clickhouse] [--config FILE]")
	full := f.Bool("full", false, "recompute every day instead of carrying unchanged days over from the previous run")
	doExport := f.Bool("export", false, "write the data-lake export after the run (also batch.export_after_run)")
	noCH := f.Bool("no-clickhouse", false, "do not load the run into ClickHouse nor delete absorbed speed rows")
	tmp := f.String("tmp", "", "directory for spill files (default $TMPDIR)")
	cfg, log, err := f.load(args[1:])
	if err != nil {
		return err
	}
	st, err := s3.New(cfg.S3, s3.WithLogger(log))
	if err != nil {
		return err
	}
	if err := st.EnsureBucket(ctx); err != nil {
		return fmt.Errorf("S3 at %s is not usable: %w", cfg.S3.Endpoint, err)
	}
	conf := cfg.Batch
	conf.Full, conf.TempDir = *full, *tmp
	deps := batch.Deps{Schema: cfg.Config, Store: st, Log: log}
	if !*noCH {
		openCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		db, err := clickhouse.Open(openCtx, cfg.ClickHouse)
		cancel()
		if err != nil {
			return fmt.Errorf("%w (use --no-clickhouse to publish to S3 only)", err)
		}
		defer db.Close()
		deps.ClickHouse = db
	}
	if *doExport || cfg.Batch.ExportAfterRun {
		deps.AfterPublish = func(ctx context.Context, _ *batch.Result) error {
			_, err := export.Run(ctx, export.Options{Config: cfg.Config, Store: st, Log: log, TempDir: *tmp})
			return err
		}
	}
	runner, err := batch.New(conf, deps)
	if err != nil {
		return err
	}
	res, err := runner.Run(ctx)
	if err != nil {
		return err
	}
	for _, v := range res.Views {
		if v.Manifest == nil {
			log.Info("batch run: view has nothing absorbed yet", "view", v.View)
			continue
		}
		m := v.Manifest
		log.Info("batch run: view", "view", v.View, "published", v.Published, "run_id", m.RunID, "rows", m.Rows,
			"events", m.Events, "duplicates", m.Duplicates, "invalid", m.Invalid, "absorbed", m.Absorbed,
			"incremental", v.Incremental, "days_computed", v.DaysComputed, "days_kept", v.DaysKept)
	}
	status := "published"
	if res.UpToDate() {
		status = "up to date"
	}
	log.Info("batch run: done", "status", status, "run_id", res.RunID, "views", len(res.Views), "duration", res.Duration.Round(time.Millisecond).String())
	return nil
}
