package batch

import (
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// SectionKey is the batch runs' section of tandem.yaml.
const SectionKey = "batch"

// Config is the batch section of tandem.yaml, and a run's settings that are
// not in the file (yaml:"-": flags of `tandem batch run`, tests; zero is
// the default).
type Config struct {
	// Every is the interval of `tandem dev`'s built-in scheduler; 0 turns it off.
	Every schemas.Duration `yaml:"every"`
	// KeepRuns is how many published runs per view are kept in S3.
	KeepRuns int `yaml:"keep_runs"`
	// LockTTL is how long a crashed run's lock blocks the next run.
	LockTTL schemas.Duration `yaml:"lock_ttl"`
	// ExportAfterRun writes the data-lake export after each successful run.
	ExportAfterRun bool `yaml:"export_after_run"`
	// SpeedReleaseWait bounds how long a run waits, after publishing, for
	// the serving replicas to switch to it before deleting the speed rows
	// it absorbed; replicas still on the older run keep theirs until a
	// later run. 0 deletes what the leases allow at once.
	SpeedReleaseWait schemas.Duration `yaml:"speed_release_wait"`
	// RemovedViewGrace is how long the objects of a view no longer in the
	// configuration (views/<view>/ in S3) stay after their newest write
	// before a batch run deletes them; 0 keeps them forever.
	RemovedViewGrace schemas.Duration `yaml:"removed_view_grace"`
	// DedupMemory bounds, in bytes, the id tables of the duplicate check
	// (the partitions a run reads at once share it); ids beyond it are
	// decided bucket by bucket from local files under the run's temporary
	// directory (grace.go).
	DedupMemory int64 `yaml:"dedup_memory"`

	// Full recomputes every day instead of carrying unchanged days over.
	Full bool `yaml:"-"`
	// TempDir holds the run's spill files (default os.TempDir()).
	TempDir string `yaml:"-"`
	// Workers is the number of goroutines decoding raw messages, of days
	// aggregated at once, and of shards each day's fold is split over
	// (default GOMAXPROCS).
	Workers int `yaml:"-"`
	// Holder names this run in the lock (default host-pid-random).
	Holder string `yaml:"-"`
	// Split makes this Run one process of a split run: a worker or the
	// publisher (split.go). The zero value is a one-process run.
	Split SplitOptions `yaml:"-"`
}

// DefaultConfig is the batch section when the file leaves it out.
func DefaultConfig() Config {
	return Config{Every: schemas.Duration(10 * time.Minute), KeepRuns: 3, LockTTL: schemas.Duration(time.Hour),
		SpeedReleaseWait: schemas.Duration(time.Minute), RemovedViewGrace: schemas.Duration(7 * 24 * time.Hour),
		DedupMemory: DefaultDedupMemory}
}

// ConfigFrom decodes and validates the batch section of cfg over
// DefaultConfig.
func ConfigFrom(cfg *schemas.Config) (Config, error) {
	return schemas.DecodeSection(cfg, cfg.Batch, DefaultConfig())
}

// Validate adds to p what is wrong with the section.
func (c Config) Validate(p *schemas.Problems) {
	if c.KeepRuns < 2 {
		// Speed rows of chunks absorbed by an older run are deleted; serving
		// replicas still on the previous run need that run's files.
		p.Add([]any{"batch", "keep_runs"}, "batch.keep_runs must be at least 2, so serving replicas still on the previous run can finish their queries")
	}
	if c.SpeedReleaseWait < 0 {
		p.Add([]any{"batch", "speed_release_wait"}, "batch.speed_release_wait must not be negative (0 deletes what the serving leases allow at once); got %s", c.SpeedReleaseWait)
	}
	if c.DedupMemory < MinDedupMemory {
		p.Add([]any{"batch", "dedup_memory"}, "batch.dedup_memory must be at least %d bytes (1 MiB); got %d", MinDedupMemory, c.DedupMemory)
	}
}
