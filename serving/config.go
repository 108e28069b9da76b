package serving

import (
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// SectionKey is serving's section of tandem.yaml.
const SectionKey = "serve"

// Config is the serve section of tandem.yaml: the query API and dashboard.
type Config struct {
	Listen string `yaml:"listen"`
	// MaxQueryRange refuses queries whose [from, to) is longer.
	MaxQueryRange schemas.Duration `yaml:"max_query_range"`
	// ManifestPoll is how often serving looks for a newly published run.
	ManifestPoll schemas.Duration `yaml:"manifest_poll"`
	CacheBytes   int64            `yaml:"cache_bytes"`
	// MaxResultRows refuses (400) a query whose answer would hold more
	// rows (buckets × groups); an answer is never cut short instead.
	MaxResultRows int `yaml:"max_result_rows"`
	// MaxMergeGroups refuses (400) a query with a limit whose merge would
	// hold more groups before the limit cuts them: top-N over a dimension
	// with many values merges every value, but answers only N per bucket.
	MaxMergeGroups int `yaml:"max_merge_groups"`
	// MaxConcurrentQueries is how many queries one replica answers at
	// once. 0 (the default) means 2 × GOMAXPROCS at start-up.
	MaxConcurrentQueries int `yaml:"max_concurrent_queries"`
	// MaxQueuedQueries is how many more may wait, in arrival order, for
	// one of those slots; a query that finds the queue full gets 503 with
	// Retry-After at once. 0 turns the queue off.
	MaxQueuedQueries int `yaml:"max_queued_queries"`
	// QueueTimeout is how long a query waits in that queue before it gets
	// 503 with Retry-After: a short fair wait, never an unbounded one.
	QueueTimeout schemas.Duration `yaml:"queue_timeout"`
	// WarmCache loads the newest row groups of a run into the cache (up to
	// half of it) at start-up and before switching to a new run, so the
	// first queries after a batch run are not cold.
	WarmCache bool `yaml:"warm_cache"`
	// Pprof serves Go's profiles (net/http/pprof) under /debug/pprof/ on
	// the listener, behind the metrics tokens. Off by default: a profile
	// shows the process's internals and costs CPU while it is taken.
	Pprof bool `yaml:"pprof"`
	// MemoryLimit is the Go runtime's soft memory limit for `tandem serve`
	// (runtime/debug.SetMemoryLimit): the collector works harder as the
	// heap nears it instead of letting garbage double the live data. 0
	// (the default) is cache_bytes + memoryLimitHeadroom. The GOMEMLIMIT
	// environment variable, when set (the Kubernetes manifests set it to
	// the pod's limit), takes precedence.
	MemoryLimit int64             `yaml:"memory_limit"`
	TLS         schemas.TLSConfig `yaml:"tls"`
	// The listener's deadlines: read_header_timeout, read_timeout,
	// write_timeout (bounds a query's answer), idle_timeout.
	schemas.HTTPTimeouts `yaml:",inline"`
}

// DefaultConfig is the serve section when the file leaves it out.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8081", MaxQueryRange: schemas.Duration(400 * 24 * time.Hour),
		ManifestPoll: schemas.Duration(2 * time.Second), CacheBytes: 256 << 20, WarmCache: true,
		MaxResultRows: 100000, MaxMergeGroups: 1000000, MaxQueuedQueries: 64, QueueTimeout: schemas.Duration(5 * time.Second),
		HTTPTimeouts: schemas.HTTPTimeouts{ReadHeaderTimeout: schemas.Duration(10 * time.Second), ReadTimeout: schemas.Duration(10 * time.Second),
			WriteTimeout: schemas.Duration(time.Minute), IdleTimeout: schemas.Duration(2 * time.Minute)}}
}

// ConfigFrom decodes and validates the serve section of cfg over
// DefaultConfig.
func ConfigFrom(cfg *schemas.Config) (Config, error) {
	return schemas.DecodeSection(cfg, cfg.Serve, DefaultConfig())
}

// memoryLimitHeadroom is what the default memory limit leaves above
// serve.cache_bytes for queries in flight, the runtime and the binary;
// minMemoryLimitHeadroom the least an explicit limit may leave.
const (
	memoryLimitHeadroom    = 192 << 20
	minMemoryLimitHeadroom = 64 << 20
)

// EffectiveMemoryLimit is the soft memory limit serve runs under:
// memory_limit, or cache_bytes + 192 MiB when it is 0.
func (c Config) EffectiveMemoryLimit() int64 {
	if c.MemoryLimit > 0 {
		return c.MemoryLimit
	}
	return c.cacheBytes() + memoryLimitHeadroom
}

// MergeGroups is the bound on the groups a query with a limit merges:
// max_merge_groups, and never less than max_result_rows (what a query
// without a limit may merge).
func (c Config) MergeGroups() int { return max(c.MaxMergeGroups, c.MaxResultRows) }

// Validate adds to p what is wrong with the section.
func (c Config) Validate(p *schemas.Problems) {
	schemas.CheckHTTPTimeouts(p, "serve", c.HTTPTimeouts)
	if c.MaxResultRows <= 0 {
		p.Add([]any{"serve", "max_result_rows"}, "serve.max_result_rows must be positive (the most rows one answer may hold); got %d", c.MaxResultRows)
	}
	if c.MaxMergeGroups <= 0 {
		p.Add([]any{"serve", "max_merge_groups"}, "serve.max_merge_groups must be positive (the most groups a query with a limit merges before the limit cuts them); got %d", c.MaxMergeGroups)
	}
	if c.MemoryLimit < 0 || c.MemoryLimit > 0 && c.MemoryLimit < c.cacheBytes()+minMemoryLimitHeadroom {
		p.Add([]any{"serve", "memory_limit"}, "serve.memory_limit must be 0 (serve.cache_bytes + 192 MiB) or at least serve.cache_bytes + 64 MiB (%d bytes), else the collector runs without pause to keep the caches under it; got %d", c.cacheBytes()+minMemoryLimitHeadroom, c.MemoryLimit)
	}
	if c.MaxConcurrentQueries < 0 {
		p.Add([]any{"serve", "max_concurrent_queries"}, "serve.max_concurrent_queries must be 0 (2 × GOMAXPROCS) or positive; got %d", c.MaxConcurrentQueries)
	}
	if c.MaxQueuedQueries < 0 {
		p.Add([]any{"serve", "max_queued_queries"}, "serve.max_queued_queries must be 0 (no queue: refuse at once when full) or positive; got %d", c.MaxQueuedQueries)
	}
	if c.MaxQueuedQueries > 0 && c.QueueTimeout.D() <= 0 {
		p.Add([]any{"serve", "queue_timeout"}, "serve.queue_timeout must be positive while serve.max_queued_queries is (how long a query waits for a slot); got %s", c.QueueTimeout.D())
	}
}
