package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	minioStartTimeout = 30 * time.Second
	minioStopGrace    = 10 * time.Second

	// Same defaults as scripts/minio.sh.
	defaultS3AccessKey = "tandem"
	defaultS3SecretKey = "tandem-dev-secret"
	defaultS3Bucket    = "tandem"
	defaultS3Region    = "us-east-1"
)

// S3Server is an S3 endpoint for one test with its bucket already created:
// either a real MinIO process (MinIO) or an in-process fake (FakeS3).
//
// FakeS3 caveats: it checks no credentials, and gofakes3 corrupts multipart
// uploads unless the uploading client sets minio.PutObjectOptions
// DisableContentSha256: true (minio-go switches to multipart above 16 MiB
// by default, or above PartSize). Code that must work against both should
// set it for uploads; tests of authentication or multipart behaviour should
// use MinIO.
type S3Server struct {
	// Endpoint is "127.0.0.1:port", the form minio-go's New expects.
	Endpoint string
	// URL is "http://127.0.0.1:port" ("https://" for MinIOTLS), for
	// clients that want a URL.
	URL string
	// AccessKey and SecretKey are valid credentials (MinIO's root user).
	AccessKey, SecretKey string
	// Bucket exists when the helper returns ("tandem").
	Bucket string
	// Region is the region to sign requests for ("us-east-1").
	Region string
	// Fake is true for FakeS3.
	Fake bool
	// DataDir is MinIO's data dir (empty for FakeS3, which keeps objects in
	// memory; they survive Stop/Start).
	DataDir string

	t    testing.TB
	port int

	// MinIO
	certs    *Certs // serves HTTPS with certs' server certificate; nil: HTTP
	minioBin string
	proc     *process
	runDir   string

	// FakeS3
	mu      sync.Mutex
	handler http.Handler
	srv     *http.Server
}

// MinIOBinary returns the path of the MinIO server built by
// `scripts/minio.sh install`, or an error naming that command.
func MinIOBinary() (string, error) {
	if p := os.Getenv("TANDEM_MINIO_BIN"); p != "" {
		return p, nil
	}
	p := filepath.Join(CacheDir(), "bin", "minio")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("the MinIO server is not built (looked for %s and minio on PATH); build it with `make deps` or `scripts/minio.sh install` (~3 min)", p)
}

// MinIO starts a real MinIO server for the test on a free loopback port
// with its data in a t.TempDir(), creates the bucket, and kills the server
// when the test ends. It takes under a second. Unlike FakeS3 it checks
// credentials and implements multipart uploads faithfully.
func MinIO(t testing.TB) *S3Server {
	t.Helper()
	return startMinIO(t, nil)
}

// MinIOTLS is MinIO serving HTTPS only, with certs' server certificate
// (MinIO reads public.crt and private.key from its --certs-dir). Clients
// must trust certs.CAFile.
func MinIOTLS(t testing.TB, certs *Certs) *S3Server {
	t.Helper()
	return startMinIO(t, certs)
}

func startMinIO(t testing.TB, certs *Certs) *S3Server {
	t.Helper()
	bin, err := MinIOBinary()
	if err != nil {
		missing(t, "%v", err)
	}
	s := &S3Server{
		AccessKey: defaultS3AccessKey,
		SecretKey: defaultS3SecretKey,
		Bucket:    defaultS3Bucket,
		Region:    defaultS3Region,
		DataDir:   t.TempDir(),
		runDir:    t.TempDir(),
		t:         t,
		minioBin:  bin,
		certs:     certs,
	}
	s.proc = &process{name: "minio", logPath: filepath.Join(s.runDir, "minio.log")}
	t.Cleanup(func() { _ = s.proc.stop(syscall.SIGKILL, 5*time.Second) })

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s.setPort(FreePort(t))
		if lastErr = s.startMinIO(); lastErr == nil {
			break
		}
		_ = s.proc.stop(syscall.SIGKILL, 5*time.Second)
	}
	if lastErr != nil {
		t.Fatalf("testenv: MinIO did not start: %v", lastErr)
	}
	s.makeBucket()
	return s
}

func (s *S3Server) setPort(port int) {
	s.port = port
	s.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.URL = "http://" + s.Endpoint
	if s.certs != nil {
		s.URL = "https://" + s.Endpoint
	}
}

