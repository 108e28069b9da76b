package schemas

import (
	"errors"
	"strings"
)

// Reason is why an event was refused. Its value is the bounded label of
// the refusal metrics (tandem_ingest_events_rejected_total and
// tandem_speed_dlq_total, reason label): every layer decodes with the same
// Decoder, so the same bytes get the same Reason in ingest, speed and
// batch, and a dashboard can put the layers side by side. The full
// message (FieldError.Error) goes to the client or the dead letter.
type Reason string

// The reasons, one per kind of refusal. Changing a value changes a metric
// label that dashboards and alerts select on (deploy/observability).
const (
	// ReasonMalformed: not valid UTF-8, not valid JSON, or not a JSON object.
	ReasonMalformed Reason = "malformed"
	// ReasonTooLarge: over MaxEventBytes, nested deeper than MaxNesting, or
	// (ingest only) a record over the log's message size limit.
	ReasonTooLarge Reason = "too_large"
	// ReasonMissingField: a required field is absent or null.
	ReasonMissingField Reason = "missing_field"
	// ReasonBadField: a field's value does not fit its type, or the id is
	// empty.
	ReasonBadField Reason = "bad_field"
	// ReasonFutureTime: the event time is more than ingest.max_future_skew
	// after the ingest time (the error wraps ErrFutureEvent).
	ReasonFutureTime Reason = "future_time"
)

// Reasons lists every Reason, for help texts and tests.
var Reasons = []Reason{ReasonMalformed, ReasonTooLarge, ReasonMissingField, ReasonBadField, ReasonFutureTime}

// String is the metric label value.
func (r Reason) String() string { return string(r) }

// ReasonOf is the Reason of a Decode error. Decode returns only
// *FieldError; any other error is counted as malformed rather than given
// a label of its own, so the label set stays the documented one.
func ReasonOf(err error) Reason {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Reason != "" {
		return fe.Reason
	}
	return ReasonMalformed
}

// ReasonLabels lists the label values, comma-separated, for help texts.
func ReasonLabels() string {
	out := make([]string, len(Reasons))
	for i, r := range Reasons {
		out[i] = r.String()
	}
	return strings.Join(out, ", ")
}
