package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	kgo "github.com/segmentio/kafka-go"
)

// ProducerOptions tune a Producer. The zero value is valid: it is tuned for
// synchronous request/response writes, where a caller waits for its batch to
// be acknowledged before answering its own client.
type ProducerOptions struct {
	// BatchTimeout is how long a partition's batch waits for more messages
	// before it is sent (default 2ms). kafka-go's own default of 1s would add
	// a second to every synchronous request.
	BatchTimeout time.Duration
	// BatchSize is the most messages in one partition batch (default 10000):
	// large, so a batch is normally sent by BatchTimeout or BatchBytes.
	BatchSize int
	// BatchBytes is the most bytes in one partition batch, and so the largest
	// single message (default 1 MiB, the size Kafka brokers accept by default
	// through message.max.bytes).
	BatchBytes int64
	// Compression of record batches: "lz4" (default), "zstd", "snappy",
	// "gzip" or "none".
	Compression string
	// MaxAttempts is how often a batch is tried before its messages fail
	// (default 3). Few attempts: the caller has its own deadline and retries
	// whole requests.
	MaxAttempts int
	// WriteTimeout bounds one produce request to a broker (default 10s).
	WriteTimeout time.Duration
	// ClientID names the client in the broker's logs (default "tandem").
	ClientID string
	// Security of the connections (default plaintext).
	Security Security
}

func (o ProducerOptions) withDefaults() ProducerOptions {
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = 2 * time.Millisecond
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 10000
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.Compression == "" {
		o.Compression = "lz4"
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ClientID == "" {
		o.ClientID = "tandem"
	}
	return o
}

// ParseCompression maps a codec name to kafka-go's value.
func ParseCompression(name string) (kgo.Compression, error) {
	switch name {
	case "", "none":
		return 0, nil
	case "lz4":
		return kgo.Lz4, nil
	case "zstd":
		return kgo.Zstd, nil
	case "snappy":
		return kgo.Snappy, nil
	case "gzip":
		return kgo.Gzip, nil
	}
	return 0, fmt.Errorf("kafka: unknown compression %q (use none, lz4, zstd, snappy or gzip)", name)
}

// Producer writes messages to any topic of one cluster and waits for every
// in-sync replica to acknowledge them. It is safe for concurrent use, and
// concurrent callers share batches, which is what makes it fast.
//
// Partitions are chosen by Murmur2 of the key, like the Java client, so a
// key lands on the same partition whichever client wrote it.
type Producer struct {
	w         *kgo.Writer
	transport *kgo.Transport
	client    *kgo.Client
	maxBytes  int64
}

// NewProducer returns a Producer for the cluster. It does not connect until
// the first write or Ready.
func NewProducer(brokers []string, opts ProducerOptions) (*Producer, error) {
	if len(brokers) == 0 {
		return nil, errors.New("kafka: a producer needs at least one broker address")
	}
	o := opts.withDefaults()
	codec, err := ParseCompression(o.Compression)
	if err != nil {
		return nil, err
	}
	// Its own transport: a writer on the shared default transport can keep
	// stale metadata from before CreateTopics and fail with Unknown Topic.
	tr := o.Security.transport(o.ClientID)
	addr := kgo.TCP(brokers...)
	w := &kgo.Writer{
		Addr:         addr,
		Balancer:     kgo.Murmur2Balancer{},
		MaxAttempts:  o.MaxAttempts,
		BatchSize:    o.BatchSize,
		BatchBytes:   o.BatchBytes,
		BatchTimeout: o.BatchTimeout,
		WriteTimeout: o.WriteTimeout,
		RequiredAcks: kgo.RequireAll,
		Compression:  codec,
		Transport:    tr,
		// Backoff short and bounded: the caller's deadline decides when to
		// give up, not a long sleep here.
		WriteBackoffMin: 20 * time.Millisecond,
		WriteBackoffMax: 200 * time.Millisecond,
	}
	return &Producer{
		w:         w,
		transport: tr,
		client:    &kgo.Client{Addr: addr, Transport: tr, Timeout: 5 * time.Second},
		maxBytes:  o.BatchBytes,
	}, nil
}

// MaxMessageBytes is the largest message (key, value and headers, as kafka-go
// counts them) this producer can write; a larger one fails the whole write.
func (p *Producer) MaxMessageBytes() int64 { return p.maxBytes }

// MessageBytes is the size kafka-go counts for one message, to compare with
// MaxMessageBytes before writing.
func MessageBytes(key, value []byte, headers map[string]string) int64 {
	// An upper bound of kafka-go's unexported Message.totalSize: 30 bytes of
	// fixed fields and lengths, plus key, value and varint-prefixed headers.
	n := int64(len(key)+len(value)) + 64
	for k, v := range headers {
		n += int64(len(k)+len(v)) + 16
	}
	return n
}

// Produce writes the messages (Topic, Key, Value, Time and Headers are used)
// and returns when all are acknowledged by all in-sync replicas, or with an
// error. On error, kgo.WriteErrors says which messages failed when every
// batch got an answer; when ctx ends first, nothing is known: some messages
// may have been written and may still be written after Produce returns, so
// the caller must treat them all as failed and must not modify their bytes.
func (p *Producer) Produce(ctx context.Context, msgs ...Message) error {
	kms := make([]kgo.Message, len(msgs))
	for i, m := range msgs {
		kms[i] = kgo.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Time: m.Time, Headers: toHeaders(m.Headers)}
	}
	return p.w.WriteMessages(ctx, kms...)
}

// Append writes one batch of records to topic, all with the same timestamp
// and headers, keys[i] with values[i]. It returns nil only when every record
// is acknowledged by all in-sync replicas. It is the ingest layer's Log.
func (p *Producer) Append(ctx context.Context, topic string, ts time.Time, headers map[string]string, keys, values [][]byte) error {
	if len(keys) != len(values) {
		return fmt.Errorf("kafka: append to %s: %d keys for %d values", topic, len(keys), len(values))
	}
	hs := toHeaders(headers)
	kms := make([]kgo.Message, len(values))
	for i := range values {
		kms[i] = kgo.Message{Topic: topic, Key: keys[i], Value: values[i], Time: ts, Headers: hs}
	}
	return p.w.WriteMessages(ctx, kms...)
}

// Ready reports whether the cluster answers a metadata request within a
// couple of seconds.
func (p *Producer) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return Ping(ctx, p.client)
}

// Ping asks the cluster for its broker list.
func Ping(ctx context.Context, c *kgo.Client) error {
	md, err := c.Metadata(ctx, &kgo.MetadataRequest{Topics: []string{}})
	if err != nil {
		return fmt.Errorf("kafka at %s is not reachable: %w", c.Addr, err)
	}
	if len(md.Brokers) == 0 {
		return fmt.Errorf("kafka at %s lists no brokers", c.Addr)
	}
	return nil
}

// Close flushes pending batches, waits for them and closes connections.
func (p *Producer) Close() error {
	err := p.w.Close()
	p.transport.CloseIdleConnections()
	return err
}

// toHeaders turns a header map into kafka-go headers in name order, so the
// same map always gives the same bytes.
func toHeaders(h map[string]string) []kgo.Header {
	if len(h) == 0 {
		return nil
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]kgo.Header, len(keys))
	for i, k := range keys {
		out[i] = kgo.Header{Key: k, Value: []byte(h[k])}
	}
	return out
}
