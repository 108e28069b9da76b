package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

func TestDLQKeepsOriginalAndAddsReason(t *testing.T) {
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "tandem.src")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, EnsureTopicSpecs(ctx, k.Brokers, Security{}, []TopicSpec{
		{Name: topic, Partitions: 3, ReplicationFactor: 1},
		{Name: DLQTopic(topic), Partitions: DLQPartitions, ReplicationFactor: 1},
	}))
	d, err := NewDLQ(k.Brokers, ProducerOptions{})
	require.NoError(t, err)
	defer d.Close()

	ts := time.UnixMilli(1_790_000_000_456).UTC()
	letters := []DeadLetter{
		{Message: Message{Topic: topic, Partition: 2, Offset: 12345, Key: []byte("e1"), Value: []byte(`{"event_id":"e1","ts":"soon"}`),
			Time: ts, Headers: map[string]string{HeaderStream: "pageviews", HeaderSchema: "abc"}},
			Reason: `field "ts": not a timestamp`},
		{Message: Message{Topic: topic, Partition: 0, Offset: 7, Key: nil, Value: []byte("not json\x00"), Time: ts},
			Reason: "event is not a JSON object"},
	}
	require.NoError(t, d.Send(ctx, letters...))
	require.NoError(t, d.Send(ctx)) // nothing to send is fine

	got := readTopicForTest(t, k.Brokers, DLQTopic(topic), 1, 2)
	require.Equal(t, []byte("e1"), got[0].Key)
	require.Equal(t, letters[0].Message.Value, got[0].Value)
	require.True(t, ts.Equal(got[0].Time))
	require.Equal(t, map[string]string{
		HeaderStream: "pageviews", HeaderSchema: "abc",
		HeaderDLQReason: `field "ts": not a timestamp`, HeaderDLQSourcePartition: "2", HeaderDLQSourceOffset: "12345",
	}, headerMap(got[0].Headers))
	require.Empty(t, got[1].Key)
	require.Equal(t, []byte("not json\x00"), got[1].Value)
	require.Equal(t, map[string]string{
		HeaderDLQReason: "event is not a JSON object", HeaderDLQSourcePartition: "0", HeaderDLQSourceOffset: "7",
	}, headerMap(got[1].Headers))
}
