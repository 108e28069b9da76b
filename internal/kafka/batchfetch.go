package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/klauspost/compress/zstd"
	kgo "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one record of a partition as a BatchFetcher returns it: no
// topic or partition (the fetcher reads one known partition), headers
// kept undecoded (HeaderMap decodes them), and Key and Value share the
// fetch response's memory.
type Record struct {
	Offset int64
	Time   time.Time // the record's timestamp (the batch's when the topic uses log-append time)
	Key    []byte
	Value  []byte

	raw []byte // the whole record as encoded, for HeaderMap
}

// HeaderMap decodes the record's headers (nil when it has none; a header
// that repeats a key keeps its last value, as Message.Headers does). The
// fetcher does not build them: most consumers never look at headers, and
// the speed layer looks only for the records it dead-letters.
func (r *Record) HeaderMap() (map[string]string, error) {
	if len(r.raw) == 0 {
		return nil, nil
	}
	var rec kmsg.Record
	if err := rec.ReadFrom(r.raw); err != nil {
		return nil, fmt.Errorf("kafka: offset %d: malformed record headers", r.Offset)
	}
	if len(rec.Headers) == 0 {
		return nil, nil
	}
	h := make(map[string]string, len(rec.Headers))
	for _, x := range rec.Headers {
		h[x.Key] = string(x.Value)
	}
	return h, nil
}

// Message returns the record as a Message of topic and partition, with
// its headers decoded (see HeaderMap); Key and Value still share the
// response's memory.
func (r *Record) Message(topic string, partition int32) (Message, error) {
	h, err := r.HeaderMap()
	return Message{Topic: topic, Partition: partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Time: r.Time, Headers: h}, err
}

// BatchFetcher reads a claimed partition a whole fetch response at a time,
// for a consumer that handles records in bulk (the archiver). It speaks the
// Fetch API (v4, which every Kafka from 0.11 to 4.x serves) on its own
// connection to the partition's leader and parses record batches in place
// (franz-go's kmsg for the response and batch headers, appendRecords for
// the records): one read per response, no copy and no allocation
// per record, no goroutine hand-off per record. kafka-go's Reader (which
// tandem no longer uses) copies every key and value into fresh slices and
// passes every message through a channel, which costs about 2 µs a
// message, as much as all the archiver's other work.
//
// It reads with isolation level read_uncommitted, skips control records
// (transaction markers), and on errors behaves as kafka-go's Reader: it
// re-dials the leader with a backoff, and an offset before the oldest
// retained record moves on to that record. Group membership is not its
// concern: the claim's generation ends its context.
//
// A BatchFetcher is used by one goroutine; Close it when done.
type BatchFetcher struct {
	brokers   []string
	topic     string
	partition int32
	maxBytes  int
	maxWait   time.Duration
	sec       Security
	log       *slog.Logger

	next       int64 // next offset to return; FirstOffset until resolved
	fromOldest bool  // next is 0 standing for FirstOffset, until a record or an answer confirms it
	hw         int64 // high watermark of the last response, -1 before any
	fetched    bool  // a response has been received

	conn    net.Conn
	corrID  int32
	req     []byte
	backoff time.Duration
	// maxInflate replaces maxDecompressed when set (tests).
	maxInflate int
	// Reused from response to response: the topic and partition slices
	// of resp.
	resp kmsg.FetchResponse
}

// BatchFetcher returns a fetcher of the claim's partition starting at
// c.Start, with the group's fetch limit (GroupConfig.MaxBytes). It is how a
// handler reads its claim.
func (c *Claim) BatchFetcher() *BatchFetcher {
	return NewBatchFetcher(BatchFetcherConfig{Brokers: c.brokers, Topic: c.Topic, Partition: c.Partition,
		Start: c.Start, MaxBytes: c.maxBytes, Security: c.sec})
}

