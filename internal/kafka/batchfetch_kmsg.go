package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// useKmsg makes new fetchers parse with franz-go's kmsg instead of the
// hand parser: TANDEM_KAFKA_FETCH_PARSER=kmsg, for measuring one against
// the other (issue 16).
var useKmsg = os.Getenv("TANDEM_KAFKA_FETCH_PARSER") == "kmsg"

// kmsgParser is the fetch parser on kmsg: kmsg.FetchResponse for the
// response, kmsg.RecordBatch for each batch's header, kmsg.Record for each
// record. The framing Kafka leaves to the client (where one batch of a
// response ends, where one record of a batch ends) and the checksum are
// the client's in franz-go too (kgo's source.go), so they are here.
type kmsgParser struct {
	resp kmsg.FetchResponse // reused: its topic and partition slices are
	rec  kmsg.Record        // reused: its header slice is
}

func (f *BatchFetcher) parseResponseKmsg(b []byte) (records []byte, hw int64, err error) {
	if len(b) < 4 {
		return nil, 0, errShortResponse
	}
	if corr := int32(binary.BigEndian.Uint32(b)); corr != f.corrID {
		return nil, 0, fmt.Errorf("kafka: fetch response for request %d, want %d", corr, f.corrID)
	}
	resp := &f.kmsg.resp
	resp.Version = 4
	// Unsafe: the topic names point into b, which is only read here.
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
			return p.RecordBatches, p.HighWatermark, nil
		}
	}
	return nil, 0, fmt.Errorf("kafka: fetch response lacks %s/%d", f.topic, f.partition)
}

func (f *BatchFetcher) parseRecordsKmsg(b []byte, dst []Record) ([]Record, error) {
	be := binary.BigEndian
	budget := maxDecompressed
	if f.maxInflate > 0 {
		budget = f.maxInflate
	}
	first := len(dst)
	rec := &f.kmsg.rec
	for len(b) >= 17 {
		// The batch's length, to see whether the broker cut it at
		// max_bytes.
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
				return dst, nil
			}
			if err != nil {
				return dst, fmt.Errorf("kafka: %s/%d offset %d: %w", f.topic, f.partition, base, err)
			}
			budget -= len(out)
			recs = out
		}
		logAppend := batch.Attributes&0x8 != 0
		for range batch.NumRecords {
			length, n := binary.Varint(recs)
			if n <= 0 || length < 0 || length > int64(len(recs)-n) {
				return dst, fmt.Errorf("kafka: %s/%d offset %d: malformed record", f.topic, f.partition, base)
			}
			one := recs[: n+int(length) : n+int(length)]
			recs = recs[n+int(length):]
			// Unsafe: the header keys point into the batch; rec's
			// headers are dropped at the next record, and HeaderMap
			// decodes them again from the record's bytes.
			if err := rec.UnsafeReadFrom(one); err != nil {
				return dst, fmt.Errorf("kafka: %s/%d offset %d: malformed record", f.topic, f.partition, base)
			}
			ts := batch.FirstTimestamp + rec.TimestampDelta64
			if logAppend {
				ts = batch.MaxTimestamp
			}
			off := base + int64(rec.OffsetDelta)
			if off < f.next {
				continue
			}
			dst = append(dst, Record{Offset: off, Time: time.UnixMilli(ts), Key: rec.Key, Value: rec.Value, raw: one})
		}
		f.next = end
	}
	return dst, nil
}

// headerMapKmsg decodes the headers of a record read by parseRecordsKmsg.
func (r *Record) headerMapKmsg() (map[string]string, error) {
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
