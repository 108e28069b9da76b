package speed

import (
	"context"
	"fmt"
	"sync"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
)

// Store is what the speed layer needs from ClickHouse: the adapter's speed
// rows and raw events, written a block (one part) at a time, and the
// resume point of a partition. *clickhouse.DB implements it; the adapter
// owns every statement, and the speed layer keeps no SQL of its own.
type Store interface {
	// SpeedResume returns the highest offset of the partition up to which
	// the view's rows need no writing: the highest version stored, or,
	// when the view has no rows of the partition, the end of the chunks
	// its current published batch run absorbed; -1 when neither.
	SpeedResume(ctx context.Context, v *schemas.View, partition int32, chunkSize int64) (int64, error)
	// AbsorbedResume returns the last offset of the partition's chunks the
	// view's current published run absorbed; -1 when none.
	AbsorbedResume(ctx context.Context, v *schemas.View, partition int32, chunkSize int64) (int64, error)
	// InsertSpeedBlock writes a block of speed rows as one part.
	InsertSpeedBlock(ctx context.Context, b *clickhouse.SpeedBlock) error
	// InsertRawBlock writes a block of raw events; a replayed event
	// replaces itself.
	InsertRawBlock(ctx context.Context, b *clickhouse.RawBlock) error
}

var _ Store = (*clickhouse.DB)(nil)

// ClickHouseSink is the Sink over the ClickHouse adapter: speed rows go to
// `<view>_speed`, raw events to `<stream>_events`, both created by the
// adapter's Migrate. Each Upsert or InsertRaw is one block, appended to
// the driver a whole column at a time.
type ClickHouseSink struct {
	store     Store
	chunkSize int64
	// Blocks are reused across writes: calls for different partitions run
	// concurrently, so each call takes its own from a pool per view or
	// stream.
	speedBlocks sync.Map // view name → *sync.Pool of *clickhouse.SpeedBlock
	rawBlocks   sync.Map // stream name → *sync.Pool of *clickhouse.RawBlock
}

var _ Sink = (*ClickHouseSink)(nil)

// maxPooledRows bounds the blocks kept for reuse: a catch-up flush (up to
// half a million rows) gets a block of its own that the garbage collector
// takes back afterwards, instead of one that would stay that large in the
// pool, reused by every small flush after it.
const maxPooledRows = 1 << 16

// NewClickHouseSink returns a Sink writing through store (a
// *clickhouse.DB, migrated); chunkSize is the configured chunk_size.
func NewClickHouseSink(store Store, chunkSize int64) *ClickHouseSink {
	return &ClickHouseSink{store: store, chunkSize: chunkSize}
}

// Progress implements Sink: the minimum over the views of the store's
// resume point for the partition (see clickhouse.DB.SpeedResume for when
// chunks a batch run absorbed count).
//
// A view with neither rows nor a run of its own — added to the stream, or
// recreated for a new definition — resumes where the furthest current run
// of the stream's other views ended: it is backfilling until its first
// run, which absorbs at least those chunks (a run takes every chunk the
// master dataset holds whole, and the master dataset only grows), so its
// speed rows below them would never be read. Without this floor, adding a
// view would replay all of Kafka for every view of the stream, delaying
// their fresh rows (docs/architecture.md, "Adding and changing views"),
// and on a stream with streams[].retention fold again what retention
// removed from the master dataset.
func (s *ClickHouseSink) Progress(ctx context.Context, st *schemas.Stream, views []*schemas.View, partition int32) (int64, error) {
	if len(views) == 0 {
		return -1, nil
	}
	resumes := make([]int64, len(views))
	fresh := false
	for i, v := range views {
		o, err := s.store.SpeedResume(ctx, v, partition, s.chunkSize)
		if err != nil {
			return 0, fmt.Errorf("speed: %w", err)
		}
		resumes[i] = o
		fresh = fresh || o < 0
	}
	floor := int64(-1)
	if fresh && len(views) > 1 {
		for _, v := range views {
			o, err := s.store.AbsorbedResume(ctx, v, partition, s.chunkSize)
			if err != nil {
				return 0, fmt.Errorf("speed: %w", err)
			}
			floor = max(floor, o)
		}
	}
	min := int64(-1)
	for i, o := range resumes {
		if o < 0 {
			o = floor
		}
		if i == 0 || o < min {
			min = o
		}
	}
	return min, nil
}

// Encode implements Sink: the rows in one block (taken from a pool per
// view), cells serialised, so the block shares nothing with the
// aggregates.
func (s *ClickHouseSink) Encode(v *schemas.View, rows []Row) (Encoded, error) {
	b := s.viewPool(v).Get().(*clickhouse.SpeedBlock)
	for i := range rows {
		r := &rows[i]
		if err := b.Append(r.Window, r.Dims, r.Agg, r.Partition, r.Chunk, r.Version); err != nil {
			s.Release(b)
			return nil, fmt.Errorf("speed: %w", err)
		}
	}
	return b, nil
}

// Upsert implements Sink: one block, sent as one part, so the rows land
// atomically.
func (s *ClickHouseSink) Upsert(ctx context.Context, rows Encoded) error {
	b, ok := rows.(*clickhouse.SpeedBlock)
	if !ok {
		return fmt.Errorf("speed: ClickHouseSink.Upsert got a %T, not one of its own blocks", rows)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := s.store.InsertSpeedBlock(ctx, b); err != nil {
		return fmt.Errorf("speed: %w", err)
	}
	return nil
}

// Release implements Sink: the block goes back to its pool unless it is
// large (see maxPooledRows).
func (s *ClickHouseSink) Release(rows Encoded) {
	b, ok := rows.(*clickhouse.SpeedBlock)
	if !ok || b.Len() > maxPooledRows {
		return
	}
	b.Reset()
	s.viewPool(b.View()).Put(b)
}

func (s *ClickHouseSink) viewPool(v *schemas.View) *sync.Pool {
	return s.pool(&s.speedBlocks, v.Name, func() any { return clickhouse.NewSpeedBlock(v, 0) })
}

// InsertRaw implements Sink. The raw-events table is a ReplacingMergeTree
// by (_partition, _offset), so a replayed event replaces itself.
func (s *ClickHouseSink) InsertRaw(ctx context.Context, st *schemas.Stream, events []RawEvent) error {
	if len(events) == 0 {
		return nil
	}
	pool := s.pool(&s.rawBlocks, st.Name, func() any { return clickhouse.NewRawBlock(st, 0) })
	b := pool.Get().(*clickhouse.RawBlock)
	defer func() {
		if b.Len() <= maxPooledRows {
			b.Reset()
			pool.Put(b)
		}
	}()
	for i := range events {
		e := &events[i]
		if err := b.Append(&e.Event, e.Raw, e.Partition, e.Offset, e.KafkaTime); err != nil {
			return fmt.Errorf("speed: %w", err)
		}
	}
	if err := s.store.InsertRawBlock(ctx, b); err != nil {
		return fmt.Errorf("speed: %w", err)
	}
	return nil
}

func (s *ClickHouseSink) pool(m *sync.Map, name string, newBlock func() any) *sync.Pool {
	if p, ok := m.Load(name); ok {
		return p.(*sync.Pool)
	}
	p, _ := m.LoadOrStore(name, &sync.Pool{New: newBlock})
	return p.(*sync.Pool)
}
