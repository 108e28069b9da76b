package testenv_test

import (
	"context"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// ReadTopic returns exactly what was written, from every partition, and
// TopicEnds counts it per partition.
func TestReadTopic(t *testing.T) {
	k := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := testenv.UniqueName(t, "tandem.read")
	createTopic(ctx, t, k, topic, 3)
	require.Empty(t, testenv.ReadTopic(t, k.Brokers, topic, 3))
	produce(ctx, t, k, topic, 0, 20)

	ends := testenv.TopicEnds(t, k.Brokers, topic, 3)
	var total int64
	for _, e := range ends {
		total += e
	}
	require.EqualValues(t, 20, total)
	var got []int
	for _, m := range testenv.ReadTopic(t, k.Brokers, topic, 3) {
		v, err := strconv.Atoi(string(m.Value))
		require.NoError(t, err)
		got = append(got, v)
	}
	sort.Ints(got)
	want := make([]int, 20)
	for i := range want {
		want[i] = i
	}
	require.Equal(t, want, got)
}
