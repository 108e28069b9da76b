package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// FuzzParseFetchResponse feeds BatchFetcher's response and record-batch
// parsers with mutations of real Fetch responses (every compression codec,
// headers, null keys, a response cut inside a batch) from the test broker
// (kept in testdata/fuzz):
// whatever a broker or a producer's batch holds, parsing must return an
// error or records in increasing offset order from the requested one, never
// panic, and never advance past what it returned.
func FuzzParseFetchResponse(f *testing.F) {
	// The seeds are in testdata/fuzz/FuzzParseFetchResponse, captured by
	// fetchResponseSeeds from the test broker (TestParseFetchResponseSeeds
	// checks that capture).
	f.Fuzz(func(t *testing.T, resp []byte, start int64) {
		if len(resp) < 4 || start < 0 {
			return
		}
		bf := &BatchFetcher{next: start, corrID: int32(binary.BigEndian.Uint32(resp))}
		recs, _, err := parseAny(bf, resp)
		if err != nil {
			return
		}
		prev := start - 1
		for _, r := range recs {
			if r.Offset <= prev {
				t.Fatalf("record offset %d after %d (start %d)", r.Offset, prev, start)
			}
			prev = r.Offset
		}
		if len(recs) > 0 && bf.next <= prev {
			t.Fatalf("next offset %d not past the last record %d", bf.next, prev)
		}
		if bf.next < start {
			t.Fatalf("next offset went back from %d to %d", start, bf.next)
		}
	})
}

// fetchResponseSeeds produces records with every codec into the test
// broker and returns raw Fetch v4 responses for them: whole, and cut short
// by a small max_bytes.
func fetchResponseSeeds(tb testing.TB) [][]byte {
	k := testenv.Kafka(tb)
	topic := testenv.UniqueName(tb, "fuzz")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(tb, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: 1}}))
	for _, codec := range []kgo.Compression{0, kgo.Gzip, kgo.Snappy, kgo.Lz4, kgo.Zstd} {
		w := &kgo.Writer{Addr: kgo.TCP(k.Brokers...), Topic: topic, RequiredAcks: kgo.RequireAll, Compression: codec,
			BatchSize: 5, BatchTimeout: time.Millisecond, Transport: &kgo.Transport{}}
		msgs := make([]kgo.Message, 10)
		for i := range msgs {
			msgs[i].Value = []byte(fmt.Sprintf(`{"event_id":"e%d","codec":%d}`, i, codec))
			if i%2 == 0 {
				msgs[i].Key = []byte(fmt.Sprint("k", i))
			}
			if i%3 == 0 {
				msgs[i].Headers = []kgo.Header{{Key: "stream", Value: []byte("pv")}}
			}
		}
		require.NoError(tb, w.WriteMessages(ctx, msgs...))
		require.NoError(tb, w.Close())
	}
	var seeds [][]byte
	for _, q := range []struct {
		offset   int64
		maxBytes int32
	}{{0, 1 << 20}, {12, 1 << 20}, {0, 300}, {27, 150}} {
		seeds = append(seeds, rawFetch(tb, k.Brokers[0], topic, q.offset, q.maxBytes))
	}
	return seeds
}

