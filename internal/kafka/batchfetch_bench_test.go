package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/compress"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const benchTopic = "pageviews"

// benchFetchResponse builds a Fetch v4 response (after its size prefix,
// correlation id 1) of about size bytes of partition 0 of benchTopic, as a
// broker returns the gateway's records: batches of perBatch pageviews
// (about 200 bytes of JSON each, key the event id, the gateway's two
// headers), compressed with codec by kafka-go's codec, as the gateway's
// writer compresses them. It returns the response and its record count.
func benchFetchResponse(tb testing.TB, codec compress.Compression, size, perBatch int) ([]byte, int) {
	tb.Helper()
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	devices := []string{"ios", "android", "web"}
	countries := []string{"US", "DE", "FR", "JP", "BR"}
	var batches []byte
	n := 0
	for len(batches) < size {
		var recs []byte
		for i := range perBatch {
			id := n + i
			val := fmt.Sprintf(`{"event_id":"ev-7-%08d","ts":%q,"device":%q,"user_id":"u%d","country":%q,"amount":%d.%02d,"latency_ms":%d.5,"page":"/catalog/item/%d?ref=home"}`,
				id, t0.Add(time.Duration(id)*time.Millisecond).Format(time.RFC3339Nano), devices[id%3], id%500, countries[id%5], id%1000, id%100, 1+id%300, id%9973)
			r := kmsg.Record{TimestampDelta64: int64(i / 10), OffsetDelta: int32(i), Key: fmt.Appendf(nil, "ev-7-%08d", id), Value: []byte(val),
				Headers: []kmsg.Header{{Key: HeaderStream, Value: []byte("pageviews")}, {Key: HeaderSchema, Value: []byte("0123456789abcdef")}}}
			body := r.AppendTo(nil) // with Length 0, one byte
			r.Length = int32(len(body) - 1)
			recs = r.AppendTo(recs)
		}
		if codec != 0 {
			var buf bytes.Buffer
			w := codec.Codec().NewWriter(&buf)
			_, err := w.Write(recs)
			require.NoError(tb, err)
			require.NoError(tb, w.Close())
			recs = buf.Bytes()
		}
		batch := kmsg.RecordBatch{FirstOffset: int64(n), Length: int32(49 + len(recs)), PartitionLeaderEpoch: 0, Magic: 2,
			Attributes: int16(codec), LastOffsetDelta: int32(perBatch - 1), FirstTimestamp: t0.UnixMilli(), MaxTimestamp: t0.UnixMilli() + int64(perBatch/10),
			ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(perBatch), Records: recs}
		raw := batch.AppendTo(nil)
		binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
		batches = append(batches, raw...)
		n += perBatch
	}
	resp := kmsg.FetchResponse{Version: 4, Topics: []kmsg.FetchResponseTopic{{Topic: benchTopic,
		Partitions: []kmsg.FetchResponseTopicPartition{{Partition: 0, HighWatermark: int64(n), LastStableOffset: int64(n), RecordBatches: batches}}}}}
	return resp.AppendTo(binary.BigEndian.AppendUint32(nil, 1)), n
}

// parseWith parses a whole response from offset 0 with the hand parser or
// the kmsg one.
func parseWith(useKmsg bool, resp []byte, dst []Record) ([]Record, error) {
	bf := &BatchFetcher{topic: benchTopic, corrID: 1}
	if useKmsg {
		bf.kmsg = &kmsgParser{}
	}
	recs, _, err := bf.parse(resp)
	if err != nil {
		return dst, err
	}
	return bf.records(recs, dst)
}

// TestParsersAgree: the hand parser and the kmsg one return the same
// records, times and headers from the same responses, whole and cut.
func TestParsersAgree(t *testing.T) {
	for _, codec := range []compress.Compression{0, compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd} {
		resp, n := benchFetchResponse(t, codec, 64<<10, 100)
		for _, cut := range []int{0, len(resp) / 3} {
			b := resp
			if cut > 0 {
				b = cutResponse(t, resp, cut)
			}
			hand, err := parseWith(false, b, nil)
			require.NoError(t, err)
			km, err := parseWith(true, b, nil)
			require.NoError(t, err)
			if cut == 0 {
				require.Len(t, hand, n)
			} else {
				require.NotEmpty(t, hand)
				require.Less(t, len(hand), n)
			}
			require.Len(t, km, len(hand), "codec %v cut %d", codec, cut)
			for i := range hand {
				require.Equal(t, hand[i].Offset, km[i].Offset)
				require.Equal(t, hand[i].Time, km[i].Time)
				require.Equal(t, hand[i].Key, km[i].Key)
				require.Equal(t, hand[i].Value, km[i].Value)
				hh, err := hand[i].HeaderMap()
				require.NoError(t, err)
				kh, err := km[i].HeaderMap()
				require.NoError(t, err)
				require.Equal(t, map[string]string{HeaderStream: "pageviews", HeaderSchema: "0123456789abcdef"}, hh)
				require.Equal(t, hh, kh)
			}
		}
	}
}

// cutResponse returns resp with its record set cut to keep bytes, as a
// broker cuts the last batch at max_bytes.
func cutResponse(t testing.TB, resp []byte, keep int) []byte {
	r := kmsg.FetchResponse{Version: 4}
	require.NoError(t, r.ReadFrom(resp[4:]))
	p := &r.Topics[0].Partitions[0]
	p.RecordBatches = p.RecordBatches[:keep]
	return r.AppendTo(append([]byte(nil), resp[:4]...))
}

// BenchmarkParseFetchResponse parses the same 1 MiB Fetch responses of
// pageviews (lz4 as the gateway writes them, and uncompressed) with the
// hand parser and with the kmsg one, alternating within each iteration so
// both see the same machine load, and reports each parser's time per
// record and kmsg's rate as a percentage of the hand parser's. Every
// record's key and value are touched.
//
// Run: go test ./internal/kafka -run '^$' -bench ParseFetchResponse
func BenchmarkParseFetchResponse(b *testing.B) {
	for _, codec := range []compress.Compression{compress.Lz4, 0} {
		resp, n := benchFetchResponse(b, codec, 1<<20, 500)
		name := "none"
		if codec != 0 {
			name = codec.String()
		}
		b.Run(name, func(b *testing.B) {
			var hand, km time.Duration
			var dst []Record
			var sum int
			b.ReportAllocs()
			for b.Loop() {
				for _, k := range []bool{false, true} {
					t0 := time.Now()
					var err error
					dst, err = parseWith(k, resp, dst[:0])
					for i := range dst {
						sum += len(dst[i].Key) + len(dst[i].Value)
					}
					d := time.Since(t0)
					if err != nil || len(dst) != n {
						b.Fatalf("kmsg %v: %d records of %d: %v", k, len(dst), n, err)
					}
					if k {
						km += d
					} else {
						hand += d
					}
				}
			}
			if sum == 0 {
				b.Fatal("nothing read")
			}
			recs := float64(n) * float64(b.N)
			b.ReportMetric(float64(hand.Nanoseconds())/recs, "hand_ns/record")
			b.ReportMetric(float64(km.Nanoseconds())/recs, "kmsg_ns/record")
			b.ReportMetric(100*hand.Seconds()/km.Seconds(), "kmsg_pct_of_hand")
			b.ReportMetric(float64(len(resp)>>10), "response_KiB")
			b.ReportMetric(float64(n), "records/response")
		})
	}
}
