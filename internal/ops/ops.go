// Package ops holds what every long-running component exposes to operators:
// /healthz, /readyz and /metrics, and the way components run side by side.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Component is a long-running part of the platform. Run blocks until ctx is
// cancelled or the component fails; on cancellation it shuts down
// gracefully (finishing in-flight work, flushing what it holds) and returns nil.
type Component interface {
	Run(ctx context.Context) error
}

// ReadyChecker is implemented by components that can say whether they are
// able to do their work right now (dependencies reachable, not stalled).
type ReadyChecker interface {
	Ready() error
}

// NewRegistry returns a registry with the Go runtime and process collectors,
// the base every component registers its tandem_* metrics on.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Mount adds /healthz, /readyz and /metrics to mux. /readyz answers 503 with
// the reason when any checker is not ready. /metrics is open; MountAuth puts
// it behind tokens.
func Mount(mux *http.ServeMux, reg prometheus.Gatherer, checkers ...ReadyChecker) {
	MountAuth(mux, reg, nil, checkers...)
}

// MetricsAuthEndpoint is the endpoint label of refused /metrics requests in
// tandem_auth_failures_total.
const MetricsAuthEndpoint = "metrics"

// MountAuth is Mount with /metrics behind metrics (auth.metrics_tokens; nil
// or no tokens: open). /healthz and /readyz stay open: probes carry no
// tokens and say nothing an attacker could use.
func MountAuth(mux *http.ServeMux, reg prometheus.Gatherer, metrics *Bearer, checkers ...ReadyChecker) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		for _, c := range checkers {
			if err := c.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", metrics.Wrap("tandem-metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil))
}

// Timeouts are the deadlines of one listener (net/http's meanings). Zero
// fields take DefaultTimeouts' values.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, headers and body: a client that
	// sends its body slower is cut off here, and what it held is released.
	Read time.Duration
	// Write bounds everything after the headers were read: reading the
	// body, handling and writing the answer. A client that does not read
	// its answer holds the handler at most this long.
	Write time.Duration
	// Idle bounds a kept-alive connection waiting for its next request.
	Idle time.Duration
}

// DefaultTimeouts are the deadlines of a listener that sets none: the ops
// listeners (speed, archive) answer small requests only.
var DefaultTimeouts = Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: time.Minute, Idle: 2 * time.Minute}

func (t Timeouts) withDefaults() Timeouts {
	pick := func(v, d time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return d
	}
	return Timeouts{
		ReadHeader: pick(t.ReadHeader, DefaultTimeouts.ReadHeader),
		Read:       pick(t.Read, DefaultTimeouts.Read),
		Write:      pick(t.Write, DefaultTimeouts.Write),
		Idle:       pick(t.Idle, DefaultTimeouts.Idle),
	}
}

// HTTPServer runs an http.Server as a Component: it listens on Addr and, when
// ctx is cancelled, stops accepting and waits up to ShutdownTimeout for
// in-flight requests.
type HTTPServer struct {
	Name            string
	Addr            string
	Handler         http.Handler
	CertFile        string // both set: serve HTTPS
	KeyFile         string
	ShutdownTimeout time.Duration
	// Timeouts are the listener's deadlines; zero fields are DefaultTimeouts'.
	Timeouts Timeouts
	Log      *slog.Logger

	mu       sync.Mutex
	listener net.Listener
}

// Listen binds the address now, so callers learn of a taken port before
// anything else starts. Run calls it when it has not been called.
func (s *HTTPServer) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", s.Name, s.Addr, err)
	}
	s.listener = l
	return nil
}

// BoundAddr is the address actually listened on (useful with port 0).
func (s *HTTPServer) BoundAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return s.Addr
	}
	return s.listener.Addr().String()
}

// Run serves until ctx is cancelled.
func (s *HTTPServer) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	t := s.Timeouts.withDefaults()
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: t.Write, IdleTimeout: t.Idle}
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.CertFile != "" && s.KeyFile != "" {
			err = srv.ServeTLS(s.listener, s.CertFile, s.KeyFile)
		} else {
			err = srv.Serve(s.listener)
		}
		errc <- err
	}()
	log.Info("listening", "component", s.Name, "addr", s.BoundAddr(), "tls", s.CertFile != "")
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", s.Name, err)
	case <-ctx.Done():
	}
	timeout := s.ShutdownTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", s.Name, err)
	}
	return nil
}

// Named pairs a component with the name used in logs and errors.
type Named struct {
	Name      string
	Component Component
}

// RunAll runs the components until ctx is cancelled or one of them fails;
// then it cancels the rest and waits for all of them to return. It returns
// the first failure.
func RunAll(ctx context.Context, log *slog.Logger, comps ...Named) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for _, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Component.Run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("component failed", "component", c.Name, "err", err)
				once.Do(func() { firstErr = fmt.Errorf("%s: %w", c.Name, err) })
				cancel()
				return
			}
			log.Info("component stopped", "component", c.Name)
		}()
	}
	wg.Wait()
	return firstErr
}
