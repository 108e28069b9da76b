package s3_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/devenv"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/objstore/objstoretest"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

func storeFor(t *testing.T, srv *testenv.S3Server, opts ...s3.Option) *s3.Store {
	t.Helper()
	st, err := s3.New(schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey, Region: srv.Region}, opts...)
	require.NoError(t, err)
	return st
}

// TestAcceptance runs the objstore.Bucket contract against every S3 tandem
// runs on: MinIO, gofakes3 in memory (tests) and the embedded S3 of
// `tandem dev` (gofakes3 over files).
func TestAcceptance(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *testenv.S3Server
	}{
		{"fakes3", testenv.FakeS3},
		{"minio", testenv.MinIO},
		{"dev-embedded", devEmbedded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			srv := tc.start(t)
			reg := prometheus.NewRegistry()
			st := storeFor(t, srv, s3.WithRegistry(reg), s3.WithPartSize(5<<20, 2))
			require.NoError(t, st.EnsureBucket(ctx))
			require.NoError(t, st.EnsureBucket(ctx), "EnsureBucket is idempotent")

			objstoretest.AcceptanceTest(t, st)

			require.Equal(t, 4.0, metric(t, reg, "tandem_s3_upload_duration_seconds", nil), "four Puts: two small, two large")
			require.GreaterOrEqual(t, metric(t, reg, "tandem_s3_uploaded_bytes_total", nil), float64(2*objstoretest.BigObject))
			require.Greater(t, metric(t, reg, "tandem_s3_request_duration_seconds", map[string]string{"op": "put_if"}), 0.0)
			require.Greater(t, metric(t, reg, "tandem_s3_request_duration_seconds", map[string]string{"op": "copy"}), 0.0)
		})
	}
}

// devEmbedded serves internal/devenv's embedded S3 on a loopback port.
func devEmbedded(t testing.TB) *testenv.S3Server {
	h, err := devenv.EmbeddedS3(t.TempDir(), "tandem")
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &testenv.S3Server{Endpoint: l.Addr().String(), URL: "http://" + l.Addr().String(),
		AccessKey: "any", SecretKey: "any-secret", Bucket: "tandem", Region: "us-east-1", Fake: true}
}

// TestOutage: while MinIO is down calls fail after the bounded retries (they
// do not hang), and once it is back the same Store works again; a call that
// starts during the outage and spans the restart succeeds through retries.
func TestOutage(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	reg := prometheus.NewRegistry()
	st := storeFor(t, srv, s3.WithRegistry(reg), s3.WithRetry(s3.Retry{Attempts: 3, Base: 50 * time.Millisecond, Max: 100 * time.Millisecond}))
	require.NoError(t, objstore.PutBytes(ctx, st, "k", []byte("v1")))

	srv.Stop()
	t0 := time.Now()
	err := objstore.PutBytes(ctx, st, "k", []byte("v2"))
	require.Error(t, err)
	require.Less(t, time.Since(t0), 10*time.Second, "a failing call gives up within its retry bounds")
	require.Greater(t, metric(t, reg, "tandem_s3_retries_total", map[string]string{"op": "put"}), 0.0)
	require.Greater(t, metric(t, reg, "tandem_s3_errors_total", map[string]string{"op": "put"}), 0.0)

	// Retries long enough to span a restart succeed.
	patient := storeFor(t, srv, s3.WithRetry(s3.Retry{Attempts: 100, Base: 100 * time.Millisecond, Max: 200 * time.Millisecond}))
	done := make(chan error, 1)
	go func() { done <- objstore.PutBytes(ctx, patient, "k", []byte("v3")) }()
	time.Sleep(500 * time.Millisecond)
	srv.Start()
	require.NoError(t, <-done)
	got, err := objstore.GetBytes(ctx, st, "k")
	require.NoError(t, err)
	require.Equal(t, "v3", string(got))
}

// TestBadCredentials: MinIO refuses them, and the refusal is not retried.
func TestBadCredentials(t *testing.T) {
	srv := testenv.MinIO(t)
	st, err := s3.New(schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: "nobody", SecretKey: "wrong-secret"})
	require.NoError(t, err)
	t0 := time.Now()
	err = objstore.PutBytes(context.Background(), st, "k", []byte("v"))
	require.Error(t, err)
	require.Less(t, time.Since(t0), 2*time.Second, "an auth failure is not retried")
}

// metric sums the values of the named counter or histogram (its sample
// count) whose labels include want.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for k, v := range want {
				found := false
				for _, l := range m.Label {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}
