// Command tandem is the one binary of the tandem platform. Each subcommand
// runs one component (ingest, speed, archive, serve), a job (batch run,
// export, migrate), a tool (status, gen, config check) or, with dev, all of
// them in one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/schemas"
)

// Set by the linker: -X main.version=... -X main.commit=...
var (
	version = "dev"
	commit  = "unknown"
)

// command is one subcommand. run gets the arguments after the command's
// name; it returns errUsage for bad flags (the usage is printed already).
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

var errUsage = errors.New("usage")

// errNotYet marks a command the running version does not provide.
var errNotYet = errors.New("not yet available in this version of tandem")

func commands() []command {
	return []command{
		{"dev", "run the whole platform in one process on embedded services", cmdDev},
		{"ingest", "run the HTTP ingest gateway (events → Kafka)", cmdIngest},
		{"speed", "run the speed layer (Kafka → windowed aggregates in ClickHouse)", cmdSpeed},
		{"archive", "run the archiver (Kafka → Parquet master dataset in S3)", cmdArchive},
		{"batch", "batch layer jobs: `tandem batch run` recomputes and publishes every view", cmdBatch},
		{"serve", "run the query API and web dashboard", cmdServe},
		{"export", "write the deduplicated data-lake export (Hive-partitioned Parquet)", cmdExport},
		{"status", "print the health report; exits non-zero when something is red", cmdStatus},
		{"gen", "generate load: realistic events with late, duplicate and invalid ones", cmdGen},
		{"migrate", "create or check the ClickHouse tables and views", cmdMigrate},
		{"config", "configuration tools: `tandem config check` validates the file", cmdConfig},
		{"probe", "check an HTTP endpoint (container health checks): exits 0 on a 2xx answer", cmdProbe},
		{"version", "print the version and commit", cmdVersion},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := c.run(ctx, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "tandem %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "tandem: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "tandem %s: exact, fresh analytics over event streams (Lambda architecture)\n\nUsage: tandem <command> [flags]\n\nCommands:\n", version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nEvery command reads --config (default %s; ${ENV} references expand).\nRun `tandem <command> --help` for its flags. Docs: docs/README.md\n", schemas.DefaultConfigPath)
}

// flags is the flag set every command starts from: --config and logging.
type flags struct {
	*flag.FlagSet
	config   string
	logLevel string
	logJSON  bool
}

func newFlags(name, synopsis string) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("tandem "+name, flag.ContinueOnError)}
	f.StringVar(&f.config, "config", envOr("TANDEM_CONFIG", schemas.DefaultConfigPath), "configuration file (env TANDEM_CONFIG)")
	f.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&f.logJSON, "log-json", false, "log JSON lines instead of text")
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "Usage: tandem %s\n\n", synopsis)
		f.PrintDefaults()
	}
	return f
}

// parse parses args, turning flag errors into errUsage.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// load parses args, sets up logging and reads the configuration.
func (f *flags) load(args []string) (*config.Config, *slog.Logger, error) {
	if err := f.parse(args); err != nil {
		return nil, nil, err
	}
	log := newLogger(f.logLevel, f.logJSON)
	slog.SetDefault(log)
	path := f.config
	if !f.configSet() {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			// A fresh checkout has only the example; using it by default is
			// what lets `tandem dev` work with no setup.
			path = exampleConfigPath
			log.Info("no tandem.yaml here; using the example configuration", "config", path)
		}
	}
	cfg, err := config.LoadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}

// exampleConfigPath is the configuration shipped with the repository.
const exampleConfigPath = "tandem.example.yaml"

// configSet reports whether --config (or TANDEM_CONFIG) was given.
func (f *flags) configSet() bool {
	set := os.Getenv("TANDEM_CONFIG") != ""
	f.Visit(func(fl *flag.Flag) {
		if fl.Name == "config" {
			set = true
		}
	})
	return set
}

func newLogger(level string, asJSON bool) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if asJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func cmdVersion(_ context.Context, args []string) error {
	f := newFlags("version", "version")
	if err := f.parse(args); err != nil {
		return err
	}
	fmt.Printf("tandem %s (commit %s)\n", version, commit)
	return nil
}

func cmdConfig(_ context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "validate") {
		fmt.Fprintln(os.Stderr, "Usage: tandem config check [--config FILE]")
		return errUsage
	}
	f := newFlags("config check", "config check [--config FILE]")
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	cfg, err := config.LoadFile(f.config)
	if err != nil {
		return err
	}
	fmt.Printf("%s: ok (%d streams, %d views, chunk_size %d)\n", f.config, len(cfg.Streams), len(cfg.Views), cfg.ChunkSize)
	for _, v := range cfg.Views {
		names := make([]string, len(v.Measures))
		for i, m := range v.Measures {
			names[i] = m.Name
		}
		fmt.Printf("  view %s on %s: %s windows by [%s], measures [%s]\n", v.Name, v.Stream, v.Granularity, strings.Join(v.Dimensions, ", "), strings.Join(names, ", "))
	}
	return nil
}
