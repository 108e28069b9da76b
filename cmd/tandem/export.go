package main

import (
	"context"
	"fmt"

	"github.com/tandem-analytics/tandem/batch/export"
	"github.com/tandem-analytics/tandem/internal/s3"
)

// cmdExport writes the data-lake export (lake/<stream>/dt=.../part-*.parquet
// and _SUCCESS) up to the absorbed offsets of the current batch runs. Days
// whose content did not change are left alone, so it is cheap to repeat.
func cmdExport(ctx context.Context, args []string) error {
	f := newFlags("export", "export [--config FILE] [--tmp DIR]")
	tmp := f.String("tmp", "", "directory for spill files (default $TMPDIR)")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	st, err := s3.New(cfg.S3, s3.WithLogger(log))
	if err != nil {
		return err
	}
	res, err := export.Run(ctx, export.Options{Config: cfg.Config, Store: st, Log: log, TempDir: *tmp})
	if err != nil {
		return err
	}
	if len(res.Streams) == 0 {
		return fmt.Errorf("nothing exported: no stream has a published batch run yet (run `tandem batch run` first)")
	}
	return nil
}
