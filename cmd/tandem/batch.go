package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
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
	const synopsis = "batch run [--full] [--export] [--no-clickhouse] [--config FILE] [--workers N | --run NAME --worker I/N [--no-publish] | --run NAME --workers N --publish]"
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, "Usage: tandem "+synopsis)
		return errUsage
	}
	f := newFlags("batch run", synopsis)
	full := f.Bool("full", false, "recompute every day instead of carrying unchanged days over from the previous run")
	doExport := f.Bool("export", false, "write the data-lake export after the run (also batch.export_after_run)")
	noCH := f.Bool("no-clickhouse", false, "do not load the run into ClickHouse nor delete absorbed speed rows; refused once a view changed (the view versions are read from ClickHouse)")
	tmp := f.String("tmp", "", "directory for spill files (default $TMPDIR)")
	workers := f.Int("workers", 0, "split the run over N worker processes (scan by Kafka partition, aggregation by day, one publish); without --worker or --publish, start them here and publish")
	worker := f.String("worker", "", "I/N: be worker I of N of the split run --run (a Kubernetes Indexed Job's JOB_COMPLETION_INDEX); worker 0 publishes once every part is in")
	runName := f.String("run", "", "name of the split run shared by its workers and publisher (e.g. the Job's name)")
	noPublish := f.Bool("no-publish", false, "with --worker: do not publish, even as worker 0")
	publish := f.Bool("publish", false, "publish the split run --run once every worker's part is in")
	wait := f.Duration("wait", 30*time.Minute, "how long a split run's process waits for the other workers' parts")
	cfg, log, err := f.load(args[1:])
	if err != nil {
		return err
	}
	split, err := splitFlags(*workers, *worker, *runName, *publish, *noPublish, *wait)
	if err != nil {
		return err
	}
	// A worker that does not publish needs no ClickHouse and reports only
	// its part.
	quietWorker := split.Workers > 0 && split.Worker >= 0 && !split.Publish
	st, err := s3.New(cfg.S3, s3.WithLogger(log))
	if err != nil {
		return err
	}
	if err := st.EnsureBucket(ctx); err != nil {
		return fmt.Errorf("S3 at %s is not usable: %w", cfg.S3.Endpoint, err)
	}
	conf := cfg.Batch
	conf.Full, conf.TempDir, conf.Split = *full, *tmp, split
	deps := batch.Deps{Schema: cfg.Config, Store: st, Log: log}
	if *noCH {
		// Without ClickHouse the run cannot know the views' versions: it
		// refuses when S3 shows a view changed, rather than compute the
		// configured definition into the storage of the one answering.
		if err := batch.CheckWithoutRegistry(ctx, st, cfg.Config); err != nil {
			return err
		}
	}
	if !*noCH && quietWorker {
		// A worker loads nothing into ClickHouse, but computes the views
		// the publisher does: every version, by its physical name.
		openCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		db, err := clickhouse.Open(openCtx, cfg.ClickHouse)
		if err == nil {
			deps.Schema, err = db.Versioned(openCtx, cfg.Config)
			db.Close()
		}
		cancel()
		if err != nil {
			return fmt.Errorf("reading the view versions: %w (use --no-clickhouse only before any view changed)", err)
		}
	}
	if !*noCH && !quietWorker {
		openCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		db, err := clickhouse.Open(openCtx, cfg.ClickHouse)
		cancel()
		if err != nil {
			return fmt.Errorf("%w (use --no-clickhouse to publish to S3 only)", err)
		}
		defer db.Close()
		deps.ClickHouse = db
	}
	if (*doExport || cfg.Batch.ExportAfterRun) && !quietWorker {
		deps.AfterPublish = func(ctx context.Context, _ *batch.Result) error {
			_, err := export.Run(ctx, export.Options{Config: cfg.Config, Store: st, Log: log, TempDir: *tmp})
			return err
		}
	}
	if split.Workers > 0 && split.Worker == -1 && !*publish {
		// The local form: N worker processes of this binary, then the
		// publish in this one (S3 and ClickHouse checked first).
		if err := spawnWorkers(ctx, log, &split, args[1:]); err != nil {
			return err
		}
	}
	runner, err := batch.New(conf, deps)
	if err != nil {
		return err
	}
	res, err := runner.Run(ctx)
	if errors.Is(err, batch.ErrSplitPublished) {
		log.Info("batch run: " + err.Error() + "; this worker has nothing left to do")
		return nil
	}
	if err != nil {
		return err
	}
	if quietWorker {
		log.Info("batch run: worker done", "run", split.Name, "worker", *worker, "run_id", res.RunID, "duration", res.Duration.Round(time.Millisecond).String(),
			"peak_rss_mb", peakRSS()>>20)
		return nil
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

// splitFlags turns the split-run flags into batch.SplitOptions (zero: a
// one-process run), refusing combinations that name no run or no N.
func splitFlags(workers int, worker, name string, publish, noPublish bool, wait time.Duration) (batch.SplitOptions, error) {
	so := batch.SplitOptions{Name: name, Workers: workers, Worker: -1, Wait: wait}
	switch {
	case worker != "":
		i, n, err := batch.ParseWorker(worker)
		if err != nil {
			return so, err
		}
		if workers != 0 && workers != n {
			return so, fmt.Errorf("--worker %s and --workers %d disagree on N", worker, workers)
		}
		if publish {
			return so, errors.New("--publish is for the publishing process; a worker publishes as worker 0 (or never, with --no-publish)")
		}
		if name == "" {
			return so, errors.New("--worker needs --run NAME, the split run's name shared by its workers (e.g. the Kubernetes Job's name)")
		}
		so.Worker, so.Workers, so.Publish = i, n, i == 0 && !noPublish
	case publish:
		if name == "" || workers < 1 {
			return so, errors.New("--publish needs --run NAME and --workers N of the split run")
		}
	case noPublish:
		return so, errors.New("--no-publish is for a worker (--worker I/N)")
	case workers == 0:
		if name != "" {
			return so, errors.New("--run names a split run: give --workers N (and --worker I/N for one worker)")
		}
		return batch.SplitOptions{}, nil
	case workers < 0:
		return so, fmt.Errorf("--workers must be at least 1, got %d", workers)
	default:
		if name == "" {
			so.Name = "local-" + time.Now().UTC().Format("20060102T150405Z")
		}
	}
	return so, so.Validate()
}

// spawnWorkers runs the N workers of split run so as processes of this
// binary with the same flags (their logs go to stderr, each line naming
// its worker), waits for them all, and logs each one's peak RSS.
func spawnWorkers(ctx context.Context, log interface{ Info(string, ...any) }, so *batch.SplitOptions, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var keep []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
		switch name {
		case "workers", "run", "export":
			if !strings.Contains(a, "=") && name != "export" {
				i++ // its value
			}
			continue
		}
		keep = append(keep, a)
	}
	errs := make([]error, so.Workers)
	var wg sync.WaitGroup
	for i := 0; i < so.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wargs := append([]string{"batch", "run"}, keep...)
			// Each worker reads the view versions from ClickHouse, as the
			// publisher does, unless this run was given --no-clickhouse
			// (kept in keep): all of them compute the same views.
			wargs = append(wargs, "--run", so.Name, "--worker", fmt.Sprintf("%d/%d", i, so.Workers), "--no-publish")
			cmd := exec.CommandContext(ctx, exe, wargs...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			t0 := time.Now()
			err := cmd.Run()
			// Each worker logs its own peak RSS ("worker done"): the
			// child's ru_maxrss would include this process's (Linux keeps
			// it across the exec).
			log.Info("batch run: worker process exited", "run", so.Name, "worker", fmt.Sprintf("%d/%d", i, so.Workers), "duration", time.Since(t0).Round(time.Millisecond).String())
			if err != nil {
				errs[i] = fmt.Errorf("worker %d/%d: %w", i, so.Workers, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// peakRSS is this process's peak resident set (VmHWM) in bytes; 0 where
// /proc is not there.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
