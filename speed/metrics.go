package speed

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

// metrics are the speed layer's Prometheus series.
type metrics struct {
	consumed      *prometheus.CounterVec   // stream
	folded        *prometheus.CounterVec   // stream
	duplicates    *prometheus.CounterVec   // stream
	replayed      *prometheus.CounterVec   // stream: read again on resume, no new output
	dlq           *prometheus.CounterVec   // stream, reason
	processing    prometheus.Histogram     // seconds per event
	flush         prometheus.Histogram     // seconds per flush (all writes of one partition)
	insert        *prometheus.HistogramVec // table kind: speed, raw
	insertErrors  *prometheus.CounterVec   // table kind
	dlqErrors     prometheus.Counter
	rowsUpserted  *prometheus.CounterVec // view
	rawInserted   *prometheus.CounterVec // stream
	lag           *prometheus.GaugeVec   // topic, partition
	newest        *prometheus.GaugeVec   // stream: newest event time written, Unix seconds
	ingestVisible prometheus.Histogram   // flush time - message timestamp
	stalled       prometheus.Gauge
	stalledParts  prometheus.Gauge

	mu         sync.Mutex
	newestTime time.Time
}

func newMetrics(reg prometheus.Registerer, now func() time.Time) *metrics {
	m := &metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricSpeedConsumed.String(),
			Help: "Messages read from stream topics (replays included)."}, []string{"stream"}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_speed_events_folded_total",
			Help: "Valid, non-duplicate events folded into the views."}, []string{"stream"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricSpeedDuplicates.String(),
			Help: "Events dropped because their id appeared in the same or the previous chunk of their partition."}, []string{"stream"}),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_speed_events_replayed_total",
			Help: "Messages read again after a claim (restart, rebalance) to rebuild state; they produce no new output."}, []string{"stream"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricSpeedDLQ.String(),
			Help: "Messages that failed validation and were written to the dead-letter topic, by reason (" + schemas.ReasonLabels() + ")."}, []string{"stream", "reason"}),
		processing: prometheus.NewHistogram(prometheus.HistogramOpts{Name: schemas.MetricSpeedProcessingSeconds.String(),
			Help:    "Time to decode, deduplicate and fold one message, timed for one message in 32.",
			Buckets: prometheus.ExponentialBuckets(250e-9, 2, 14)}),
		flush: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tandem_speed_flush_seconds",
			Help:    "Time of one partition's flush (dead letters, raw events and every view's rows), retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		insert: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: schemas.MetricSpeedInsertSeconds.String(),
			Help:    "Latency of one successful ClickHouse insert.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"table"}),
		insertErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricSpeedClickHouseErrors.String(),
			Help: "Failed ClickHouse inserts and progress queries (each is retried)."}, []string{"table"}),
		dlqErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: schemas.MetricSpeedDLQErrors.String(),
			Help: "Failed writes to dead-letter topics (each is retried)."}),
		rowsUpserted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_speed_rows_upserted_total",
			Help: "Speed rows written (a row is rewritten each flush it changed in)."}, []string{"view"}),
		rawInserted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_speed_raw_events_inserted_total",
			Help: "Events written to raw-events tables."}, []string{"stream"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: schemas.MetricSpeedConsumerLag.String(),
			Help: "Messages of a partition not yet fetched, as of the last fetch."}, []string{"topic", "partition"}),
		newest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: schemas.MetricSpeedNewestEventTime.String(),
			Help: "Newest event time written to ClickHouse, Unix seconds."}, []string{"stream"}),
		ingestVisible: prometheus.NewHistogram(prometheus.HistogramOpts{Name: schemas.MetricSpeedIngestToVisible.String(),
			Help:    "Time from an event's Kafka timestamp (ingest) to the end of the flush that made it visible in ClickHouse.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 300}}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_speed_stalled",
			Help: "1 while some partition cannot write its output (ClickHouse or the DLQ unreachable) and has stopped fetching."}),
		stalledParts: prometheus.NewGauge(prometheus.GaugeOpts{Name: schemas.MetricSpeedStalledPartitions.String(),
			Help: "Partitions currently retrying a failed write."}),
	}
	freshness := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tandem_speed_freshness_seconds",
		Help: "Now minus the newest event time written to ClickHouse (NaN before the first write)."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.newestTime.IsZero() {
			return math.NaN()
		}
		return now().Sub(m.newestTime).Seconds()
	})
	reg.MustRegister(m.consumed, m.folded, m.duplicates, m.replayed, m.dlq, m.processing, m.flush, m.insert,
		m.insertErrors, m.dlqErrors, m.rowsUpserted, m.rawInserted, m.lag, m.newest, m.ingestVisible, m.stalled,
		m.stalledParts, freshness)
	return m
}

func (m *metrics) wroteNewest(stream string, t time.Time) {
	if t.IsZero() {
		return
	}
	m.mu.Lock()
	if t.After(m.newestTime) {
		m.newestTime = t
	}
	m.mu.Unlock()
	m.newest.WithLabelValues(stream).Set(float64(t.UnixMilli()) / 1000)
}
