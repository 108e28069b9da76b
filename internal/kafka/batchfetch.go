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

	headers []byte // the record's headers as encoded (count, then key/value pairs); nil or empty for none
	raw     []byte // the whole record as encoded, when the kmsg parser read it
}

// HeaderMap decodes the record's headers (nil when it has none; a header
// that repeats a key keeps its last value, as Message.Headers does). The
// fetcher does not decode them: most consumers never look at headers, and
// the speed layer looks only for the records it dead-letters.
func (r *Record) HeaderMap() (map[string]string, error) {
	if r.raw != nil {
		return r.headerMapKmsg()
	}
	if len(r.headers) == 0 {
		return nil, nil
	}
	hr := reader{b: r.headers}
	n := hr.varint()
	if n <= 0 {
		return nil, hr.err
	}
	h := make(map[string]string, min(n, 64))
	for ; n > 0 && hr.err == nil; n-- {
		k := hr.varbytes()
		v := hr.varbytes()
		if hr.err == nil {
			h[string(k)] = string(v)
		}
	}
	if hr.err != nil {
		return nil, fmt.Errorf("kafka: offset %d: malformed record headers", r.Offset)
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
// connection to the partition's leader and parses record batches in place:
// one read per response, no copy and no allocation per record, no goroutine
// hand-off per record. kafka-go's Reader (which tandem no longer uses) copies
// every key and value into fresh slices and passes every message through a
// channel, which costs about 2 µs a message, as much as all the archiver's
// other work.
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
	// kmsg, when set, parses with franz-go's kmsg instead of by hand.
	kmsg *kmsgParser
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
	f := &BatchFetcher{brokers: cfg.Brokers, topic: cfg.Topic, partition: cfg.Partition,
		maxBytes: cfg.MaxBytes, maxWait: cfg.MaxWait, sec: cfg.Security, log: cfg.Log, next: cfg.Start, hw: -1}
	if useKmsg {
		f.kmsg = &kmsgParser{}
	}
	return f
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
	records, hw, err := f.parse(resp)
	if err != nil {
		return dst, err
	}
	f.hw, f.fetched, f.fromOldest = hw, true, false
	before := len(dst)
	dst, err = f.records(records, dst)
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
// size prefix.
func appendFetchRequest(b []byte, corrID int32, topic string, partition int32, offset int64, maxBytes, maxWaitMs int32) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, 0) // size, set below
	b = be.AppendUint16(b, 1) // api key: Fetch
	b = be.AppendUint16(b, 4) // api version
	b = be.AppendUint32(b, uint32(corrID))
	b = appendString(b, "tandem")
	b = be.AppendUint32(b, ^uint32(0)) // replica id -1: a consumer
	b = be.AppendUint32(b, uint32(maxWaitMs))
	b = be.AppendUint32(b, 1) // min bytes
	b = be.AppendUint32(b, uint32(maxBytes))
	b = append(b, 0) // read_uncommitted, as kafka-go's Reader
	b = be.AppendUint32(b, 1)
	b = appendString(b, topic)
	b = be.AppendUint32(b, 1)
	b = be.AppendUint32(b, uint32(partition))
	b = be.AppendUint64(b, uint64(offset))
	b = be.AppendUint32(b, uint32(maxBytes))
	be.PutUint32(b, uint32(len(b)-4))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

var errShortResponse = errors.New("kafka: fetch response is truncated")

// parse is parseResponse or parseResponseKmsg.
func (f *BatchFetcher) parse(b []byte) ([]byte, int64, error) {
	if f.kmsg != nil {
		return f.parseResponseKmsg(b)
	}
	return f.parseResponse(b)
}

// records is parseRecords or parseRecordsKmsg.
func (f *BatchFetcher) records(b []byte, dst []Record) ([]Record, error) {
	if f.kmsg != nil {
		return f.parseRecordsKmsg(b, dst)
	}
	return f.parseRecords(b, dst)
}

// parseResponse checks a Fetch v4 response (after its size) and returns the
// record bytes and high watermark of the fetcher's partition.
func (f *BatchFetcher) parseResponse(b []byte) (records []byte, hw int64, err error) {
	r := reader{b: b}
	if corr := r.int32(); corr != f.corrID {
		return nil, 0, fmt.Errorf("kafka: fetch response for request %d, want %d", corr, f.corrID)
	}
	r.int32() // throttle time
	for nt := r.int32(); nt > 0 && r.err == nil; nt-- {
		topic := r.str()
		for np := r.int32(); np > 0 && r.err == nil; np-- {
			part, code := r.int32(), r.int16()
			high := r.int64()
			r.int64() // last stable offset
			if na := r.int32(); na > 0 {
				r.skip(int(na) * 16) // aborted transactions: read_uncommitted keeps them
			}
			recs := r.bytes()
			if r.err != nil {
				return nil, 0, r.err
			}
			if topic != f.topic || part != f.partition {
				continue
			}
			if code != 0 {
				return nil, 0, fmt.Errorf("kafka: fetching %s/%d at offset %d: %w", f.topic, f.partition, f.next, kgo.Error(code))
			}
			return recs, high, nil
		}
	}
	if r.err != nil {
		return nil, 0, r.err
	}
	return nil, 0, fmt.Errorf("kafka: fetch response lacks %s/%d", f.topic, f.partition)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// parseRecords appends the records of the record batches in b from f.next
// on, and advances f.next past every complete batch. A truncated batch at
// the end (the broker cuts at max_bytes) is left for the next fetch.
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
		base := int64(be.Uint64(b))
		size := int(int32(be.Uint32(b[8:])))
		if size < 49 || 12+size > len(b) {
			break // truncated
		}
		batch := b[12 : 12+size]
		b = b[12+size:]
		if magic := batch[4]; magic != 2 {
			return dst, fmt.Errorf("kafka: %s/%d offset %d: record batch format v%d is not supported (only v2, Kafka 0.11 and later)", f.topic, f.partition, base, magic)
		}
		if crc := be.Uint32(batch[5:]); crc32.Checksum(batch[9:], castagnoli) != crc {
			return dst, fmt.Errorf("kafka: %s/%d offset %d: record batch checksum mismatch", f.topic, f.partition, base)
		}
		attrs := be.Uint16(batch[9:])
		end := base + int64(int32(be.Uint32(batch[11:]))) + 1
		firstTS := int64(be.Uint64(batch[15:]))
		maxTS := int64(be.Uint64(batch[23:]))
		count := int(int32(be.Uint32(batch[45:])))
		if end <= f.next {
			continue // before the requested offset
		}
		if attrs&0x20 != 0 { // control batch: transaction markers, not data
			f.next = end
			continue
		}
		recs := batch[49:]
		if codec := compress.Compression(attrs & 7); codec != 0 {
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
		logAppend := attrs&0x8 != 0
		r := reader{b: recs}
		for i := 0; i < count && r.err == nil; i++ {
			length := int(r.varint())
			rec := reader{b: r.take(length)}
			rec.skip(1) // attributes
			ts := firstTS + rec.varint()
			if logAppend {
				ts = maxTS
			}
			off := base + rec.varint()
			key := rec.varbytes()
			val := rec.varbytes()
			// The rest is the headers, kept as they are (HeaderMap).
			hdrs := rec.b
			if r.err != nil || rec.err != nil {
				return dst, fmt.Errorf("kafka: %s/%d offset %d: malformed record", f.topic, f.partition, base)
			}
			if off < f.next {
				continue
			}
			dst = append(dst, Record{Offset: off, Time: time.UnixMilli(ts), Key: key, Value: val, headers: hdrs})
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

// reader decodes Kafka's big-endian and zig-zag varint fields; the first
// error sticks and makes every later read return zero.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errShortResponse
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) skip(n int) { r.take(n) }

func (r *reader) int16() int16 {
	if b := r.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *reader) int32() int32 {
	if b := r.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (r *reader) int64() int64 {
	if b := r.take(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func (r *reader) str() string {
	n := int(r.int16())
	return string(r.take(n))
}

// bytes reads nullable bytes with an int32 length.
func (r *reader) bytes() []byte {
	n := r.int32()
	if n < 0 {
		return nil
	}
	return r.take(int(n))
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	u, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortResponse
		return 0
	}
	r.b = r.b[n:]
	return int64(u>>1) ^ -int64(u&1)
}

// varbytes reads a record's nullable key or value (varint length, -1 null).
func (r *reader) varbytes() []byte {
	n := r.varint()
	if n < 0 {
		return nil
	}
	return r.take(int(n))
}
