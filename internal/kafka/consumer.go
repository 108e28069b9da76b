// Package kafka is tandem's adapter for Apache Kafka (and any broker that
// speaks its protocol), built on segmentio/kafka-go.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	kgo "github.com/segmentio/kafka-go"
)

// Message is one record read from a partition.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Time      time.Time // the record's timestamp: ingest time for the gateway's records
	Headers   map[string]string
}

// GroupConfig configures a consumer-group member whose progress lives with
// its output, not in the group's committed offsets.
type GroupConfig struct {
	Brokers []string
	GroupID string
	Topics  []string
	// StartOffset returns the offset to start reading a partition at when this
	// member is assigned it. It reads the caller's own durable progress (the
	// objects in S3, the rows in ClickHouse), so a crash after output was
	// written but before offsets were committed neither loses nor repeats.
	// Returning FirstOffset starts at the oldest retained record.
	StartOffset func(ctx context.Context, topic string, partition int32) (int64, error)
	// SessionTimeout bounds how long a dead member keeps its partitions.
	SessionTimeout time.Duration
	// MaxBytes bounds one fetch response of a claim's BatchFetcher, and so
	// what a claim holds ahead of its handler (default 4 MiB).
	MaxBytes int
	// Security of every connection: the group coordinator's and the
	// BatchFetchers' (default plaintext).
	Security Security
	Log      *slog.Logger
}

// FirstOffset, returned by StartOffset, means the oldest retained record.
const FirstOffset = kgo.FirstOffset

// Claim is one partition owned by this member for one group generation.
// A Claim is used by one goroutine.
type Claim struct {
	Topic     string
	Partition int32
	// Start is the offset reading started at.
	Start int64

	brokers  []string
	maxBytes int
	gen      *kgo.Generation
	sec      Security
}

// Commit records next (the first offset NOT yet durable in the caller's
// output) as the group's committed offset. Committed offsets are only a
// hint for operators and lag tools: StartOffset decides where reading
// resumes.
func (c *Claim) Commit(next int64) error {
	return c.gen.CommitOffsets(map[string]map[int]int64{c.Topic: {int(c.Partition): next}})
}

// Handler works one claim until ctx ends (the generation is over: rebalance,
// shutdown) and then returns nil. Returning an error ends the generation for
// this member; the group rejoins after a pause and the partition is
// claimed again from StartOffset, so a handler's error is a retry, not a loss.
type Handler func(ctx context.Context, c *Claim) error

// RunGroup joins the group and runs handle for every partition assigned to
// this member, generation after generation, until ctx is cancelled.
func RunGroup(ctx context.Context, cfg GroupConfig, handle Handler) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 20
	}
	group, err := kgo.NewConsumerGroup(kgo.ConsumerGroupConfig{
		ID:                    cfg.GroupID,
		Brokers:               cfg.Brokers,
		Topics:                cfg.Topics,
		SessionTimeout:        cfg.SessionTimeout,
		HeartbeatInterval:     cfg.SessionTimeout / 5,
		RebalanceTimeout:      cfg.SessionTimeout,
		JoinGroupBackoff:      time.Second,
		WatchPartitionChanges: true,
		StartOffset:           kgo.FirstOffset,
		Dialer:                cfg.Security.dialer(10 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("kafka: consumer group %s: %w", cfg.GroupID, err)
	}
	defer group.Close()

	for {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A session timeout outside the broker's range never joins:
			// retrying would only log forever. (Apache Kafka's default
			// group.min.session.timeout.ms is 6 s; kfake takes less.)
			if errors.Is(err, kgo.InvalidSessionTimeout) {
				return fmt.Errorf("kafka: consumer group %s: the broker refuses session timeout %s (outside its group.min/max.session.timeout.ms): %w",
					cfg.GroupID, cfg.SessionTimeout, err)
			}
			// Joining fails while the broker is down or the group rebalances;
			// kafka-go already backs off between attempts.
			log.Warn("kafka: joining consumer group failed; retrying", "group", cfg.GroupID, "err", err)
			continue
		}
		var parts []string
		for topic, assigned := range gen.Assignments {
			for _, a := range assigned {
				parts = append(parts, fmt.Sprintf("%s/%d", topic, a.ID))
				claimPartition(ctx, cfg, gen, topic, int32(a.ID), handle, log)
			}
		}
		log.Info("kafka: partitions assigned", "group", cfg.GroupID, "generation", gen.ID, "partitions", parts)
	}
}

// retryPause spaces out re-claims after a handler error, so a persistent
// failure (ClickHouse down) does not spin.
const retryPause = 2 * time.Second

func claimPartition(ctx context.Context, cfg GroupConfig, gen *kgo.Generation, topic string, partition int32, handle Handler, log *slog.Logger) {
	gen.Start(func(genCtx context.Context) {
		// The generation's context ends on rebalance; ours on shutdown.
		hctx, cancel := mergeDone(genCtx, ctx)
		defer cancel()
		start, err := cfg.StartOffset(hctx, topic, partition)
		if err != nil {
			if hctx.Err() == nil {
				log.Error("kafka: cannot find where to resume; will retry", "topic", topic, "partition", partition, "err", err)
				sleep(hctx, retryPause)
			}
			return
		}
		claim := &Claim{Topic: topic, Partition: partition, Start: start, brokers: cfg.Brokers, maxBytes: cfg.MaxBytes, gen: gen, sec: cfg.Security}
		if err := handle(hctx, claim); err != nil && hctx.Err() == nil {
			log.Error("kafka: partition handler failed; rejoining to retry", "topic", topic, "partition", partition, "err", err)
			sleep(hctx, retryPause)
		}
	})
}

// mergeDone returns a context that ends when either parent ends.
func mergeDone(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// IsEnded reports whether err means the claim's context ended (rebalance or
// shutdown) rather than a failure.
func IsEnded(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrGenerationEnded)
}
