package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// readTopicForTest reads every message written to the topic's partitions
// and requires there are want of them.
func readTopicForTest(t *testing.T, brokers []string, topic string, partitions, want int) []kgo.Message {
	t.Helper()
	out := testenv.ReadTopic(t, brokers, topic, partitions)
	require.Len(t, out, want, "messages in %s", topic)
	return out
}

func headerMap(hs []kgo.Header) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestProducerAppendWritesExactMessages(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "prod")
	ctx := context.Background()
	require.NoError(t, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{{Name: topic, Partitions: 4, ReplicationFactor: 1}}))

	for _, codec := range []string{"none", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			topic := topic + "." + codec
			require.NoError(t, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{{Name: topic, Partitions: 4, ReplicationFactor: 1}}))
			p, err := NewProducer(k.Brokers, ProducerOptions{Compression: codec})
			require.NoError(t, err)
			defer p.Close()
			ts := time.UnixMilli(1_790_000_000_123).UTC()
			var keys, values [][]byte
			for i := 0; i < 200; i++ {
				keys = append(keys, []byte("id-"+strconv.Itoa(i)))
				values = append(values, []byte(fmt.Sprintf(`{"event_id":"id-%d","x":%d, "kept": [1, 2]}`, i, i)))
			}
			start := time.Now()
			require.NoError(t, p.Append(ctx, topic, ts, map[string]string{"b": "2", "a": "1"}, keys, values))
			require.Less(t, time.Since(start), 2*time.Second, "a synchronous append must not wait for kafka-go's 1s default batch timeout")

			got := readTopicForTest(t, k.Brokers, topic, 4, 200)
			byKey := map[string]kgo.Message{}
			for _, m := range got {
				byKey[string(m.Key)] = m
			}
			for i := range keys {
				m, ok := byKey[string(keys[i])]
				require.True(t, ok, "key %s missing", keys[i])
				require.Equal(t, values[i], m.Value)
				require.True(t, ts.Equal(m.Time), "timestamp %v, want %v", m.Time, ts)
				require.Equal(t, map[string]string{"a": "1", "b": "2"}, headerMap(m.Headers))
				// Murmur2 like the Java client: the partition is a function of the key.
				require.Equal(t, kgo.Murmur2Balancer{}.Balance(kgo.Message{Key: keys[i]}, 0, 1, 2, 3), m.Partition)
			}
		})
	}
}

func TestProducerDeadBrokerFailsWithinDeadline(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p, err := NewProducer([]string{dead}, ProducerOptions{})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Append(ctx, "nowhere", time.Now(), nil, [][]byte{[]byte("k")}, [][]byte{[]byte("{}")})
	require.Error(t, err)
	require.Less(t, time.Since(start), 3*time.Second)
	require.Error(t, p.Ready())
}

func TestProducerReady(t *testing.T) {
	k := testenv.Kafka(t)
	p, err := NewProducer(k.Brokers, ProducerOptions{})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Ready())
}

func TestParseCompression(t *testing.T) {
	for _, name := range []string{"", "none", "lz4", "zstd", "snappy", "gzip"} {
		_, err := ParseCompression(name)
		require.NoError(t, err, name)
	}
	_, err := ParseCompression("brotli")
	require.Error(t, err)
	_, err = NewProducer([]string{"127.0.0.1:1"}, ProducerOptions{Compression: "brotli"})
	require.Error(t, err)
	_, err = NewProducer(nil, ProducerOptions{})
	require.Error(t, err)
}

func TestMessageBytesBoundsKafkaGo(t *testing.T) {
	// A message exactly at MessageBytes == BatchBytes must be writable: the
	// bound is never below kafka-go's own count.
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "big")
	ctx := context.Background()
	require.NoError(t, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: 1}}))
	p, err := NewProducer(k.Brokers, ProducerOptions{BatchBytes: 4096})
	require.NoError(t, err)
	defer p.Close()
	h := map[string]string{HeaderStream: "s", HeaderSchema: "0123456789abcdef"}
	key := []byte("k1")
	val := make([]byte, 0, 4096)
	for MessageBytes(key, append(val, 'x'), h) <= p.MaxMessageBytes() {
		val = append(val, 'x')
	}
	require.NoError(t, p.Append(ctx, topic, time.Now(), h, [][]byte{key}, [][]byte{val}))
	// Far over the limit: kafka-go refuses the whole write.
	err = p.Append(ctx, topic, time.Now(), h, [][]byte{key}, [][]byte{make([]byte, 5000)})
	var tooLarge kgo.MessageTooLargeError
	require.True(t, errors.As(err, &tooLarge), "got %v", err)
}

func TestTopicsOfConfig(t *testing.T) {
	cfg := schemas.Default()
	cfg.Kafka.ReplicationFactor = 3
	cfg.Streams = []*schemas.Stream{{Name: "a", Topic: "t.a", Partitions: 6}}
	require.Equal(t, []TopicSpec{{"t.a", 6, 3}, {"t.a.dlq", 1, 3}}, Topics(&cfg))
}
