package ops

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// Components sharing a registry count into one family; a registry holding
// another collector of that name is an error, and the counter still counts.
func TestAuthFailuresSharedFamily(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := AuthFailures(reg)
	require.NoError(t, err)
	b, err := AuthFailures(reg)
	require.NoError(t, err)
	require.Same(t, a, b)
	a.WithLabelValues("ingest").Inc()
	b.WithLabelValues("status").Inc()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, 1)
	require.Equal(t, "tandem_auth_failures_total", mfs[0].GetName())
	require.Len(t, mfs[0].GetMetric(), 2)

	other := prometheus.NewRegistry()
	other.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_auth_failures_total", Help: "not a counter"}))
	c, err := AuthFailures(other)
	require.Error(t, err)
	c.WithLabelValues("status").Inc()
	var m dto.Metric
	require.NoError(t, c.WithLabelValues("status").Write(&m))
	require.Equal(t, 1.0, m.GetCounter().GetValue())
}