func (s *S3Server) startMinIO() error {
	argv := []string{s.minioBin, "server", "--quiet", "--address", s.Endpoint, s.DataDir}
	client := &http.Client{Timeout: 2 * time.Second}
	if s.certs != nil {
		dir := filepath.Join(s.runDir, "certs")
		if err := os.MkdirAll(filepath.Join(dir, "CAs"), 0o700); err != nil {
			return err
		}
		for from, to := range map[string]string{s.certs.CertFile: "public.crt", s.certs.KeyFile: "private.key"} {
			b, err := os.ReadFile(from)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, to), b, 0o600); err != nil {
				return err
			}
		}
		argv = append(argv[:len(argv)-1], "--certs-dir", dir, s.DataDir)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.certs.Pool}}
	}
	env := []string{
		"MINIO_ROOT_USER=" + s.AccessKey,
		"MINIO_ROOT_PASSWORD=" + s.SecretKey,
		"MINIO_BROWSER=off", // no console: one port fewer to collide on
		"MINIO_UPDATE=off",
	}
	// A listener already on the port (another package's MinIO that took
	// the same free port) would answer the readiness check while this one
	// fails to bind and exits; the caller retries on another port.
	if c, err := net.DialTimeout("tcp", s.Endpoint, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("port of %s is already in use", s.Endpoint)
	}
	if err := s.proc.start(argv, env, s.runDir); err != nil {
		return err
	}
	confirmed := false // ready once; ready again after a pause and still running: ours
	deadline := time.Now().Add(minioStartTimeout)
	for {
		if exited, err := s.proc.hasExited(); exited {
			return fmt.Errorf("minio exited during start-up (%v)\n%s", err, tail(s.proc.logPath, 20))
		}
		resp, err := client.Get(s.URL + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if confirmed {
					return nil
				}
				confirmed = true
				time.Sleep(200 * time.Millisecond)
				continue
			}
			err = fmt.Errorf("readiness: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio on %s not ready within %s: %v\n%s", s.Endpoint, minioStartTimeout, err, tail(s.proc.logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FakeS3 starts an in-process fake S3 (gofakes3, in-memory) on a free
// loopback port and creates the bucket. It starts in about a millisecond;
// see the S3Server caveats before relying on it.
func FakeS3(t testing.TB) *S3Server {
	t.Helper()
	s := &S3Server{
		AccessKey: defaultS3AccessKey,
		SecretKey: defaultS3SecretKey,
		Bucket:    defaultS3Bucket,
		Region:    defaultS3Region,
		Fake:      true,
		t:         t,
		handler:   gofakes3.New(s3mem.New()).Server(),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: FakeS3 listen: %v", err)
	}
	s.setPort(l.Addr().(*net.TCPAddr).Port)
	s.serveFake(l)
	t.Cleanup(s.stopFake)
	s.makeBucket()
	return s
}

func (s *S3Server) serveFake(l net.Listener) {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.t.Logf("testenv: FakeS3 stopped serving: %v", err)
		}
	}()
}

func (s *S3Server) stopFake() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close() // drops open connections too, like a dead server
	}
}

// Stop takes the server down to simulate an S3 outage: MinIO gets SIGTERM
// (killed after 10 s), FakeS3 closes its listener and connections but keeps
// its objects.
func (s *S3Server) Stop() {
	s.t.Helper()
	if s.Fake {
		s.stopFake()
		return
	}
	if err := s.proc.stop(syscall.SIGTERM, minioStopGrace); err != nil {
		s.t.Logf("testenv: %v", err)
	}
}

// Start brings a stopped server back on the same port (and, for MinIO, the
// same data dir) and waits until it is ready.
func (s *S3Server) Start() {
	s.t.Helper()
	if s.Fake {
		s.mu.Lock()
		running := s.srv != nil
		s.mu.Unlock()
		if running {
			s.t.Fatalf("testenv: S3Server.Start: FakeS3 at %s is already running", s.Endpoint)
		}
		l, err := listenRetry(s.Endpoint, 5*time.Second)
		if err != nil {
			s.t.Fatalf("testenv: restarting FakeS3 on %s: %v", s.Endpoint, err)
		}
		s.serveFake(l)
		return
	}
	if s.proc.running() != nil {
		s.t.Fatalf("testenv: S3Server.Start: MinIO at %s is already running", s.Endpoint)
	}
	if err := s.startMinIO(); err != nil {
		s.t.Fatalf("testenv: restarting MinIO on %s: %v", s.Endpoint, err)
	}
}

func listenRetry(addr string, within time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(within)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client returns a minio-go client with valid credentials for the server.
func (s *S3Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := s.clientWith(s.AccessKey, s.SecretKey)
	if err != nil {
		t.Fatalf("testenv: S3 client for %s: %v", s.Endpoint, err)
	}
	return c
}

func (s *S3Server) clientWith(accessKey, secretKey string) (*minio.Client, error) {
	o := &minio.Options{
		Creds:  credentials.NewStaticV4(accessKey, secretKey, ""),
		Secure: false,
		Region: s.Region,
	}
	if s.certs != nil {
		tr, err := minio.DefaultTransport(true)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: s.certs.Pool}
		o.Secure, o.Transport = true, tr
	}
	return minio.New(s.Endpoint, o)
}

func (s *S3Server) makeBucket() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(s.t).MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		s.t.Fatalf("testenv: creating bucket %q on %s: %v", s.Bucket, s.Endpoint, err)
	}
}
