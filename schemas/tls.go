package schemas

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// ClientTLS says how tandem encrypts its connection to a service (Kafka,
// ClickHouse, S3) and checks the service's certificate. TLS is on when
// Enabled is set or any of the other fields is: a CA file alone is enough
// to say "this service speaks TLS with a certificate from our own CA".
type ClientTLS struct {
	// Enabled turns TLS on with the system's root certificates, for a
	// service whose certificate a public CA signed (managed Kafka, AWS S3).
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the service's
	// certificate, used instead of the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate (mutual TLS), both or
	// neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name checked in the service's certificate when it
	// differs from the host tandem dials (an address behind a tunnel).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate: encryption without
	// knowing who answers. Only for trying a setup out.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether TLS is turned on.
func (t ClientTLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Load reads the files and returns the client configuration, or nil when
// TLS is off. key is the setting's place in tandem.yaml ("kafka.tls"),
// named in every error so the operator knows which file to fix.
func (t ClientTLS) Load(key string) (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	if err := t.check(key); err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", key, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", key, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file/key_file: %w", key, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// check finds what is wrong without reading files; validate reports it
// with the line.
func (t ClientTLS) check(key string) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s: cert_file and key_file go together (a client certificate needs its key); set both or neither", key)
	}
	return nil
}

// KafkaSASL authenticates tandem to the brokers.
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty turns
	// SASL off.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password, or PasswordFile naming a file that holds it (a mounted
	// secret; one trailing newline is ignored). Password may be
	// "${KAFKA_PASSWORD}" to read an environment variable.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// SASL mechanisms tandem speaks to Kafka.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// On reports whether SASL is turned on.
func (s KafkaSASL) On() bool { return s.Mechanism != "" }

// Secret returns the password, from PasswordFile when that is set.
func (s KafkaSASL) Secret() (string, error) {
	if s.PasswordFile == "" {
		return s.Password, nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("kafka.sasl.password_file: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("kafka.sasl.password_file: %s is empty", s.PasswordFile)
	}
	return pw, nil
}

// String never shows the password, so a logged configuration leaks none.
func (s KafkaSASL) String() string {
	return fmt.Sprintf("{mechanism:%s username:%s password:<redacted>}", s.Mechanism, s.Username)
}
