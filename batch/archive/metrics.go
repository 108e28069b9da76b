package archive

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

type metrics struct {
	records, invalid, files, bytes, lost *prometheus.CounterVec
	uploadErrors                         prometheus.Counter
	uploadSeconds                        prometheus.Histogram
	lastUpload                           *prometheus.GaugeVec
	lag, next                            *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &metrics{
		records: counter("tandem_archive_records_total", "Kafka messages written into raw files (counted when written; uploaded with the file).", "stream"),
		invalid: counter("tandem_archive_invalid_records_total", "Archived messages that failed validation (kept with null typed columns).", "stream"),
		files:   counter("tandem_archive_files_total", "Raw Parquet objects uploaded.", "stream"),
		bytes:   counter("tandem_archive_bytes_total", "Bytes of raw Parquet objects uploaded.", "stream"),
		lost:    counter("tandem_archive_discarded_files_total", "Files discarded because another member had archived their range first.", "stream"),
		uploadErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_archive_upload_errors_total",
			Help: "Failed S3 uploads or listings of the archiver (each is retried)."}),
		uploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: schemas.MetricArchiveUploadSeconds.String(),
			Help: "Time to upload one raw object, contiguity check included.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12)}),
		lastUpload: gauge("tandem_archive_last_upload_timestamp_seconds", "Unix time of the last successful upload.", "stream"),
		lag:        gauge("tandem_archive_lag", "Messages of the partition not yet fetched by the archiver.", "stream", "partition"),
		next:       gauge("tandem_archive_next_offset", "Next offset of the partition not yet archived.", "stream", "partition"),
	}
	if reg == nil {
		return m
	}
	for _, c := range []prometheus.Collector{m.records, m.invalid, m.files, m.bytes, m.lost, m.uploadErrors, m.uploadSeconds, m.lastUpload, m.lag, m.next} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
			// A second Archiver on the same registry (tests) keeps its own
			// unregistered copies rather than fail.
		}
	}
	return m
}
