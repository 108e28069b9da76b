package kafka_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// produceMixed writes n records per codec to partition 0 of topic, each
// codec through its own writer, so the partition holds record batches of
// every compression; some records have headers, some no key.
func produceMixed(t *testing.T, k *testenv.KafkaCluster, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, codec := range []kgo.Compression{0, kgo.Gzip, kgo.Snappy, kgo.Lz4, kgo.Zstd} {
		w := &kgo.Writer{Addr: kgo.TCP(k.Brokers...), Topic: topic, RequiredAcks: kgo.RequireAll, Compression: codec,
			BatchSize: 37, BatchTimeout: time.Millisecond, Transport: &kgo.Transport{}}
		msgs := make([]kgo.Message, n)
		for i := range msgs {
			msgs[i].Value = []byte(fmt.Sprintf(`{"codec":%d,"i":%d,"pad":%q}`, codec, i, make([]byte, i%40)))
			if i%3 != 0 {
				msgs[i].Key = []byte(fmt.Sprint("k", i))
			}
			if i%5 == 0 {
				msgs[i].Headers = []kgo.Header{{Key: "h", Value: []byte("v")}, {Key: "stream", Value: []byte("x")}}
			}
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
		require.NoError(t, w.Close())
	}
}

// TestBatchFetcherReadsWhatTheReaderReads compares the fetcher with
// kafka-go's Reader, record by record, from the oldest record and from the
// middle of a record batch, with a response limit small enough to cut
// batches.
func TestBatchFetcherReadsWhatTheReaderReads(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "bf")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopicSpecs(ctx, k.Brokers, kafka.Security{}, []kafka.TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: 1}}))
	const perCodec = 400
	produceMixed(t, k, topic, perCodec)
	total := 5 * perCodec

	// The truth, as kafka-go's Reader reads it.
	r := kgo.NewReader(kgo.ReaderConfig{Brokers: k.Brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var truth []kgo.Message
	for len(truth) < total {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		truth = append(truth, m)
	}

	for _, tc := range []struct {
		name     string
		start    int64
		maxBytes int
	}{
		{"from the oldest", kafka.FirstOffset, 0},
		{"from mid-batch", truth[1234].Offset, 0},
		{"small responses", truth[10].Offset, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := kafka.NewBatchFetcher(kafka.BatchFetcherConfig{Brokers: k.Brokers, Topic: topic, Start: tc.start,
				MaxBytes: tc.maxBytes, MaxWait: 100 * time.Millisecond})
			defer f.Close()
			want := truth
			if tc.start >= 0 {
				for len(want) > 0 && want[0].Offset < tc.start {
					want = want[1:]
				}
			}
			var got []kafka.Record
			for len(got) < len(want) {
				var err error
				got, err = f.Fetch(ctx, got)
				require.NoError(t, err)
			}
			require.Len(t, got, len(want))
			for i, m := range want {
				require.Equal(t, m.Offset, got[i].Offset, "record %d", i)
				require.Equal(t, m.Key, got[i].Key, "key of offset %d", m.Offset)
				require.Equal(t, m.Value, got[i].Value, "value of offset %d", m.Offset)
				require.Equal(t, m.Time.UnixMilli(), got[i].Time.UnixMilli(), "time of offset %d", m.Offset)
				var wantHeaders map[string]string
				for _, h := range m.Headers {
					if wantHeaders == nil {
						wantHeaders = map[string]string{}
					}
					wantHeaders[h.Key] = string(h.Value)
				}
				msg, err := got[i].Message(topic, 0)
				require.NoError(t, err)
				require.Equal(t, wantHeaders, msg.Headers, "headers of offset %d", m.Offset)
				require.Equal(t, kafka.Message{Topic: topic, Offset: m.Offset, Key: got[i].Key, Value: got[i].Value, Time: got[i].Time, Headers: wantHeaders}, msg)
			}
			require.Equal(t, int64(0), f.Lag())
		})
	}
}

