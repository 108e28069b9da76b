package status

import (
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// SectionKey is the health report's section of tandem.yaml.
const SectionKey = "status"

// Config is the status section of tandem.yaml — the thresholds of the
// health report, a value at or over Yellow is yellow, at or over Red is
// red — and the Monitor's tuning that is not in the file (yaml:"-"; zero
// is the default).
type Config struct {
	Thresholds map[string]Threshold `yaml:"thresholds"`
	// Addrs says where the health report scrapes a component (ingest, speed,
	// archive, serve) when that is not its listen address as seen from
	// here — another pod or container, e.g. {speed: "tandem-speed:8082"}.
	Addrs map[string]string `yaml:"addrs"`

	// Interval separates the two scrapes of a component when no earlier
	// scrape is recent enough to compute rates from (default 2s).
	Interval time.Duration `yaml:"-"`
	// MaxBaseline is how old a previous scrape may be to serve as the
	// baseline of the rates (default 2m).
	MaxBaseline time.Duration `yaml:"-"`
	// Timeout bounds each source (default 3s).
	Timeout time.Duration `yaml:"-"`
}

// DefaultConfig is the status section when the file leaves it out.
func DefaultConfig() Config { return Config{} }

// ConfigFrom decodes and validates the status section of cfg over
// DefaultConfig.
func ConfigFrom(cfg *schemas.Config) (Config, error) {
	return schemas.DecodeSection(cfg, cfg.Status, DefaultConfig())
}

// Validate adds to p what is wrong with the section.
func (c Config) Validate(p *schemas.Problems) {
	for name := range c.Addrs {
		switch name {
		case "ingest", "speed", "archive", "serve":
		default:
			p.Add([]any{"status", "addrs", name}, "status.addrs: %q is not a component (use ingest, speed, archive or serve)", name)
		}
	}
	for name, th := range c.Thresholds {
		if th.Red < th.Yellow {
			p.Add([]any{"status", "thresholds", name}, "status.thresholds.%s: red (%g) must not be below yellow (%g)", name, th.Red, th.Yellow)
		}
	}
}

// Deployment is what the report needs from the other components'
// sections of the file, which status does not read itself (package config
// fills it): where each listens, and the intervals some thresholds follow.
type Deployment struct {
	// Endpoints are the components' listeners by name (ingest, speed,
	// archive, serve); status.addrs overrides the address scraped.
	Endpoints map[string]Endpoint
	// BatchEvery is batch.every (0: runs are scheduled outside tandem).
	BatchEvery time.Duration
	// ArchiveMaxFileAge is archive.max_file_age (0: its default, 5m).
	ArchiveMaxFileAge time.Duration
}

// Endpoint is a component's listener as its section configures it.
type Endpoint struct {
	Listen string
	TLS    schemas.TLSConfig
}
