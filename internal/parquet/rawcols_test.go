package parquet

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestChunkReader: reads through the read-ahead window return the bytes of
// the underlying reader, inside and past the chunk, whatever the window.
func TestChunkReader(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	ra := bytes.NewReader(data)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, window := range []int64{1, 7, 64, 300, 4096} {
		c := &chunkReader{ra: ra, end: 900, window: window}
		off := int64(100)
		for off < 1000 {
			p := make([]byte, 1+rng.IntN(90))
			n, err := c.ReadAt(p, off)
			want := min(len(p), 1000-int(off))
			require.Equal(t, want, n, "window %d, at %d", window, off)
			if n < len(p) {
				require.ErrorIs(t, err, io.EOF)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, data[off:off+int64(n)], p[:n], "window %d, at %d", window, off)
			off += int64(n)
			if rng.IntN(5) == 0 {
				off -= int64(rng.IntN(50)) // a step back
			}
		}
	}
}
