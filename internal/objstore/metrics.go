package objstore

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

// metrics keep the tandem_s3_ names they had when only S3 existed: the
// status checks and dashboards read them (status/checks.go), and every
// bucket tandem runs today speaks S3.
type metrics struct {
	duration    *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	retries     *prometheus.CounterVec
	upload      prometheus.Histogram
	uploadBytes prometheus.Counter
}

// newMetrics builds the bucket's metrics and registers them on reg (nil:
// unregistered). A collector already registered by another bucket on the
// same registry is shared.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    schemas.MetricS3RequestSeconds.String(),
			Help:    "Duration of one S3 request attempt, by operation.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: schemas.MetricS3Errors.String(),
			Help: "S3 request attempts that failed (not counting missing objects), by operation.",
		}, []string{"op"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_s3_retries_total",
			Help: "S3 requests retried after a transient error, by operation.",
		}, []string{"op"}),
		upload: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    schemas.MetricS3UploadSeconds.String(),
			Help:    "Duration of successful object uploads, retries included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_s3_uploaded_bytes_total",
			Help: "Bytes of objects uploaded.",
		}),
	}
	if reg == nil {
		return m
	}
	m.duration = register(reg, m.duration)
	m.errors = register(reg, m.errors)
	m.retries = register(reg, m.retries)
	m.upload = register(reg, m.upload)
	m.uploadBytes = register(reg, m.uploadBytes)
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a name clash with a different metric type is a programming error
	}
	return c
}
