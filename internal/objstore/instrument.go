package objstore

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

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

// InstrumentOptions configure Instrument. The zero value is valid.
type InstrumentOptions struct {
	// Retry bounds each call's retries.
	Retry Retry
	// Registry receives the tandem_s3_* metrics (nil: unregistered).
	// Several buckets may share one registry (their counts add up).
	Registry prometheus.Registerer
	// Log receives retries at debug level (nil: slog.Default()).
	Log *slog.Logger
}

// Instrumented is a Bucket with bounded retries of transient errors and
// metrics around every call of the bucket it wraps. Callers that must not
// give up (the archiver) loop on top with their own pause, so an outage
// stalls them visibly instead of hiding in here.
type Instrumented struct {
	b     Bucket
	retry Retry
	log   *slog.Logger
	m     *metrics
}

var _ Bucket = (*Instrumented)(nil)

// Instrument wraps b with retries and metrics.
func Instrument(b Bucket, o InstrumentOptions) *Instrumented {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Instrumented{b: b, retry: o.Retry.withDefaults(), log: o.Log, m: newMetrics(o.Registry)}
}

// Name is the wrapped bucket's name.
func (in *Instrumented) Name() string { return in.b.Name() }

// Get opens key from the start. A read error mid-stream is not retried (the
// caller sees it); Open and GetRange resume.
func (in *Instrumented) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := in.Do(ctx, "get", func(ctx context.Context) (err error) {
		rc, err = in.b.Get(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: get %s: %w", in.b.Name(), key, err)
	}
	return rc, nil
}

// GetRange opens a range; a transient failure mid-stream reopens the rest
// of the range (pinned to ifMatch when given), within the retry bounds.
func (in *Instrumented) GetRange(ctx context.Context, key string, off, length int64, ifMatch string) (io.ReadCloser, error) {
	r := &resumingReader{in: in, ctx: ctx, key: key, off: off, left: length, etag: ifMatch}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// Stat describes key.
func (in *Instrumented) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var info ObjectInfo
	err := in.Do(ctx, "stat", func(ctx context.Context) (err error) {
		info, err = in.b.Stat(ctx, key)
		return err
	})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: stat %s: %w", in.b.Name(), key, err)
	}
	return info, nil
}

// Iter walks the listing; a retry resumes after the last key already given
// to f, so f sees each object once.
func (in *Instrumented) Iter(ctx context.Context, prefix, startAfter string, f func(ObjectInfo) error) error {
	var fErr error
	err := in.Do(ctx, "list", func(ctx context.Context) error {
		return in.b.Iter(ctx, prefix, startAfter, func(oi ObjectInfo) error {
			if err := f(oi); err != nil {
				fErr = err
				return permanent{err}
			}
			startAfter = oi.Key
			return nil
		})
	})
	if fErr != nil {
		return fErr
	}
	if err != nil {
		return fmt.Errorf("%s: list %s: %w", in.b.Name(), prefix, err)
	}
	return nil
}

