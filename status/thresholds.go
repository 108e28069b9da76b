package status

import (
	"math"
	"sort"
	"time"
)

var never = math.Inf(1)

// DefaultThresholds returns the built-in threshold of every judged check,
// by name. Some follow the configuration (batch.every, archive.max_file_age).
// Checks not listed are informational; a threshold set for them in the
// configuration makes them judged.
func DefaultThresholds(d Deployment) map[CheckName]Threshold {
	every := d.BatchEvery
	fileAge := 5 * time.Minute
	if a := d.ArchiveMaxFileAge; a > 0 {
		fileAge = a
	}
	runAge := Threshold{Yellow: (26 * time.Hour).Seconds(), Red: (50 * time.Hour).Seconds()} // a nightly CronJob
	runDuration := Threshold{Yellow: time.Hour.Seconds(), Red: (4 * time.Hour).Seconds()}
	if every > 0 {
		// Two missed runs are worth a look, four are an outage of the batch layer.
		runAge = Threshold{Yellow: (2*every + time.Minute).Seconds(), Red: (4*every + time.Minute).Seconds()}
		runDuration = Threshold{Yellow: (every / 2).Seconds(), Red: every.Seconds()}
	}
	return map[CheckName]Threshold{
		// ingestion
		CheckIngestRejectRatio:              {Yellow: 0.05, Red: 0.25},
		CheckIngestProduceLatencyP99Seconds: {Yellow: 0.25, Red: 1},
		CheckIngestProduceFailureRatio:      {Yellow: 0.001, Red: 0.01},
		CheckKafkaSpeedLagMessages:          {Yellow: 10000, Red: 100000},
		CheckArchivePendingAgeSeconds:       {Yellow: (2*fileAge + time.Minute).Seconds(), Red: (4*fileAge + time.Minute).Seconds()},
		// processing
		CheckSpeedProcessingSecondsPerEvent: {Yellow: 0.0005, Red: 0.005},
		CheckSpeedErrorsPerMinute:           {Yellow: 1, Red: 30},
		CheckSpeedStalledPartitions:         {Yellow: 1, Red: 1},
		CheckSpeedDLQRatio:                  {Yellow: 0.01, Red: 0.10},
		CheckSpeedFreshnessSeconds:          {Yellow: 60, Red: 600},
		CheckSpeedIngestToVisibleP99Seconds: {Yellow: 5, Red: 30},
		// storage
		CheckClickHouseInsertLatencyP99Seconds: {Yellow: 1, Red: 5},
		CheckClickHouseInsertErrorRatio:        {Yellow: 0.01, Red: 0.10},
		// ClickHouse's own parts_to_delay_insert and parts_to_throw_insert.
		CheckClickHouseMaxPartsPerPartition: {Yellow: 150, Red: 300},
		CheckS3UploadLatencyP99Seconds:      {Yellow: 5, Red: 30},
		CheckS3ErrorRatio:                   {Yellow: 0.01, Red: 0.10},
		// batch
		CheckBatchLastRunAgeSeconds:      runAge,
		CheckBatchLastRunDurationSeconds: runDuration,
		// serving
		CheckServeQueryLatencyP99Seconds: {Yellow: 1, Red: 5},
		CheckServeErrorRatio:             {Yellow: 0.01, Red: 0.05},
		CheckServeCacheMissRatio:         {Yellow: 0.9, Red: never},
		CheckServeSpeedFailureRatio:      {Yellow: 0.01, Red: 0.5},
		// security
		CheckSecurityAuthFailuresPerMinute: {Yellow: 1, Red: 60},
		CheckSecurityOpenSurfaces:          {Yellow: 1, Red: never},
	}
}

// Thresholds is DefaultThresholds with the configuration's
// status.thresholds laid over it.
func Thresholds(cfg Config, d Deployment) map[CheckName]Threshold {
	th := DefaultThresholds(d)
	for name, t := range cfg.Thresholds {
		th[CheckName(name)] = t
	}
	return th
}

// UnknownThresholds returns the names in status.thresholds that name no
// check (a typo would otherwise be silently ignored).
func UnknownThresholds(cfg Config) []string {
	var out []string
	for name := range cfg.Thresholds {
		if _, known := checkSpecs[CheckName(name)]; !known {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
