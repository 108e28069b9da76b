package ingest

import (
	"testing"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the ingest section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	testenv.CheckSectionConfig(t, schemas.Parse, ConfigFrom, DefaultConfig(), []testenv.SectionReject{
		{Name: "zero read timeout", Section: "ingest: { read_timeout: 0 }", Want: `t.yaml:2: ingest.read_timeout must be positive`},
		{Name: "write timeout under read + produce", Section: "ingest: { read_timeout: 1m, write_timeout: 1m }", Want: `t.yaml:2: ingest.write_timeout (1m0s) must be at least ingest.read_timeout + ingest.produce_timeout (1m10s)`},
		{Name: "zero events per request", Section: "ingest: { max_events_per_request: 0 }", Want: `t.yaml:2: ingest.max_events_per_request must be positive`},
		{Name: "per-client share over the total", Section: "ingest: { max_inflight_bytes_per_client: 999999999999 }", Want: `t.yaml:2: ingest.max_inflight_bytes_per_client (999999999999) must be between max_body_bytes`},
		{Name: "zero body", Section: "ingest:\n  max_body_bytes: 0", Want: `t.yaml:3: ingest.max_body_bytes must be positive`},
		{Name: "unknown key", Section: "ingest:\n  listen: x\n  lisen: y", Want: `t.yaml:4: field "lisen" not recognised`},
		{Name: "wrong type", Section: "ingest: { max_body_bytes: lots }", Want: `t.yaml:2: cannot read text`},
	})
}
