package testenv

import (
	"os"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Environment variables that point the tests at an Apache Kafka SASL_SSL
// listener (scripts/test-apache-kafka.sh sets them; see scripts/kafka.sh).
const (
	// EnvKafkaSASLSSLBrokers is the SASL_SSL listener, host:port[,...].
	EnvKafkaSASLSSLBrokers = "TANDEM_TEST_KAFKA_SASL_SSL_BROKERS"
	// EnvKafkaCAFile is the PEM CA that signed the broker's certificate.
	EnvKafkaCAFile = "TANDEM_TEST_KAFKA_CA_FILE"
	// EnvKafkaSASLUser and EnvKafkaSASLPassword are a user known to the
	// listener under PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 alike.
	EnvKafkaSASLUser     = "TANDEM_TEST_KAFKA_SASL_USER"
	EnvKafkaSASLPassword = "TANDEM_TEST_KAFKA_SASL_PASSWORD"
)

// SecureKafkaCluster is a Kafka cluster that takes only TLS connections
// authenticated with SASL (a SASL_SSL listener), and one user it knows
// under all three mechanisms tandem speaks.
type SecureKafkaCluster struct {
	Brokers []string
	// CAFile is the PEM CA of the brokers' certificates.
	CAFile             string
	Username, Password string
	// External is true for the Apache Kafka tier's broker.
	External bool
}

// SecureKafka returns a SASL_SSL cluster for the test: with
// TANDEM_TEST_KAFKA=apache the listener named by the variables above
// (the test is skipped when the tier was started without one), else an
// in-process kfake cluster with TLS on a fresh CA (NewCerts) and SASL
// users for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
func SecureKafka(t testing.TB) *SecureKafkaCluster {
	t.Helper()
	if os.Getenv(EnvKafka) == "apache" {
		brokers := splitBrokers(os.Getenv(EnvKafkaSASLSSLBrokers))
		if len(brokers) == 0 {
			t.Skipf("testenv: the Apache Kafka tier has no SASL_SSL listener (%s unset); scripts/test-apache-kafka.sh starts one", EnvKafkaSASLSSLBrokers)
		}
		return &SecureKafkaCluster{Brokers: brokers, CAFile: os.Getenv(EnvKafkaCAFile),
			Username: os.Getenv(EnvKafkaSASLUser), Password: os.Getenv(EnvKafkaSASLPassword), External: true}
	}
	certs := NewCerts(t)
	const user, pass = "tandem", "s3cret-for-the-test"
	k := KafkaWith(t, KafkaOptions{InMemory: true, Extra: []kfake.Opt{
		kfake.TLS(certs.Server),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", user, pass),
		kfake.Superuser("SCRAM-SHA-256", user, pass),
		kfake.Superuser("SCRAM-SHA-512", user, pass),
	}})
	return &SecureKafkaCluster{Brokers: k.Brokers, CAFile: certs.CAFile, Username: user, Password: pass}
}
