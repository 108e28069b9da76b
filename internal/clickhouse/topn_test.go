package clickhouse

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTopNSQLRefuses: a top-N query reads exact measures of its own view
// only, with a known operator and a limit; user values are bound.
func TestTopNSQLRefuses(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	v := cfg.View("clicks_by_country")
	ok := TopNQuery{SpeedQuery: SpeedQuery{View: v, Measures: []string{"n"}}, GroupBy: []string{"country"}, OrderBy: "n", Limit: 3}
	for name, mod := range map[string]func(q *TopNQuery){
		"no view":             func(q *TopNQuery) { q.View = nil },
		"no limit":            func(q *TopNQuery) { q.Limit = 0 },
		"sketch returned":     func(q *TopNQuery) { q.Measures = []string{"n", "users"} },
		"sketch order":        func(q *TopNQuery) { q.OrderBy = "amount_q" },
		"unknown order":       func(q *TopNQuery) { q.OrderBy = "n`; DROP TABLE x" },
		"sketch threshold":    func(q *TopNQuery) { q.Having = []TopNHaving{{Measure: "users", Op: ">", Number: 1}} },
		"unknown operator":    func(q *TopNQuery) { q.Having = []TopNHaving{{Measure: "n", Op: "> 0 OR 1 =", Number: 1}} },
		"unknown group-by":    func(q *TopNQuery) { q.GroupBy = []string{"user"} },
		"level not whole sec": func(q *TopNQuery) { q.RunID, q.Segments = "r", []TopNSegment{{Level: 1, To: t0}} },
	} {
		q := ok
		mod(&q)
		_, _, _, err := topNSQL("tandem", &q)
		require.Error(t, err, name)
	}
	q := ok
	q.RunID = "r1' OR '1'='1"
	q.Segments = []TopNSegment{{To: t0}}
	q.Having = []TopNHaving{{Measure: "hi", Op: "<=", Number: 2.5}}
	q.Filters = map[string][]string{"country": {"x' OR 1=1 --"}}
	sql, args, need, err := topNSQL("tandem", &q)
	require.NoError(t, err)
	require.NotContains(t, sql, "OR 1=1")
	require.NotContains(t, sql, "'1'='1")
	require.Contains(t, args, "r1' OR '1'='1")
	require.Contains(t, args, "x' OR 1=1 --")
	require.Contains(t, args, 2.5)
	require.Contains(t, sql, "LIMIT 3 BY _bucket")
	require.Equal(t, []bool{true, false, false, false, false, false}, need)
}
