package speed

import (
	"context"
	"time"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/schemas"
)

// Row is one speed row: the cumulative aggregate of one window and
// combination of dimension values over the events of one chunk of one
// partition with offsets up to Version.
type Row struct {
	Window    time.Time
	Dims      []string // one per view dimension, in order
	Agg       schemas.Aggregate
	Partition int32
	Chunk     int64
	Version   int64 // highest offset of the chunk consumed when the row was written
}

// RawEvent is one accepted, deduplicated event for a stream's raw-events table.
type RawEvent struct {
	Event     schemas.Event
	Raw       []byte
	Partition int32
	Offset    int64
	KafkaTime time.Time
}

// Sink is where the speed layer's output goes and where its progress is read
// back from. Implementations must make each Upsert call atomic: all rows of
// the call become visible together or none do (one ClickHouse insert of one
// block is one part). Writes of one partition never overlap; Encode runs
// in the partition's own goroutine, while its previous write may still be
// in flight.
type Sink interface {
	// Progress returns the resume point of a partition of stream: the
	// highest offset o such that every view's rows for every offset <= o are
	// durable (the minimum over the stream's views of the highest version
	// stored for the partition), or -1 when nothing is known. The result
	// may be raised to the last offset that every view's batch layer has
	// absorbed.
	Progress(ctx context.Context, stream *schemas.Stream, views []*schemas.View, partition int32) (int64, error)
	// Encode turns rows of view into one write for Upsert. The write keeps
	// nothing of the rows' aggregates, which the caller goes on changing
	// while the write is in flight (it may keep Dims, which never change).
	Encode(view *schemas.View, rows []Row) (Encoded, error)
	// Upsert writes encoded rows. A failed Upsert may be retried with the
	// same write.
	Upsert(ctx context.Context, rows Encoded) error
	// Release takes back a write that is no longer needed (written or
	// given up); the caller does not use it afterwards.
	Release(rows Encoded)
	// InsertRaw writes events of a stream with raw_events: true. Writing an
	// event twice (same partition and offset) must be harmless.
	InsertRaw(ctx context.Context, stream *schemas.Stream, events []RawEvent) error
}

// Encoded is one view's rows encoded by Sink.Encode for one Upsert.
type Encoded interface {
	// Len is the number of rows.
	Len() int
}

// DeadLetters is where messages that fail validation go. *kafka.DLQ
// implements it.
type DeadLetters interface {
	Send(ctx context.Context, letters ...kafka.DeadLetter) error
}

var _ DeadLetters = (*kafka.DLQ)(nil)
