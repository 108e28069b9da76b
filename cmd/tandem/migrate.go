package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// cmdMigrate creates or checks tandem's ClickHouse tables and views.
func cmdMigrate(ctx context.Context, args []string) error {
	f := newFlags("migrate", "migrate [--config FILE] [--dry-run [--server-version X.Y]] [--recreate VIEW]... [--recreate-changed] [--drop-removed]")
	dryRun := f.Bool("dry-run", false, "print what applying the configuration does to each view and stream (new, unchanged, definition changed, removed), then the DDL; change nothing")
	recreateChanged := f.Bool("recreate-changed", false, "recreate the tables of every raw_events stream (and view whose tables predate view versions) whose definition changed (what tandem dev does); such a view is backfilling until the next batch run. A changed view otherwise becomes a new version, its old one answering meanwhile")
	dropRemoved := f.Bool("drop-removed", false, "drop the tables and views of views and raw_events streams no longer in the configuration")
	serverVersion := f.String("server-version", "", "with --dry-run: print the DDL for this ClickHouse version (e.g. 18.16, 24.8) without connecting")
	var recreate stringList
	f.Var(&recreate, "recreate", "drop and recreate the tables of this view or raw_events stream, losing their rows (repeatable); use after changing its definition")
	cfg, log, err := f.load(args)
	if err != nil {
		return err
	}
	if *serverVersion != "" && !*dryRun {
		return fmt.Errorf("--server-version only applies with --dry-run")
	}
	if *dryRun && *serverVersion != "" {
		v, err := clickhouse.ParseVersion(*serverVersion)
		if err != nil {
			return fmt.Errorf("--server-version: %w", err)
		}
		printDDL(cfg.ClickHouse.Database, v, clickhouse.DDL(cfg.Config, v))
		return nil
	}

	openCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	db, err := clickhouse.Open(openCtx, cfg.ClickHouse)
	cancel()
	if err != nil {
		return err
	}
	defer db.Close()
	if *dryRun {
		plan, err := db.Plan(ctx, cfg.Config)
		if err != nil {
			return err
		}
		fmt.Print(plan.String())
		fmt.Println()
		printDDL(cfg.ClickHouse.Database, db.ServerVersion(), clickhouse.DDL(cfg.Config, db.ServerVersion()))
		return nil
	}
	log.Info("migrating ClickHouse", "addr", cfg.ClickHouse.Addr, "database", cfg.ClickHouse.Database, "server_version", db.ServerVersion().String())
	if *recreateChanged {
		plan, err := db.Plan(ctx, cfg.Config)
		if err != nil {
			return err
		}
		for _, o := range plan.With(clickhouse.OwnerChanged) {
			if !slices.Contains(recreate, o) {
				recreate = append(recreate, o)
			}
		}
	}
	rep, err := db.Migrate(ctx, cfg.Config, recreate...)
	fmt.Fprint(os.Stdout, rep.String())
	if err != nil {
		return err
	}
	plan, err := db.Plan(ctx, cfg.Config)
	if err != nil {
		return err
	}
	removed := plan.With(clickhouse.OwnerRemoved)
	switch {
	case *dropRemoved:
		dropped, err := db.DropRemoved(ctx, cfg.Config)
		for _, o := range dropped {
			fmt.Printf("  dropped    the objects of %s, no longer configured\n", o)
		}
		return err
	case len(removed) > 0:
		fmt.Printf("  no longer configured, objects kept: %s (tandem migrate --drop-removed drops them)\n", strings.Join(removed, ", "))
	}
	return nil
}

func printDDL(database string, v clickhouse.Version, stmts []clickhouse.Statement) {
	fmt.Printf("-- tandem ClickHouse DDL for server version %s, database %s\n", v, database)
	for _, s := range stmts {
		fmt.Printf("\n%s;\n", s.SQL)
	}
}
