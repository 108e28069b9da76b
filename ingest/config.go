package ingest

import (
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// SectionKey is the gateway's section of tandem.yaml.
const SectionKey = "ingest"

// Config is the ingest section of tandem.yaml: the HTTP gateway's
// listener and limits. ingest.max_future_skew sits in this section of the
// file but belongs to the vocabulary (schemas.Config.MaxFutureSkew): every
// layer applies it.
type Config struct {
	Listen       string `yaml:"listen"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	// MaxInflightBytes bounds the request bodies held at once; beyond it the
	// gateway answers 429 at once instead of queueing.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// ProduceTimeout is how long a request waits for Kafka before 503.
	ProduceTimeout schemas.Duration  `yaml:"produce_timeout"`
	TLS            schemas.TLSConfig `yaml:"tls"`
	// MaxInflightBytesPerClient bounds the in-flight bytes of one client (its
	// token, or its address when it sends none), so one client cannot take
	// the whole max_inflight_bytes. 0: a quarter of max_inflight_bytes, and
	// at least max_body_bytes.
	MaxInflightBytesPerClient int64 `yaml:"max_inflight_bytes_per_client"`
	// MaxEventsPerRequest refuses (413) a request with more events, before
	// any of them is decoded.
	MaxEventsPerRequest int `yaml:"max_events_per_request"`
	// The listener's deadlines: read_header_timeout, read_timeout (the
	// whole request, body included), write_timeout, idle_timeout.
	schemas.HTTPTimeouts `yaml:",inline"`
}

// DefaultConfig is the ingest section when the file leaves it out.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080", MaxBodyBytes: 8 << 20,
		MaxInflightBytes: 256 << 20, ProduceTimeout: schemas.Duration(10 * time.Second), MaxEventsPerRequest: 10000,
		HTTPTimeouts: schemas.HTTPTimeouts{ReadHeaderTimeout: schemas.Duration(10 * time.Second), ReadTimeout: schemas.Duration(30 * time.Second),
			WriteTimeout: schemas.Duration(time.Minute), IdleTimeout: schemas.Duration(2 * time.Minute)}}
}

// ConfigFrom decodes and validates the ingest section of cfg over
// DefaultConfig.
func ConfigFrom(cfg *schemas.Config) (Config, error) {
	return schemas.DecodeSection(cfg, cfg.Ingest, DefaultConfig())
}

// InflightPerClient is max_inflight_bytes_per_client with its default applied.
func (c Config) InflightPerClient() int64 {
	if c.MaxInflightBytesPerClient > 0 {
		return c.MaxInflightBytesPerClient
	}
	return max(c.MaxInflightBytes/4, c.MaxBodyBytes)
}

// Validate adds to p what is wrong with the section.
func (c Config) Validate(p *schemas.Problems) {
	if c.MaxBodyBytes <= 0 {
		p.Add([]any{"ingest", "max_body_bytes"}, "ingest.max_body_bytes must be positive")
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		p.Add([]any{"ingest", "max_inflight_bytes"}, "ingest.max_inflight_bytes (%d) must be at least max_body_bytes (%d), or no request of the largest size could ever be taken", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if c.MaxInflightBytesPerClient != 0 && (c.MaxInflightBytesPerClient < c.MaxBodyBytes || c.MaxInflightBytesPerClient > c.MaxInflightBytes) {
		p.Add([]any{"ingest", "max_inflight_bytes_per_client"}, "ingest.max_inflight_bytes_per_client (%d) must be between max_body_bytes (%d) and max_inflight_bytes (%d), or 0 for a quarter of max_inflight_bytes", c.MaxInflightBytesPerClient, c.MaxBodyBytes, c.MaxInflightBytes)
	}
	if c.MaxEventsPerRequest <= 0 {
		p.Add([]any{"ingest", "max_events_per_request"}, "ingest.max_events_per_request must be positive; got %d", c.MaxEventsPerRequest)
	}
	schemas.CheckHTTPTimeouts(p, "ingest", c.HTTPTimeouts)
	if t := c.HTTPTimeouts; t.WriteTimeout < t.ReadTimeout+c.ProduceTimeout {
		p.Add([]any{"ingest", "write_timeout"}, "ingest.write_timeout (%s) must be at least ingest.read_timeout + ingest.produce_timeout (%s): it runs from the end of the headers through reading the body and waiting for Kafka", t.WriteTimeout.D(), (t.ReadTimeout + c.ProduceTimeout).D())
	}
}