// Put stores r under key. It is retried only when r can be rewound (it
// implements io.Seeker): the retry seeks back to where r started.
func (in *Instrumented) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	seeker, canRewind := r.(io.Seeker)
	var start int64
	if canRewind {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			canRewind = false
		}
	}
	var counted *countingReader
	if size < 0 && !canRewind {
		// A one-shot stream of unknown length: count what the backend reads.
		counted = &countingReader{r: r}
		r = counted
	}
	attempt := 0
	t0 := time.Now()
	err := in.Do(ctx, "put", func(ctx context.Context) error {
		if attempt > 0 {
			if !canRewind {
				return permanent{errors.New("the body cannot be rewound for a retry")}
			}
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return permanent{err}
			}
		}
		attempt++
		return in.b.Put(ctx, key, r, size)
	})
	if err != nil {
		return fmt.Errorf("%s: put %s: %w", in.b.Name(), key, err)
	}
	in.m.upload.Observe(time.Since(t0).Seconds())
	switch {
	case size >= 0:
		in.m.uploadBytes.Add(float64(size))
	case canRewind:
		if end, err := seeker.Seek(0, io.SeekCurrent); err == nil {
			in.m.uploadBytes.Add(float64(end - start))
		}
	default:
		in.m.uploadBytes.Add(float64(counted.n))
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// PutIf stores data when cond holds. A retried attempt can find its own
// earlier attempt's write (the response was lost, not the request): a
// precondition failure after a retry is therefore checked against the
// stored object, and when its ETag is this body's MD5 (the ETag S3, MinIO
// and gofakes3 give a single-part upload) the write is ours and succeeded.
func (in *Instrumented) PutIf(ctx context.Context, key string, data []byte, cond Precondition) (string, error) {
	var etag string
	attempt := 0
	err := in.Do(ctx, "put_if", func(ctx context.Context) (err error) {
		attempt++
		etag, err = in.b.PutIf(ctx, key, data, cond)
		if attempt > 1 && errors.Is(err, ErrPreconditionFailed) {
			sum := md5.Sum(data)
			if info, serr := in.b.Stat(ctx, key); serr == nil && strings.Trim(info.ETag, `"`) == hex.EncodeToString(sum[:]) {
				etag = info.ETag
				return nil
			}
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s: conditional put %s: %w", in.b.Name(), key, err)
	}
	in.m.uploadBytes.Add(float64(len(data)))
	return etag, nil
}

// Copy copies src to dst inside the bucket.
func (in *Instrumented) Copy(ctx context.Context, src, dst string) error {
	err := in.Do(ctx, "copy", func(ctx context.Context) error { return in.b.Copy(ctx, src, dst) })
	if err != nil {
		return fmt.Errorf("%s: copy %s to %s: %w", in.b.Name(), src, dst, err)
	}
	return nil
}

// Delete removes key; a missing object is not an error.
func (in *Instrumented) Delete(ctx context.Context, key string) error {
	err := in.Do(ctx, "delete", func(ctx context.Context) error { return in.b.Delete(ctx, key) })
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: delete %s: %w", in.b.Name(), key, err)
	}
	return nil
}

// permanent marks an error that must not be retried.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Do runs fn with bounded retries of the errors the backend marked
// Transient, recording latency and errors under op. Backends use it for
// their own operations outside the interface (creating the bucket).
func (in *Instrumented) Do(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	pause := in.retry.Base
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		err := fn(ctx)
		in.m.duration.WithLabelValues(op).Observe(time.Since(t0).Seconds())
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNotFound) {
			return err
		}
		in.m.errors.WithLabelValues(op).Inc()
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if !IsTransient(err) || attempt >= in.retry.Attempts || ctx.Err() != nil {
			return err
		}
		in.m.retries.WithLabelValues(op).Inc()
		in.log.Debug("object store: transient error; retrying", "bucket", in.b.Name(), "op", op, "attempt", attempt, "pause", pause, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, in.retry.Max)
	}
}

// resumingReader reads a range and, on a transient failure mid-stream,
// reopens what is left of it.
type resumingReader struct {
	in      *Instrumented
	ctx     context.Context
	key     string
	off     int64
	left    int64 // < 0: to the end
	etag    string
	resumes int
	rc      io.ReadCloser
}

func (r *resumingReader) open() error {
	err := r.in.Do(r.ctx, "read", func(ctx context.Context) (err error) {
		r.rc, err = r.in.b.GetRange(ctx, r.key, r.off, r.left, r.etag)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: read %s at %d: %w", r.in.b.Name(), r.key, r.off, err)
	}
	return nil
}

func (r *resumingReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.off += int64(n)
	if r.left > 0 {
		r.left -= int64(n)
	}
	if err == nil || err == io.EOF || !IsTransient(err) || r.resumes+1 >= r.in.retry.Attempts || r.ctx.Err() != nil {
		return n, err
	}
	r.resumes++
	r.in.m.errors.WithLabelValues("read").Inc()
	r.in.m.retries.WithLabelValues("read").Inc()
	r.in.log.Debug("object store: read cut mid-stream; resuming", "bucket", r.in.b.Name(), "key", r.key, "offset", r.off, "err", err)
	r.rc.Close()
	if oerr := r.open(); oerr != nil {
		r.rc = io.NopCloser(strings.NewReader(""))
		return n, oerr
	}
	return n, nil
}

func (r *resumingReader) Close() error { return r.rc.Close() }
