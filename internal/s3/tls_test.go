package s3_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestCustomCA writes and reads an object on a real MinIO that serves only
// HTTPS, with a certificate from a CA made for the test and named by
// s3.tls.ca_file; a client that trusts only the system's roots is refused.
func TestCustomCA(t *testing.T) {
	certs := testenv.NewCerts(t)
	srv := testenv.MinIOTLS(t, certs)
	cfg := schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey, Region: srv.Region, TLS: schemas.ClientTLS{CAFile: certs.CAFile}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st, err := s3.New(cfg)
	require.NoError(t, err)
	want := []byte("over TLS")
	require.NoError(t, objstore.PutBytes(ctx, st, "tls/object", want))
	got, err := objstore.GetBytes(ctx, st, "tls/object")
	require.NoError(t, err)
	require.Equal(t, want, got)

	t.Run("system roots only", func(t *testing.T) {
		c := cfg
		c.TLS, c.Secure = schemas.ClientTLS{}, true
		st, err := s3.New(c, s3.WithRetry(s3.Retry{Attempts: 1}))
		require.NoError(t, err)
		_, err = objstore.GetBytes(ctx, st, "tls/object")
		require.ErrorContains(t, err, "certificate")
	})
	t.Run("plain HTTP", func(t *testing.T) {
		c := cfg
		c.TLS = schemas.ClientTLS{}
		st, err := s3.New(c, s3.WithRetry(s3.Retry{Attempts: 1}))
		require.NoError(t, err)
		_, err = objstore.GetBytes(ctx, st, "tls/object")
		require.Error(t, err)
	})
	t.Run("missing CA file names the key", func(t *testing.T) {
		c := cfg
		c.TLS = schemas.ClientTLS{CAFile: "/nonexistent/ca.pem"}
		_, err := s3.New(c)
		require.ErrorContains(t, err, "s3.tls.ca_file")
	})
}
