package serving_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// shape is a query using order_by, limit, the richer filters, having and
// tz, with everything the independent truth needs to answer it from the
// events.
type shape struct {
	name    string
	params  url.Values // besides from and to
	from    time.Time
	to      time.Time
	gran    time.Duration // 0 with all
	all     bool
	loc     *time.Location // nil: UTC
	groupBy []string
	keep    func(dim func(string) string) bool // the filters; nil keeps all
	having  func(r *truthRow) bool             // nil keeps all
	order   string                             // measure ref, "" none
	desc    bool
	limit   int
}

// truthValue is r's exact value of a measure ref (latency.p99: the value
// at rank floor(q·(n-1))); null when the measure has no value.
func truthValue(r *truthRow, ref string) (float64, bool) {
	switch ref {
	case "views":
		return float64(r.count), false
	case "revenue":
		return math.Round(r.sum*100) / 100, false
	case "min_latency", "max_latency":
		if len(r.lat) == 0 {
			return 0, true
		}
		if ref == "min_latency" {
			return r.lat[0], false
		}
		return r.lat[len(r.lat)-1], false
	case "users":
		return float64(len(r.users)), false
	}
	if q, ok := map[string]float64{"latency.p50": 0.5, "latency.p90": 0.9, "latency.p99": 0.99}[ref]; ok {
		if len(r.lat) == 0 {
			return 0, true
		}
		return r.lat[int(math.Floor(q*float64(len(r.lat)-1)))], false
	}
	panic("unknown measure ref " + ref)
}

