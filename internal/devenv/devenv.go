// Package devenv starts the services `tandem dev` runs the platform on: an
// embedded Kafka-protocol broker, S3 (a local MinIO when installed, else an
// embedded S3 on disk) and a local ClickHouse server, all at the addresses
// the configuration names and all keeping their state under one data
// directory, so a restart — even after kill -9 — resumes with the data it had
// and other `tandem` commands given the same config reach the same services.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/spf13/afero"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tandem-analytics/tandem/internal/kfakegroups"
	"github.com/tandem-analytics/tandem/schemas"
)

// Env is the set of running services. Close stops what this process started.
type Env struct {
	log      *slog.Logger
	broker   *kfake.Cluster
	s3srv    *http.Server
	stoppers []func()
}

// Options says where state lives and where the project's scripts are.
type Options struct {
	DataDir string
	// ScriptsDir holds clickhouse.sh and minio.sh (the repository's scripts/).
	// When it has no clickhouse.sh (tandem dev started outside the
	// repository), the scripts come from Files.
	ScriptsDir string
	// Files are the scripts and the templates they use at their repository
	// paths (tandem.DevFiles, embedded in the binary); they are written
	// under DataDir/embedded when ScriptsDir lacks the scripts.
	Files fs.FS
	// KeepServices leaves ClickHouse and MinIO running on Close, so the next
	// `tandem dev` (or another command) finds them warm.
	KeepServices bool
	Log          *slog.Logger
}

