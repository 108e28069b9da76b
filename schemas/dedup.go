package schemas

import "math"

// The duplicate horizon (streams[].dedup_window) is measured on a
// partition's dedup clock: the highest Kafka message timestamp at or below
// an offset. Kafka time, not event time: event time is the client's and
// can be anything (a replayed id with an old event time must not slip past
// the window, a future one must not extend it), while the message
// timestamp is set by the gateway or broker and is the same on every read
// of the message. The running maximum makes it monotone in offsets even
// when gateways' clocks disagree, so a partition's ids expire in offset
// order: a batch run that resumes at clock c needs only the ids counted
// after c - window, and the answer depends on nothing but the partition's
// messages in offset order.

// DedupClock is a partition's dedup clock; the zero value is before the
// first message.
type DedupClock struct {
	Ms  int64 // the clock (Unix ms), valid once Set
	Set bool
}

// Advance moves the clock to a message's Kafka timestamp if that is later
// and returns the clock.
func (c *DedupClock) Advance(kafkaMs int64) int64 {
	if !c.Set || kafkaMs > c.Ms {
		c.Ms, c.Set = kafkaMs, true
	}
	return c.Ms
}

// DedupWindowMs is the stream's duplicate horizon in milliseconds;
// math.MaxInt64 when unset (an id is a duplicate forever).
func (s *Stream) DedupWindowMs() int64 {
	if s.DedupWindow <= 0 {
		return math.MaxInt64
	}
	return s.DedupWindow.D().Milliseconds()
}

// DedupExpired reports whether an id counted at clock keptMs no longer
// makes an occurrence at clock nowMs a duplicate: the window has passed.
// Both layers decide with it.
func DedupExpired(keptMs, nowMs, windowMs int64) bool {
	return windowMs != math.MaxInt64 && nowMs-keptMs >= windowMs
}
