package clickhouse

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestOpenTLS migrates tandem's database over the secure native port of a
// real ClickHouse 18.16 with a certificate from a CA made for the test,
// and refuses a server whose certificate that CA did not sign, and the
// secure port spoken in plaintext.
func TestOpenTLS(t *testing.T) {
	certs := testenv.NewCerts(t)
	srv := testenv.ClickHouseTLS(t, certs)
	cfg := parseConfig(t, testConfigYAML)
	cfg.ClickHouse.Addr, cfg.ClickHouse.Username, cfg.ClickHouse.Password = srv.SecureAddr, srv.Username, srv.Password
	cfg.ClickHouse.TLS = schemas.ClientTLS{CAFile: certs.CAFile}
	ctx := testCtx(t)

	db, err := Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	// What was created over TLS is what the plain port shows.
	var tlsTables, plainTables uint64
	require.NoError(t, db.Conn().QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = 'tandem'").Scan(&tlsTables))
	require.NoError(t, srv.Conn(t).QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = 'tandem'").Scan(&plainTables))
	require.Positive(t, tlsTables)
	require.Equal(t, plainTables, tlsTables)

	t.Run("unknown CA", func(t *testing.T) {
		c := cfg.ClickHouse
		c.TLS = schemas.ClientTLS{CAFile: testenv.NewCerts(t).CAFile}
		_, err := Open(ctx, c)
		require.ErrorContains(t, err, "certificate")
	})
	t.Run("plaintext to the secure port", func(t *testing.T) {
		c := cfg.ClickHouse
		c.TLS = schemas.ClientTLS{}
		_, err := Open(ctx, c)
		require.Error(t, err)
	})
	t.Run("missing CA file names the key", func(t *testing.T) {
		c := cfg.ClickHouse
		c.TLS = schemas.ClientTLS{CAFile: "/nonexistent/ca.pem"}
		_, err := Open(ctx, c)
		require.ErrorContains(t, err, "clickhouse.tls.ca_file")
	})
}
