package dashboard_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir and
// returns their paths and a pool trusting the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "tandem test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func tlsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// configText is tandem.example.yaml with every address on a free port and
// the given sections replaced.
func configText(t *testing.T, replace map[string]string) (string, map[string]string) {
	t.Helper()
	text := testenv.ExampleConfigYAML(t)
	addrs := map[string]string{}
	for name, def := range map[string]string{"kafka": "127.0.0.1:9092", "clickhouse": "127.0.0.1:9000", "s3": "127.0.0.1:9100",
		"ingest": "127.0.0.1:8080", "serve": "127.0.0.1:8081", "speed": "127.0.0.1:8082", "archive": "127.0.0.1:8083"} {
		addrs[name] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		require.Contains(t, text, `"`+def+`"`)
		text = strings.Replace(text, `"`+def+`"`, `"`+addrs[name]+`"`, 1)
	}
	for prefix, line := range replace {
		var out []string
		found := false
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, prefix) {
				l, found = line, true
			}
			out = append(out, l)
		}
		require.True(t, found, "no line starting with %q in the example config", prefix)
		text = strings.Join(out, "\n")
	}
	return text, addrs
}

// child is a tandem subprocess.
type child struct {
	cmd    *exec.Cmd
	stderr *testenv.LockedBuffer
	done   chan struct{}
}

func startTandem(t *testing.T, dir string, args ...string) *child {
	t.Helper()
	bin := testenv.BuildTandem(t)
	c := &child{stderr: &testenv.LockedBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Dir = dir
	c.cmd.Stdout = c.stderr
	c.cmd.Stderr = c.stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, c.cmd.Start())
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(60 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("tandem %s output:\n%s", args[0], tail(c.stderr.String(), 6000))
		}
	})
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// waitHTTP polls url until it answers 200 or the child exits.
func waitHTTP(t *testing.T, c *child, client *http.Client, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-c.done:
			t.Fatalf("tandem exited while waiting for %s:\n%s", url, tail(c.stderr.String(), 6000))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within %s (last error %v)", url, timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// runStatus runs `tandem status` and returns its stdout and exit code.
func runStatus(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testenv.BuildTandem(t), append([]string{"status"}, args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return stdout.String(), stderr.String(), code
}
