package speed_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDedupWindowExact: a stream with dedup_window: 60s through the broker,
// messages stamped two seconds apart (with jumps ahead, so later stamps
// fall behind the clock) and resends up to 300 messages back: resends
// inside the window are dropped, later ones count again, and the speed
// rows equal the truth under the documented rule. One partition and
// chunks larger than the load, so the speed layer's horizon holds every id.
func TestDedupWindowExact(t *testing.T) {
	const window = 60 * time.Second
	e := newEnv(t, envOptions{partitions: 1, chunkSize: 10000, window: "60s"})
	base := time.Now().UTC()
	evs := generate(genOptions{n: 1500, seed: 11, base: base, dupRate: 0.08, lateRate: 0.1, invalidRate: 0.02})
	at := make([]time.Time, len(evs))
	stamp := base
	for i := range evs {
		stamp = stamp.Add(2 * time.Second)
		at[i] = stamp
		if i%40 == 0 {
			at[i] = stamp.Add(30 * time.Second) // the next messages are behind the clock
		}
	}
	produceAt(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, evs, at)

	// The rule, written out: the clock is the highest stamp so far; an id
	// is a duplicate while the clock is less than window past the clock of
	// its counted occurrence.
	var kept []event
	counted := map[string]time.Time{}
	var clock time.Time
	inside, after := 0, 0
	for i, ev := range evs {
		if at[i].After(clock) {
			clock = at[i]
		}
		if !ev.valid {
			continue
		}
		if c, ok := counted[ev.id]; ok {
			if clock.Sub(c) < window {
				inside++
				continue
			}
			after++
		}
		counted[ev.id] = clock
		kept = append(kept, ev)
	}
	require.Positive(t, inside, "resends inside the window")
	require.Positive(t, after, "resends after the window")

	_, reg, stop := startService(t, e)
	waitExact(t, e, aggregate(kept), 60*time.Second)
	require.Equal(t, float64(inside), sumMetric(t, reg, "tandem_speed_duplicates_total"))
	require.Equal(t, float64(len(kept)), sumMetric(t, reg, "tandem_speed_events_folded_total"))
	stop()
}