// BatchFetcherConfig says what a BatchFetcher reads.
type BatchFetcherConfig struct {
	Brokers   []string
	Topic     string
	Partition int32
	// Start is the first offset to return; FirstOffset for the oldest
	// retained record.
	Start int64
	// MaxBytes bounds one fetch response (default 4 MiB); MaxWait is how
	// long the broker holds a fetch while it has nothing (default 200 ms).
	MaxBytes int
	MaxWait  time.Duration
	// Security of the fetcher's connections (default plaintext).
	Security Security
	Log      *slog.Logger
}

// NewBatchFetcher returns a fetcher of one partition. It connects on the
// first Fetch.
func NewBatchFetcher(cfg BatchFetcherConfig) *BatchFetcher {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 200 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &BatchFetcher{brokers: cfg.Brokers, topic: cfg.Topic, partition: cfg.Partition,
		maxBytes: cfg.MaxBytes, maxWait: cfg.MaxWait, sec: cfg.Security, log: cfg.Log, next: cfg.Start, hw: -1}
}

// Lag is how many records of the partition follow the last record
// returned, as of the last fetch response (-1 before the first).
func (f *BatchFetcher) Lag() int64 {
	if f.hw < 0 || f.next < 0 {
		return -1
	}
	return max(f.hw-f.next, 0)
}

// Close closes the connection.
func (f *BatchFetcher) Close() error {
	if f.conn == nil {
		return nil
	}
	err := f.conn.Close()
	f.conn = nil
	return err
}

// Fetch appends to dst the records of the next fetch response that holds
// any, in offset order, and returns it. It blocks until there is at least
// one record or ctx ends (then it returns ctx's error). The records' Key
// and Value point into memory that the fetcher never reuses: they stay
// valid as long as the caller keeps them.
func (f *BatchFetcher) Fetch(ctx context.Context, dst []Record) ([]Record, error) {
	for {
		if err := ctx.Err(); err != nil {
			return dst, err
		}
		n := len(dst)
		var err error
		dst, err = f.fetchOnce(ctx, dst)
		if err == nil {
			f.backoff = 0
			if len(dst) > n {
				return dst, nil
			}
			continue
		}
		f.Close()
		if ctx.Err() != nil {
			return dst, ctx.Err()
		}
		var kerr kgo.Error
		if errors.As(err, &kerr) && kerr == kgo.OffsetOutOfRange {
			if err = f.outOfRange(ctx); err == nil {
				continue
			}
		}
		// Leader moved, broker down, connection lost: like kafka-go's
		// Reader, retry until the claim ends.
		f.backoff = min(max(2*f.backoff, 50*time.Millisecond), time.Second)
		f.log.Warn("kafka: fetch failed; retrying", "topic", f.topic, "partition", f.partition, "offset", f.next, "pause", f.backoff, "err", err)
		t := time.NewTimer(f.backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return dst, ctx.Err()
		case <-t.C:
		}
	}
}

// outOfRange handles OFFSET_OUT_OF_RANGE: an offset before the oldest
// retained record moves to it (those records are gone); one past the end
// waits for more.
func (f *BatchFetcher) outOfRange(ctx context.Context) error {
	first, last, err := f.offsets(ctx)
	if err != nil {
		return err
	}
	if f.next < first {
		if f.fromOldest {
			f.next, f.fromOldest = first, false
			return nil
		}
		f.log.Warn("kafka: offset before the oldest retained record; skipping ahead", "topic", f.topic, "partition", f.partition,
			"offset", f.next, "first", first)
		f.next = first
		return nil
	}
	if f.next < last {
		return nil
	}
	return fmt.Errorf("kafka: offset %d is past the end (%d) of %s/%d", f.next, last, f.topic, f.partition)
}

