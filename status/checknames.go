package status

// CheckName is a check's stable name: its key in status.thresholds, the
// check label of the alert rules in deploy/, a row of docs/status.md. Each
// is declared here once, with what it asks (checkSpecs), so the measured
// and the "source down" forms of a check cannot drift apart.
type CheckName string

// The checks of a report, in report order, besides the per-component
// ones (CheckComponentPrefix + name) and the stores.
const (
	CheckIngestEventsPerSecond             CheckName = "ingest.events_per_second"
	CheckIngestBytesPerSecond              CheckName = "ingest.bytes_per_second"
	CheckIngestRejectRatio                 CheckName = "ingest.reject_ratio"
	CheckIngestProduceLatencyP99Seconds    CheckName = "ingest.produce_latency_p99_seconds"
	CheckIngestProduceFailureRatio         CheckName = "ingest.produce_failure_ratio"
	CheckKafkaSpeedLagMessages             CheckName = "kafka.speed_lag_messages"
	CheckKafkaArchiveLagMessages           CheckName = "kafka.archive_lag_messages"
	CheckArchivePendingAgeSeconds          CheckName = "archive.pending_age_seconds"
	CheckSpeedEventsPerSecond              CheckName = "speed.events_per_second"
	CheckSpeedProcessingSecondsPerEvent    CheckName = "speed.processing_seconds_per_event"
	CheckSpeedErrorsPerMinute              CheckName = "speed.errors_per_minute"
	CheckSpeedStalledPartitions            CheckName = "speed.stalled_partitions"
	CheckSpeedDLQRatio                     CheckName = "speed.dlq_ratio"
	CheckSpeedDuplicateRatio               CheckName = "speed.duplicate_ratio"
	CheckSpeedFreshnessSeconds             CheckName = "speed.freshness_seconds"
	CheckSpeedIngestToVisibleP99Seconds    CheckName = "speed.ingest_to_visible_p99_seconds"
	CheckClickHouseInsertLatencyP99Seconds CheckName = "clickhouse.insert_latency_p99_seconds"
	CheckClickHouseInsertErrorRatio        CheckName = "clickhouse.insert_error_ratio"
	CheckClickHouseMaxPartsPerPartition    CheckName = "clickhouse.max_parts_per_partition"
	CheckClickHouseParts                   CheckName = "clickhouse.parts"
	CheckClickHouseBytes                   CheckName = "clickhouse.bytes"
	CheckS3UploadLatencyP99Seconds         CheckName = "s3.upload_latency_p99_seconds"
	CheckS3ErrorRatio                      CheckName = "s3.error_ratio"
	CheckBatchLastRunAgeSeconds            CheckName = "batch.last_run_age_seconds"
	CheckBatchLastRunDurationSeconds       CheckName = "batch.last_run_duration_seconds"
	CheckBatchChunksAbsorbed               CheckName = "batch.chunks_absorbed"
	CheckBatchUnabsorbedMessages           CheckName = "batch.unabsorbed_messages"
	CheckBatchSpeedRowsAwaiting            CheckName = "batch.speed_rows_awaiting"
	CheckServeQueriesPerSecond             CheckName = "serve.queries_per_second"
	CheckServeQueryLatencyP50Seconds       CheckName = "serve.query_latency_p50_seconds"
	CheckServeQueryLatencyP90Seconds       CheckName = "serve.query_latency_p90_seconds"
	CheckServeQueryLatencyP99Seconds       CheckName = "serve.query_latency_p99_seconds"
	CheckServeErrorRatio                   CheckName = "serve.error_ratio"
	CheckServeCacheMissRatio               CheckName = "serve.cache_miss_ratio"
	CheckServeSpeedFailureRatio            CheckName = "serve.speed_failure_ratio"
	CheckSecurityAuthFailuresPerMinute     CheckName = "security.auth_failures_per_minute"
	CheckSecurityOpenSurfaces              CheckName = "security.open_surfaces"
)

// The checks of the stores, and the prefix of a component's check.
const (
	CheckStoreKafka      CheckName = "store.kafka"
	CheckStoreS3         CheckName = "store.s3"
	CheckStoreClickHouse CheckName = "store.clickhouse"
	CheckComponentPrefix           = "component."
)

// checkSpec is what a check asks, in which unit, and its area of the report.
type checkSpec struct{ area, question, unit string }

