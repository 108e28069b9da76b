package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
)

type metrics struct {
	accepted      *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	produceErrors *prometheus.CounterVec
	requests      *prometheus.HistogramVec
	produce       prometheus.Histogram
	inflight      prometheus.Gauge
	authFailures  *prometheus.CounterVec
	refused       *prometheus.CounterVec
}

var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricIngestAccepted.String(),
			Help: "Events acknowledged by Kafka and reported accepted, by stream."}, []string{"stream"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricIngestRejected.String(),
			Help: "Events that failed validation and were not produced, by stream and reason (" + schemas.ReasonLabels() + ")."},
			[]string{"stream", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricIngestBytes.String(),
			Help: "Request body bytes read, by stream."}, []string{"stream"}),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricIngestProduceFailed.String(),
			Help: "Valid events whose write Kafka did not acknowledge in time (their request got 503), by stream."}, []string{"stream"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_ingest_request_duration_seconds",
			Help: "Latency of event requests, by HTTP status code.", Buckets: latencyBuckets}, []string{"code"}),
		produce: prometheus.NewHistogram(prometheus.HistogramOpts{Name: schemas.MetricIngestProduceSeconds.String(),
			Help: "Time from handing a request's events to Kafka until all in-sync replicas acknowledged them (or the write failed).", Buckets: latencyBuckets}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_ingest_inflight_bytes",
			Help: "Body buffer bytes held by requests in progress, grown as bytes arrive (bounded by ingest.max_inflight_bytes)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_ingest_requests_refused_total",
			Help: "Requests refused whole at a limit, by the limit (max_inflight_bytes, max_inflight_bytes_per_client, max_body_bytes, max_events_per_request, read_timeout)."},
			[]string{"limit"}),
	}
	for _, c := range []prometheus.Collector{m.accepted, m.rejected, m.bytes, m.produceErrors, m.requests, m.produce, m.inflight, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	af, err := ops.AuthFailures(reg)
	if err != nil {
		return nil, err
	}
	m.authFailures = af
	return m, nil
}
