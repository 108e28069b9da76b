// Package objstore is tandem's one interface to object stores, in the shape
// of thanos-io/objstore: a small Bucket that each backend implements
// (internal/s3 for MinIO, AWS S3 and the embedded gofakes3 of `tandem dev`),
// Instrument, which adds bounded retries and metrics around any Bucket, and
// helpers (GetBytes, PutBytes, List, Open) built on the interface so that no
// backend repeats them.
//
// A backend reports what happened through the errors of this package:
// ErrNotFound for a missing object, ErrPreconditionFailed for a conditional
// write or pinned read that lost, and Transient(err) for a failure a retry
// can cure. Instrument retries only the last kind.
package objstore

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) by Get, GetRange and Stat when the object
// does not exist.
var ErrNotFound = errors.New("object not found")

// ErrPreconditionFailed is returned (wrapped) by PutIf when the condition
// does not hold (the object exists for IfNoneMatch, or its ETag differs for
// IfMatch), and by GetRange when the object's ETag is no longer ifMatch.
var ErrPreconditionFailed = errors.New("precondition failed")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	// ETag identifies the object's content version; a conditional write or
	// pinned read compares it. Backends return it without quotes.
	ETag string
}

// Precondition makes a write conditional on the object's current version —
// the compare-and-swap that the batch lock and anything else needing one
// writer is built on. Exactly one field is set.
type Precondition struct {
	// IfNoneMatch writes only when no object exists under the key
	// (If-None-Match: *).
	IfNoneMatch bool
	// IfMatch writes only when the object's ETag is this one.
	IfMatch string
}

// BucketReader is the read side of a Bucket.
type BucketReader interface {
	// Get opens key for reading from the start. The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// GetRange opens length bytes of key from off (length < 0: to the end).
	// With ifMatch set, the read fails with ErrPreconditionFailed when the
	// object's ETag differs, so a reader never mixes two versions.
	GetRange(ctx context.Context, key string, off, length int64, ifMatch string) (io.ReadCloser, error)
	// Stat describes key.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Iter calls f for every object whose key starts with prefix and sorts
	// after startAfter (exclusive; "" for all), in key order. An error from
	// f stops the walk and is returned.
	Iter(ctx context.Context, prefix, startAfter string, f func(ObjectInfo) error) error
}

// Bucket is one bucket of an object store. Implementations are safe for
// concurrent use; every object appears whole or not at all.
type Bucket interface {
	BucketReader
	// Name is the bucket's name, for messages.
	Name() string
	// Put stores r under key. size is the exact length, or -1 for a stream
	// of unknown length. A retry needs r to be an io.Seeker (it is rewound
	// to where it started); an *os.File is the best input.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// PutIf stores data under key only when cond holds, and returns the new
	// ETag. Conditional writes are for small records (locks, manifests), so
	// the body is a byte slice that a retry can resend.
	PutIf(ctx context.Context, key string, data []byte, cond Precondition) (etag string, err error)
	// Copy copies src to dst inside the bucket, without the data passing
	// through this process.
	Copy(ctx context.Context, src, dst string) error
	// Delete removes key. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
}

// transientError marks a failure a retry can cure.
type transientError struct{ error }

func (e transientError) Unwrap() error { return e.error }

// Transient marks err as curable by a retry (the server unreachable or
// restarting, throttling, a connection cut mid-request). Backends classify
// their own errors; Instrument retries only these.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

// IsTransient reports whether err was marked by Transient.
func IsTransient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}
