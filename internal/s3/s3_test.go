package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

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

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestStore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *testenv.S3Server
	}{
		{"fakes3", testenv.FakeS3},
		{"minio", testenv.MinIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			srv := tc.start(t)
			reg := prometheus.NewRegistry()
			st := storeFor(t, srv, s3.WithRegistry(reg), s3.WithPartSize(5<<20, 2))
			require.NoError(t, st.EnsureBucket(ctx))
			require.NoError(t, st.EnsureBucket(ctx), "EnsureBucket is idempotent")

			// Small object round trip.
			require.NoError(t, st.PutBytes(ctx, "a/one.json", []byte(`{"x":1}`)))
			got, err := st.GetBytes(ctx, "a/one.json")
			require.NoError(t, err)
			require.Equal(t, `{"x":1}`, string(got))

			// Missing objects are ErrNotFound everywhere.
			_, err = st.GetBytes(ctx, "a/missing")
			require.ErrorIs(t, err, s3.ErrNotFound)
			_, err = st.Get(ctx, "a/missing")
			require.ErrorIs(t, err, s3.ErrNotFound)
			_, err = st.Stat(ctx, "a/missing")
			require.ErrorIs(t, err, s3.ErrNotFound)
			_, err = st.Open(ctx, "a/missing")
			require.ErrorIs(t, err, s3.ErrNotFound)
			require.NoError(t, st.Delete(ctx, "a/missing"))

			// Multipart: a streamed body of unknown size and a file of known
			// size, both over the part size.
			big := randomBytes(t, 12<<20+123)
			require.NoError(t, st.Put(ctx, "a/stream.bin", bytes.NewBuffer(big), -1))
			path := filepath.Join(t.TempDir(), "f")
			require.NoError(t, os.WriteFile(path, big, 0o600))
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			require.NoError(t, st.Put(ctx, "a/file.bin", f, int64(len(big))))
			for _, key := range []string{"a/stream.bin", "a/file.bin"} {
				rc, err := st.Get(ctx, key)
				require.NoError(t, err)
				data, err := io.ReadAll(rc)
				require.NoError(t, rc.Close())
				require.NoError(t, err)
				require.True(t, bytes.Equal(big, data), "%s differs after the round trip", key)
			}

			// Random access, including the tail and past the end.
			obj, err := st.Open(ctx, "a/file.bin")
			require.NoError(t, err)
			require.Equal(t, int64(len(big)), obj.Size())
			buf := make([]byte, 1000)
			for _, off := range []int64{0, 7 << 20, 100, int64(len(big)) - 1000} {
				n, err := obj.ReadAt(buf, off)
				require.NoError(t, err)
				require.Equal(t, 1000, n)
				require.Equal(t, big[off:off+1000], buf)
			}
			n, err := obj.ReadAt(buf, int64(len(big))-10)
			require.ErrorIs(t, err, io.EOF)
			require.Equal(t, 10, n)
			require.Equal(t, big[len(big)-10:], buf[:10])
			require.NoError(t, obj.Close())

			// Listing is recursive, in key order, and can start after a key.
			list, err := st.List(ctx, "a/")
			require.NoError(t, err)
			var keys []string
			for _, o := range list {
				keys = append(keys, o.Key)
			}
			require.Equal(t, []string{"a/file.bin", "a/one.json", "a/stream.bin"}, keys)
			require.Equal(t, int64(len(big)), list[0].Size)
			require.WithinDuration(t, time.Now(), list[0].ModTime, time.Minute)
			after, err := st.ListAfter(ctx, "a/", "a/file.bin")
			require.NoError(t, err)
			require.Len(t, after, 2)

			require.NoError(t, st.Delete(ctx, "a/one.json"))
			_, err = st.Stat(ctx, "a/one.json")
			require.ErrorIs(t, err, s3.ErrNotFound)

			require.Equal(t, 3.0, metric(t, reg, "tandem_s3_upload_duration_seconds", nil), "three uploads")
			require.GreaterOrEqual(t, metric(t, reg, "tandem_s3_uploaded_bytes_total", nil), float64(2*len(big)))
		})
	}
}

// TestOutage: while MinIO is down calls fail after the bounded retries (they
// do not hang), and once it is back the same Store works again; a call that
// starts during the outage and spans the restart succeeds through retries.
func TestOutage(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	reg := prometheus.NewRegistry()
	st := storeFor(t, srv, s3.WithRegistry(reg), s3.WithRetry(s3.Retry{Attempts: 3, Base: 50 * time.Millisecond, Max: 100 * time.Millisecond}))
	require.NoError(t, st.PutBytes(ctx, "k", []byte("v1")))

	srv.Stop()
	t0 := time.Now()
	err := st.PutBytes(ctx, "k", []byte("v2"))
	require.Error(t, err)
	require.Less(t, time.Since(t0), 10*time.Second, "a failing call gives up within its retry bounds")
	require.Greater(t, metric(t, reg, "tandem_s3_retries_total", map[string]string{"op": "put"}), 0.0)
	require.Greater(t, metric(t, reg, "tandem_s3_errors_total", map[string]string{"op": "put"}), 0.0)

	// Retries long enough to span a restart succeed.
	patient := storeFor(t, srv, s3.WithRetry(s3.Retry{Attempts: 100, Base: 100 * time.Millisecond, Max: 200 * time.Millisecond}))
	done := make(chan error, 1)
	go func() { done <- patient.PutBytes(ctx, "k", []byte("v3")) }()
	time.Sleep(500 * time.Millisecond)
	srv.Start()
	require.NoError(t, <-done)
	got, err := st.GetBytes(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v3", string(got))
}

// TestBadCredentials: MinIO refuses them, and the refusal is not retried.
func TestBadCredentials(t *testing.T) {
	srv := testenv.MinIO(t)
	st, err := s3.New(schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: "nobody", SecretKey: "wrong-secret"})
	require.NoError(t, err)
	t0 := time.Now()
	err = st.PutBytes(context.Background(), "k", []byte("v"))
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
