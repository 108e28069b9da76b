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
	Time      time.Time         // the record's timestamp: ingest time for the gateway's records
	Headers   map[string]string // nil after Claim.FetchLazy: use HeaderMap

	rawHeaders []kgo.Header // the record's headers as read, kept by FetchLazy
}

// HeaderMap returns the message's headers: Headers, or for a message from
// Claim.FetchLazy a map built from the record's headers now (nil when it
// has none).
func (m *Message) HeaderMap() map[string]string {
	if m.Headers != nil || len(m.rawHeaders) == 0 {
		return m.Headers
	}
	h := make(map[string]string, len(m.rawHeaders))
	for _, x := range m.rawHeaders {
		h[x.Key] = string(x.Value)
	}
	return h
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
	// MaxBytes bounds one fetch; with QueueCapacity it bounds what a claim
	// buffers ahead of the handler.
	MaxBytes      int
	QueueCapacity int
	// Security of every connection: the group coordinator's, the
	// readers' and the BatchFetchers' (default plaintext).
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

	reader *kgo.Reader
	gen    *kgo.Generation
	sec    Security
}

// Fetch returns the next message, blocking until one arrives or ctx ends.
// It does not commit anything.
func (c *Claim) Fetch(ctx context.Context) (Message, error) {
	m, err := c.reader.FetchMessage(ctx)
	if err != nil {
		return Message{}, err
	}
	msg := Message{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time}
	if len(m.Headers) > 0 {
		msg.Headers = make(map[string]string, len(m.Headers))
		for _, h := range m.Headers {
			msg.Headers[h.Key] = string(h.Value)
		}
	}
	return msg, nil
}

// FetchLazy is Fetch without building Headers, for a consumer that looks at
// headers only now and then (the speed layer, for dead letters): building
// the map costs an allocation per header and the map's on every message.
// The returned message's Headers is nil; HeaderMap and DeadLetterMessage
// read the record's headers on demand.
func (c *Claim) FetchLazy(ctx context.Context) (Message, error) {
	m, err := c.reader.FetchMessage(ctx)
	if err != nil {
		return Message{}, err
	}
	return Message{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time,
		rawHeaders: m.Headers}, nil
}

// Lag is how many records of the partition are not yet fetched, as of the
// last fetch response (-1 before the first).
func (c *Claim) Lag() int64 { return c.reader.Stats().Lag }

// Behind is how many records followed the last message Fetch or FetchLazy
// returned in the partition, as of the fetch response that carried it: 0
// means that message was the newest one then, i.e. the handler has caught
// up. Unlike Lag it takes no snapshot of the reader's statistics, so it
// can be asked after every message.
func (c *Claim) Behind() int64 { return c.reader.Lag() }

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
	if cfg.QueueCapacity == 0 {
		cfg.QueueCapacity = 1000
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
		reader := kgo.NewReader(kgo.ReaderConfig{
			Brokers:       cfg.Brokers,
			Topic:         topic,
			Partition:     int(partition),
			MinBytes:      1,
			MaxBytes:      cfg.MaxBytes,
			MaxWait:       200 * time.Millisecond,
			QueueCapacity: cfg.QueueCapacity,
			// kafka-go's default of 0 retries forever on a lost broker; the
			// Fetch caller sees ctx end on rebalance or shutdown either way.
			ReadBackoffMin: 50 * time.Millisecond,
			ReadBackoffMax: time.Second,
			Dialer:         cfg.Security.dialer(10 * time.Second),
		})
		defer reader.Close()
		if err := reader.SetOffset(start); err != nil {
			log.Error("kafka: seek failed", "topic", topic, "partition", partition, "offset", start, "err", err)
			return
		}
		claim := &Claim{Topic: topic, Partition: partition, Start: start, reader: reader, gen: gen, sec: cfg.Security}
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
