package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs is a throw-away certificate authority with one server certificate
// for the loopback addresses and one client certificate, written as PEM
// files into a t.TempDir(), for starting services with TLS on and
// pointing tandem's ca_file, cert_file and key_file at them.
type Certs struct {
	Dir string
	// CAFile signs both certificates.
	CAFile string
	// CertFile and KeyFile are the server's: SANs localhost, 127.0.0.1
	// and ::1.
	CertFile, KeyFile string
	// ClientCertFile and ClientKeyFile are a client certificate (CN
	// "tandem") for mutual TLS.
	ClientCertFile, ClientKeyFile string
	// Pool holds the CA, for a Go client in the test itself.
	Pool *x509.CertPool
	// Server is a tls.Config serving the server certificate.
	Server *tls.Config
}

// NewCerts makes a CA and its certificates. Keys are ECDSA P-256: quick to
// make, and accepted by OpenSSL 1.0 (ClickHouse 18.16), Java and Go.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	dir := t.TempDir()
	c := &Certs{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"), ClientKeyFile: filepath.Join(dir, "client.key")}
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tandem test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("testenv: making a CA: %v", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	writePEM(t, c.CAFile, "CERTIFICATE", caDER)
	c.Pool = x509.NewCertPool()
	c.Pool.AddCert(ca)

	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("testenv: making a certificate: %v", err)
		}
		writePEM(t, certFile, "CERTIFICATE", der)
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	}
	leaf(2, "localhost", x509.ExtKeyUsageServerAuth, c.CertFile, c.KeyFile)
	leaf(3, "tandem", x509.ExtKeyUsageClientAuth, c.ClientCertFile, c.ClientKeyFile)

	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c.Server = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	return c
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}
