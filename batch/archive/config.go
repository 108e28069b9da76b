package archive

import (
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// SectionKey is the archiver's section of tandem.yaml.
const SectionKey = "archive"

// Config is the archive section of tandem.yaml, and the archiver's tuning
// that is not in the file (yaml:"-"; zero is the default).
type Config struct {
	// Listen serves /healthz, /readyz and /metrics.
	Listen       string           `yaml:"listen"`
	MaxFileBytes int64            `yaml:"max_file_bytes"`
	MaxFileAge   schemas.Duration `yaml:"max_file_age"`

	// TmpDir holds the Parquet files being built, one per claimed
	// partition (default: a tandem-archive folder in os.TempDir()).
	TmpDir string `yaml:"-"`
	// RowGroupBytes bounds the memory of one open file (default 8 MiB).
	RowGroupBytes int64 `yaml:"-"`
	// SessionTimeout of the consumer group (default 10 s): how long a
	// crashed member keeps its partitions.
	SessionTimeout time.Duration `yaml:"-"`
	// FlushTimeout bounds the upload of the open files at shutdown or
	// rebalance (default 30 s); what is not uploaded by then is read from
	// Kafka again by the next owner.
	FlushTimeout time.Duration `yaml:"-"`
	// RetryPause is the first pause between upload attempts while S3
	// fails (default 1 s, doubling up to 30 s).
	RetryPause time.Duration `yaml:"-"`
}

// DefaultConfig is the archive section when the file leaves it out.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8083", MaxFileBytes: 128 << 20, MaxFileAge: schemas.Duration(5 * time.Minute)}
}

// ConfigFrom decodes and validates the archive section of cfg over
// DefaultConfig.
func ConfigFrom(cfg *schemas.Config) (Config, error) {
	return schemas.DecodeSection(cfg, cfg.Archive, DefaultConfig())
}

// Validate adds to p what is wrong with the section.
func (c Config) Validate(p *schemas.Problems) {
	if c.MaxFileBytes <= 0 || c.MaxFileAge <= 0 {
		p.Add([]any{"archive"}, "archive.max_file_bytes and archive.max_file_age must be positive")
	}
}