var checkSpecs = map[CheckName]checkSpec{
	CheckIngestEventsPerSecond:             {area: "ingestion", question: "Events accepted per second", unit: "events/s"},
	CheckIngestBytesPerSecond:              {area: "ingestion", question: "Bytes received per second", unit: "bytes/s"},
	CheckIngestRejectRatio:                 {area: "ingestion", question: "Share of events rejected", unit: "ratio"},
	CheckIngestProduceLatencyP99Seconds:    {area: "ingestion", question: "Kafka produce latency (p99)", unit: "seconds"},
	CheckIngestProduceFailureRatio:         {area: "ingestion", question: "Share of valid events Kafka did not take", unit: "ratio"},
	CheckKafkaSpeedLagMessages:             {area: "ingestion", question: "Speed layer consumer lag (max over partitions)", unit: "messages"},
	CheckKafkaArchiveLagMessages:           {area: "ingestion", question: "Archiver lag: messages not yet in the master dataset (max over partitions)", unit: "messages"},
	CheckArchivePendingAgeSeconds:          {area: "ingestion", question: "Time since the archiver last published progress while data waits", unit: "seconds"},
	CheckSpeedEventsPerSecond:              {area: "processing", question: "Events consumed per second", unit: "events/s"},
	CheckSpeedProcessingSecondsPerEvent:    {area: "processing", question: "Processing time per event (mean)", unit: "seconds"},
	CheckSpeedErrorsPerMinute:              {area: "processing", question: "Speed layer write errors per minute (ClickHouse, dead-letter topic)", unit: "errors/min"},
	CheckSpeedStalledPartitions:            {area: "processing", question: "Partitions stalled on a failing write", unit: "partitions"},
	CheckSpeedDLQRatio:                     {area: "processing", question: "Share of events dead-lettered (invalid)", unit: "ratio"},
	CheckSpeedDuplicateRatio:               {area: "processing", question: "Share of events dropped as duplicates", unit: "ratio"},
	CheckSpeedFreshnessSeconds:             {area: "processing", question: "Freshness: now − newest event time visible in serving", unit: "seconds"},
	CheckSpeedIngestToVisibleP99Seconds:    {area: "processing", question: "Ingest to visible in ClickHouse (p99)", unit: "seconds"},
	CheckClickHouseInsertLatencyP99Seconds: {area: "storage", question: "ClickHouse insert latency (p99)", unit: "seconds"},
	CheckClickHouseInsertErrorRatio:        {area: "storage", question: "Share of ClickHouse inserts failing", unit: "ratio"},
	CheckClickHouseMaxPartsPerPartition:    {area: "storage", question: "Most active parts in one table partition", unit: "parts"},
	CheckClickHouseParts:                   {area: "storage", question: "Active parts in tandem's database", unit: "parts"},
	CheckClickHouseBytes:                   {area: "storage", question: "Bytes on disk of tandem's database", unit: "bytes"},
	CheckS3UploadLatencyP99Seconds:         {area: "storage", question: "S3 upload latency of the archiver (p99)", unit: "seconds"},
	CheckS3ErrorRatio:                      {area: "storage", question: "Share of S3 requests failing", unit: "ratio"},
	CheckBatchLastRunAgeSeconds:            {area: "batch", question: "Age of the last successful batch run (stalest view)", unit: "seconds"},
	CheckBatchLastRunDurationSeconds:       {area: "batch", question: "Duration of the last batch run (slowest view)", unit: "seconds"},
	CheckBatchChunksAbsorbed:               {area: "batch", question: "Chunks absorbed by the current run", unit: "chunks"},
	CheckBatchUnabsorbedMessages:           {area: "batch", question: "Messages not yet absorbed by a batch run", unit: "messages"},
	CheckBatchSpeedRowsAwaiting:            {area: "batch", question: "Speed rows awaiting absorption", unit: "rows"},
	CheckServeQueriesPerSecond:             {area: "serving", question: "Queries per second", unit: "queries/s"},
	CheckServeQueryLatencyP50Seconds:       {area: "serving", question: "Query latency (p50)", unit: "seconds"},
	CheckServeQueryLatencyP90Seconds:       {area: "serving", question: "Query latency (p90)", unit: "seconds"},
	CheckServeQueryLatencyP99Seconds:       {area: "serving", question: "Query latency (p99)", unit: "seconds"},
	CheckServeErrorRatio:                   {area: "serving", question: "Share of queries failing (5xx)", unit: "ratio"},
	CheckServeCacheMissRatio:               {area: "serving", question: "Batch cache miss ratio (1 − hit rate)", unit: "ratio"},
	CheckServeSpeedFailureRatio:            {area: "serving", question: "Share of queries answered without the speed layer", unit: "ratio"},
	CheckSecurityAuthFailuresPerMinute:     {area: "security", question: "Requests refused for a missing or invalid token, per minute", unit: "per min"},
	CheckSecurityOpenSurfaces:              {area: "security", question: "Surfaces open without a token or TLS", unit: ""},
}

// CheckNames lists the name of every check a report can hold (components
// and stores aside), in report order, for documentation and to catch
// typos in status.thresholds.
var CheckNames = []CheckName{
	CheckIngestEventsPerSecond,
	CheckIngestBytesPerSecond,
	CheckIngestRejectRatio,
	CheckIngestProduceLatencyP99Seconds,
	CheckIngestProduceFailureRatio,
	CheckKafkaSpeedLagMessages,
	CheckKafkaArchiveLagMessages,
	CheckArchivePendingAgeSeconds,
	CheckSpeedEventsPerSecond,
	CheckSpeedProcessingSecondsPerEvent,
	CheckSpeedErrorsPerMinute,
	CheckSpeedStalledPartitions,
	CheckSpeedDLQRatio,
	CheckSpeedDuplicateRatio,
	CheckSpeedFreshnessSeconds,
	CheckSpeedIngestToVisibleP99Seconds,
	CheckClickHouseInsertLatencyP99Seconds,
	CheckClickHouseInsertErrorRatio,
	CheckClickHouseMaxPartsPerPartition,
	CheckClickHouseParts,
	CheckClickHouseBytes,
	CheckS3UploadLatencyP99Seconds,
	CheckS3ErrorRatio,
	CheckBatchLastRunAgeSeconds,
	CheckBatchLastRunDurationSeconds,
	CheckBatchChunksAbsorbed,
	CheckBatchUnabsorbedMessages,
	CheckBatchSpeedRowsAwaiting,
	CheckServeQueriesPerSecond,
	CheckServeQueryLatencyP50Seconds,
	CheckServeQueryLatencyP90Seconds,
	CheckServeQueryLatencyP99Seconds,
	CheckServeErrorRatio,
	CheckServeCacheMissRatio,
	CheckServeSpeedFailureRatio,
	CheckSecurityAuthFailuresPerMinute,
	CheckSecurityOpenSurfaces,
}
