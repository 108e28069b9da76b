package status

import (
	"testing"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the status section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	testenv.CheckSectionConfig(t, schemas.Parse, ConfigFrom, DefaultConfig(), []testenv.SectionReject{
		{Name: "not a component", Section: "status:\n  addrs:\n    gateway: x:1", Want: `t.yaml:4: status.addrs: "gateway" is not a component (use ingest, speed, archive or serve)`},
		{Name: "red below yellow", Section: "status:\n  thresholds:\n    speed.freshness_seconds: { yellow: 5, red: 1 }", Want: `t.yaml:4: status.thresholds.speed.freshness_seconds: red (1) must not be below yellow (5)`},
	})
}