// offsets returns the partition's oldest retained offset and its end.
func (f *BatchFetcher) offsets(ctx context.Context) (first, last int64, err error) {
	for _, b := range f.brokers {
		var c *kgo.Conn
		c, err = f.sec.dialer(10*time.Second).DialLeader(ctx, "tcp", b, f.topic, int(f.partition))
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		first, last, err = c.ReadOffsets()
		c.Close()
		if err == nil {
			return first, last, nil
		}
	}
	return 0, 0, fmt.Errorf("kafka: reading the offsets of %s/%d: %w", f.topic, f.partition, err)
}

// dial connects to the partition's leader.
func (f *BatchFetcher) dial(ctx context.Context) error {
	d := f.sec.dialer(10 * time.Second)
	var err error
	for _, b := range f.brokers {
		var leader kgo.Broker
		if leader, err = d.LookupLeader(ctx, "tcp", b, f.topic, int(f.partition)); err != nil {
			continue
		}
		var c net.Conn
		if c, err = f.sec.dialRaw(ctx, leader.Host, leader.Port, 10*time.Second); err != nil {
			continue
		}
		f.conn = c
		return nil
	}
	return fmt.Errorf("kafka: connecting to the leader of %s/%d: %w", f.topic, f.partition, err)
}

// firstFetchBytes bounds the first response of a fetcher.
const firstFetchBytes = 256 << 10

// maxResponse bounds the size of a response the fetcher accepts: a broker
// returns at most max_bytes, or one record batch larger than that.
const maxResponse = 1 << 30

// maxDecompressed bounds the record batches of one fetch response after
// decompression, together: every record a fetch returns points into its
// batch's inflated bytes, so they are all alive at once, and a response of
// many batches each just under a per-batch cap would multiply it. Kafka's
// own batch limits apply to the compressed size; JSON events compress
// 5–20×, so this leaves room for batches far above the default 1 MiB.
const maxDecompressed = 256 << 20

