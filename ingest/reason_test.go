package ingest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestRejectReasonLabels: each kind of refused event is counted under its
// schemas.Reason, the labels the speed layer's dead letters use too.
func TestRejectReasonLabels(t *testing.T) {
	e := startGateway(t, gwOpts{})
	deep := strings.Repeat("[", schemas.MaxNesting+1) + strings.Repeat("]", schemas.MaxNesting+1)
	lines := map[schemas.Reason][]string{
		schemas.ReasonMalformed:    {`[1,2]`, `{"event_id":"x",`},
		schemas.ReasonTooLarge:     {e.event("deep", `,"x":`+deep)},
		schemas.ReasonMissingField: {fmt.Sprintf(`{"ts":%q}`, e.now.Format(time.RFC3339))},
		schemas.ReasonBadField:     {e.event("bad", `,"amount":"12"`), `{"event_id":"","ts":1}`},
		schemas.ReasonFutureTime:   {fmt.Sprintf(`{"event_id":"f","ts":%q}`, e.now.Add(2*time.Hour).Format(time.RFC3339))},
	}
	var body []string
	for _, r := range schemas.Reasons {
		require.NotEmpty(t, lines[r], "a case for every reason: %s", r)
		body = append(body, lines[r]...)
	}
	code, res, _ := e.post(t, "pageviews", "application/x-ndjson", strings.Join(body, "\n"))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, len(body), res.Rejected)
	for _, r := range schemas.Reasons {
		require.Equal(t, float64(len(lines[r])), metricValue(t, e.reg, "tandem_ingest_events_rejected_total", map[string]string{"reason": r.String()}), r.String())
	}
}
