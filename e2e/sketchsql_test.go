package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
	"github.com/tandem-analytics/tandem/schemas"
)

// sketchSQLCase is an analyst question about the sketch measures: the
// window rolled up to granSec seconds (0 keeps the view's), grouped by
// groupBy, through the merged view's SQL states — and the same question
// to the REST API (q).
type sketchSQLCase struct {
	q       query
	granSec int64
}

// compareSketchSQL asks the merged view c's question with uniqHLL12Merge
// and quantilesTDigestWeightedMerge as the analyst user, asks the REST API
// the same, and holds both against the truth: REST within its bounds
// (DistinctBound, DDSketch's relative accuracy: diff), SQL distinct with
// the digits of Go's uniqHLL12 state of the group's users and within
// chstate.DistinctSQLBound of the truth (exact up to 16 users), SQL
// quantiles between the values of rank (q ∓ 1%)·n ± ½ (TDigest), and so
// SQL and REST distinct within the sum of their bounds of each other. It
// returns the differences, and how many groups had more than 16 users.
func (p *platform) compareSketchSQL(ctx context.Context, conn driver.Conn, events []event, c sketchSQLCase) ([]string, int) {
	code, a, body, err := p.queryServing(c.q)
	if err != nil {
		return []string{err.Error()}, 0
	}
	if code != http.StatusOK {
		return []string{fmt.Sprintf("status %d: %.300s", code, body)}, 0
	}
	rest, err := a.rows(c.q)
	if err != nil {
		return []string{err.Error()}, 0
	}
	want := expect(events, c.q)
	out := diff(want, rest) // the REST answer within its bounds

	win := "toUnixTimestamp(window_start)"
	if c.granSec > 0 {
		win = fmt.Sprintf("intDiv(toUnixTimestamp(window_start), %d) * %d", c.granSec, c.granSec)
	}
	dims := "''"
	if len(c.q.groupBy) == 1 {
		dims = "toString(" + c.q.groupBy[0] + ")"
	} else if len(c.q.groupBy) > 1 {
		dims = "concat(" + strings.Join(c.q.groupBy, ", '|', ") + ")"
	}
	sql := fmt.Sprintf(`SELECT toInt64(%s) AS w, %s AS d, uniqHLL12Merge(users),
	CAST(quantilesTDigestWeightedMerge(0.5, 0.9, 0.99)(latency) AS Array(Float64))
FROM %s.%s
WHERE window_start >= toDateTime(%d) AND window_start < toDateTime(%d)
GROUP BY w, d`, win, dims, p.ch.Database, viewName, c.q.from.Unix(), c.q.to.Unix())
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return append(out, fmt.Sprintf("querying the merged view: %v\n%s", err, sql)), 0
	}
	defer rows.Close()
	large, seen := 0, 0
	for rows.Next() {
		var w int64
		var d string
		var users uint64
		var qs []float64
		if err := rows.Scan(&w, &d, &users, &qs); err != nil {
			return append(out, err.Error()), 0
		}
		k := rowKey{windowMs: w * 1000, dims: d}
		tr, r := want[k], rest[k]
		if tr == nil || r == nil {
			out = append(out, fmt.Sprintf("%s: SQL row without a REST row or truth", k))
			continue
		}
		seen++
		n := float64(len(tr.users))
		sqlBound := chstate.DistinctSQLBound(len(tr.users))
		if len(tr.users) > 16 {
			large++
		}
		// The same digits as Go's uniqHLL12 state of the group's users:
		// the rows' states merged are the state of their union.
		var st chstate.Distinct
		for u := range tr.users {
			st.AddString(u)
		}
		if users != st.Estimate() {
			out = append(out, fmt.Sprintf("%s: SQL distinct users %d, Go's state of the same users %d", k, users, st.Estimate()))
		}
		if math.Abs(float64(users)-n) > sqlBound {
			out = append(out, fmt.Sprintf("%s: SQL distinct users %d, want %d within %.1f", k, users, len(tr.users), sqlBound))
		}
		if math.Abs(float64(users)-float64(r.users)) > sqlBound+schemas.DistinctBound(n) {
			out = append(out, fmt.Sprintf("%s: SQL distinct users %d, REST %d: further apart than their bounds", k, users, r.users))
		}
		if len(tr.latencies) == 0 {
			continue
		}
		s := append([]float64(nil), tr.latencies...)
		sort.Float64s(s)
		ln := float64(len(s))
		for i, lv := range []float64{0.5, 0.9, 0.99} {
			lo := max(int(math.Floor((lv-0.01)*ln-0.5)), 0)
			hi := min(int(math.Ceil((lv+0.01)*ln-0.5)), len(s)-1)
			// Values are Float32 in the state: widen by that rounding.
			if len(qs) != 3 || qs[i] < float64(float32(s[lo]))*(1-1e-7) || qs[i] > float64(float32(s[hi]))*(1+1e-7) {
				out = append(out, fmt.Sprintf("%s: SQL quantiles %v: p%g outside [%v, %v] (n=%d)", k, qs, lv*100, s[lo], s[hi], len(s)))
				break
			}
		}
	}
	if err := rows.Err(); err != nil {
		out = append(out, err.Error())
	}
	if seen != len(want) {
		out = append(out, fmt.Sprintf("SQL answered %d groups, want %d", seen, len(want)))
	}
	sort.Strings(out)
	return out, large
}

// checkSketchSQL runs compareSketchSQL for several granularities and
// groupings; it retries while the speed layer may still be catching up.
func (p *platform) checkSketchSQL(stage string, events []event, from, to time.Time) {
	t := p.t
	t.Helper()
	conn := p.ch.AnalystConn(t)
	cases := []sketchSQLCase{
		{query{from: from, to: to, groupBy: []string{"country", "device"}}, 0},
		{query{from: from, to: to, granularity: "1h", groupBy: []string{"country"}}, 3600},
		{query{from: from, to: to, granularity: "1h"}, 3600},
		{query{from: from, to: to, granularity: "5m", groupBy: []string{"device"}}, 300},
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var problems []string
		large := 0
		for _, c := range cases {
			d, l := p.compareSketchSQL(context.Background(), conn, events, c)
			large += l
			if len(d) > 0 {
				problems = append(problems, c.q.String()+":\n  "+strings.Join(d[:min(len(d), 8)], "\n  "))
			}
		}
		if len(problems) == 0 {
			if large == 0 {
				t.Fatalf("%s: no group with more than 16 users: the HyperLogLog form was not checked", stage)
			}
			t.Logf("%s: SQL distinct and quantiles agree with REST and the truth (%d groups above 16 users)", stage, large)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: SQL sketch answers differ:\n%s", stage, strings.Join(problems, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
