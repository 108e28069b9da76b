package archive

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestVerdictMatchesDecode checks that the archiver's verdict (valid) is
// Decoder.Decode's, with and without a future-skew limit, for events that
// are valid, in the future by more or less than the limit, and invalid in
// other ways; and that the event it fills is Decode's.
func TestVerdictMatchesDecode(t *testing.T) {
	cfg, err := schemas.Parse("test.yaml", []byte(`
kafka: { brokers: ["127.0.0.1:9092"] }
s3: { endpoint: "http://127.0.0.1:9000", bucket: b, access_key: a, secret_key: s }
`+testenv.ExampleStreamsYAML(t, "partitions: 6", "partitions: 1")), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	s := cfg.Streams[0]
	ingest := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ev := func(ts time.Time) []byte {
		return fmt.Appendf(nil, `{"event_id":"e\u00e9%d","ts":%q,"country":"DE","amount":1.5}`, ts.UnixMilli(), ts.Format(time.RFC3339Nano))
	}
	raws := [][]byte{
		[]byte(`not json`),
		[]byte(`{"event_id":"a","ts":"yesterday"}`),
		[]byte(`{"event_id":"","ts":"2026-11-25T12:00:00Z"}`),
		[]byte(`{"ts":"2026-11-25T12:00:00Z"}`),
		[]byte(`{"event_id":"a","ts":"2026-11-25T12:00:00Z","amount":"x"}`),
	}
	for _, d := range []time.Duration{-2 * time.Hour, 0, time.Minute, time.Hour - time.Millisecond, time.Hour,
		time.Hour + time.Millisecond, 3 * time.Hour, 100 * 24 * time.Hour} {
		raws = append(raws, ev(ingest.Add(d)))
	}
	var into schemas.Event
	for _, skew := range []time.Duration{0, time.Hour} {
		dec := schemas.NewDecoder(s, skew)
		for _, at := range []time.Time{ingest, {}} {
			for _, raw := range raws {
				t.Run(fmt.Sprintf("skew=%s/ingest=%v/%s", skew, !at.IsZero(), raw), func(t *testing.T) {
					want, err := dec.Decode(raw, at)
					got := valid(dec, &into, raw, at)
					require.Equal(t, err == nil, got, "verdict (Decode says %v)", err)
					if got {
						require.Equal(t, want, into)
					}
				})
			}
		}
	}
}
