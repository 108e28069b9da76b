package objstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
)

// GetBytes reads the whole object. Use it for small objects (manifests,
// progress files).
func GetBytes(ctx context.Context, b BucketReader, key string) ([]byte, error) {
	rc, err := b.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return data, nil
}

// PutBytes stores data under key.
func PutBytes(ctx context.Context, b Bucket, key string, data []byte) error {
	return b.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
}

// List returns every object whose key starts with prefix, in key order.
func List(ctx context.Context, b BucketReader, prefix string) ([]ObjectInfo, error) {
	return ListAfter(ctx, b, prefix, "")
}

// ListAfter is List limited to keys after startAfter (exclusive), so a
// caller that knows the last key it saw lists only what is new.
func ListAfter(ctx context.Context, b BucketReader, prefix, startAfter string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	err := b.Iter(ctx, prefix, startAfter, func(oi ObjectInfo) error {
		out = append(out, oi)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Object is random access to one stored object, for Parquet readers that
// need an io.ReaderAt and the size. Reads are pinned to the ETag seen by
// Open, so an object replaced meanwhile fails loudly (ErrPreconditionFailed)
// instead of mixing two versions. Each ReadAt is one ranged read (callers
// that read small pieces buffer above it); an Object is safe for concurrent
// ReadAt calls.
type Object struct {
	b    BucketReader
	ctx  context.Context
	info ObjectInfo
}

// Open stats key and returns random access to it. ctx bounds every later
// ReadAt as well.
func Open(ctx context.Context, b BucketReader, key string) (*Object, error) {
	info, err := b.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return &Object{b: b, ctx: ctx, info: info}, nil
}

// Size is the object's length in bytes.
func (o *Object) Size() int64 { return o.info.Size }

// Info describes the object as Open found it.
func (o *Object) Info() ObjectInfo { return o.info }

// ReadAt reads len(p) bytes at off (fewer and io.EOF at the end).
func (o *Object) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.info.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := o.info.Size - off; int64(want) > rest {
		want = int(rest)
	}
	rc, err := o.b.GetRange(o.ctx, o.info.Key, off, int64(want), o.info.ETag)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p[:want])
	if err != nil {
		return n, fmt.Errorf("read %s at %d: %w", o.info.Key, off, err)
	}
	if want < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close releases the object. Reads hold no connection between calls, so
// there is nothing to release; Close exists for the io.Closer callers hold.
func (o *Object) Close() error { return nil }
