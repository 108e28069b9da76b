package kafka

import (
	"context"
	"strconv"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

func adminTestConfig(t *testing.T, topic string, partitions int) *schemas.Config {
	t.Helper()
	yaml := "kafka: { brokers: [\"127.0.0.1:1\"] }\n" + testenv.ExampleStreamsYAML(t,
		"topic: tandem.pageviews", "topic: "+topic,
		"partitions: 6", "partitions: "+strconv.Itoa(partitions))
	cfg, err := schemas.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

func metadataPartitions(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	c := &kgo.Client{Addr: kgo.TCP(brokers...), Transport: Security{}.transport("test")}
	md, err := c.Metadata(context.Background(), &kgo.MetadataRequest{Topics: []string{topic}})
	require.NoError(t, err)
	require.Len(t, md.Topics, 1)
	require.NoError(t, md.Topics[0].Error)
	return len(md.Topics[0].Partitions)
}

func TestEnsureTopicsCreatesStreamAndDLQIdempotently(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "tandem.pv")
	cfg := adminTestConfig(t, topic, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	require.NoError(t, EnsureTopics(ctx, k.Brokers, cfg))
	require.Equal(t, 6, metadataPartitions(t, k.Brokers, topic))
	require.Equal(t, 1, metadataPartitions(t, k.Brokers, topic+".dlq"))
	require.Equal(t, cfg.Streams[0].DLQTopic(), DLQTopic(topic))

	// Second run: nothing to create, no error.
	require.NoError(t, EnsureTopics(ctx, k.Brokers, cfg))

	// A producer right after creation works (own transport, no stale metadata).
	p, err := NewProducer(k.Brokers, ProducerOptions{})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Append(ctx, topic, time.Now(), nil, [][]byte{[]byte("k")}, [][]byte{[]byte(`{}`)}))

	// Configuring fewer partitions than exist is accepted.
	require.NoError(t, EnsureTopics(ctx, k.Brokers, adminTestConfig(t, topic, 3)))
}

func TestEnsureTopicsRefusesTooFewPartitions(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "tandem.pv")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{{Name: topic, Partitions: 2, ReplicationFactor: 1}}))

	err := EnsureTopics(ctx, k.Brokers, adminTestConfig(t, topic, 6))
	require.ErrorIs(t, err, ErrTooFewPartitions)
	require.Contains(t, err.Error(), topic+" has 2 partitions, the configuration says 6")
	require.Equal(t, 2, metadataPartitions(t, k.Brokers, topic), "tandem must not add partitions itself")
}

func TestEnsureTopicsUnreachable(t *testing.T) {
	dead := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := EnsureTopics(ctx, []string{dead}, adminTestConfig(t, "x", 1))
	require.Error(t, err)
	require.Error(t, EnsureTopics(ctx, nil, adminTestConfig(t, "x", 1)))
}
