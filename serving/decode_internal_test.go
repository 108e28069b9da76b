package serving

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// BenchmarkDecodeMeasures reads a batch view file of the example view
// (pageviews_by_country: six measures, a distinct and a quantiles sketch
// among them; 40,000 rows of 1m windows × 10 countries × 4 devices, each
// from 8 events) into the cache's row groups, asking for views,revenue
// only and, in the same run as the baseline, for every measure (what
// serving decoded before). It reports both per row and their ratio, and
// the heap the cached rows of every measure hold against the cache's
// estimate of it.
func BenchmarkDecodeMeasures(b *testing.B) {
	v, data, rows := exampleViewFile(b, 1000, 0)
	buf := bytes.NewBuffer(data)
	f, err := OpenViewFile(v, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(b, err)
	defer f.Close()
	q, err := ParseQuery(v, "from=2026-11-17T00:00:00Z&to=2026-11-18T00:00:00Z&measures=views,revenue", 0)
	require.NoError(b, err)
	asked := measureMask(q)
	ctx := context.Background()
	read := func(need []bool) time.Duration {
		t0 := time.Now()
		n := 0
		for i, rg := range f.RowGroups() {
			crg, err := readRowGroup(ctx, v, f, i, int(rg.Rows), need)
			require.NoError(b, err)
			n += len(crg.rows)
		}
		require.Equal(b, rows, n)
		return time.Since(t0)
	}
	var tAsked, tAll time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tAsked += read(asked)
		tAll += read(nil)
	}
	b.ReportMetric(float64(tAsked.Nanoseconds())/float64(b.N*rows), "asked_ns/row")
	b.ReportMetric(float64(tAll.Nanoseconds())/float64(b.N*rows), "all_ns/row")
	b.ReportMetric(float64(tAll)/float64(tAsked), "all/asked")
	b.ReportMetric(float64(buf.Len())/float64(rows), "file_B/row")

	// What the cache holds for these rows with every measure decoded: the
	// heap they keep against the cache's own estimate (crg.bytes), which
	// docs/operations.md ("Sizing serve") quotes per row.
	b.StopTimer()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	var held []*cachedRowGroup
	var est int64
	for i, rg := range f.RowGroups() {
		crg, err := readRowGroup(ctx, v, f, i, int(rg.Rows), nil)
		require.NoError(b, err)
		held = append(held, crg)
		est += crg.bytes
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(rows), "heap_B/row")
	b.ReportMetric(float64(est)/float64(rows), "estimated_B/row")
	runtime.KeepAlive(held)
}

// exampleViewFile writes a batch view file of the example view
// (pageviews_by_country) from 17 Nov 2026 00:00 UTC: minutes 1m windows ×
// 10 countries × 4 devices, each row from 8 events, cut into row groups of
// rowGroupRows (0: one).
func exampleViewFile(tb testing.TB, minutes, rowGroupRows int) (*schemas.View, []byte, int) {
	cfg, err := schemas.Parse("t.yaml", []byte(testenv.ExampleConfigYAML(tb)), func(string) (string, bool) { return "", false })
	require.NoError(tb, err)
	v := cfg.View("pageviews_by_country")
	s := v.StreamDef()
	idx := func(name string) int { return s.FieldIndex(name) }
	rng := rand.New(rand.NewPCG(1, 2))
	from := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	w := parquet.NewViewWriter(&buf, v, parquet.ViewWriterOptions{RowGroupRows: int64(rowGroupRows)})
	const countries, devices, perRow = 10, 4, 8
	rows := 0
	for m := 0; m < minutes; m++ {
		for c := 0; c < countries; c++ {
			for d := 0; d < devices; d++ {
				a := v.NewAggregate()
				ev := schemas.Event{Time: from.Add(time.Duration(m) * time.Minute), Values: make([]schemas.Value, len(s.Fields))}
				ev.Values[idx("country")] = schemas.Value{Set: true, Str: fmt.Sprintf("C%d", c)}
				ev.Values[idx("device")] = schemas.Value{Set: true, Str: fmt.Sprintf("D%d", d)}
				for e := 0; e < perRow; e++ {
					ev.Values[idx("user_id")] = schemas.Value{Set: true, Str: fmt.Sprintf("u%d", rng.IntN(200000))}
					ev.Values[idx("amount")] = schemas.Value{Set: true, Float: float64(rng.IntN(10000)) / 100}
					ev.Values[idx("latency_ms")] = schemas.Value{Set: true, Float: rng.ExpFloat64() * 80}
					v.Add(a, &ev)
				}
				cells := make([]any, len(v.Measures))
				for i := range v.Measures {
					cells[i] = v.Measures[i].Cell(&a[i])
				}
				require.NoError(tb, w.Write(parquet.ViewRow{WindowStart: ev.Time, Dims: []string{fmt.Sprintf("C%d", c), fmt.Sprintf("D%d", d)}, Cells: cells}))
				rows++
			}
		}
	}
	require.NoError(tb, w.Close())
	return v, buf.Bytes(), rows
}
