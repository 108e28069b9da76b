package schemas

// Metric is the name of a Prometheus metric another package reads by name:
// the component that registers it and the status report (status/checks.go)
// that reads its /metrics both use these constants, so a rename changes
// both or neither. A test in status checks that each one is registered
// by some component.
type Metric string

// String is the metric's name.
func (m Metric) String() string { return string(m) }

// Ingest (ingest/metrics.go).
const (
	MetricIngestAccepted       Metric = "tandem_ingest_events_accepted_total"
	MetricIngestRejected       Metric = "tandem_ingest_events_rejected_total" // stream, reason (a Reason)
	MetricIngestBytes          Metric = "tandem_ingest_bytes_received_total"
	MetricIngestProduceFailed  Metric = "tandem_ingest_produce_failed_events_total"
	MetricIngestProduceSeconds Metric = "tandem_ingest_produce_duration_seconds"
	// MetricAuthFailures is shared by every component with an
	// authenticated endpoint (ops.AuthFailures), by endpoint.
	MetricAuthFailures Metric = "tandem_auth_failures_total"
)

// Speed layer (speed/metrics.go).
const (
	MetricSpeedConsumed          Metric = "tandem_speed_events_consumed_total"
	MetricSpeedDuplicates        Metric = "tandem_speed_duplicates_total"
	MetricSpeedDLQ               Metric = "tandem_speed_dlq_total" // stream, reason (a Reason)
	MetricSpeedDLQErrors         Metric = "tandem_speed_dlq_errors_total"
	MetricSpeedProcessingSeconds Metric = "tandem_speed_event_processing_seconds"
	MetricSpeedInsertSeconds     Metric = "tandem_speed_clickhouse_insert_seconds"
	MetricSpeedClickHouseErrors  Metric = "tandem_speed_clickhouse_errors_total" // table
	MetricSpeedConsumerLag       Metric = "tandem_speed_consumer_lag"
	MetricSpeedNewestEventTime   Metric = "tandem_speed_newest_event_time_seconds"
	MetricSpeedIngestToVisible   Metric = "tandem_speed_ingest_to_visible_seconds"
	MetricSpeedStalledPartitions Metric = "tandem_speed_stalled_partitions"
)

// Archiver (batch/archive/metrics.go) and object stores
// (internal/objstore/metrics.go; the names predate other stores than S3).
const (
	MetricArchiveUploadSeconds Metric = "tandem_archive_upload_duration_seconds"
	MetricS3RequestSeconds     Metric = "tandem_s3_request_duration_seconds" // op
	MetricS3Errors             Metric = "tandem_s3_errors_total"             // op
	MetricS3UploadSeconds      Metric = "tandem_s3_upload_duration_seconds"
)

// Serving (serving/metrics.go).
const (
	MetricServeQuerySeconds  Metric = "tandem_serve_query_duration_seconds" // view, code
	MetricServeErrors        Metric = "tandem_serve_errors_total"           // endpoint, code
	MetricServeAuthFailures  Metric = "tandem_serve_auth_failures_total"    // endpoint
	MetricServeCacheHits     Metric = "tandem_serve_cache_hits_total"
	MetricServeCacheMisses   Metric = "tandem_serve_cache_misses_total"
	MetricServeSpeedFailures Metric = "tandem_serve_speed_failures_total" // view
)

// MetricProcessStart is the process collector's start time, which every
// component's registry carries (internal/ops.NewRegistry).
const MetricProcessStart Metric = "process_start_time_seconds"

// Metrics lists every Metric above.
var Metrics = []Metric{
	MetricIngestAccepted, MetricIngestRejected, MetricIngestBytes, MetricIngestProduceFailed, MetricIngestProduceSeconds,
	MetricAuthFailures,
	MetricSpeedConsumed, MetricSpeedDuplicates, MetricSpeedDLQ, MetricSpeedDLQErrors, MetricSpeedProcessingSeconds,
	MetricSpeedInsertSeconds, MetricSpeedClickHouseErrors, MetricSpeedConsumerLag, MetricSpeedNewestEventTime,
	MetricSpeedIngestToVisible, MetricSpeedStalledPartitions,
	MetricArchiveUploadSeconds, MetricS3RequestSeconds, MetricS3Errors, MetricS3UploadSeconds,
	MetricServeQuerySeconds, MetricServeErrors, MetricServeAuthFailures, MetricServeCacheHits, MetricServeCacheMisses,
	MetricServeSpeedFailures,
	MetricProcessStart,
}
