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
// writer compresses them. It returns the response and the records it holds
// (headers aside: every record has the gateway's two).
func benchFetchResponse(tb testing.TB, codec compress.Compression, size, perBatch int) ([]byte, []Record) {
	tb.Helper()
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	devices := []string{"ios", "android", "web"}
	countries := []string{"US", "DE", "FR", "JP", "BR"}
	var batches []byte
	var want []Record
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
			want = append(want, Record{Offset: int64(id), Time: time.UnixMilli(t0.UnixMilli() + r.TimestampDelta64), Key: r.Key, Value: r.Value})
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
	return resp.AppendTo(binary.BigEndian.AppendUint32(nil, 1)), want
}

// parseWhole parses a whole response from offset 0.
func parseWhole(resp []byte, dst []Record) ([]Record, error) {
	bf := &BatchFetcher{topic: benchTopic, corrID: 1}
	recs, _, err := bf.parseResponse(resp)
	if err != nil {
		return dst, err
	}
	return bf.parseRecords(recs, dst)
}

// TestParseResponses parses responses of every codec, whole and cut as a
// broker cuts at max_bytes, into the records they were built from: offsets,
// times, keys, values and headers.
func TestParseResponses(t *testing.T) {
	for _, codec := range []compress.Compression{0, compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd} {
		resp, want := benchFetchResponse(t, codec, 64<<10, 100)
		for _, cut := range []int{0, len(resp) / 3} {
			b := resp
			if cut > 0 {
				b = cutResponse(t, resp, cut)
			}
			got, err := parseWhole(b, nil)
			require.NoError(t, err)
			if cut == 0 {
				require.Len(t, got, len(want), "codec %v", codec)
			} else {
				// Whole batches only: the cut one is left for the next
				// fetch.
				require.NotEmpty(t, got)
				require.Less(t, len(got), len(want))
				require.Zero(t, len(got)%100, "codec %v: %d records", codec, len(got))
			}
			for i := range got {
				require.Equal(t, want[i].Offset, got[i].Offset)
				require.Equal(t, want[i].Time, got[i].Time)
				require.Equal(t, want[i].Key, got[i].Key)
				require.Equal(t, want[i].Value, got[i].Value)
				h, err := got[i].HeaderMap()
				require.NoError(t, err)
				require.Equal(t, map[string]string{HeaderStream: "pageviews", HeaderSchema: "0123456789abcdef"}, h)
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

// BenchmarkParseFetchResponse parses 1 MiB Fetch responses of pageviews
// (lz4 as the gateway writes them, and uncompressed), touching every
// record's key and value, and reports the time per record. The hand parser
// kmsg replaced measured in the same way (docs/performance.md).
//
// Run: go test ./internal/kafka -run '^$' -bench ParseFetchResponse
func BenchmarkParseFetchResponse(b *testing.B) {
	for _, codec := range []compress.Compression{compress.Lz4, 0} {
		resp, want := benchFetchResponse(b, codec, 1<<20, 500)
		name := "none"
		if codec != 0 {
			name = codec.String()
		}
		b.Run(name, func(b *testing.B) {
			var dst []Record
			var sum int
			b.ReportAllocs()
			b.SetBytes(int64(len(resp)))
			for b.Loop() {
				var err error
				dst, err = parseWhole(resp, dst[:0])
				if err != nil || len(dst) != len(want) {
					b.Fatalf("%d records of %d: %v", len(dst), len(want), err)
				}
				for i := range dst {
					sum += len(dst[i].Key) + len(dst[i].Value)
				}
			}
			if sum == 0 {
				b.Fatal("nothing read")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(len(want)*b.N), "ns/record")
			b.ReportMetric(float64(len(want)), "records/response")
		})
	}
}
