// Package s3 is tandem's adapter for S3-compatible object stores (MinIO,
// AWS S3, and gofakes3 in tests), built on minio-go v7.
//
// A Store addresses one bucket. Every call retries transient failures
// (network errors, 5xx, throttling) a bounded number of times with
// exponential backoff and then returns the error: callers that must not
// give up (the archiver) loop on top with their own pause, so an outage
// stalls them visibly instead of hiding inside this package.
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
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

// ErrNotFound is returned (wrapped) by Get, GetBytes, Open and Stat when the
// object does not exist.
var ErrNotFound = errors.New("s3: object not found")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	ETag    string
}

// Store is one bucket of an S3-compatible store. It is safe for concurrent use.
type Store struct {
	client  *minio.Client
	bucket  string
	region  string
	retry   Retry
	partSz  uint64
	threads uint
	log     *slog.Logger
	m       *metrics
}

// Retry bounds the retries of one call. The zero value means the defaults.
type Retry struct {
	// Attempts is the total number of tries (default 4: with the default
	// delays a call gives up after about 3 s, short enough that a caller's
	// context and shutdown stay responsive, long enough to ride out a
	// dropped connection or a server restart's first second).
	Attempts int
	// Base is the first pause (default 200 ms); each next pause doubles, up
	// to Max (default 2 s).
	Base, Max time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.Base <= 0 {
		r.Base = 200 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 2 * time.Second
	}
	return r
}

// Option changes how New builds a Store.
type Option func(*Store)

// WithRegistry registers the store's tandem_s3_* metrics on reg. Several
// stores may share one registry (their counts add up).
func WithRegistry(reg prometheus.Registerer) Option {
	return func(s *Store) { s.m = newMetrics(reg) }
}

// WithLogger logs retries to log instead of slog.Default().
func WithLogger(log *slog.Logger) Option { return func(s *Store) { s.log = log } }

// WithRetry sets the retry bounds.
func WithRetry(r Retry) Option { return func(s *Store) { s.retry = r.withDefaults() } }

// WithPartSize sets the multipart part size and how many parts upload at
// once. Memory used by one streaming Put of unknown size is about
// partSize*threads; a Put of known size from an io.ReaderAt (a file) reads
// parts in place. Default 16 MiB and 2.
func WithPartSize(partSize uint64, threads uint) Option {
	return func(s *Store) { s.partSz, s.threads = partSize, threads }
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
		// One try per request: retries happen in this package, bounded and
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
	s := &Store{client: client, bucket: cfg.Bucket, region: region, retry: Retry{}.withDefaults(),
		partSz: 16 << 20, threads: 2, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	if s.m == nil {
		s.m = newMetrics(nil)
	}
	return s, nil
}

// Bucket is the bucket name.
func (s *Store) Bucket() string { return s.bucket }

// Client is the underlying minio-go client, for operations this package
// does not wrap.
func (s *Store) Client() *minio.Client { return s.client }

// EnsureBucket creates the bucket when it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	return s.do(ctx, "ensure_bucket", func(ctx context.Context) error {
		ok, err := s.client.BucketExists(ctx, s.bucket)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return err
	})
}

// Put stores r under key. size is the exact length, or -1 to stream an
// unknown length as a multipart upload (memory about partSize*threads).
//
// A Put is retried only when r can be rewound (it implements io.Seeker):
// the retry seeks back to where r started. An *os.File of known size is the
// best input: parts are read in place, and a failed upload is retried.
// The object appears whole or not at all.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	seeker, canRewind := r.(io.Seeker)
	var start int64
	if canRewind {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			canRewind = false
		}
	}
	attempt := 0
	t0 := time.Now()
	err := s.do(ctx, "put", func(ctx context.Context) error {
		if attempt > 0 {
			if !canRewind {
				return permanent{errors.New("the body cannot be rewound for a retry")}
			}
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return permanent{err}
			}
		}
		attempt++
		info, err := s.client.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{
			ContentType: contentType(key),
			// gofakes3 corrupts multipart uploads without it; MinIO and S3
			// accept unsigned payloads over the signed request either way.
			DisableContentSha256: true,
			PartSize:             s.partSz,
			NumThreads:           s.threads,
		})
		if err == nil {
			s.m.uploadBytes.Add(float64(info.Size))
		}
		return err
	})
	if err == nil {
		s.m.upload.Observe(time.Since(t0).Seconds())
	}
	if err != nil {
		return fmt.Errorf("s3: put %s: %w", key, err)
	}
	return nil
}

// PutBytes stores data under key.
func (s *Store) PutBytes(ctx context.Context, key string, data []byte) error {
	return s.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
}