// fetchOnce sends one Fetch request and appends the records it returns.
func (f *BatchFetcher) fetchOnce(ctx context.Context, dst []Record) ([]Record, error) {
	if f.next < 0 {
		// The oldest retained record: try offset 0, which it is unless
		// retention deleted records; then the broker answers
		// OFFSET_OUT_OF_RANGE and outOfRange moves to it. That saves a
		// round trip to the broker on most claims.
		f.next, f.fromOldest = 0, true
	}
	if f.conn == nil {
		if err := f.dial(ctx); err != nil {
			return dst, err
		}
	}
	conn := f.conn
	// The broker answers within max_wait; allow for a slow network, and
	// abort the exchange when ctx ends (the connection is then dropped).
	deadline := time.Now().Add(f.maxWait + 30*time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	f.corrID++
	maxBytes := f.maxBytes
	if !f.fetched {
		// A small first response gets the consumer going sooner on a
		// long backlog; the following ones are full size.
		maxBytes = min(maxBytes, firstFetchBytes)
	}
	f.req = appendFetchRequest(f.req[:0], f.corrID, f.topic, f.partition, f.next, int32(maxBytes), int32(f.maxWait/time.Millisecond))
	if _, err := conn.Write(f.req); err != nil {
		return dst, fmt.Errorf("kafka: sending fetch: %w", err)
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return dst, fmt.Errorf("kafka: reading fetch response: %w", err)
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 4 || n > maxResponse {
		return dst, fmt.Errorf("kafka: fetch response of %d bytes", n)
	}
	resp := make([]byte, n)
	if _, err := io.ReadFull(conn, resp); err != nil {
		return dst, fmt.Errorf("kafka: reading fetch response: %w", err)
	}
	records, hw, err := f.parseResponse(resp)
	if err != nil {
		return dst, err
	}
	f.hw, f.fetched, f.fromOldest = hw, true, false
	before := len(dst)
	dst, err = f.parseRecords(records, dst)
	if err != nil {
		return dst[:before], err
	}
	if len(dst) == before && len(records) > 0 && f.next < hw {
		// Only part of a batch fit: ask for more next time.
		f.maxBytes = min(2*f.maxBytes, maxResponse/2)
	}
	return dst, nil
}

// appendFetchRequest encodes a Fetch v4 request for one partition, with its
// size prefix and request header (v1: key, version, correlation id, client
// id).
func appendFetchRequest(b []byte, corrID int32, topic string, partition int32, offset int64, maxBytes, maxWaitMs int32) []byte {
	req := kmsg.NewFetchRequest()
	req.Version = 4
	req.MaxWaitMillis = maxWaitMs
	req.MinBytes = 1
	req.MaxBytes = maxBytes
	req.IsolationLevel = 0 // read_uncommitted, as kafka-go's Reader
	t := kmsg.NewFetchRequestTopic()
	t.Topic = topic
	p := kmsg.NewFetchRequestTopicPartition()
	p.Partition = partition
	p.FetchOffset = offset
	p.PartitionMaxBytes = maxBytes
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)

	be := binary.BigEndian
	start := len(b)
	b = be.AppendUint32(b, 0) // size, set below
	b = be.AppendUint16(b, uint16(req.Key()))
	b = be.AppendUint16(b, uint16(req.Version))
	b = be.AppendUint32(b, uint32(corrID))
	b = be.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	b = req.AppendTo(b)
	be.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// clientID names the fetcher to the broker.
const clientID = "tandem"

var errShortResponse = errors.New("kafka: fetch response is truncated")

// parseResponse checks a Fetch v4 response (after its size: the
// correlation id, then the body) and returns the record bytes and high
// watermark of the fetcher's partition.
func (f *BatchFetcher) parseResponse(b []byte) (records []byte, hw int64, err error) {
	if len(b) < 4 {
		return nil, 0, errShortResponse
	}
	if corr := int32(binary.BigEndian.Uint32(b)); corr != f.corrID {
		return nil, 0, fmt.Errorf("kafka: fetch response for request %d, want %d", corr, f.corrID)
	}
	resp := &f.resp
	resp.Version = 4
	// Unsafe: the topic names point into b; they are compared here only.
	if err := resp.UnsafeReadFrom(b[4:]); err != nil {
		return nil, 0, errShortResponse
	}
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			p := &t.Partitions[j]
			if t.Topic != f.topic || p.Partition != f.partition {
				continue
			}
			if p.ErrorCode != 0 {
				return nil, 0, fmt.Errorf("kafka: fetching %s/%d at offset %d: %w", f.topic, f.partition, f.next, kgo.Error(p.ErrorCode))
			}
			// Aborted transactions are ignored: read_uncommitted keeps
			// their records.
			return p.RecordBatches, p.HighWatermark, nil
		}
	}
	return nil, 0, fmt.Errorf("kafka: fetch response lacks %s/%d", f.topic, f.partition)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// parseRecords appends the records of the record batches in b from f.next
// on, and advances f.next past every complete batch. A truncated batch at
// the end (the broker cuts at max_bytes) is left for the next fetch.
//
// kmsg decodes each batch's header (kmsg.RecordBatch); the framing Kafka
// leaves to the client (where a batch of the record set ends) and the
// checksum are the client's, here as in franz-go's own consumer. The
// records are read by appendRecords, which decodes only the fields a
// Record holds (kmsg.Record would decode every header of every record, the
// larger part of the parsing of an uncompressed response;
// docs/performance.md).
//
// The batches' inflated bytes count against maxDecompressed (maxInflate in
// tests) for the whole response: a batch that would go past it is left for
// the next fetch when this one returned records already, and is an error
// when it alone is over.
func (f *BatchFetcher) parseRecords(b []byte, dst []Record) ([]Record, error) {
	be := binary.BigEndian
	budget := maxDecompressed
	if f.maxInflate > 0 {
		budget = f.maxInflate
	}
	first := len(dst)
	for len(b) >= 17 {
		// The batch's base offset and length, then the rest of it.
		size := int(int32(be.Uint32(b[8:])))
		if size < 49 || 12+size > len(b) {
			break // truncated
		}
		raw := b[:12+size]
		b = b[12+size:]
		var batch kmsg.RecordBatch
		if err := batch.ReadFrom(raw); err != nil {
			return dst, fmt.Errorf("kafka: %s/%d: malformed record batch", f.topic, f.partition)
		}
		base := batch.FirstOffset
		if batch.Magic != 2 {
			return dst, fmt.Errorf("kafka: %s/%d offset %d: record batch format v%d is not supported (only v2, Kafka 0.11 and later)", f.topic, f.partition, base, batch.Magic)
		}
		// The checksum covers everything after the CRC field.
		if crc32.Checksum(raw[21:], castagnoli) != uint32(batch.CRC) {
			return dst, fmt.Errorf("kafka: %s/%d offset %d: record batch checksum mismatch", f.topic, f.partition, base)
		}
		end := base + int64(batch.LastOffsetDelta) + 1
		if end <= f.next {
			continue // before the requested offset
		}
		if batch.Attributes&0x20 != 0 { // control batch: transaction markers, not data
			f.next = end
			continue
		}
		recs := batch.Records
		if codec := compress.Compression(batch.Attributes & 7); codec != 0 {
			out, err := decompress(codec, recs, budget)
			if errors.Is(err, errInflateBudget) && len(dst) > first {
				// This fetch holds enough already; the batch is read
				// whole by the next one, which starts at it.
				return dst, nil
			}
			if err != nil {
				return dst, fmt.Errorf("kafka: %s/%d offset %d: %w", f.topic, f.partition, base, err)
			}
			budget -= len(out)
			recs = out
		}
		ts := batchTimes{first: batch.FirstTimestamp, max: batch.MaxTimestamp, logAppend: batch.Attributes&0x8 != 0}
		var err error
		if dst, err = appendRecords(dst, recs, int(batch.NumRecords), base, end, f.next, ts); err != nil {
			return dst, fmt.Errorf("kafka: %s/%d offset %d: %w", f.topic, f.partition, base, err)
		}
		f.next = end
	}
	return dst, nil
}

// zstdDecoder decodes zstd record batches whole. kafka-go's zstd codec
// streams with the library's default limits (windows up to 512 MiB and
// 64 GiB of memory), so a hostile batch header could make it allocate far
// more than the batch; this one is held to maxDecompressed.
var zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
	zstd.WithDecoderMaxMemory(maxDecompressed), zstd.WithDecoderMaxWindow(maxDecompressed))

