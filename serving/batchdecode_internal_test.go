package serving

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestConcurrentMissesDecodeBounded: clients asking at once for row groups
// the cache does not hold decode each row group once when the cache can
// keep it, and never more than decodeSlots row groups at a time when it
// cannot (each client then decodes for itself, one after another), and
// every client's answer equals a lone client's. Without the bound, N
// clients asking for one uncached day each held its decoded row groups.
func TestConcurrentMissesDecodeBounded(t *testing.T) {
	v, data, rows := exampleViewFile(t, 600, 2000) // 24,000 rows in 12 row groups
	q, err := ParseQuery(v, "from=2026-11-17T01:00:00Z&to=2026-11-17T09:30:00Z&granularity=1h&filter=country:C3", 0)
	require.NoError(t, err)
	file := schemas.ManifestFile{Key: "day.parquet"}
	sg := segment{lo: q.FromMs(), hi: q.ToMs()}
	answer := func(b *batchReader) string {
		m := NewMerger(q)
		require.NoError(t, b.scanFile(context.Background(), q, file, sg, m))
		var out bytes.Buffer
		for _, g := range m.Groups() {
			fmt.Fprint(&out, g.WindowMs, g.Dims)
			for j := range q.Measures {
				switch r := g.Result(q, j).(type) {
				case *float64: // min, max
					if r == nil {
						fmt.Fprint(&out, " null")
					} else {
						fmt.Fprint(&out, " ", *r)
					}
				default:
					fmt.Fprintf(&out, " %+v", r)
				}
			}
			fmt.Fprintln(&out)
		}
		return out.String()
	}
	lone := &countingFiles{data: data}
	want := answer(newBatchReader(lone, 1<<30, newMetrics(nil)))
	groups := len(lone.reads)
	require.Greater(t, groups, 4, "the range should span several row groups of %d rows", rows)

	for _, tc := range []struct {
		name       string
		cacheBytes int64
	}{
		{"roomy cache", 1 << 30},
		{"cache smaller than a row group", 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := &countingFiles{data: data, delay: 2 * time.Millisecond}
			b := newBatchReader(files, tc.cacheBytes, newMetrics(nil))
			const clients = 8
			got := make([]string, clients)
			var wg sync.WaitGroup
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[c] = answer(b)
				}()
			}
			wg.Wait()
			for c := range clients {
				require.Equal(t, want, got[c], "client %d", c)
			}
			require.LessOrEqual(t, files.maxReading, decodeSlots(), "row groups decoded at once")
			for i, n := range files.reads {
				if tc.cacheBytes >= 1<<30 {
					require.Equal(t, 1, n, "row group %d decoded %d times", i, n)
				} else {
					require.Equal(t, clients, n, "row group %d", i)
				}
			}
			require.Len(t, files.reads, groups)
		})
	}
}

// countingFiles serves one batch view file from memory and counts the
// row groups read from it: in all, at once, and per row group; delay
// slows each read so concurrent ones overlap.
type countingFiles struct {
	data  []byte
	delay time.Duration

	mu         sync.Mutex
	reading    int
	maxReading int
	reads      map[int]int
}

func (c *countingFiles) Open(_ context.Context, v *schemas.View, _ string) (ViewFile, error) {
	f, err := OpenViewFile(v, bytes.NewReader(c.data), int64(len(c.data)))
	if err != nil {
		return nil, err
	}
	return &countingFile{ParquetViewFile: f, c: c}, nil
}

type countingFile struct {
	*ParquetViewFile
	c *countingFiles
}

func (f *countingFile) ReadRowGroup(ctx context.Context, i int, keys bool, need []bool, fn func(int64, []string, []any) error) error {
	c := f.c
	c.mu.Lock()
	c.reading++
	c.maxReading = max(c.maxReading, c.reading)
	if c.reads == nil {
		c.reads = map[int]int{}
	}
	c.reads[i]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.reading--
		c.mu.Unlock()
	}()
	time.Sleep(c.delay)
	return f.ParquetViewFile.ReadRowGroup(ctx, i, keys, need, fn)
}
