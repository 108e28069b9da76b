package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
)

// FromConfig builds the service for conf on the S3 store and ClickHouse
// server schema names. It does not wait for ClickHouse: the speed source connects on
// first use and reconnects after failures, so serving starts (and answers
// from the batch view, with a warning) while ClickHouse is down. Close the
// returned closer after Run returns.
func FromConfig(conf Config, cfg *schemas.Config, reg *prometheus.Registry, log *slog.Logger) (*Service, func() error, error) {
	if reg == nil {
		return nil, nil, errors.New("serving: a registry is required")
	}
	store, err := s3.New(cfg.S3, s3.WithRegistry(reg), s3.WithLogger(log))
	if err != nil {
		return nil, nil, err
	}
	speed := &LazyClickHouseSpeed{Config: cfg.ClickHouse, ChunkSize: cfg.ChunkSize, CacheBytes: speedCacheShare(conf.cacheBytes())}
	svc, err := New(conf, Deps{Schema: cfg, Manifests: store, Leases: store, Files: S3ViewFiles{Store: store}, Speed: speed, Registry: reg, Log: log})
	if err != nil {
		return nil, nil, err
	}
	return svc, speed.Close, nil
}

// LazyClickHouseSpeed is a ClickHouseSpeed that connects on first use, and
// again on the next use after a failed connection attempt (at most once per
// retryEvery), so an unreachable ClickHouse costs each query one quick
// failure rather than the service's start.
type LazyClickHouseSpeed struct {
	Config schemas.ClickHouseConfig
	// ChunkSize and CacheBytes, when both positive, turn on the cache of
	// closed chunks' rollups (ClickHouseSpeed.CacheClosedChunks).
	ChunkSize, CacheBytes int64

	mu       sync.Mutex
	db       *clickhouse.DB
	src      *ClickHouseSpeed
	lastErr  error
	lastTry  time.Time
	connects int
}

var _ SpeedSource = (*LazyClickHouseSpeed)(nil)

const retryEvery = time.Second

func (l *LazyClickHouseSpeed) get(ctx context.Context) (*ClickHouseSpeed, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.src != nil {
		return l.src, nil
	}
	if l.lastErr != nil && time.Since(l.lastTry) < retryEvery {
		return nil, l.lastErr
	}
	l.lastTry = time.Now()
	db, err := clickhouse.Open(ctx, l.Config)
	if err != nil {
		l.lastErr = err
		return nil, err
	}
	src, err := NewClickHouseSpeed(db)
	if err != nil {
		db.Close()
		l.lastErr = err
		return nil, err
	}
	src.CacheClosedChunks(l.ChunkSize, l.CacheBytes)
	l.db, l.src, l.lastErr = db, src, nil
	l.connects++
	return src, nil
}

// ScanSpeed implements SpeedSource.
func (l *LazyClickHouseSpeed) ScanSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Row) error) error {
	src, err := l.get(ctx)
	if err != nil {
		return fmt.Errorf("connecting to ClickHouse: %w", err)
	}
	return src.ScanSpeed(ctx, q, absorbed, fn)
}

// RollupSpeed implements SpeedSource.
func (l *LazyClickHouseSpeed) RollupSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Group) error) error {
	src, err := l.get(ctx)
	if err != nil {
		return fmt.Errorf("connecting to ClickHouse: %w", err)
	}
	return src.RollupSpeed(ctx, q, absorbed, fn)
}

// MaxWindow implements SpeedSource.
func (l *LazyClickHouseSpeed) MaxWindow(ctx context.Context, v *schemas.View, absorbed map[int32]int64) (time.Time, error) {
	src, err := l.get(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("connecting to ClickHouse: %w", err)
	}
	return src.MaxWindow(ctx, v, absorbed)
}

// Ping implements SpeedSource.
func (l *LazyClickHouseSpeed) Ping(ctx context.Context) error {
	src, err := l.get(ctx)
	if err != nil {
		return err
	}
	return src.Ping(ctx)
}

// Close closes the connection pool, if one was opened.
func (l *LazyClickHouseSpeed) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.db != nil {
		err := l.db.Close()
		l.db, l.src = nil, nil
		return err
	}
	return nil
}
