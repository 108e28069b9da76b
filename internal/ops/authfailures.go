package ops

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

// AuthFailures returns tandem_auth_failures_total{endpoint} registered on
// reg, reusing the one already there: every component with an
// authenticated endpoint (a Bearer check) counts into the same family, and
// `tandem dev` runs several of them on one registry. When registering fails
// otherwise it returns the error with a counter that still counts but is
// not exported.
func AuthFailures(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricAuthFailures.String(),
		Help: "Requests refused for a missing or invalid token, by endpoint."}, []string{"endpoint"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
