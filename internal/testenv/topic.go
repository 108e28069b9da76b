package testenv

import (
	"context"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"
)

// TopicEnds returns the end offset (the next offset to be written) of each
// of the topic's partitions, asked of the partition's leader.
func TopicEnds(t testing.TB, brokers []string, topic string, partitions int) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends := make([]int64, partitions)
	for p := range ends {
		// A topic just created may have no leader yet (Apache Kafka answers
		// Not Leader For Partition for a moment): ask again until the
		// deadline.
		for {
			end, err := lastOffset(ctx, brokers[0], topic, p)
			if err == nil {
				ends[p] = end
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("testenv.TopicEnds: %s/%d: %v", topic, p, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ends
}

func lastOffset(ctx context.Context, broker, topic string, partition int) (int64, error) {
	conn, err := kgo.DialLeader(ctx, "tcp", broker, topic, partition)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ReadLastOffset()
}

// ReadTopic returns every message of the topic's partitions, partition by
// partition, from the first offset up to the end each partition had when
// it was asked (TopicEnds): what was written before the call, no more.
func ReadTopic(t testing.TB, brokers []string, topic string, partitions int) []kgo.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kgo.Message
	for p, end := range TopicEnds(t, brokers, topic, partitions) {
		if end == 0 {
			continue
		}
		r := kgo.NewReader(kgo.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 50 * time.Millisecond})
		for off := int64(0); off < end; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("testenv.ReadTopic: %s/%d at offset %d of %d: %v", topic, p, off, end, err)
			}
			out = append(out, m)
		}
		r.Close()
	}
	return out
}