// errInflateBudget is decompress's error for a batch inflating past what
// is left of its fetch's maxDecompressed.
var errInflateBudget = errors.New("inflates past the limit of one fetch")

// decompress inflates one record batch's records, at most limit bytes. The
// result's capacity is trimmed to its length when growing left much spare
// room: the records returned point into it, so its whole capacity stays
// alive as long as any of them.
func decompress(c compress.Compression, b []byte, limit int) ([]byte, error) {
	var out []byte
	if c == compress.Zstd {
		var err error
		if out, err = zstdDecoder.DecodeAll(b, nil); err != nil {
			return nil, fmt.Errorf("decompressing a record batch: %w", err)
		}
	} else {
		codec := c.Codec()
		if codec == nil {
			return nil, fmt.Errorf("compression codec %d is not supported", c)
		}
		r := codec.NewReader(bytes.NewReader(b))
		defer r.Close()
		// A producer's batch that inflates without bound (a decompression
		// bomb) must not take the consumer's memory with it.
		var err error
		if out, err = io.ReadAll(io.LimitReader(r, int64(limit)+1)); err != nil {
			return nil, fmt.Errorf("decompressing a record batch: %w", err)
		}
	}
	if len(out) > limit {
		return nil, fmt.Errorf("a record batch of %d compressed bytes %w (%d MiB)", len(b), errInflateBudget, maxDecompressed>>20)
	}
	if cap(out)-len(out) > len(out)/4 {
		out = append([]byte(nil), out...)
	}
	return out, nil
}
