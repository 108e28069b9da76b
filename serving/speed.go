package serving

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
)

// SpeedStore is what the speed source needs from ClickHouse: the
// adapter's speed-row queries. *clickhouse.DB implements it; serving keeps
// no SQL of its own.
type SpeedStore interface {
	// ScanSpeedRows calls fn for each speed row q selects, newest version
	// of each row only (FINAL); the row is reused after fn returns.
	ScanSpeedRows(ctx context.Context, q clickhouse.SpeedQuery, fn func(*clickhouse.SpeedRow) error) error
	// ScanSpeedRollup calls fn for each (bucket, group) of q, computed in
	// ClickHouse from the newest version of each row.
	ScanSpeedRollup(ctx context.Context, q clickhouse.SpeedRollupQuery, fn func(*clickhouse.SpeedRollupRow) error) error
	// MaxSpeedWindow returns the newest window start among the view's speed
	// rows of unabsorbed chunks, or the zero time when there are none.
	MaxSpeedWindow(ctx context.Context, v *schemas.View, absorbed map[int32]int64) (time.Time, error)
	// SpeedProgress returns the highest version per partition.
	SpeedProgress(ctx context.Context, v *schemas.View) (map[int32]int64, error)
	// SpeedProgressFrom returns SpeedProgress's answer, reading of each
	// partition listed only the chunks from the one given on.
	SpeedProgressFrom(ctx context.Context, v *schemas.View, from map[int32]int64) (map[int32]int64, error)
	// SpeedChunkSpans returns the window span of the listed chunks.
	SpeedChunkSpans(ctx context.Context, v *schemas.View, chunks map[int32][]int64) (map[int32]map[int64]clickhouse.ChunkSpan, error)
	// Ping checks that ClickHouse answers.
	Ping(ctx context.Context) error
}

var _ SpeedStore = (*clickhouse.DB)(nil)

// ClickHouseSpeed is the SpeedSource over the speed layer's rows in
// ClickHouse (`<view>_speed`, read through the adapter). ClickHouse applies
// the time range, the chunk seam and the filters, and sends only the asked
// measures; filter values travel as bound parameters.
type ClickHouseSpeed struct {
	store SpeedStore
	cache *chunkCache // nil: no closed-chunk cache
	// seen holds, per view, the speed progress a query read last: the
	// next one reads from its chunks on (speedProgress).
	seenMu sync.Mutex
	seen   map[string]map[int32]int64
}

// CacheClosedChunks makes RollupSpeed keep the rollups of closed chunks
// (see chunkCache) in at most bytes of memory; chunkSize is the deployment's
// chunk_size. Call it before the first query.
func (c *ClickHouseSpeed) CacheClosedChunks(chunkSize, bytes int64) {
	if chunkSize > 0 && bytes > 0 {
		c.cache = &chunkCache{chunkSize: chunkSize, fanout: rollupFanout, levels: rollupLevels, lru: newLRU(bytes)}
	}
}

var _ SpeedSource = (*ClickHouseSpeed)(nil)

// NewClickHouseSpeed returns a speed source over store (a *clickhouse.DB).
func NewClickHouseSpeed(store SpeedStore) (*ClickHouseSpeed, error) {
	if store == nil {
		return nil, errors.New("serving: the ClickHouse speed source needs a connection")
	}
	return &ClickHouseSpeed{store: store}, nil
}

// Ping checks that ClickHouse answers.
func (c *ClickHouseSpeed) Ping(ctx context.Context) error { return c.store.Ping(ctx) }

// speedQuery turns a validated query into the adapter's speed-row query:
// the same window range, the chunks absorbed doesn't cover, q's filters by
// dimension name and q's measures. It also returns which of the view's
// measures are read, for DecodeRow (nil: all).
func speedQuery(q *Query, absorbed map[int32]int64) (clickhouse.SpeedQuery, []bool) {
	v := q.View
	sq := clickhouse.SpeedQuery{View: v, From: q.From, To: q.To, Absorbed: absorbed}
	add := func(m *map[string][]string, dim string, vals []string) {
		if *m == nil {
			*m = map[string][]string{}
		}
		(*m)[dim] = vals
	}
	for di, f := range q.Filters {
		if f == nil {
			continue
		}
		d := v.Dimensions[di]
		if len(f.Is) > 0 || len(f.Prefixes) > 0 {
			add(&sq.Filters, d, setValues(f.Is))
			if len(f.Prefixes) > 0 {
				add(&sq.Prefixes, d, f.Prefixes)
			}
		}
		if len(f.Not) > 0 {
			add(&sq.NotIn, d, setValues(f.Not))
		}
		if len(f.NotPrefixes) > 0 {
			add(&sq.NotPrefixes, d, f.NotPrefixes)
		}
	}
	if len(q.Measures) == 0 {
		return sq, nil // every measure
	}
	need := make([]bool, len(v.Measures))
	for _, mi := range q.Measures {
		if !need[mi] {
			need[mi] = true
			sq.Measures = append(sq.Measures, v.Measures[mi].Name)
		}
	}
	return sq, need
}

// setValues lists a set's values, sorted.
func setValues(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// ScanSpeed implements SpeedSource.
func (c *ClickHouseSpeed) ScanSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Row) error) error {
	sq, need := speedQuery(q, absorbed)
	return busy(c.store.ScanSpeedRows(ctx, sq, func(sr *clickhouse.SpeedRow) error {
		r, err := DecodeRow(q.View, sr.WindowStart.UnixMilli(), sr.Dims, sr.Cells, need)
		if err != nil {
			return err
		}
		return fn(&r)
	}))
}

// busy wraps ErrSpeedBusy around errors of ClickHouse refusing a query for
// load, so the service answers 503 instead of leaving speed rows out.
func busy(err error) error {
	if err != nil && clickhouse.IsBusy(err) {
		return fmt.Errorf("%w: %w", ErrSpeedBusy, err)
	}
	return err
}

// RollupSpeed implements SpeedSource: ClickHouse buckets, filters and
// groups the rows and computes the exact measures (count, sum, min, max);
// the sketches of each group come back as a list and are merged here.
func (c *ClickHouseSpeed) RollupSpeed(ctx context.Context, q *Query, absorbed map[int32]int64, fn func(*Group) error) error {
	if c.cache != nil {
		return busy(c.rollupCached(ctx, q, absorbed, fn))
	}
	sq, _ := speedQuery(q, absorbed)
	rq := clickhouse.SpeedRollupQuery{SpeedQuery: sq, Granularity: q.Granularity.D(), Local: q.Local}
	for _, di := range q.GroupBy {
		rq.GroupBy = append(rq.GroupBy, q.View.Dimensions[di])
	}
	g := Group{States: make([]schemas.State, len(q.Measures))}
	return busy(c.store.ScanSpeedRollup(ctx, rq, func(r *clickhouse.SpeedRollupRow) error {
		g.WindowMs, g.Dims = r.Bucket.UnixMilli(), r.Dims
		if _, err := rollupStates(q, r, &g); err != nil {
			return err
		}
		return fn(&g)
	}))
}

// MaxWindow implements SpeedSource.
func (c *ClickHouseSpeed) MaxWindow(ctx context.Context, v *schemas.View, absorbed map[int32]int64) (time.Time, error) {
	mw, err := c.store.MaxSpeedWindow(ctx, v, absorbed)
	return mw, busy(err)
}
