package schemas

import "time"

// Retention, measured as docs/architecture.md ("Retention") says:
//
//   - a view keeps whole UTC days of event time: the days from
//     View.RetainedFrom(now) on, the UTC midnight at or before
//     now − views[].retention, so "the last N days" stays answerable;
//   - the master dataset keeps raw objects on Kafka time: an object goes
//     once the partition's dedup clock at its last message is before
//     Stream.RawCutoff(now) = now − streams[].retention; Kafka time is the
//     only time an object's offsets are ordered by, so what goes is always
//     a prefix of the partition;
//   - the lake keeps the UTC event days from Stream.LakeRetainedFrom on:
//     the first day whose every valid event has a Kafka time at or after
//     the cutoff (an event is refused when its time is more than
//     ingest.max_future_skew past its Kafka time), so every lake day left
//     is whole.
//
// Validation ties them: a view's retained days must be computable from the
// retained master dataset (RetentionMargin).

// Day is one UTC day, the unit views and the lake are kept and dropped in.
const Day = 24 * time.Hour

// RetainedFrom is the first instant the view keeps at now: a UTC midnight,
// or the zero time when views[].retention is unset (forever).
func (v *View) RetainedFrom(now time.Time) time.Time {
	if v.Retention <= 0 {
		return time.Time{}
	}
	return now.UTC().Add(-v.Retention.D()).Truncate(Day)
}

// RawCutoff is the Kafka time before which the master dataset may drop a
// partition's objects at now; the zero time when streams[].retention is
// unset (forever).
func (s *Stream) RawCutoff(now time.Time) time.Time {
	if s.Retention <= 0 {
		return time.Time{}
	}
	return now.UTC().Add(-s.Retention.D())
}

// LakeRetainedFrom is the first UTC day the lake export keeps at now, given
// ingest.max_future_skew; the zero time when streams[].retention is unset.
func (s *Stream) LakeRetainedFrom(now time.Time, maxFutureSkew time.Duration) time.Time {
	cut := s.RawCutoff(now)
	if cut.IsZero() {
		return cut
	}
	t := cut.Add(maxFutureSkew)
	if d := t.Truncate(Day); !d.Equal(t) {
		return d.Add(Day)
	}
	return t
}

// RetentionMargin is how much longer streams[].retention must be than the
// retention of each view on the stream: one day for the rounding of
// RetainedFrom down to a midnight, plus max_future_skew, by which a valid
// event's time may run ahead of its Kafka time. With it, every valid event
// of a retained view day has a Kafka time at or after RawCutoff, so its
// raw object is still there when the day is recomputed.
func RetentionMargin(maxFutureSkew time.Duration) time.Duration {
	return Day + maxFutureSkew
}
