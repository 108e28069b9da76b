package kafka

import (
	"context"
	"strconv"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestOffsetReaderHighWatermarks: after writing a known number of messages
// per partition, the reader reports exactly those counts as the next
// offsets; a dead broker fails within the timeout.
func TestOffsetReaderHighWatermarks(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "hw")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{{Name: topic, Partitions: 3, ReplicationFactor: 1}}))
	p, err := NewProducer(k.Brokers, ProducerOptions{})
	require.NoError(t, err)
	defer p.Close()
	want := map[int32]int64{}
	var keys, values [][]byte
	for i := 0; i < 100; i++ {
		key := []byte("k-" + strconv.Itoa(i))
		keys, values = append(keys, key), append(values, []byte("{}"))
		want[int32(kgo.Murmur2Balancer{}.Balance(kgo.Message{Key: key}, 0, 1, 2))]++
	}
	require.NoError(t, p.Append(ctx, topic, time.Now(), nil, keys, values))

	r := NewOffsetReader(k.Brokers, Security{}, 5*time.Second, "test")
	defer r.Close()
	hw, err := r.HighWatermarks(ctx, map[string]int{topic: 3})
	require.NoError(t, err)
	for p := int32(0); p < 3; p++ {
		require.Equal(t, want[p], hw[topic][p], "partition %d", p)
	}

	dead := NewOffsetReader([]string{"127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}, Security{}, time.Second, "test")
	defer dead.Close()
	t0 := time.Now()
	_, err = dead.HighWatermarks(ctx, map[string]int{topic: 3})
	require.Error(t, err)
	require.Less(t, time.Since(t0), 10*time.Second)
}
