package parquet_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	tpq "github.com/tandem-analytics/tandem/internal/parquet"
)

// TestWriteBatchIsWrite writes the same records with Write, one by one,
// and with WriteBatch from batches of random sizes under a size limit that
// the writer rolls at: WriteBatch must stop exactly where the Write loop's
// Size first reaches the limit, and the files must be byte for byte equal.
func TestWriteBatchIsWrite(t *testing.T) {
	s := loadConfig(t).Stream("clicks")
	recs := makeRecords(t, s, 6000, 11)
	const limit = 96 << 10
	rng := rand.New(rand.NewPCG(5, 6))

	// The truth: Write one by one, a new file once Size reaches the limit.
	var want [][]byte
	var buf bytes.Buffer
	w := tpq.NewRawWriter(&buf, s, tpq.RawWriterOptions{RowGroupBytes: 32 << 10, Partition: 2})
	for i, r := range recs {
		require.NoError(t, w.Write(r))
		if w.Size() >= limit || i == len(recs)-1 {
			require.NoError(t, w.Close())
			want = append(want, bytes.Clone(buf.Bytes()))
			buf.Reset()
			w = tpq.NewRawWriter(&buf, s, tpq.RawWriterOptions{RowGroupBytes: 32 << 10, Partition: 2})
		}
	}
	require.Greater(t, len(want), 3, "several files")

	var got [][]byte
	buf.Reset()
	w = tpq.NewRawWriter(&buf, s, tpq.RawWriterOptions{RowGroupBytes: 32 << 10, Partition: 2})
	b := tpq.NewRawBatch(s)
	for next := 0; next < len(recs); {
		b.Reset()
		n := min(1+rng.IntN(1500), len(recs)-next)
		for _, r := range recs[next : next+n] {
			b.Add(r)
		}
		next += n
		for i := 0; i < b.Len(); {
			k, err := w.WriteBatch(b, i, limit)
			require.NoError(t, err)
			require.Positive(t, k)
			i += k
			if w.Size() >= limit || (next == len(recs) && i == b.Len()) {
				require.NoError(t, w.Close())
				got = append(got, bytes.Clone(buf.Bytes()))
				buf.Reset()
				w = tpq.NewRawWriter(&buf, s, tpq.RawWriterOptions{RowGroupBytes: 32 << 10, Partition: 2})
			}
		}
	}
	require.Equal(t, len(want), len(got), "as many files")
	for i := range want {
		require.True(t, bytes.Equal(want[i], got[i]), "file %d differs", i)
	}

	// Offsets must increase across batches too.
	b.Reset()
	b.Add(recs[10])
	w = tpq.NewRawWriter(&buf, s, tpq.RawWriterOptions{})
	require.NoError(t, w.Write(recs[20]))
	_, err := w.WriteBatch(b, 0, 0)
	require.ErrorContains(t, err, "offsets must increase")
}
