package speed

import (
	"testing"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the speed section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	testenv.CheckSectionConfig(t, schemas.Parse, ConfigFrom, DefaultConfig(), []testenv.SectionReject{
		{Name: "zero flush interval", Section: "speed:\n  flush_interval: 0", Want: `t.yaml:3: speed.flush_interval must be positive`},
		{Name: "unknown key", Section: "speed: { flush: 1s }", Want: `t.yaml:2: field "flush" not recognised`},
		{Name: "tuning is not a key", Section: "speed: { max_fetch_bytes: 1 }", Want: `t.yaml:2: field "max_fetch_bytes" not recognised`},
	})
}
