package status

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestPlaintextStoresAreOpenSurfaces: a store reached without TLS counts as
// an open surface when it is not on this host, and not once TLS is on.
// (The stores are unreachable here: only the configuration is judged.)
func TestPlaintextStoresAreOpenSurfaces(t *testing.T) {
	gather := func(cfg *testCfg) *Check {
		m := cfg.monitor(t, Config{Timeout: 200 * time.Millisecond}, Deps{Skip: Components})
		defer m.Close()
		rep := m.Gather(context.Background())
		return rep.Check("security.open_surfaces")
	}
	base := testConfig(t, "")
	before := *gather(base).Value

	remote := *base
	rc := *base.Config // a copy: base is judged again below
	remote.Config = &rc
	remote.Kafka.Brokers = []string{"192.0.2.1:9092"}
	remote.ClickHouse.Addr = "192.0.2.2:9000"
	remote.S3.Endpoint = "192.0.2.3:9000"
	c := gather(&remote)
	require.Equal(t, before+3, *c.Value, c.Detail)
	require.Contains(t, c.Detail, "Kafka is reached without TLS at 192.0.2.1:9092 (kafka.tls)")
	require.Contains(t, c.Detail, "ClickHouse is reached without TLS at 192.0.2.2:9000 (clickhouse.tls)")
	require.Contains(t, c.Detail, "S3 is reached over plain HTTP at 192.0.2.3:9000")

	secured := remote
	sc := *remote.Config
	secured.Config = &sc
	secured.Kafka.TLS = schemas.ClientTLS{Enabled: true}
	secured.ClickHouse.TLS = schemas.ClientTLS{Enabled: true}
	secured.S3.Secure = true
	require.Equal(t, before, *gather(&secured).Value)
}
