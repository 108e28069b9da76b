// Package s3 is tandem's adapter for S3-compatible object stores (MinIO,
// AWS S3, and gofakes3 in tests and `tandem dev`), built on minio-go v7 —
// the only package outside tests that imports it.
//
// Bucket implements objstore.Bucket with one try per request and classifies
// minio-go's errors into objstore's (not found, precondition failed,
// transient). New returns a Store: that Bucket inside objstore.Instrument,
// which adds the bounded retries and the tandem_s3_* metrics.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// Retry bounds the retries of one call; see objstore.Retry.
type Retry = objstore.Retry

// Store is a Bucket with bounded retries and metrics (objstore.Instrument),
// plus creating the bucket. It is safe for concurrent use.
type Store struct {
	*objstore.Instrumented
	raw *Bucket
}

type config struct {
	inst    objstore.InstrumentOptions
	partSz  uint64
	threads uint
}

// Option changes how New builds a Store.
type Option func(*config)

// WithRegistry registers the store's tandem_s3_* metrics on reg. Several
// stores may share one registry (their counts add up).
func WithRegistry(reg prometheus.Registerer) Option {
	return func(c *config) { c.inst.Registry = reg }
}

// WithLogger logs retries to log instead of slog.Default().
func WithLogger(log *slog.Logger) Option { return func(c *config) { c.inst.Log = log } }

// WithRetry sets the retry bounds.
func WithRetry(r Retry) Option { return func(c *config) { c.inst.Retry = r } }

// WithPartSize sets the multipart part size and how many parts upload at
// once. Memory used by one streaming Put of unknown size is about
// partSize*threads; a Put of known size from an io.ReaderAt (a file) reads
// parts in place. Default 16 MiB and 2.
func WithPartSize(partSize uint64, threads uint) Option {
	return func(c *config) { c.partSz, c.threads = partSize, threads }
}

// New returns a Store for cfg.Bucket at cfg.Endpoint. Credentials come only
// from cfg (the configuration file expands ${ENV} references). It does not
// contact the server; EnsureBucket does.
func New(cfg schemas.S3Config, opts ...Option) (*Store, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3: endpoint is empty")
	}
	if cfg.Bucket == "" {
		return nil, errors.New("s3: bucket is empty")
	}
	endpoint := strings.TrimPrefix(strings.TrimPrefix(cfg.Endpoint, "http://"), "https://")
	secure := cfg.Secure || strings.HasPrefix(cfg.Endpoint, "https://")
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	mo := &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: secure,
		Region: region,
		// One try per request: retries happen in objstore.Instrument, bounded and
		// counted in metrics, instead of minio-go's ten silent ones.
		MaxRetries: 1,
	}
	tlsCfg, err := cfg.TLS.Load("s3.tls")
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	if tlsCfg != nil {
		// minio-go's own transport (its timeouts and pool sizes) with our
		// roots; s3.tls implies HTTPS.
		tr, err := minio.DefaultTransport(true)
		if err != nil {
			return nil, fmt.Errorf("s3: %w", err)
		}
		tr.TLSClientConfig = tlsCfg
		mo.Secure, mo.Transport = true, tr
	}
	client, err := minio.New(endpoint, mo)
	if err != nil {
		return nil, fmt.Errorf("s3: client for %s: %w", endpoint, err)
	}
	b := &Bucket{client: client, bucket: cfg.Bucket, region: region, partSz: 16 << 20, threads: 2}
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.partSz > 0 {
		b.partSz, b.threads = c.partSz, c.threads
	}
	return &Store{Instrumented: objstore.Instrument(b, c.inst), raw: b}, nil
}

// EnsureBucket creates the bucket when it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	return s.Do(ctx, "ensure_bucket", s.raw.ensureBucket)
}

// Bucket is one bucket of an S3-compatible store, one try per call. It is
// safe for concurrent use. Most code wants a Store (New), which retries.
type Bucket struct {
	client  *minio.Client
	bucket  string
	region  string
	partSz  uint64
	threads uint
}

var _ objstore.Bucket = (*Bucket)(nil)

// Name is the bucket name.
func (b *Bucket) Name() string { return b.bucket }

func (b *Bucket) ensureBucket(ctx context.Context) error {
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return classify(err)
	}
	if ok {
		return nil
	}
	err = b.client.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{Region: b.region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		return nil
	}
	return classify(err)
}

// Put stores r under key; see objstore.Bucket. A known size from an
// io.ReaderAt (a file) uploads parts in place; an unknown size streams as a
// multipart upload using about partSize*threads of memory.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	_, err := b.client.PutObject(ctx, b.bucket, key, r, size, b.putOptions(key))
	return classify(err)
}

func (b *Bucket) putOptions(key string) minio.PutObjectOptions {
	return minio.PutObjectOptions{
		ContentType: contentType(key),
		// gofakes3 corrupts multipart uploads without it; MinIO and S3
		// accept unsigned payloads over the signed request either way.
		DisableContentSha256: true,
		PartSize:             b.partSz,
		NumThreads:           b.threads,
	}
}

