package schemas

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSecurityKeysRejected: each mistake in the TLS and SASL keys is an
// error naming the key, on its line.
func TestSecurityKeysRejected(t *testing.T) {
	cases := []struct{ name, add, want string }{
		{"unknown mechanism", "kafka: { tls: { enabled: true }, sasl: { mechanism: GSSAPI, username: u, password: p } }", `kafka.sasl.mechanism "GSSAPI" is not one of`},
		{"no username", "kafka: { tls: { enabled: true }, sasl: { mechanism: SCRAM-SHA-512, password: p } }", "kafka.sasl.username must be set"},
		{"no password", "kafka: { sasl: { mechanism: SCRAM-SHA-512, username: u } }", "kafka.sasl: set exactly one of password"},
		{"two passwords", "kafka: { sasl: { mechanism: SCRAM-SHA-512, username: u, password: p, password_file: /f } }", "kafka.sasl: set exactly one of password"},
		{"PLAIN without TLS", "kafka: { sasl: { mechanism: PLAIN, username: u, password: p } }", "PLAIN sends the password in clear text"},
		{"user without mechanism", "kafka: { sasl: { username: u, password: p } }", "kafka.sasl: mechanism must be set"},
		{"cert without key", "clickhouse: { tls: { cert_file: /c.pem } }", "clickhouse.tls: cert_file and key_file go together"},
		{"key without cert", "kafka: { tls: { key_file: /k.pem } }", "kafka.tls: cert_file and key_file go together"},
		{"s3 http with tls", "s3: { endpoint: 'http://s3:9000', tls: { ca_file: /ca.pem } }", "says http:// but s3.tls is set"},
		{"unknown tls key", "s3: { tls: { ca: /ca.pem } }", `field "ca" not recognised`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(base+tc.add+"\n"), noEnv)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), "t.yaml:")
		})
	}
}

func TestSecurityKeysAccepted(t *testing.T) {
	src := base + `kafka:
  brokers: [b:9093]
  tls: { ca_file: /etc/tandem/kafka-ca.pem }
  sasl: { mechanism: SCRAM-SHA-512, username: tandem, password: "${KAFKA_PASSWORD}" }
clickhouse: { addr: ch:9440, tls: { ca_file: /ca.pem, server_name: clickhouse.internal } }
s3: { endpoint: 's3:9000', tls: { ca_file: /ca.pem } }
`
	env := func(k string) (string, bool) {
		return map[string]string{"KAFKA_PASSWORD": "from-env"}[k], k == "KAFKA_PASSWORD"
	}
	cfg, err := Parse("t.yaml", []byte(src), env)
	require.NoError(t, err)
	require.True(t, cfg.Kafka.TLS.On())
	require.Equal(t, "from-env", cfg.Kafka.SASL.Password)
	require.NotContains(t, cfg.Kafka.SASL.String(), "from-env", "a logged SASL setting shows no password")
	require.True(t, cfg.ClickHouse.TLS.On())
	require.False(t, Default().Kafka.TLS.On(), "TLS is off unless asked for")
}

func TestClientTLSLoad(t *testing.T) {
	dir := t.TempDir()
	none, err := ClientTLS{}.Load("kafka.tls")
	require.NoError(t, err)
	require.Nil(t, none)
	on, err := ClientTLS{Enabled: true, ServerName: "k"}.Load("kafka.tls")
	require.NoError(t, err)
	require.Nil(t, on.RootCAs, "enabled alone uses the system's roots")
	require.Equal(t, "k", on.ServerName)

	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	_, err = ClientTLS{CAFile: notPEM}.Load("s3.tls")
	require.ErrorContains(t, err, "s3.tls.ca_file: "+notPEM+" holds no PEM certificate")
	_, err = ClientTLS{CertFile: notPEM, KeyFile: notPEM}.Load("clickhouse.tls")
	require.ErrorContains(t, err, "clickhouse.tls.cert_file/key_file")

	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte("secret\n"), 0o600))
	got, err := KafkaSASL{Mechanism: SASLPlain, Username: "u", PasswordFile: pw}.Secret()
	require.NoError(t, err)
	require.Equal(t, "secret", got, "one trailing newline of a mounted secret is not part of it")
	require.NoError(t, os.WriteFile(pw, []byte("\n"), 0o600))
	_, err = KafkaSASL{PasswordFile: pw}.Secret()
	require.True(t, err != nil && strings.Contains(err.Error(), "kafka.sasl.password_file"), "%v", err)
}
