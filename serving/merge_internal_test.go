package serving

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestDistinctDoesNotDependOnMergeCount: the same events reach a group
// as 64 rows or as one row already merged (a level row); the answers are
// equal. The Merger densifies large sketches while merging, after enough
// merges; whether the final sketch is dense must not depend on that.
func TestDistinctDoesNotDependOnMergeCount(t *testing.T) {
	cfg, err := schemas.Parse("t.yaml", []byte(`
chunk_size: 100
kafka: { brokers: ["127.0.0.1:9092"] }
clickhouse: { database: tandem }
s3: { bucket: b }
streams:
  - { name: s, partitions: 1, id_field: id, time_field: ts, fields: [{name: id, type: string}, {name: ts, type: timestamp}, {name: u, type: string}] }
views:
  - { name: v, stream: s, granularity: 1m, measures: [{name: users, type: distinct, field: u}] }
`), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	v := cfg.View("v")
	from := time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)
	q := &Query{View: v, From: from, To: from.Add(24 * time.Hour), Measures: []int{0}}
	ev := schemas.Event{Values: make([]schemas.Value, 3)}
	var rows []Row
	whole := v.NewAggregate()
	for r := 0; r < 64; r++ {
		a := v.NewAggregate()
		for i := 0; i < 50; i++ {
			ev.Values[2] = schemas.Value{Set: true, Str: fmt.Sprintf("u%d-%d", r, i)}
			v.Add(a, &ev)
		}
		v.Merge(whole, a)
		rows = append(rows, Row{WindowMs: from.Add(time.Duration(r) * time.Minute).UnixMilli(), Dims: []string{}, States: a})
	}
	many, one := NewMerger(q), NewMerger(q)
	for i := range rows {
		many.Add(&rows[i])
	}
	one.Add(&Row{WindowMs: from.UnixMilli(), Dims: []string{}, States: whole})
	got := func(m *Merger) uint64 {
		gs := m.Groups()
		require.Len(t, gs, 1)
		return v.Measures[0].Result(&gs[0].States[0]).(uint64)
	}
	a, b := got(many), got(one)
	require.Equal(t, a, b)
	require.InDelta(t, 3200, float64(a), schemas.DistinctBound(3200))
}
