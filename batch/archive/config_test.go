package archive

import (
	"testing"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestConfigRejects: the archive section's problems, each named with its key
// and line, as when the section lived in schemas.
func TestConfigRejects(t *testing.T) {
	testenv.CheckSectionConfig(t, schemas.Parse, ConfigFrom, DefaultConfig(), []testenv.SectionReject{
		{Name: "zero file age", Section: "archive: { max_file_age: 0 }", Want: `t.yaml:2: archive.max_file_bytes and archive.max_file_age must be positive`},
		{Name: "negative file bytes", Section: "archive: { max_file_bytes: -1 }", Want: `t.yaml:2: archive.max_file_bytes and archive.max_file_age must be positive`},
	})
}
