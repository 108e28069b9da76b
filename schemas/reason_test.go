package schemas

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReasonOf: each kind of refused event gets its one Reason, the label
// ingest and speed both count it under.
func TestReasonOf(t *testing.T) {
	s := allTypesConfig(t).Stream("ev")
	ingest := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dec := NewDecoder(s, time.Minute)
	deep := strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1)
	for _, tc := range []struct {
		name string
		raw  string
		want Reason
	}{
		{"not utf-8", "{\"id\":\"a\xff\"}", ReasonMalformed},
		{"not json", `{"id":`, ReasonMalformed},
		{"not an object", `[1,2]`, ReasonMalformed},
		{"too big", `{"pad":"` + strings.Repeat("x", MaxEventBytes) + `"}`, ReasonTooLarge},
		{"too deep", `{"id":"a","x":` + deep + `}`, ReasonTooLarge},
		{"missing required", `{"id":"a","ts":"2026-01-02T03:04:05Z"}`, ReasonMissingField},
		{"missing id", `{"ts":"2026-01-02T03:04:05Z","kind":"k"}`, ReasonMissingField},
		{"empty id", `{"id":"","ts":"2026-01-02T03:04:05Z","kind":"k"}`, ReasonBadField},
		{"wrong type", `{"id":"a","ts":"2026-01-02T03:04:05Z","kind":"k","i":"seven"}`, ReasonBadField},
		{"future", `{"id":"a","ts":"2026-01-02T04:04:05Z","kind":"k"}`, ReasonFutureTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dec.Decode([]byte(tc.raw), ingest)
			require.Error(t, err)
			require.Equal(t, tc.want, ReasonOf(err), "%v", err)
			require.Contains(t, Reasons, ReasonOf(err))
		})
	}
	require.Equal(t, ReasonMalformed, ReasonOf(errors.New("not a FieldError")))
	require.Equal(t, "malformed, too_large, missing_field, bad_field, future_time", ReasonLabels())
}