// Get opens key for reading from the start. The caller closes the reader.
// A read error mid-stream is not retried (the caller sees it); use Open for
// random access that retries.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	var obj *minio.Object
	err := s.do(ctx, "get", func(ctx context.Context) error {
		o, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		// GetObject is lazy; Stat sends the request, so a missing object
		// is reported here rather than on the first Read.
		if _, err := o.Stat(); err != nil {
			o.Close()
			return err
		}
		obj = o
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3: get %s: %w", key, err)
	}
	return obj, nil
}

// GetBytes reads the whole object. Use it for small objects (manifests,
// progress files).
func (s *Store) GetBytes(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := s.do(ctx, "get", func(ctx context.Context) error {
		o, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer o.Close()
		data, err = io.ReadAll(o)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("s3: get %s: %w", key, err)
	}
	return data, nil
}

// Stat describes key.
func (s *Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var info ObjectInfo
	err := s.do(ctx, "stat", func(ctx context.Context) error {
		oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
		if err != nil {
			return err
		}
		info = ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag}
		return nil
	})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("s3: stat %s: %w", key, err)
	}
	return info, nil
}

// Delete removes key. Deleting a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	err := s.do(ctx, "delete", func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("s3: delete %s: %w", key, err)
	}
	return nil
}

// List returns every object whose key starts with prefix, in key order.
func (s *Store) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	return s.ListAfter(ctx, prefix, "")
}

// ListAfter is List limited to keys after startAfter (exclusive), so a
// caller that knows the last key it saw lists only what is new.
func (s *Store) ListAfter(ctx context.Context, prefix, startAfter string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	err := s.do(ctx, "list", func(ctx context.Context) error {
		out = out[:0]
		lctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops minio-go's listing goroutine on an early return
		for oi := range s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{
			Prefix: prefix, Recursive: true, StartAfter: startAfter,
		}) {
			if oi.Err != nil {
				return oi.Err
			}
			out = append(out, ObjectInfo{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3: list %s: %w", prefix, err)
	}
	return out, nil
}

// Object is random access to one stored object, for Parquet readers that
// need an io.ReaderAt and the size. Reads are pinned to the ETag seen by
// Open, so an object replaced meanwhile fails loudly instead of mixing two
// versions. An Object is safe for concurrent ReadAt calls.
type Object struct {
	s    *Store
	ctx  context.Context
	info ObjectInfo

	mu  sync.Mutex
	obj *minio.Object
}

// Open stats key and returns random access to it. ctx bounds every later
// ReadAt as well.
func (s *Store) Open(ctx context.Context, key string) (*Object, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return &Object{s: s, ctx: ctx, info: info}, nil
}

// Size is the object's length in bytes.
func (o *Object) Size() int64 { return o.info.Size }

// Info describes the object as Open found it.
func (o *Object) Info() ObjectInfo { return o.info }

// ReadAt reads len(p) bytes at off. A transient failure reopens the object
// and retries, within the store's retry bounds.
func (o *Object) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.info.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := o.info.Size - off; int64(want) > rest {
		want = int(rest)
	}
	var n int
	err := o.s.do(o.ctx, "read", func(ctx context.Context) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.obj == nil {
			opts := minio.GetObjectOptions{}
			if o.info.ETag != "" {
				_ = opts.SetMatchETag(o.info.ETag)
			}
			obj, err := o.s.client.GetObject(ctx, o.s.bucket, o.info.Key, opts)
			if err != nil {
				return err
			}
			o.obj = obj
		}
		var err error
		n, err = o.obj.ReadAt(p[:want], off)
		if err == io.EOF && n == want {
			err = nil
		}
		if err != nil {
			// A minio Object remembers its first error; start afresh.
			o.obj.Close()
			o.obj = nil
		}
		return err
	})
	if err != nil {
		return n, fmt.Errorf("s3: read %s at %d: %w", o.info.Key, off, err)
	}
	if want < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close releases the connection held for reading.
func (o *Object) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.obj != nil {
		err := o.obj.Close()
		o.obj = nil
		return err
	}
	return nil
}

// permanent marks an error that must not be retried.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// do runs fn with bounded retries of transient errors, recording latency
// and errors under op. A missing object is returned as ErrNotFound.
func (s *Store) do(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	pause := s.retry.Base
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		err := fn(ctx)
		s.m.duration.WithLabelValues(op).Observe(time.Since(t0).Seconds())
		if err == nil {
			return nil
		}
		if isNotFound(err) {
			return fmt.Errorf("%w: %v", ErrNotFound, err)
		}
		s.m.errors.WithLabelValues(op).Inc()
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if !transient(err) || attempt >= s.retry.Attempts || ctx.Err() != nil {
			return err
		}
		s.m.retries.WithLabelValues(op).Inc()
		s.log.Debug("s3: transient error; retrying", "op", op, "attempt", attempt, "pause", pause, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, s.retry.Max)
	}
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == minio.NoSuchKey || r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket
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