// Start brings up every service the configuration points at.
func Start(ctx context.Context, cfg *schemas.Config, opts Options) (*Env, error) {
	e := &Env{log: opts.Log}
	if e.log == nil {
		e.log = slog.Default()
	}
	if err := refuseSecurity(cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("dev: data dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(opts.ScriptsDir, "clickhouse.sh")); err != nil && opts.Files != nil {
		dir, err := extractScripts(opts.Files, filepath.Join(opts.DataDir, "embedded"))
		if err != nil {
			return nil, err
		}
		opts.ScriptsDir = dir
	}
	steps := []func() error{
		func() error { return e.startBroker(cfg, filepath.Join(opts.DataDir, "kafka")) },
		func() error { return e.startS3(ctx, cfg, opts) },
		func() error { return e.startClickHouse(ctx, cfg, opts) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// extractScripts writes files under dir (replacing what an older binary
// wrote there) and returns the folder of the scripts.
func extractScripts(files fs.FS, dir string) (string, error) {
	err := fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	})
	if err != nil {
		return "", fmt.Errorf("dev: writing the embedded scripts under %s: %w", dir, err)
	}
	return filepath.Join(dir, "scripts"), nil
}

// Close stops the services in reverse order.
func (e *Env) Close() {
	for i := len(e.stoppers) - 1; i >= 0; i-- {
		e.stoppers[i]()
	}
	e.stoppers = nil
}

// refuseSecurity: the development services are plaintext on loopback, so
// a configuration asking for TLS or SASL towards them could never connect;
// say so at once rather than after a handshake times out.
func refuseSecurity(cfg *schemas.Config) error {
	var keys []string
	if cfg.Kafka.TLS.On() {
		keys = append(keys, "kafka.tls")
	}
	if cfg.Kafka.SASL.On() {
		keys = append(keys, "kafka.sasl")
	}
	if cfg.ClickHouse.TLS.On() {
		keys = append(keys, "clickhouse.tls")
	}
	if cfg.S3.TLS.On() {
		keys = append(keys, "s3.tls")
	}
	if len(keys) > 0 {
		return fmt.Errorf("dev: the development services speak plaintext on loopback; remove %s from the configuration (they are for deployed services)", strings.Join(keys, ", "))
	}
	return nil
}

func portOf(addr string) (int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	if host != "127.0.0.1" && host != "localhost" {
		return 0, fmt.Errorf("dev services listen on loopback only; %q is not 127.0.0.1", addr)
	}
	return strconv.Atoi(p)
}

func (e *Env) startBroker(cfg *schemas.Config, dir string) error {
	port, err := portOf(cfg.Kafka.Brokers[0])
	if err != nil {
		return fmt.Errorf("dev: kafka.brokers[0]: %w", err)
	}
	c, err := kfake.NewCluster(kfake.Ports(port), kfake.DataDir(dir), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		return fmt.Errorf("dev: embedded Kafka broker on %s: %w (is another broker running there?)", cfg.Kafka.Brokers[0], err)
	}
	e.broker = c
	e.stoppers = append(e.stoppers, c.Close)
	// Separately started tandem processes join groups on this broker; one
	// killed mid-rebalance must not keep its partitions forever.
	reaper := kfakegroups.StartSessionReaper(c, []string{cfg.Kafka.Brokers[0]})
	e.stoppers = append(e.stoppers, reaper.Close)
	e.log.Info("embedded Kafka-protocol broker", "addr", cfg.Kafka.Brokers[0], "data", dir)
	return nil
}

// startS3 runs MinIO through scripts/minio.sh when it is installed (the real
// server, with credentials), and otherwise an embedded S3 that keeps objects
// as files under the data dir.
func (e *Env) startS3(ctx context.Context, cfg *schemas.Config, opts Options) error {
	port, err := portOf(cfg.S3.Endpoint)
	if err != nil {
		return fmt.Errorf("dev: s3.endpoint: %w", err)
	}
	script := filepath.Join(opts.ScriptsDir, "minio.sh")
	if minioInstalled(script) {
		env := []string{
			"TANDEM_MINIO_DIR=" + filepath.Join(opts.DataDir, "minio"),
			"TANDEM_MINIO_PORT=" + strconv.Itoa(port),
			// No console port: minio.sh takes 9101 or the next free one, and
			// moves on if another MinIO takes it first (the port after the
			// S3 port may belong to anything).
			"MINIO_ROOT_USER=" + cfg.S3.AccessKey,
			"MINIO_ROOT_PASSWORD=" + cfg.S3.SecretKey,
		}
		if err := runScript(ctx, script, "start", env); err != nil {
			return fmt.Errorf("dev: MinIO: %w", err)
		}
		if !opts.KeepServices {
			e.stoppers = append(e.stoppers, func() { _ = runScript(context.Background(), script, "stop", env) })
		}
		e.log.Info("MinIO", "endpoint", cfg.S3.Endpoint, "data", filepath.Join(opts.DataDir, "minio"))
		return nil
	}
	dir := filepath.Join(opts.DataDir, "s3")
	handler, err := EmbeddedS3(dir, cfg.S3.Bucket)
	if err != nil {
		return fmt.Errorf("dev: embedded S3: %w", err)
	}
	l, err := net.Listen("tcp", cfg.S3.Endpoint)
	if err != nil {
		return fmt.Errorf("dev: embedded S3 on %s: %w", cfg.S3.Endpoint, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("embedded S3 stopped", "err", err)
		}
	}()
	e.s3srv = srv
	e.stoppers = append(e.stoppers, func() { _ = srv.Close() })
	e.log.Warn("MinIO is not installed (run `make deps`); using an embedded S3 that checks no credentials", "endpoint", cfg.S3.Endpoint, "data", dir)
	return nil
}

// EmbeddedS3 is the S3 server `tandem dev` runs when MinIO is not
// installed: gofakes3 keeping objects as files under dir, with bucket
// created. internal/s3's acceptance test runs against it too.
func EmbeddedS3(dir, bucket string) (http.Handler, error) {
	if err := os.MkdirAll(filepath.Join(dir, bucket), 0o755); err != nil {
		return nil, err
	}
	backend, err := s3afero.MultiBucket(afero.NewBasePathFs(afero.NewOsFs(), dir))
	if err != nil {
		return nil, err
	}
	return gofakes3.New(backend, gofakes3.WithAutoBucket(true)).Server(), nil
}

func minioInstalled(script string) bool {
	if _, err := os.Stat(script); err != nil {
		return false
	}
	if _, err := exec.LookPath("minio"); err == nil {
		return true
	}
	home, _ := os.UserHomeDir()
	cache := os.Getenv("TANDEM_CACHE")
	if cache == "" {
		cache = filepath.Join(home, ".cache", "tandem")
	}
	_, err := os.Stat(filepath.Join(cache, "bin", "minio"))
	return err == nil
}

// startClickHouse runs scripts/clickhouse.sh start, which is idempotent: a
// server left running by a killed `tandem dev` is reused as it is.
func (e *Env) startClickHouse(ctx context.Context, cfg *schemas.Config, opts Options) error {
	port, err := portOf(cfg.ClickHouse.Addr)
	if err != nil {
		return fmt.Errorf("dev: clickhouse.addr: %w", err)
	}
	script := filepath.Join(opts.ScriptsDir, "clickhouse.sh")
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("dev: %s not found (and no embedded scripts to use): %w", script, err)
	}
	env := []string{
		"TANDEM_CH_DIR=" + filepath.Join(opts.DataDir, "clickhouse"),
		"TANDEM_CH_PORT=" + strconv.Itoa(port),
		"TANDEM_CH_HTTP_PORT=" + strconv.Itoa(httpPort(port+123)),
	}
	if err := runScript(ctx, script, "start", env); err != nil {
		return fmt.Errorf("dev: ClickHouse: %w (install it with `make deps`)", err)
	}
	if !opts.KeepServices {
		e.stoppers = append(e.stoppers, func() { _ = runScript(context.Background(), script, "stop", env) })
	}
	e.log.Info("ClickHouse", "addr", cfg.ClickHouse.Addr, "data", filepath.Join(opts.DataDir, "clickhouse"))
	return nil
}

func runScript(ctx context.Context, script, verb string, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, verb)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(script), verb, err, out)
	}
	return nil
}

// httpPort returns want when it is free on loopback, else a free port: only
// the native port is part of tandem's contract, so ClickHouse's HTTP port
// may move rather than fail start-up.
func httpPort(want int) int {
	if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(want))); err == nil {
		l.Close()
		return want
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return want
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
