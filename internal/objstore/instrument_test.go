package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// flaky is a real bucket (gofakes3 behind internal/s3) with faults
// injected the way networks produce them: a call that fails before it
// reaches the store, a write whose response is lost after it landed, a
// read or listing cut off midway. Each fault fires once per arming.
type flaky struct {
	objstore.Bucket
	mu          sync.Mutex
	failStat    int  // Stat calls to fail before they reach the store
	lostPutIf   bool // the next PutIf lands, then reports a transient error
	cutRangeAt  int  // the next GetRange's reader fails after this many bytes (0: off)
	cutIterFrom int  // the next Iter fails after this many objects (0: off)
}

var errCut = objstore.Transient(errors.New("connection reset by peer (injected)"))

func (f *flaky) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	f.mu.Lock()
	fail := f.failStat > 0
	if fail {
		f.failStat--
	}
	f.mu.Unlock()
	if fail {
		return objstore.ObjectInfo{}, errCut
	}
	return f.Bucket.Stat(ctx, key)
}

func (f *flaky) PutIf(ctx context.Context, key string, data []byte, cond objstore.Precondition) (string, error) {
	etag, err := f.Bucket.PutIf(ctx, key, data, cond)
	f.mu.Lock()
	lost := f.lostPutIf && err == nil
	f.lostPutIf = f.lostPutIf && !lost
	f.mu.Unlock()
	if lost {
		return "", errCut
	}
	return etag, err
}

func (f *flaky) GetRange(ctx context.Context, key string, off, length int64, ifMatch string) (io.ReadCloser, error) {
	rc, err := f.Bucket.GetRange(ctx, key, off, length, ifMatch)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	at := f.cutRangeAt
	f.cutRangeAt = 0
	f.mu.Unlock()
	if at == 0 {
		return rc, nil
	}
	return &cutReader{ReadCloser: rc, left: at}, nil
}

type cutReader struct {
	io.ReadCloser
	left int
}

func (r *cutReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, errCut
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n, err := r.ReadCloser.Read(p)
	r.left -= n
	return n, err
}

func (f *flaky) Iter(ctx context.Context, prefix, startAfter string, fn func(objstore.ObjectInfo) error) error {
	f.mu.Lock()
	cut := f.cutIterFrom
	f.cutIterFrom = 0
	f.mu.Unlock()
	seen := 0
	err := f.Bucket.Iter(ctx, prefix, startAfter, func(oi objstore.ObjectInfo) error {
		if cut > 0 && seen == cut {
			return errCut
		}
		seen++
		return fn(oi)
	})
	return err
}

func setup(t *testing.T, attempts int) (*flaky, *objstore.Instrumented, *prometheus.Registry) {
	t.Helper()
	srv := testenv.FakeS3(t)
	st, err := s3.New(schemas.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region},
		s3.WithRetry(s3.Retry{Attempts: 1}))
	require.NoError(t, err)
	f := &flaky{Bucket: st}
	reg := prometheus.NewRegistry()
	in := objstore.Instrument(f, objstore.InstrumentOptions{Registry: reg,
		Retry: objstore.Retry{Attempts: attempts, Base: time.Millisecond, Max: 5 * time.Millisecond}})
	return f, in, reg
}