// localBucket is the start of the bucket of window start w: granularity
// g of local time in loc (whole days counted from 1970-01-01 local, or a
// part of the local day, by the wall clock), computed with time.Date.
func localBucket(w time.Time, g time.Duration, loc *time.Location) time.Time {
	if loc == nil {
		return w.Truncate(g)
	}
	lt := w.In(loc)
	y, m, d := lt.Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if g >= 24*time.Hour {
		n := int(g / (24 * time.Hour))
		civil := int(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
		off := ((civil % n) + n) % n
		return time.Date(y, m, d-off, 0, 0, 0, 0, loc)
	}
	// Sub-day: the last instant at or before w whose wall clock is a
	// multiple of g, stepping through the day's instants a minute apart
	// (slow and plain on purpose: this is the truth).
	best := day
	for t := day; !t.After(w); t = t.Add(time.Minute) {
		c := t.In(loc)
		if (time.Duration(c.Hour())*time.Hour+time.Duration(c.Minute())*time.Minute)%g == 0 {
			best = t
		}
	}
	return best
}

// answer computes c's rows from d's events (include picks the events the
// served state holds), bucket by bucket in order, and whether limit cut.
func (c shape) answer(d *dataset, include func(event) bool) (rows [][]*truthRow, truncated bool) {
	v := d.view
	s := v.StreamDef()
	groups := map[string]*truthRow{}
	for _, e := range d.events {
		if include != nil && !include(e) {
			continue
		}
		w := e.ev.Time.Truncate(v.Granularity.D())
		if w.Before(c.from) || !w.Before(c.to) {
			continue
		}
		dim := func(name string) string { return e.ev.Values[s.FieldIndex(name)].Str }
		if c.keep != nil && !c.keep(dim) {
			continue
		}
		bucket := c.from
		if !c.all {
			bucket = localBucket(w, c.gran, c.loc)
		}
		dims := make([]string, len(c.groupBy))
		for i, g := range c.groupBy {
			dims[i] = dim(g)
		}
		key := fmt.Sprint(bucket.UnixMilli(), "|", strings.Join(dims, "\x00"))
		r := groups[key]
		if r == nil {
			r = &truthRow{window: bucket, dims: dims, users: map[string]bool{}}
			groups[key] = r
		}
		r.count++
		if a := e.ev.Values[s.FieldIndex("amount")]; a.Set {
			r.sum += a.Float
		}
		if l := e.ev.Values[s.FieldIndex("latency_ms")]; l.Set {
			r.lat = append(r.lat, l.Float)
		}
		if u := e.ev.Values[s.FieldIndex("user_id")]; u.Set {
			r.users[u.Str] = true
		}
	}
	byBucket := map[int64][]*truthRow{}
	for _, r := range groups {
		sort.Float64s(r.lat)
		if c.having != nil && !c.having(r) {
			continue
		}
		byBucket[r.window.UnixMilli()] = append(byBucket[r.window.UnixMilli()], r)
	}
	var starts []int64
	for w := range byBucket {
		starts = append(starts, w)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, w := range starts {
		rs := byBucket[w]
		sort.Slice(rs, func(i, j int) bool { return c.before(rs[i], rs[j]) })
		if c.limit > 0 && len(rs) > c.limit {
			rs, truncated = rs[:c.limit], true
		}
		rows = append(rows, rs)
	}
	return rows, truncated
}

// before is the answer's order on exact values: the order measure (nulls
// last), then the group-by values.
func (c shape) before(a, b *truthRow) bool {
	if c.order != "" {
		va, na := truthValue(a, c.order)
		vb, nb := truthValue(b, c.order)
		switch {
		case na != nb:
			return nb
		case !na && va != vb:
			return (va > vb) == c.desc
		}
	}
	return strings.Join(a.dims, "\x00") < strings.Join(b.dims, "\x00")
}

// exactOrder reports whether the order measure is exact, so the truth's
// top N are the answer's.
func (c shape) exactOrder() bool {
	return c.order == "" || c.order == "views" || c.order == "min_latency" || c.order == "max_latency" || c.order == "revenue"
}

// reported is the answer's value of a measure ref in one row.
func reported(t testing.TB, row apiRow, ref string) (float64, bool) {
	t.Helper()
	name, part, _ := strings.Cut(ref, ".")
	raw := row.Measures[name]
	require.NotNil(t, raw, "row lacks %s", name)
	if string(raw) == "null" {
		return 0, true
	}
	if part != "" {
		var q map[string]float64
		require.NoError(t, json.Unmarshal(raw, &q))
		return q[part], false
	}
	var f float64
	require.NoError(t, json.Unmarshal(raw, &f))
	return f, false
}

// checkShape runs c against the API and holds the answer to the truth:
// every row equal to the truth's row of its bucket and group (measures
// exact or within their bounds), rows in order (the reported order value,
// nulls last, ties by the group-by values), as many per bucket as the
// truth keeps, the same groups when the order is exact, truncated right.
func checkShape(t *testing.T, baseURL string, d *dataset, include func(event) bool, c shape) {
	t.Helper()
	p := url.Values{}
	for k, vs := range c.params {
		p[k] = append([]string(nil), vs...)
	}
	p.Set("from", c.from.Format(time.RFC3339Nano))
	p.Set("to", c.to.Format(time.RFC3339Nano))
	if len(c.groupBy) > 0 {
		p.Set("group_by", strings.Join(c.groupBy, ","))
	}
	a := query(t, baseURL, p)
	require.Empty(t, a.Warnings)
	want, truncated := c.answer(d, include)
	require.NotEmpty(t, want, "%s: the case must select rows", c.name)
	require.NotNil(t, a.Truncated, "truncated is always there")
	require.Equal(t, truncated, *a.Truncated, "%s: truncated", c.name)

	// The truth for every group of every bucket, before the limit, to
	// check rows that an approximate order picked.
	all := c
	all.limit = 0
	full, _ := all.answer(d, include)
	truthOf := map[string]*truthRow{}
	for _, rs := range full {
		for _, r := range rs {
			truthOf[fmt.Sprint(r.window.UnixMilli(), "|", strings.Join(r.dims, "\x00"))] = r
		}
	}
	measures := allMeasures
	if m := c.params.Get("measures"); m != "" {
		measures = strings.Split(m, ",")
	}
	var got [][]apiRow
	for i, r := range a.Rows {
		if i == 0 || !r.WindowStart.Equal(a.Rows[i-1].WindowStart) {
			require.True(t, i == 0 || r.WindowStart.After(a.Rows[i-1].WindowStart), "%s: buckets in order", c.name)
			got = append(got, nil)
		}
		got[len(got)-1] = append(got[len(got)-1], r)
	}
	require.Equal(t, len(want), len(got), "%s: buckets", c.name)
	nonEmpty := 0
	for b := range want {
		w, g := want[b], got[b]
		where := fmt.Sprintf("%s: bucket %s", c.name, w[0].window.Format(time.RFC3339))
		require.True(t, w[0].window.Equal(g[0].WindowStart), "%s: got bucket %s", where, g[0].WindowStart)
		require.Equal(t, len(w), len(g), "%s: rows", where)
		nonEmpty++
		dimsOf := func(r apiRow) string {
			vals := make([]string, len(c.groupBy))
			for k, dim := range c.groupBy {
				vals[k] = r.Dimensions[dim]
			}
			return strings.Join(vals, "\x00")
		}
		for k, r := range g {
			tr := truthOf[fmt.Sprint(r.WindowStart.UnixMilli(), "|", dimsOf(r))]
			require.NotNil(t, tr, "%s: row %d (%v) is no group of the truth", where, k, r.Dimensions)
			for _, m := range measures {
				checkMeasure(t, fmt.Sprintf("%s row %d %v %s", where, k, r.Dimensions, m), m, r.Measures[m], tr)
			}
			if k == 0 {
				continue
			}
			prev := g[k-1]
			if c.order != "" {
				va, na := reported(t, prev, c.order)
				vb, nb := reported(t, r, c.order)
				require.False(t, na && !nb, "%s: null before a value", where)
				if na == nb && (na || va == vb) {
					require.Less(t, dimsOf(prev), dimsOf(r), "%s: a tie is broken by the group-by values", where)
				} else if !na && !nb {
					require.True(t, (va > vb) == c.desc, "%s: rows %d and %d out of order (%g, %g)", where, k-1, k, va, vb)
				}
			} else {
				require.Less(t, dimsOf(prev), dimsOf(r), "%s: group-by order", where)
			}
		}
		if c.exactOrder() {
			for k := range w {
				require.Equal(t, strings.Join(w[k].dims, "\x00"), dimsOf(g[k]), "%s: row %d is not the truth's", where, k)
			}
		}
	}
	if c.exactOrder() || c.limit == 0 {
		return
	}
	// An approximate order: no group left out may be truly better than
	// one kept by more than the two estimates' bounds.
	for b := range got {
		kept := map[string]bool{}
		for _, r := range got[b] {
			kept[dimsOf(c, r)] = true
		}
		for _, o := range full[b] {
			if kept[strings.Join(o.dims, "\x00")] {
				continue
			}
			for _, r := range got[b] {
				s := truthOf[fmt.Sprint(r.WindowStart.UnixMilli(), "|", dimsOf(c, r))]
				require.True(t, mayOrder(c, s, o), "%s: %v left out, %v kept", c.name, o.dims, s.dims)
			}
		}
	}
}

func dimsOf(c shape, r apiRow) string {
	vals := make([]string, len(c.groupBy))
	for k, dim := range c.groupBy {
		vals[k] = r.Dimensions[dim]
	}
	return strings.Join(vals, "\x00")
}

// mayOrder reports whether estimates within their bounds could put kept
// s before left-out o.
func mayOrder(c shape, s, o *truthRow) bool {
	vs, ns := truthValue(s, c.order)
	vo, no := truthValue(o, c.order)
	if no {
		return true
	}
	if ns {
		return false
	}
	var slackS, slackO float64
	if c.order == "users" {
		slackS, slackO = schemas.DistinctBound(vs), schemas.DistinctBound(vo)
	} else { // a quantile: the neighbouring rank and the relative accuracy
		a := schemas.QuantileRelativeAccuracy + 1e-9
		slackS, slackO = a*math.Abs(vs)+spread(s), a*math.Abs(vo)+spread(o)
	}
	if c.desc {
		return vs+slackS >= vo-slackO
	}
	return vs-slackS <= vo+slackO
}

// spread is the largest gap between neighbouring latencies of r: a
// quantile's rank may fall on either neighbour.
func spread(r *truthRow) float64 {
	g := 0.0
	for i := 1; i < len(r.lat); i++ {
		g = math.Max(g, r.lat[i]-r.lat[i-1])
	}
	return g
}

// Two days around each of Amsterdam's 2026 clock changes (spring forward
// on 29 March, back on 25 October), for the tz cases.
var (
	springStart = time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	autumnStart = time.Date(2026, 10, 24, 12, 0, 0, 0, time.UTC)
	amsterdam   = mustZone("Europe/Amsterdam")
	kolkata     = mustZone("Asia/Kolkata")
)

func mustZone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// extend appends o's events to d after d's own, on the same partitions.
func (d *dataset) extend(o *dataset) {
	for _, e := range o.events {
		e.offset = d.next[e.partition]
		d.next[e.partition]++
		d.events = append(d.events, e)
	}
}

// shapeCases are the queries TestQueryShapes holds to the truth.
func shapeCases() []shape {
	from, to := base, base.Add(4*time.Hour)
	pv := func(kv ...string) url.Values {
		p := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			p.Add(kv[i], kv[i+1])
		}
		return p
	}
	return []shape{
		{name: "top 3 countries by views per hour", params: pv("granularity", "1h", "order_by", "views", "limit", "3"),
			from: from, to: to, gran: time.Hour, groupBy: []string{"country"}, order: "views", desc: true, limit: 3},
		{name: "bottom 2 by views ascending, 10m (ties)", params: pv("granularity", "10m", "order_by", "views:asc", "limit", "2"),
			from: from, to: to, gran: 10 * time.Minute, groupBy: []string{"country", "device"}, order: "views", limit: 2},
		{name: "top 4 overall by revenue", params: pv("granularity", "all", "order_by", "revenue:desc", "limit", "4"),
			from: from, to: to, all: true, groupBy: []string{"device", "country"}, order: "revenue", desc: true, limit: 4},
		{name: "max latency, nulls last, 1m view granularity", params: pv("order_by", "max_latency", "limit", "2", "measures", "max_latency,views"),
			from: from.Add(10 * time.Minute), to: from.Add(40 * time.Minute), gran: time.Minute, groupBy: []string{"country"}, order: "max_latency", desc: true, limit: 2},
		{name: "min latency ascending, nulls last, no limit", params: pv("granularity", "1h", "order_by", "min_latency:asc"),
			from: from, to: to, gran: time.Hour, groupBy: []string{"country"}, order: "min_latency"},
		{name: "top 2 by distinct users", params: pv("granularity", "all", "order_by", "users", "limit", "2"),
			from: from, to: to, all: true, groupBy: []string{"country", "device"}, order: "users", desc: true, limit: 2},
		{name: "top 3 by p99 latency per 2h", params: pv("granularity", "2h", "order_by", "latency.p99", "limit", "3"),
			from: from, to: to, gran: 2 * time.Hour, groupBy: []string{"country", "device"}, order: "latency.p99", desc: true, limit: 3},
		{name: "limit without order_by: first by the group-by values", params: pv("granularity", "1h", "limit", "2"),
			from: from, to: to, gran: time.Hour, groupBy: []string{"device", "country"}, limit: 2},
		{name: "limit above the groups: not truncated", params: pv("granularity", "all", "order_by", "views", "limit", "100"),
			from: from, to: to, all: true, groupBy: []string{"country"}, order: "views", desc: true, limit: 100},
		{name: "no group_by: one group per bucket", params: pv("granularity", "30m", "order_by", "revenue", "limit", "1"),
			from: from, to: to, gran: 30 * time.Minute, order: "revenue", desc: true, limit: 1},

		{name: "not one country", params: pv("granularity", "1h", "filter", "country!:US"),
			from: from, to: to, gran: time.Hour, groupBy: []string{"country"},
			keep: func(dim func(string) string) bool { return dim("country") != "US" }},
		{name: "not the missing country nor XX, two devices", params: pv("granularity", "30m", "filter", "country!:", "filter", "country!:XX", "filter", "device:mobile", "filter", "device:tablet"),
			from: from, to: to, gran: 30 * time.Minute, groupBy: []string{"device"},
			keep: func(dim func(string) string) bool {
				return dim("country") != "" && dim("country") != "XX" && (dim("device") == "mobile" || dim("device") == "tablet")
			}},
		{name: "prefix", params: pv("granularity", "all", "filter", "device^:desk", "filter", "device^:tab"),
			from: from, to: to, all: true, groupBy: []string{"device", "country"},
			keep: func(dim func(string) string) bool {
				return strings.HasPrefix(dim("device"), "desk") || strings.HasPrefix(dim("device"), "tab")
			}},
		{name: "prefix ORed with a value, not a prefix", params: pv("granularity", "1h", "filter", "country^:U", "filter", "country:FR", "filter", "device!^:mob"),
			from: from, to: to, gran: time.Hour, groupBy: []string{"country", "device"},
			keep: func(dim func(string) string) bool {
				return (strings.HasPrefix(dim("country"), "U") || dim("country") == "FR") && !strings.HasPrefix(dim("device"), "mob")
			}},
		{name: "having views over a threshold", params: pv("granularity", "10m", "having", "views>6"),
			from: from, to: to, gran: 10 * time.Minute, groupBy: []string{"country"},
			having: func(r *truthRow) bool { return r.count > 6 }},
		{name: "having two thresholds, top 2 by revenue", params: pv("granularity", "1h", "having", "views>=20", "having", "max_latency<=400", "order_by", "revenue", "limit", "2"),
			from: from, to: to, gran: time.Hour, groupBy: []string{"country", "device"}, order: "revenue", desc: true, limit: 2,
			having: func(r *truthRow) bool { return r.count >= 20 && len(r.lat) > 0 && r.lat[len(r.lat)-1] <= 400 }},
		{name: "having != on views, null min fails every threshold", params: pv("granularity", "all", "having", "views!=100", "having", "min_latency>-1"),
			from: from, to: to, all: true, groupBy: []string{"country", "device"},
			having: func(r *truthRow) bool { return r.count != 100 && len(r.lat) > 0 }},
		{name: "having on revenue, filtered, ascending", params: pv("granularity", "30m", "having", "revenue>2000", "filter", "country!:DE", "order_by", "revenue:asc"),
			from: from, to: to, gran: 30 * time.Minute, groupBy: []string{"device"}, order: "revenue",
			keep:   func(dim func(string) string) bool { return dim("country") != "DE" },
			having: func(r *truthRow) bool { return r.sum > 2000 }},

		{name: "Amsterdam days across the 25-hour day", params: pv("granularity", "1d", "tz", "Europe/Amsterdam"),
			from: autumnStart.Add(-36 * time.Hour), to: autumnStart.Add(72 * time.Hour), gran: 24 * time.Hour, loc: amsterdam, groupBy: []string{"device"}},
		{name: "Amsterdam days across the 23-hour day, top 2 countries", params: pv("granularity", "1d", "tz", "Europe/Amsterdam", "order_by", "views", "limit", "2"),
			from: springStart.Add(-36 * time.Hour), to: springStart.Add(72 * time.Hour), gran: 24 * time.Hour, loc: amsterdam, groupBy: []string{"country"},
			order: "views", desc: true, limit: 2},
		{name: "Amsterdam hours: 02:00 twice", params: pv("granularity", "1h", "tz", "Europe/Amsterdam"),
			from: time.Date(2026, 10, 24, 21, 0, 0, 0, time.UTC), to: time.Date(2026, 10, 25, 4, 0, 0, 0, time.UTC), gran: time.Hour, loc: amsterdam},
		{name: "Amsterdam 6h across spring forward, filtered", params: pv("granularity", "6h", "tz", "Europe/Amsterdam", "filter", "country!:XX"),
			from: springStart, to: springStart.Add(48 * time.Hour), gran: 6 * time.Hour, loc: amsterdam, groupBy: []string{"country"},
			keep: func(dim func(string) string) bool { return dim("country") != "XX" }},
		{name: "Amsterdam 2-day buckets, ragged range", params: pv("granularity", "2d", "tz", "Europe/Amsterdam"),
			from: autumnStart.Add(-7*time.Hour - 30*time.Minute), to: autumnStart.Add(47 * time.Hour), gran: 48 * time.Hour, loc: amsterdam, groupBy: []string{"country"}},
		{name: "Kolkata days (+05:30) on the 1m view", params: pv("granularity", "1d", "tz", "Asia/Kolkata", "having", "views>20"),
			from: autumnStart.Add(-24 * time.Hour), to: autumnStart.Add(72 * time.Hour), gran: 24 * time.Hour, loc: kolkata, groupBy: []string{"device", "country"},
			having: func(r *truthRow) bool { return r.count > 20 }},
	}
}

// TestQueryShapes holds order_by, limit, the filters, having and tz to the
// truth computed from the events, on the real services, in each state of
// the seam: speed rows only, batch and speed mixed, and after a batch run
// absorbing everything.
func TestQueryShapes(t *testing.T) {
	e := newEnv(t, false)
	d := genDataset(t, e.cfg, 3000, 41)
	d.extend(genDatasetSpan(t, e.cfg, 1500, 42, springStart, 48*time.Hour, false))
	d.extend(genDatasetSpan(t, e.cfg, 1500, 43, autumnStart, 48*time.Hour, false))
	insertSpeed(t, e.db, d)
	run := func(t *testing.T) {
		for _, c := range shapeCases() {
			t.Run(c.name, func(t *testing.T) { checkShape(t, e.url, d, nil, c) })
		}
	}
	t.Run("speed only", run)
	chunks := d.chunks()
	publish(t, e.store, e.cfg, d, "run-seam", map[int32]int64{0: chunks[0] / 2, 1: chunks[1]/2 + 1})
	waitRun(t, e.url, "run-seam")
	t.Run("batch and speed", run)
	publish(t, e.store, e.cfg, d, "run-all", chunks)
	waitRun(t, e.url, "run-all")
	t.Run("batch only", run)
}

// TestFlatFormatsCarryTheCut: CSV and Arrow answers of a cut, local-time
// query say it was cut (X-Tandem-Truncated, tandem.truncated), carry the
// zone (tandem.tz), and hold the JSON answer's rows in its order, CSV with
// the same local window_start text.
func TestFlatFormatsCarryTheCut(t *testing.T) {
	e := newEnv(t, false)
	d := genDatasetSpan(t, e.cfg, 1500, 44, autumnStart, 48*time.Hour, false)
	insertSpeed(t, e.db, d)
	p := url.Values{"from": {autumnStart.Add(-24 * time.Hour).Format(time.RFC3339)}, "to": {autumnStart.Add(72 * time.Hour).Format(time.RFC3339)},
		"granularity": {"1d"}, "tz": {"Europe/Amsterdam"}, "group_by": {"country"}, "order_by": {"views"}, "limit": {"2"}, "measures": {"views"}}
	js := query(t, e.url, p)
	require.True(t, *js.Truncated)
	require.NotEmpty(t, js.Rows)

	code, hdr, body := get(t, queryURL(e.url, p), map[string]string{"Accept": "text/csv"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Equal(t, "true", hdr.Get("X-Tandem-Truncated"))
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"window_start", "country", "views"}, recs[0])
	require.Len(t, recs, len(js.Rows)+1)
	var raw struct {
		Rows []struct {
			WindowStart string `json:"window_start"`
		} `json:"rows"`
	}
	_, _, jb := get(t, queryURL(e.url, p), nil)
	require.NoError(t, json.Unmarshal(jb, &raw))
	for i, r := range js.Rows {
		require.Equal(t, raw.Rows[i].WindowStart, recs[i+1][0], "row %d: the same local text", i)
		require.True(t, strings.HasSuffix(recs[i+1][0], "+01:00") || strings.HasSuffix(recs[i+1][0], "+02:00"), recs[i+1][0])
		require.Equal(t, r.Dimensions["country"], recs[i+1][1])
		require.Equal(t, string(r.Measures["views"]), recs[i+1][2])
	}

	code, hdr, body = get(t, queryURL(e.url, p), map[string]string{"Accept": serving.ContentArrow})
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Equal(t, "true", hdr.Get("X-Tandem-Truncated"))
	rd, err := ipc.NewReader(bytes.NewReader(body))
	require.NoError(t, err)
	defer rd.Release()
	md := rd.Schema().Metadata()
	tz, _ := md.GetValue("tandem.tz")
	cut, _ := md.GetValue("tandem.truncated")
	require.Equal(t, "Europe/Amsterdam", tz)
	require.Equal(t, "true", cut)
	n := 0
	for rd.Next() {
		rec := rd.RecordBatch()
		ws := rec.Column(0).(*array.Timestamp)
		for i := 0; i < int(rec.NumRows()); i++ {
			require.Equal(t, js.Rows[n].WindowStart.UnixMilli(), int64(ws.Value(i)), "row %d: the same instant", n)
			n++
		}
	}
	require.Equal(t, len(js.Rows), n)
}

// writeRaw writes d's events as the archiver would: one raw Parquet file
// per chunk of each partition, for a real batch run to read.
func writeRaw(t *testing.T, cfg *schemas.Config, store *s3.Store, d *dataset, kafkaTime time.Time) {
	t.Helper()
	s := d.view.StreamDef()
	dec := schemas.NewDecoder(s, cfg.MaxFutureSkew.D())
	byPart := map[int32][]event{}
	for _, e := range d.events {
		byPart[e.partition] = append(byPart[e.partition], e)
	}
	for p, evs := range byPart {
		sort.Slice(evs, func(i, j int) bool { return evs[i].offset < evs[j].offset })
		for first := 0; first < len(evs); first += int(cfg.ChunkSize) {
			chunk := evs[first:min(first+int(cfg.ChunkSize), len(evs))]
			var buf bytes.Buffer
			w := parquet.NewRawWriter(&buf, s, parquet.RawWriterOptions{Partition: p, Decoder: dec})
			for _, e := range chunk {
				ev, err := dec.Decode(e.raw, kafkaTime)
				require.NoError(t, err)
				require.NoError(t, w.Write(parquet.RawRecord{Raw: e.raw, Partition: p, Offset: e.offset, KafkaTime: kafkaTime, Event: &ev}))
			}
			require.NoError(t, w.Close())
			key := schemas.RawKey(s.Name, p, chunk[0].offset, chunk[len(chunk)-1].offset)
			require.NoError(t, objstore.PutBytes(context.Background(), store, key, buf.Bytes()))
		}
	}
}

// TestLocalBucketsAfterABatchRun holds tz, top N, filters and having to the
// truth on the files of a real batch run (base rows and its 1h and 1d
// levels) over Amsterdam's autumn clock change, and mixed with speed rows
// of the chunks the run did not absorb.
func TestLocalBucketsAfterABatchRun(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	_, store, _, db := newBackends(t, cfg.Config, true)
	d := genDatasetSpan(t, cfg.Config, 2000, 45, autumnStart, 48*time.Hour, false)
	// The batch run absorbs what the raw files hold: all but the last
	// chunk of each partition, which only the speed layer has.
	absorbed := d.chunks()
	raw := &dataset{view: d.view, chunk: d.chunk, next: map[int32]int64{}}
	for _, e := range d.events {
		if e.offset < (absorbed[e.partition]-1)*cfg.ChunkSize {
			raw.events = append(raw.events, e)
		}
	}
	writeRaw(t, cfg.Config, store, raw, autumnStart.Add(72*time.Hour))
	insertSpeed(t, db, d)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runBatch(ctx, t.TempDir(), cfg.Config, store)
	require.NoError(t, err)
	m := res.Views[0].Manifest
	require.NotEmpty(t, m.Levels)
	require.EqualValues(t, len(raw.events), m.Events)
	_, baseURL, _ := startService(t, cfg)
	waitRun(t, baseURL, m.RunID)

	from, to := autumnStart.Add(-36*time.Hour), autumnStart.Add(72*time.Hour)
	pv := func(kv ...string) url.Values {
		p := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			p.Add(kv[i], kv[i+1])
		}
		return p
	}
	for _, c := range []shape{
		{name: "Amsterdam days", params: pv("granularity", "1d", "tz", "Europe/Amsterdam"), from: from, to: to, gran: 24 * time.Hour, loc: amsterdam, groupBy: []string{"country"}},
		{name: "Amsterdam days, ragged", params: pv("granularity", "1d", "tz", "Europe/Amsterdam"),
			from: from.Add(3*time.Hour + 17*time.Minute), to: to.Add(-5*time.Hour - 3*time.Minute), gran: 24 * time.Hour, loc: amsterdam},
		{name: "Amsterdam hours", params: pv("granularity", "1h", "tz", "Europe/Amsterdam", "order_by", "views", "limit", "2"),
			from: from, to: to, gran: time.Hour, loc: amsterdam, groupBy: []string{"device"}, order: "views", desc: true, limit: 2},
		{name: "Kolkata days, filtered, having", params: pv("granularity", "1d", "tz", "Asia/Kolkata", "filter", "country^:U", "filter", "country:FR", "having", "views>=5"),
			from: from, to: to, gran: 24 * time.Hour, loc: kolkata, groupBy: []string{"country", "device"},
			keep: func(dim func(string) string) bool {
				return strings.HasPrefix(dim("country"), "U") || dim("country") == "FR"
			},
			having: func(r *truthRow) bool { return r.count >= 5 }},
		{name: "all, top 3 by revenue, not XX", params: pv("granularity", "all", "order_by", "revenue", "limit", "3", "filter", "country!:XX"),
			from: from, to: to, all: true, groupBy: []string{"country", "device"}, order: "revenue", desc: true, limit: 3,
			keep: func(dim func(string) string) bool { return dim("country") != "XX" }},
	} {
		t.Run(c.name, func(t *testing.T) { checkShape(t, baseURL, d, nil, c) })
	}
}
