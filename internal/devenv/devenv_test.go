package devenv

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestStartRefusesSecurity: the development services are plaintext, so a
// configuration asking for TLS or SASL is refused before anything starts,
// naming the keys.
func TestStartRefusesSecurity(t *testing.T) {
	cfg := schemas.Default()
	cfg.Kafka.SASL = schemas.KafkaSASL{Mechanism: schemas.SASLScramSHA512, Username: "u", Password: "p"}
	cfg.S3.TLS = schemas.ClientTLS{CAFile: "/ca.pem"}
	dir := t.TempDir()
	_, err := Start(context.Background(), &cfg, Options{DataDir: dir})
	require.ErrorContains(t, err, "remove kafka.sasl, s3.tls from the configuration")
	require.NoError(t, refuseSecurity(func() *schemas.Config { c := schemas.Default(); return &c }()))
}
