package serving

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

// metrics are serving's tandem_serve_* series.
type metrics struct {
	queryDuration    *prometheus.HistogramVec // view, code
	errors           *prometheus.CounterVec   // endpoint, code
	authFailures     *prometheus.CounterVec   // endpoint
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	cacheEvictions   prometheus.Counter
	speedFailures    *prometheus.CounterVec // view
	manifestErrors   *prometheus.CounterVec // view
	manifestSwitches *prometheus.CounterVec // view
	batchRows        *prometheus.CounterVec // view
	speedRows        *prometheus.CounterVec // view
	overloaded       *prometheus.CounterVec // view, reason
	leaseErrors      prometheus.Counter
	backfilling      *prometheus.GaugeVec     // view
	mergeGroups      *prometheus.HistogramVec // view
	topN             *prometheus.CounterVec   // view, path
	queueWait        prometheus.Histogram
}

// answered records how a query was answered: path is "clickhouse" for a
// top N ClickHouse computed (pushTopN), "stream" for one ranked in serving
// as ClickHouse streamed the groups (streamTopN), "merge" for one merged
// in serving;
// groups is how many groups serving's merge held.
func (m *metrics) answered(q *Query, path string, groups int) {
	m.mergeGroups.WithLabelValues(q.View.Name).Observe(float64(groups))
	if q.Limit > 0 {
		m.topN.WithLabelValues(q.View.Name, path).Inc()
	}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    schemas.MetricServeQuerySeconds.String(),
			Help:    "Latency of GET /v1/views/{view}/query, by view and HTTP status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"view", "code"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: schemas.MetricServeErrors.String(),
			Help: "Requests of the query API answered with an error status, by endpoint and code.",
		}, []string{"endpoint", "code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: schemas.MetricServeAuthFailures.String(),
			Help: "Requests of the query API refused for a missing or wrong bearer token, by endpoint.",
		}, []string{"endpoint"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: schemas.MetricServeCacheHits.String(),
			Help: "Batch row groups (and file footers) found in the serving cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: schemas.MetricServeCacheMisses.String(),
			Help: "Batch row groups (and file footers) read from the object store.",
		}),
		cacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_serve_cache_evictions_total",
			Help: "Entries evicted from the serving cache to stay within serve.cache_bytes.",
		}),
		speedFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: schemas.MetricServeSpeedFailures.String(),
			Help: "Queries answered from the batch view alone because the speed layer (ClickHouse) failed.",
		}, []string{"view"}),
		manifestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_serve_manifest_errors_total",
			Help: "Failed reads of a view's manifest.",
		}, []string{"view"}),
		manifestSwitches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_serve_manifest_switches_total",
			Help: "Switches of a view to a newly published batch run.",
		}, []string{"view"}),
		batchRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_serve_batch_rows_total",
			Help: "Batch view rows merged into answers.",
		}, []string{"view"}),
		speedRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_serve_speed_rows_total",
			Help: "Speed groups merged into answers: one per (bucket, group) of a query, rolled up inside ClickHouse from the speed rows.",
		}, []string{"view"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_serve_overloaded_total",
			Help: "Queries refused with 503 for load, by view and reason: queue_full (serve.max_queued_queries were already waiting for one of serve.max_concurrent_queries slots), queue_timeout (waited serve.queue_timeout without a slot) or speed (ClickHouse up but too slow or busy).",
		}, []string{"view", "reason"}),
		leaseErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_serve_lease_errors_total",
			Help: "Failed writes of this replica's serving lease; past serve's staleness bound it answers 503 (the batch job may delete speed rows it reads).",
		}),
		backfilling: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_serve_view_backfilling",
			Help: "1 while the view is backfilling (not answered until a batch run of its definition is published), else 0; set at every manifest poll.",
		}, []string{"view"}),
		mergeGroups: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_serve_merge_groups",
			Help:    "Groups (bucket × group-by values) one query's merge held in serving; a top N computed in ClickHouse holds at most N per bucket.",
			Buckets: []float64{0, 10, 100, 1000, 10_000, 100_000, 1_000_000},
		}, []string{"view"}),
		topN: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_serve_topn_total",
			Help: "Queries with a limit, by how they were answered: clickhouse (the top N computed in ClickHouse), stream (ranked in serving as ClickHouse streamed the groups: a distinct or quantiles order key) or merge (every group merged in serving).",
		}, []string{"view", "path"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tandem_serve_queue_wait_seconds",
			Help:    "How long queries that found every slot (serve.max_concurrent_queries) taken waited in the queue, admitted or not.",
			Buckets: []float64{0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.queryDuration, m.errors, m.authFailures, m.cacheHits, m.cacheMisses, m.cacheEvictions,
			m.speedFailures, m.manifestErrors, m.manifestSwitches, m.batchRows, m.speedRows, m.overloaded, m.leaseErrors, m.backfilling,
			m.mergeGroups, m.topN, m.queueWait)
	}
	return m
}