// rawFetch sends one Fetch v4 request as BatchFetcher does and returns the
// response after its size prefix.
func rawFetch(tb testing.TB, addr, topic string, offset int64, maxBytes int32) []byte {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(tb, err)
	defer conn.Close()
	require.NoError(tb, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Write(appendFetchRequest(nil, 1, topic, 0, offset, maxBytes, 100))
	require.NoError(tb, err)
	var size [4]byte
	_, err = io.ReadFull(conn, size[:])
	require.NoError(tb, err)
	resp := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err = io.ReadFull(conn, resp)
	require.NoError(tb, err)
	return resp
}

// TestParseFetchResponseSeeds checks the seeds themselves parse into the
// records produced, so the fuzz target starts from meaningful input.
func TestParseFetchResponseSeeds(t *testing.T) {
	seeds := fetchResponseSeeds(t)
	bf := &BatchFetcher{topic: "", partition: 0}
	// The whole log: 50 records, offsets 0..49, in the first response.
	bf.corrID = int32(binary.BigEndian.Uint32(seeds[0]))
	recs, hw, err := parseAny(bf, seeds[0])
	require.NoError(t, err)
	require.EqualValues(t, 50, hw)
	require.Len(t, recs, 50)
	for i, r := range recs {
		require.EqualValues(t, i, r.Offset)
		require.Contains(t, string(r.Value), fmt.Sprintf(`"event_id":"e%d"`, i%10))
	}
	// From offset 12: the records of the batch holding 12 that precede it
	// are skipped.
	bf = &BatchFetcher{next: 12, corrID: int32(binary.BigEndian.Uint32(seeds[1]))}
	recs, _, err = parseAny(bf, seeds[1])
	require.NoError(t, err)
	require.EqualValues(t, 12, recs[0].Offset)
	require.Len(t, recs, 38)
}

// parseAny parses a response for whatever topic it holds (the seeds' topic
// names are unique per test).
func parseAny(bf *BatchFetcher, resp []byte) ([]Record, int64, error) {
	if len(resp) < 4 {
		return nil, 0, errShortResponse
	}
	r := kmsg.FetchResponse{Version: 4}
	if err := r.ReadFrom(resp[4:]); err != nil || len(r.Topics) == 0 {
		return nil, 0, errShortResponse
	}
	bf.topic = r.Topics[0].Topic
	records, hw, err := bf.parseResponse(resp)
	if err != nil {
		return nil, 0, err
	}
	recs, err := bf.parseRecords(records, nil)
	return recs, hw, err
}

// TestInflateBudgetIsPerFetch: the decompressed bytes of one fetch response
// count together. Three gzip batches of about 100 KiB inflated each, under
// a 150 KiB budget: each parse of the same response returns one batch and
// stops before the next, which the following fetch (starting at it) reads;
// a single batch over the budget is an error naming the limit.
func TestInflateBudgetIsPerFetch(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "inflate")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Created with kafka-go's own admin call, so this test does not depend
	// on EnsureTopicSpecs' signature (the TLS/SASL work changes it).
	admin := &kgo.Client{Addr: kgo.TCP(k.Brokers...)}
	created, err := admin.CreateTopics(ctx, &kgo.CreateTopicsRequest{Topics: []kgo.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	require.NoError(t, err)
	require.NoError(t, created.Errors[topic])
	for b := range 3 {
		w := &kgo.Writer{Addr: kgo.TCP(k.Brokers...), Topic: topic, RequiredAcks: kgo.RequireAll, Compression: kgo.Gzip,
			BatchSize: 10, BatchTimeout: time.Millisecond, Transport: &kgo.Transport{}}
		msgs := make([]kgo.Message, 10)
		for i := range msgs {
			msgs[i].Value = append([]byte(fmt.Sprintf("b%d-%d:", b, i)), make([]byte, 10<<10)...)
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
		require.NoError(t, w.Close())
	}
	resp := rawFetch(t, k.Brokers[0], topic, 0, 1<<20)
	bf := &BatchFetcher{maxInflate: 150 << 10}
	for want := int64(0); want < 30; want += 10 {
		bf.corrID = int32(binary.BigEndian.Uint32(resp))
		recs, _, err := parseAny(bf, resp)
		require.NoError(t, err)
		require.Len(t, recs, 10, "one batch per fetch under the budget")
		require.Equal(t, want, recs[0].Offset)
		require.Equal(t, want+10, bf.next)
	}
	bf = &BatchFetcher{maxInflate: 50 << 10}
	bf.corrID = int32(binary.BigEndian.Uint32(resp))
	_, _, err = parseAny(bf, resp)
	require.ErrorIs(t, err, errInflateBudget)
	require.Equal(t, int64(0), bf.next)
}

// FuzzAppendRecords feeds appendRecords, the record decoder, with
// mutations of record bytes as a producer writes them (headers, null and
// empty keys and values, large timestamp deltas), without the batch
// checksum that keeps FuzzParseFetchResponse's mutations from reaching
// it: it must return an error or records of strictly increasing offsets in
// [max(base, from), end), never panic; and each record it returns must be
// what kmsg.Record decodes from the same bytes wherever kmsg can decode
// them (offset, time, key, value), with HeaderMap giving kmsg's headers.
func FuzzAppendRecords(f *testing.F) {
	var recs []byte
	for _, r := range []kmsg.Record{
		{OffsetDelta: 0, TimestampDelta64: 0, Key: []byte("k0"), Value: []byte(`{"event_id":"e0"}`),
			Headers: []kmsg.Header{{Key: HeaderStream, Value: []byte("pageviews")}, {Key: HeaderSchema, Value: []byte("0123")}}},
		{OffsetDelta: 1, TimestampDelta64: 1 << 40, Value: []byte(`{}`)},
		{OffsetDelta: 3, TimestampDelta64: -5, Key: []byte{}, Value: nil, Headers: []kmsg.Header{{Key: "", Value: nil}}},
	} {
		body := r.AppendTo(nil) // with Length 0, one byte
		r.Length = int32(len(body) - 1)
		recs = r.AppendTo(recs)
	}
	f.Add(recs, uint16(3), int64(100), uint16(4), int64(0), false)
	f.Add(recs, uint16(3), int64(100), uint16(4), int64(102), true)
	f.Add(recs[:len(recs)-3], uint16(3), int64(0), uint16(4), int64(0), false)
	f.Fuzz(func(t *testing.T, recs []byte, count uint16, base int64, span uint16, from int64, logAppend bool) {
		if base < 0 || base > 1<<50 || from < 0 || span == 0 {
			return
		}
		end := base + int64(span)
		ts := batchTimes{first: 1_700_000_000_000, max: 1_700_000_000_999, logAppend: logAppend}
		got, err := appendRecords(nil, recs, int(count), base, end, from, ts)
		if err != nil {
			return
		}
		prev := max(base, from) - 1
		for _, r := range got {
			if r.Offset <= prev || r.Offset >= end {
				t.Fatalf("offset %d after %d, batch [%d, %d) from %d", r.Offset, prev, base, end, from)
			}
			prev = r.Offset
			var k kmsg.Record
			if k.ReadFrom(r.raw) != nil {
				continue
			}
			wantTime := ts.first + k.TimestampDelta64
			if logAppend {
				wantTime = ts.max
			}
			if base+int64(k.OffsetDelta) != r.Offset || wantTime != r.Time.UnixMilli() ||
				!bytes.Equal(k.Key, r.Key) || (k.Key == nil) != (r.Key == nil) ||
				!bytes.Equal(k.Value, r.Value) || (k.Value == nil) != (r.Value == nil) {
				t.Fatalf("record %d decodes as offset %d, time %d, key %q, value %q; kmsg: delta %d, time %d, key %q, value %q",
					r.Offset, r.Offset, r.Time.UnixMilli(), r.Key, r.Value, k.OffsetDelta, wantTime, k.Key, k.Value)
			}
			h, err := r.HeaderMap()
			if err != nil {
				t.Fatalf("offset %d: %v", r.Offset, err)
			}
			if !maps.Equal(h, headerMapOf(k.Headers)) {
				t.Fatalf("offset %d: headers %v, kmsg %v", r.Offset, h, k.Headers)
			}
		}
	})
}

// headerMapOf is what HeaderMap returns for kmsg's headers.
func headerMapOf(hs []kmsg.Header) map[string]string {
	m := map[string]string{}
	for _, x := range hs {
		m[x.Key] = string(x.Value)
	}
	return m
}
