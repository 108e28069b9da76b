package speed

import (
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// SectionKey is the speed layer's section of tandem.yaml.
const SectionKey = "speed"

// Config is the speed section of tandem.yaml, and the speed layer's tuning
// that is not in the file (yaml:"-": set by tests and benchmarks; zero is
// the default).
type Config struct {
	// Listen serves /healthz, /readyz and /metrics.
	Listen        string           `yaml:"listen"`
	FlushInterval schemas.Duration `yaml:"flush_interval"`
	// FlushRows flushes early when this many rows changed since the last flush.
	FlushRows int `yaml:"flush_rows"`
	// SessionTimeout is how long a dead speed member keeps its partitions
	// before the group gives them to another (0: 10s; brokers refuse less
	// than their group.min.session.timeout.ms, 6s by default).
	SessionTimeout schemas.Duration `yaml:"session_timeout"`

	// MaxFetchBytes bounds one fetch response (default 1 MiB); a claim
	// holds at most two responses ahead of and under the folding. 4 MiB
	// read no faster in the benchmark and raised its peak RSS by ~70 MiB.
	MaxFetchBytes int `yaml:"-"`
	// ShutdownFlushTimeout bounds the last flush on shutdown (default 15s);
	// on a rebalance the last flush gets a fifth of it, so the member
	// rejoins in time.
	ShutdownFlushTimeout time.Duration `yaml:"-"`
	// MaxBackoff caps the pause between retries of a failed write (default 5s).
	MaxBackoff time.Duration `yaml:"-"`
}

// DefaultConfig is the speed section when the file leaves it out.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8082", FlushInterval: schemas.Duration(time.Second), FlushRows: 50000}
}

// ConfigFrom decodes and validates the speed section of cfg over
// DefaultConfig.
func ConfigFrom(cfg *schemas.Config) (Config, error) {
	return schemas.DecodeSection(cfg, cfg.Speed, DefaultConfig())
}

// Validate adds to p what is wrong with the section.
func (c Config) Validate(p *schemas.Problems) {
	if c.FlushInterval <= 0 {
		p.Add([]any{"speed", "flush_interval"}, "speed.flush_interval must be positive")
	}
}