// TestBatchFetcherWaitsAndStops checks that a fetcher at the end of the
// partition waits for new records, returns them, and gives up when its
// context ends.
func TestBatchFetcherWaitsAndStops(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "bf")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopicSpecs(ctx, k.Brokers, kafka.Security{}, []kafka.TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: 1}}))
	f := kafka.NewBatchFetcher(kafka.BatchFetcherConfig{Brokers: k.Brokers, Topic: topic, Start: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer f.Close()

	short, stop := context.WithTimeout(ctx, 500*time.Millisecond)
	t0 := time.Now()
	_, err := f.Fetch(short, nil)
	stop()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(t0), 3*time.Second)

	go func() {
		time.Sleep(300 * time.Millisecond)
		w := &kgo.Writer{Addr: kgo.TCP(k.Brokers...), Topic: topic, RequiredAcks: kgo.RequireAll, Transport: &kgo.Transport{}}
		defer w.Close()
		_ = w.WriteMessages(ctx, kgo.Message{Value: []byte("late")})
	}()
	got, err := f.Fetch(ctx, nil)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "late", string(got[0].Value))
	require.Equal(t, int64(0), got[0].Offset)
}

// deleteRecords deletes the records of partition 0 before offset, as
// retention does, with a DeleteRecords request (kafka-go has no client for
// it).
func deleteRecords(t *testing.T, k *testenv.KafkaCluster, topic string, before int64) {
	t.Helper()
	leader, err := (&kgo.Dialer{Timeout: 10 * time.Second}).LookupLeader(context.Background(), "tcp", k.Brokers[0], topic, 0)
	require.NoError(t, err)
	conn, err := net.Dial("tcp", net.JoinHostPort(leader.Host, fmt.Sprint(leader.Port)))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.Version = 1
	req.TimeoutMillis = 5000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Offset = before
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	// Request header v1: api key, version, correlation id, client id.
	msg := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	msg = binary.BigEndian.AppendUint16(msg, uint16(req.Version))
	msg = binary.BigEndian.AppendUint32(msg, 7)
	msg = binary.BigEndian.AppendUint16(msg, 4)
	msg = append(msg, "test"...)
	msg = req.AppendTo(msg)
	_, err = conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...))
	require.NoError(t, err)
	var size [4]byte
	_, err = io.ReadFull(conn, size[:])
	require.NoError(t, err)
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err = io.ReadFull(conn, body)
	require.NoError(t, err)
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	resp.Version = req.Version
	require.NoError(t, resp.ReadFrom(body[4:])) // after the correlation id
	require.Len(t, resp.Topics, 1)
	require.Len(t, resp.Topics[0].Partitions, 1)
	require.Zero(t, resp.Topics[0].Partitions[0].ErrorCode, "DeleteRecords")
	require.Equal(t, before, resp.Topics[0].Partitions[0].LowWatermark)
}

// TestBatchFetcherAfterRetention checks that a fetcher asked for records
// that retention deleted, or for the oldest record, starts at the oldest
// retained one.
func TestBatchFetcherAfterRetention(t *testing.T) {
	k := testenv.Kafka(t)
	if k.External {
		t.Skip("deletes records on the in-process broker only")
	}
	topic := testenv.UniqueName(t, "bf")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopicSpecs(ctx, k.Brokers, kafka.Security{}, []kafka.TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: 1}}))
	produceMixed(t, k, topic, 20) // 100 records, offsets 0..99
	deleteRecords(t, k, topic, 40)

	for _, start := range []int64{kafka.FirstOffset, 0, 10} {
		f := kafka.NewBatchFetcher(kafka.BatchFetcherConfig{Brokers: k.Brokers, Topic: topic, Start: start, MaxWait: 100 * time.Millisecond})
		got, err := f.Fetch(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, int64(40), got[0].Offset, "start %d", start)
		for len(got) < 60 {
			got, err = f.Fetch(ctx, got)
			require.NoError(t, err)
		}
		require.Len(t, got, 60)
		for i, r := range got {
			require.Equal(t, int64(40+i), r.Offset)
		}
		f.Close()
	}
}
