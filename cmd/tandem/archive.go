package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/s3"
)

// cmdArchive runs the archiver: every stream's Kafka topic → raw Parquet
// objects in S3, exactly once, with /healthz, /readyz and /metrics on
// archive.listen. SIGTERM uploads the open files before exiting.
func cmdArchive(ctx context.Context, args []string) error {
	f := newFlags("archive", "archive [--config FILE] [--tmp-dir DIR]")
	tmpDir := f.String("tmp-dir", "", "folder for the Parquet files being built (default: tandem-archive in the system temp dir)")
	session := f.Duration("session-timeout", 10*time.Second, "consumer-group session timeout: how long a crashed archiver keeps its partitions")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	conf := cfg.Archive
	conf.TmpDir, conf.SessionTimeout = *tmpDir, *session
	arch, err := newArchiver(ctx, cfg, conf, reg, log)
	if err != nil {
		return err
	}
	srv, err := opsServer("archive-http", cfg.Archive.Listen, cfg.Auth.MetricsTokens, reg, arch, log)
	if err != nil {
		return err
	}
	return ops.RunAll(ctx, log, ops.Named{Name: "archive", Component: arch}, ops.Named{Name: "archive-http", Component: srv})
}

// newArchiver wires the archiver to the configured S3 bucket and Kafka
// cluster; `tandem dev` can use it too. S3 or Kafka being down at start is
// not fatal: the archiver waits for them (and /readyz says so).
func newArchiver(ctx context.Context, cfg *config.Config, conf archive.Config, reg prometheus.Registerer, log *slog.Logger) (*archive.Archiver, error) {
	store, err := s3.New(cfg.S3, s3.WithRegistry(reg), s3.WithLogger(log))
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := store.EnsureBucket(bctx); err != nil {
		log.Warn("cannot make sure the bucket exists; uploads will retry", "bucket", cfg.S3.Bucket, "err", err)
	}
	cancel()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := kafka.EnsureTopics(tctx, cfg.Kafka.Brokers, cfg.Config); err != nil {
		log.Warn("cannot make sure the stream topics exist", "err", err)
	}
	cancel()
	return archive.New(conf, archive.Deps{Schema: cfg.Config, Store: store, Registry: reg, Log: log})
}
