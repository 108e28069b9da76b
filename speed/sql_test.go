package speed_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRawEvents: a stream with raw_events gets its folded events, once
// each, in <stream>_events.
func TestRawEvents(t *testing.T) {
	e := newEnv(t, envOptions{partitions: 2, chunkSize: 100, rawEvents: true})
	evs := generate(genOptions{n: 500, seed: 4, base: time.Now().UTC(), dupRate: 0.05, invalidRate: 0.05})
	produce(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, evs)
	startService(t, e)
	waitExact(t, e, truth(evs), 60*time.Second)
	valid, _, _ := countValid(evs)
	var n, ids uint64
	require.Eventually(t, func() bool {
		err := e.conn.QueryRow(context.Background(), "SELECT count(), uniqExact(event_id) FROM "+e.cfg.ClickHouse.Database+".pageviews_events FINAL").Scan(&n, &ids)
		return err == nil && n == uint64(valid)
	}, 30*time.Second, 200*time.Millisecond, "raw events: %d rows, want %d", n, valid)
	require.Equal(t, n, ids)
}
