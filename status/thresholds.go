package status

import (
	"math"
	"sort"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

var never = math.Inf(1)

// DefaultThresholds returns the built-in threshold of every judged check,
// by name. Some follow the configuration (batch.every, archive.max_file_age).
// Checks not listed are informational; a threshold set for them in the
// configuration makes them judged.
func DefaultThresholds(cfg *schemas.Config) map[string]Threshold {
	every := time.Duration(0)
	fileAge := 5 * time.Minute
	if cfg != nil {
		every = cfg.Batch.Every.D()
		if a := cfg.Archive.MaxFileAge.D(); a > 0 {
			fileAge = a
		}
	}
	runAge := Threshold{Yellow: (26 * time.Hour).Seconds(), Red: (50 * time.Hour).Seconds()} // a nightly CronJob
	runDuration := Threshold{Yellow: time.Hour.Seconds(), Red: (4 * time.Hour).Seconds()}
	if every > 0 {
		// Two missed runs are worth a look, four are an outage of the batch layer.
		runAge = Threshold{Yellow: (2*every + time.Minute).Seconds(), Red: (4*every + time.Minute).Seconds()}
		runDuration = Threshold{Yellow: (every / 2).Seconds(), Red: every.Seconds()}
	}
	return map[string]Threshold{
		// ingestion
		"ingest.reject_ratio":                {Yellow: 0.05, Red: 0.25},
		"ingest.produce_latency_p99_seconds": {Yellow: 0.25, Red: 1},
		"ingest.produce_failure_ratio":       {Yellow: 0.001, Red: 0.01},
		"kafka.speed_lag_messages":           {Yellow: 10000, Red: 100000},
		"archive.pending_age_seconds":        {Yellow: (2*fileAge + time.Minute).Seconds(), Red: (4*fileAge + time.Minute).Seconds()},
		// processing
		"speed.processing_seconds_per_event":  {Yellow: 0.0005, Red: 0.005},
		"speed.errors_per_minute":             {Yellow: 1, Red: 30},
		"speed.stalled_partitions":            {Yellow: 1, Red: 1},
		"speed.dlq_ratio":                     {Yellow: 0.01, Red: 0.10},
		"speed.freshness_seconds":             {Yellow: 60, Red: 600},
		"speed.ingest_to_visible_p99_seconds": {Yellow: 5, Red: 30},
		// storage
		"clickhouse.insert_latency_p99_seconds": {Yellow: 1, Red: 5},
		"clickhouse.insert_error_ratio":         {Yellow: 0.01, Red: 0.10},
		// ClickHouse's own parts_to_delay_insert and parts_to_throw_insert.
		"clickhouse.max_parts_per_partition": {Yellow: 150, Red: 300},
		"s3.upload_latency_p99_seconds":      {Yellow: 5, Red: 30},
		"s3.error_ratio":                     {Yellow: 0.01, Red: 0.10},
		// batch
		"batch.last_run_age_seconds":      runAge,
		"batch.last_run_duration_seconds": runDuration,
		// serving
		"serve.query_latency_p99_seconds": {Yellow: 1, Red: 5},
		"serve.error_ratio":               {Yellow: 0.01, Red: 0.05},
		"serve.cache_miss_ratio":          {Yellow: 0.9, Red: never},
		"serve.speed_failure_ratio":       {Yellow: 0.01, Red: 0.5},
		// security
		"security.auth_failures_per_minute": {Yellow: 1, Red: 60},
		"security.open_surfaces":            {Yellow: 1, Red: never},
	}
}

// Thresholds is DefaultThresholds with the configuration's
// status.thresholds laid over it.
func Thresholds(cfg *schemas.Config) map[string]Threshold {
	th := DefaultThresholds(cfg)
	if cfg != nil {
		for name, t := range cfg.Status.Thresholds {
			th[name] = Threshold{Yellow: t.Yellow, Red: t.Red}
		}
	}
	return th
}

// CheckNames lists the name of every check a report can hold (components
// and stores aside), for documentation and to catch typos in
// status.thresholds.
var CheckNames = []string{
	"ingest.events_per_second", "ingest.bytes_per_second", "ingest.reject_ratio", "ingest.produce_latency_p99_seconds",
	"ingest.produce_failure_ratio", "kafka.speed_lag_messages", "kafka.archive_lag_messages", "archive.pending_age_seconds",
	"speed.events_per_second", "speed.processing_seconds_per_event", "speed.errors_per_minute", "speed.stalled_partitions",
	"speed.dlq_ratio", "speed.duplicate_ratio", "speed.freshness_seconds", "speed.ingest_to_visible_p99_seconds",
	"clickhouse.insert_latency_p99_seconds", "clickhouse.insert_error_ratio", "clickhouse.max_parts_per_partition",
	"clickhouse.parts", "clickhouse.bytes", "s3.upload_latency_p99_seconds", "s3.error_ratio",
	"batch.last_run_age_seconds", "batch.last_run_duration_seconds", "batch.chunks_absorbed", "batch.unabsorbed_messages",
	"batch.speed_rows_awaiting",
	"serve.queries_per_second", "serve.query_latency_p50_seconds", "serve.query_latency_p90_seconds",
	"serve.query_latency_p99_seconds", "serve.error_ratio", "serve.cache_miss_ratio", "serve.speed_failure_ratio",
	"security.auth_failures_per_minute", "security.open_surfaces",
}

// UnknownThresholds returns the names in status.thresholds that name no
// check (a typo would otherwise be silently ignored).
func UnknownThresholds(cfg *schemas.Config) []string {
	known := map[string]bool{}
	for _, n := range CheckNames {
		known[n] = true
	}
	var out []string
	for name := range cfg.Status.Thresholds {
		if !known[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