// PutIf stores data when cond holds (If-None-Match: * or If-Match: etag),
// which MinIO, AWS S3 and gofakes3 all check atomically.
func (b *Bucket) PutIf(ctx context.Context, key string, data []byte, cond objstore.Precondition) (string, error) {
	opts := b.putOptions(key)
	switch {
	case cond.IfNoneMatch && cond.IfMatch == "":
		opts.SetMatchETagExcept("*")
	case cond.IfMatch != "" && !cond.IfNoneMatch:
		opts.SetMatchETag(cond.IfMatch)
	default:
		return "", errors.New("s3: a conditional put needs exactly one of IfNoneMatch and IfMatch")
	}
	info, err := b.client.PutObject(ctx, b.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return "", classify(err)
	}
	return strings.Trim(info.ETag, `"`), nil
}

// Get opens key from the start. minio-go's Core sends the request here, so
// a missing object is reported now rather than on the first Read.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return b.get(ctx, key, minio.GetObjectOptions{}, "")
}

// GetRange opens length bytes at off (length < 0: to the end), pinned to
// ifMatch when given.
func (b *Bucket) GetRange(ctx context.Context, key string, off, length int64, ifMatch string) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if ifMatch != "" {
		if err := opts.SetMatchETag(ifMatch); err != nil {
			return nil, err
		}
	}
	switch {
	case length == 0:
		return io.NopCloser(bytes.NewReader(nil)), nil
	case length < 0 && off > 0:
		if err := opts.SetRange(off, 0); err != nil {
			return nil, err
		}
	case length > 0:
		if err := opts.SetRange(off, off+length-1); err != nil {
			return nil, err
		}
	}
	return b.get(ctx, key, opts, ifMatch)
}

// get sends the request. A server that ignores If-Match on reads
// (gofakes3) still answers with the object's ETag, so the pin is checked
// here as well.
func (b *Bucket) get(ctx context.Context, key string, opts minio.GetObjectOptions, ifMatch string) (io.ReadCloser, error) {
	rc, info, _, err := minio.Core{Client: b.client}.GetObject(ctx, b.bucket, key, opts)
	if err != nil {
		return nil, classify(err)
	}
	if got := strings.Trim(info.ETag, `"`); ifMatch != "" && got != "" && got != ifMatch {
		rc.Close()
		return nil, fmt.Errorf("%w: %s is now version %s, not %s", objstore.ErrPreconditionFailed, key, got, ifMatch)
	}
	return classifyingReader{rc}, nil
}

// classifyingReader marks a connection cut mid-body as transient, so the
// caller's retry layer can resume.
type classifyingReader struct{ io.ReadCloser }

func (r classifyingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = classify(err)
	}
	return n, err
}

// Stat describes key.
func (b *Bucket) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	oi, err := b.client.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return objstore.ObjectInfo{}, classify(err)
	}
	return objstore.ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: strings.Trim(oi.ETag, `"`)}, nil
}

// Iter lists keys under prefix after startAfter, in key order.
func (b *Bucket) Iter(ctx context.Context, prefix, startAfter string, f func(objstore.ObjectInfo) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine on an early return
	for oi := range b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{
		Prefix: prefix, Recursive: true, StartAfter: startAfter,
	}) {
		if oi.Err != nil {
			return classify(oi.Err)
		}
		if oi.Key <= startAfter {
			continue // gofakes3's file backend (`tandem dev`) ignores StartAfter
		}
		if err := f(objstore.ObjectInfo{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified, ETag: strings.Trim(oi.ETag, `"`)}); err != nil {
			return err
		}
	}
	return nil
}

// Copy copies src to dst server-side.
func (b *Bucket) Copy(ctx context.Context, src, dst string) error {
	_, err := b.client.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: b.bucket, Object: dst},
		minio.CopySrcOptions{Bucket: b.bucket, Object: src})
	return classify(err)
}

// Delete removes key. Deleting a missing object is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	err := classify(b.client.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{}))
	if errors.Is(err, objstore.ErrNotFound) {
		return nil
	}
	return err
}

// classify turns a minio-go error into objstore's kinds: not found,
// precondition failed, transient (retry may cure) or as is.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case isNotFound(err):
		return fmt.Errorf("%w: %v", objstore.ErrNotFound, err)
	case isPreconditionFailed(err):
		return fmt.Errorf("%w: %v", objstore.ErrPreconditionFailed, err)
	case transient(err):
		return objstore.Transient(err)
	}
	return err
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == minio.NoSuchKey || r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket
}

func isPreconditionFailed(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// transient reports errors a retry can cure: the server unreachable or
// restarting, throttling, 5xx, a connection cut mid-request.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	r := minio.ToErrorResponse(err)
	switch r.Code {
	case "SlowDown", "SlowDownWrite", "SlowDownRead", "RequestTimeout", "RequestTimeTooSkewed",
		"InternalError", "ServiceUnavailable", "XMinioServerNotInitialized", "XMinioStorageFull":
		return true
	}
	if r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// minio-go wraps some transport failures as plain strings.
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "EOF") || strings.Contains(msg, "server closed")
}

func contentType(key string) string {
	switch {
	case strings.HasSuffix(key, ".parquet"):
		return "application/vnd.apache.parquet"
	case strings.HasSuffix(key, ".json"):
		return "application/json"
	}
	return "application/octet-stream"
}
