// Package objstoretest holds the contract of objstore.Bucket as one test
// every implementation must pass (in the manner of thanos-io/objstore's
// AcceptanceTest).
package objstoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
)

// BigObject is the size of the large objects AcceptanceTest writes: over
// the 5 MiB minimum S3 part size twice, so a backend configured with small
// parts exercises multipart upload.
const BigObject = 12<<20 + 123

// AcceptanceTest runs the objstore.Bucket contract against b. It writes
// only under a prefix of its own and deletes nothing else.
func AcceptanceTest(t *testing.T, b objstore.Bucket) {
	ctx := context.Background()
	p := fmt.Sprintf("acceptance-%d/", time.Now().UnixNano())

	require.NotEmpty(t, b.Name())

	// Small object round trip, and an overwrite replaces it whole.
	require.NoError(t, objstore.PutBytes(ctx, b, p+"a/one.json", []byte(`{"x":0}`)))
	require.NoError(t, objstore.PutBytes(ctx, b, p+"a/one.json", []byte(`{"x":1}`)))
	got, err := objstore.GetBytes(ctx, b, p+"a/one.json")
	require.NoError(t, err)
	require.Equal(t, `{"x":1}`, string(got))
	info, err := b.Stat(ctx, p+"a/one.json")
	require.NoError(t, err)
	require.Equal(t, p+"a/one.json", info.Key)
	require.Equal(t, int64(7), info.Size)
	require.NotEmpty(t, info.ETag)
	require.NotContains(t, info.ETag, `"`, "ETags come without quotes")
	require.WithinDuration(t, time.Now(), info.ModTime, time.Minute)

	// Missing objects are ErrNotFound on every read; deleting one is fine.
	_, err = b.Get(ctx, p+"a/missing")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	_, err = b.GetRange(ctx, p+"a/missing", 0, 10, "")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	_, err = b.Stat(ctx, p+"a/missing")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	_, err = objstore.GetBytes(ctx, b, p+"a/missing")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	_, err = objstore.Open(ctx, b, p+"a/missing")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	require.NoError(t, b.Delete(ctx, p+"a/missing"))

	// Large objects: a stream of unknown size and a file of known size.
	big := make([]byte, BigObject)
	_, err = rand.Read(big)
	require.NoError(t, err)
	require.NoError(t, b.Put(ctx, p+"a/stream.bin", bytes.NewBuffer(big), -1))
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, big, 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, b.Put(ctx, p+"a/file.bin", f, int64(len(big))))
	for _, key := range []string{p + "a/stream.bin", p + "a/file.bin"} {
		rc, err := b.Get(ctx, key)
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, rc.Close())
		require.NoError(t, err)
		require.True(t, bytes.Equal(big, data), "%s differs after the round trip", key)
	}

	// Ranged reads: a middle piece, the rest from an offset, pinned to the
	// current ETag, and refused when pinned to another.
	fileInfo, err := b.Stat(ctx, p+"a/file.bin")
	require.NoError(t, err)
	require.Equal(t, int64(len(big)), fileInfo.Size)
	for _, tc := range []struct{ off, length int64 }{{0, 1}, {100, 1000}, {7 << 20, 1 << 20}, {int64(len(big)) - 5, -1}, {3, -1}} {
		rc, err := b.GetRange(ctx, p+"a/file.bin", tc.off, tc.length, fileInfo.ETag)
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, rc.Close())
		require.NoError(t, err)
		end := int64(len(big))
		if tc.length >= 0 {
			end = tc.off + tc.length
		}
		require.True(t, bytes.Equal(big[tc.off:end], data), "range %d+%d", tc.off, tc.length)
	}
	_, err = readRange(ctx, b, p+"a/file.bin", 0, 10, "0123456789abcdef0123456789abcdef")
	require.ErrorIs(t, err, objstore.ErrPreconditionFailed, "a read pinned to another version is refused")

	// Random access through Open, including the tail and past the end.
	obj, err := objstore.Open(ctx, b, p+"a/file.bin")
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
	n, err = obj.ReadAt(buf, int64(len(big)))
	require.ErrorIs(t, err, io.EOF)
	require.Zero(t, n)
	require.NoError(t, obj.Close())

	// Conditional writes: create-only succeeds once; replace succeeds only
	// on the current ETag, and the returned ETag is the new version's.
	lock := p + "lock.json"
	etag, err := b.PutIf(ctx, lock, []byte("first"), objstore.Precondition{IfNoneMatch: true})
	require.NoError(t, err)
	require.NotEmpty(t, etag)
	_, err = b.PutIf(ctx, lock, []byte("second"), objstore.Precondition{IfNoneMatch: true})
	require.ErrorIs(t, err, objstore.ErrPreconditionFailed, "create-only over an existing object")
	etag2, err := b.PutIf(ctx, lock, []byte("third"), objstore.Precondition{IfMatch: etag})
	require.NoError(t, err)
	require.NotEqual(t, etag, etag2)
	_, err = b.PutIf(ctx, lock, []byte("fourth"), objstore.Precondition{IfMatch: etag})
	require.ErrorIs(t, err, objstore.ErrPreconditionFailed, "replace on a stale ETag")
	_, err = b.PutIf(ctx, p+"absent.json", []byte("x"), objstore.Precondition{IfMatch: etag})
	require.Error(t, err, "replace of a missing object")
	got, err = objstore.GetBytes(ctx, b, lock)
	require.NoError(t, err)
	require.Equal(t, "third", string(got))
	st, err := b.Stat(ctx, lock)
	require.NoError(t, err)
	require.Equal(t, etag2, st.ETag, "PutIf returns the ETag Stat reports")

	// Copy inside the bucket.
	require.NoError(t, b.Copy(ctx, p+"a/one.json", p+"b/copy.json"))
	got, err = objstore.GetBytes(ctx, b, p+"b/copy.json")
	require.NoError(t, err)
	require.Equal(t, `{"x":1}`, string(got))
	err = b.Copy(ctx, p+"a/missing", p+"b/never.json")
	require.ErrorIs(t, err, objstore.ErrNotFound)

	// Listing is recursive, in key order, can start after a key, and stops
	// at f's error.
	list, err := objstore.List(ctx, b, p)
	require.NoError(t, err)
	var keys []string
	for _, o := range list {
		keys = append(keys, o.Key)
	}
	require.Equal(t, []string{p + "a/file.bin", p + "a/one.json", p + "a/stream.bin", p + "b/copy.json", p + "lock.json"}, keys)
	require.Equal(t, int64(len(big)), list[0].Size)
	after, err := objstore.ListAfter(ctx, b, p+"a/", p+"a/file.bin")
	require.NoError(t, err)
	require.Len(t, after, 2)
	stop := errors.New("stop")
	seen := 0
	err = b.Iter(ctx, p, "", func(objstore.ObjectInfo) error { seen++; return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, seen)
	none, err := objstore.List(ctx, b, p+"nothing/")
	require.NoError(t, err)
	require.Empty(t, none)

	// Delete, then the object is gone; clean up the rest.
	require.NoError(t, b.Delete(ctx, p+"a/one.json"))
	_, err = b.Stat(ctx, p+"a/one.json")
	require.ErrorIs(t, err, objstore.ErrNotFound)
	for _, k := range keys {
		require.NoError(t, b.Delete(ctx, k))
	}
	left, err := objstore.List(ctx, b, p)
	require.NoError(t, err)
	require.Empty(t, left)
}

func readRange(ctx context.Context, b objstore.Bucket, key string, off, length int64, ifMatch string) ([]byte, error) {
	rc, err := b.GetRange(ctx, key, off, length, ifMatch)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