func counter(t *testing.T, reg *prometheus.Registry, name, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if labelIs(m, "op", op) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, k, v string) bool {
	for _, l := range m.Label {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// TestInstrumentRetriesTransientFailures: a call failing transiently is
// retried within Attempts and counted; one failing more often returns the
// error; a missing object is not retried.
func TestInstrumentRetriesTransientFailures(t *testing.T) {
	ctx := context.Background()
	f, in, reg := setup(t, 3)
	require.NoError(t, objstore.PutBytes(ctx, in, "k", []byte("v")))

	f.failStat = 2
	info, err := in.Stat(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, int64(1), info.Size)
	require.Equal(t, 2.0, counter(t, reg, "tandem_s3_retries_total", "stat"))

	f.failStat = 3
	_, err = in.Stat(ctx, "k")
	require.Error(t, err)
	require.True(t, objstore.IsTransient(err))
	require.Equal(t, 4.0, counter(t, reg, "tandem_s3_retries_total", "stat"), "two more retries, then it gives up")

	_, err = in.Stat(ctx, "missing")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	require.Equal(t, 4.0, counter(t, reg, "tandem_s3_retries_total", "stat"), "not found is an answer, not retried")
}

// TestInstrumentPutIfLostResponse: a conditional write that landed but
// whose response was lost is retried, finds its own write (ETag = the
// body's MD5), and succeeds instead of reporting a precondition failure —
// the batch lock would otherwise think it lost the lock it holds.
func TestInstrumentPutIfLostResponse(t *testing.T) {
	ctx := context.Background()
	f, in, _ := setup(t, 3)
	f.lostPutIf = true
	etag, err := in.PutIf(ctx, "lock", []byte("mine"), objstore.Precondition{IfNoneMatch: true})
	require.NoError(t, err)
	info, err := in.Stat(ctx, "lock")
	require.NoError(t, err)
	require.Equal(t, info.ETag, etag)

	// Someone else's object is still a precondition failure.
	_, err = in.PutIf(ctx, "other", []byte("theirs"), objstore.Precondition{IfNoneMatch: true})
	require.NoError(t, err)
	f.lostPutIf = true // does not fire: the write itself is refused
	_, err = in.PutIf(ctx, "other", []byte("mine"), objstore.Precondition{IfNoneMatch: true})
	require.ErrorIs(t, err, objstore.ErrPreconditionFailed)
}

// TestInstrumentResumesCutReads: a ranged read cut midway resumes at the
// byte it stopped, pinned to the same version, and returns every byte once.
func TestInstrumentResumesCutReads(t *testing.T) {
	ctx := context.Background()
	f, in, reg := setup(t, 3)
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 31)
	}
	require.NoError(t, objstore.PutBytes(ctx, in, "obj", data))
	info, err := in.Stat(ctx, "obj")
	require.NoError(t, err)

	f.cutRangeAt = 12_345
	rc, err := in.GetRange(ctx, "obj", 1000, 50_000, info.ETag)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, rc.Close())
	require.NoError(t, err)
	require.True(t, bytes.Equal(data[1000:51_000], got))
	require.Equal(t, 1.0, counter(t, reg, "tandem_s3_retries_total", "read"))

	obj, err := objstore.Open(ctx, in, "obj")
	require.NoError(t, err)
	f.cutRangeAt = 7
	buf := make([]byte, 30_000)
	n, err := obj.ReadAt(buf, 70_000)
	require.NoError(t, err)
	require.Equal(t, 30_000, n)
	require.Equal(t, data[70_000:], buf)

	// Replaced meanwhile: the pinned read refuses instead of mixing versions.
	require.NoError(t, objstore.PutBytes(ctx, in, "obj", []byte("new content")))
	_, err = obj.ReadAt(buf[:5], 0)
	require.ErrorIs(t, err, objstore.ErrPreconditionFailed)
}

// TestInstrumentIterResumes: a listing cut midway resumes after the last
// object delivered, so the caller sees every object exactly once.
func TestInstrumentIterResumes(t *testing.T) {
	ctx := context.Background()
	f, in, _ := setup(t, 3)
	var want []string
	for _, k := range []string{"p/a", "p/b", "p/c", "p/d", "p/e"} {
		require.NoError(t, objstore.PutBytes(ctx, in, k, []byte(k)))
		want = append(want, k)
	}
	f.cutIterFrom = 2
	list, err := objstore.List(ctx, in, "p/")
	require.NoError(t, err)
	var got []string
	for _, o := range list {
		got = append(got, o.Key)
	}
	require.Equal(t, want, got)
}
