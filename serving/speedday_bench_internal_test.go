package serving

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// speedDayView is the example view (tandem.example.yaml's
// pageviews_by_country, its six measures) on a stream of its fields.
func speedDayView(t testing.TB) *schemas.View {
	cfg, err := schemas.Parse("t.yaml", []byte(`
chunk_size: 10000
kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { database: tandem }
s3: { bucket: b }
streams:
  - name: s
    partitions: 4
    id_field: id
    time_field: ts
    fields: [{name: id, type: string}, {name: ts, type: timestamp}, {name: country, type: string}, {name: device, type: string}, {name: user_id, type: string}, {name: amount, type: float64}, {name: latency_ms, type: float64}]
views:
  - name: v
    stream: s
    granularity: 1m
    dimensions: [country, device]
    measures:
      - { name: views,       type: count }
      - { name: revenue,     type: sum,       field: amount }
      - { name: min_latency, type: min,       field: latency_ms }
      - { name: max_latency, type: max,       field: latency_ms }
      - { name: users,       type: distinct,  field: user_id }
      - { name: latency,     type: quantiles, field: latency_ms }
`), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg.View("v")
}

// speedDayGroups builds what the speed cache hands a 24h@1m
// filter=country:NL query of the serving-scale benchmark's speed day
// (10 M events over 24 h, 4 partitions, 10 countries × 5 devices, 200,000
// users): per partition and minute one node group of that minute's NL
// rows (~174 events, the five devices' rows merged as a node's Merger
// merges them, unions compacted as they are cached), and a second one
// where a minute straddles two nodes (every sixth minute: a chunk of
// 10,000 events spans ~5.8 minutes of a partition). events scales the day.
func speedDayGroups(t testing.TB, events int) (*Query, []*Group) {
	v := speedDayView(t)
	from := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	p := url.Values{"from": {from.Format(time.RFC3339)}, "to": {from.Add(24 * time.Hour).Format(time.RFC3339)},
		"granularity": {"1m"}, "filter": {"country:NL"}}
	q, err := ParseQuery(v, p.Encode(), 30*24*time.Hour)
	require.NoError(t, err)
	nq := *q
	const partitions = 4
	perGroup := events / 10 / partitions / 1440 // NL events of a partition's minute
	rng := rand.New(rand.NewPCG(11, 12))
	devices := []string{"mobile", "desktop", "tablet", "tv", "bot"}
	ev := schemas.Event{Values: make([]schemas.Value, 7)}
	var out []*Group
	for part := 0; part < partitions; part++ {
		for minute := 0; minute < 1440; minute++ {
			ms := from.Add(time.Duration(minute) * time.Minute).UnixMilli()
			pieces := 1
			if minute%6 == part {
				pieces = 2
			}
			for piece := 0; piece < pieces; piece++ {
				nm := NewMerger(&nq)
				for _, d := range devices {
					a := v.NewAggregate()
					n := perGroup / 5 / pieces
					for i := 0; i < n; i++ {
						ev.Values[2] = schemas.Value{Set: true, Str: "NL"}
						ev.Values[3] = schemas.Value{Set: true, Str: d}
						ev.Values[4] = schemas.Value{Set: true, Str: fmt.Sprintf("u%d", rng.IntN(200_000))}
						ev.Values[5] = schemas.Value{Set: rng.IntN(4) == 0, Float: float64(1+rng.IntN(20000)) / 100}
						ev.Values[6] = schemas.Value{Set: rng.IntN(32) != 0, Float: math.Round(math.Exp(3.7+0.8*rng.NormFloat64())*10) / 10}
						v.Add(a, &ev)
					}
					cells := make([]any, len(v.Measures))
					for i := range v.Measures {
						cells[i] = v.Measures[i].Cell(&a[i])
					}
					r, err := DecodeRow(v, ms, []string{"NL", d}, cells, nil)
					require.NoError(t, err)
					nm.Add(&r)
				}
				for _, g := range nm.groups {
					for _, u := range g.unions {
						if u != nil {
							u.Dense() // as rollupCached caches it
						}
					}
					for _, u := range g.ddUnions {
						if u != nil {
							u.Compact()
						}
					}
					g.cached = true
					out = append(out, g)
				}
			}
		}
	}
	// The cache hands groups node by node, partition by partition.
	return q, out
}

// processCPU is the process's user and system CPU time so far, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// mergeSpeedDay is the query's merge of the cached groups: AddGroup each,
// then the answer rows and their values.
func mergeSpeedDay(q *Query, groups []*Group) []*Group {
	m := NewMerger(q)
	for _, g := range groups {
		m.AddGroup(g)
	}
	out := m.Groups()
	for _, g := range out {
		for j := range q.Measures {
			_ = g.Result(q, j)
		}
	}
	return out
}

// BenchmarkSpeedDayMinutes merges the cached node groups of the speed
// day's 24h@1m filter=country:NL query (speedDayGroups: ~6,000 groups
// into 1,440 answer rows, six measures), the merge that was 72 % of
// serve's CPU for that query. TANDEM_BENCH_SPEED_DAY_EVENTS scales the
// day (default 10,000,000).
func BenchmarkSpeedDayMinutes(b *testing.B) {
	events := 10_000_000
	if s := os.Getenv("TANDEM_BENCH_SPEED_DAY_EVENTS"); s != "" {
		_, err := fmt.Sscan(s, &events)
		require.NoError(b, err)
	}
	q, groups := speedDayGroups(b, events)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		if n := len(mergeSpeedDay(q, groups)); n != 1440 {
			b.Fatalf("%d answer rows", n)
		}
	}
	// The process's CPU time (GC included) per merge: less sensitive than
	// ns/op to other load on a shared machine.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu_ns/op")
	b.ReportMetric(float64(len(groups)), "groups")
}
