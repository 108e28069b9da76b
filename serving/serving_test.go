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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

type qcase struct {
	name     string
	gran     string // "" = the view's
	groupBy  []string
	filters  map[string][]string
	measures []string // nil = all
	from, to time.Time
}

func (c qcase) params() url.Values {
	p := url.Values{"from": {c.from.Format(time.RFC3339Nano)}, "to": {c.to.Format(time.RFC3339Nano)}}
	if c.gran != "" {
		p.Set("granularity", c.gran)
	}
	if len(c.groupBy) > 0 {
		p.Set("group_by", strings.Join(c.groupBy, ","))
	}
	for dim, vals := range c.filters {
		for _, v := range vals {
			p.Add("filter", dim+":"+v)
		}
	}
	if c.measures != nil {
		p.Set("measures", strings.Join(c.measures, ","))
	}
	return p
}

func (c qcase) truth(d *dataset, include func(event) bool) []*truthRow {
	gran := d.view.Granularity.D()
	all := c.gran == "all"
	if c.gran != "" && !all {
		g, err := schemas.ParseGranularity(c.gran)
		if err != nil {
			panic(err)
		}
		gran = g.D()
	}
	return truth(d, include, c.from, c.to, gran, all, c.groupBy, c.filters)
}

func (c qcase) measureList() []string {
	if c.measures == nil {
		return allMeasures
	}
	return c.measures
}

// queryMatrix covers granularities (the view's, coarser, uneven, all),
// group-by and filter combinations, measure subsets, and ranges that cut
// through the data, the gap and the day boundary.
func queryMatrix() []qcase {
	from, to := base, base.Add(4*time.Hour)
	return []qcase{
		{name: "total by minute", from: from, to: to},
		{name: "by 5m", gran: "5m", from: from, to: to},
		{name: "by hour by country", gran: "1h", groupBy: []string{"country"}, from: from, to: to},
		{name: "by 90m by device,country", gran: "90m", groupBy: []string{"device", "country"}, from: from, to: to},
		{name: "by day (two days)", gran: "1d", groupBy: []string{"device"}, from: from.Add(-22 * time.Hour), to: to.Add(22 * time.Hour)},
		{name: "all by country", gran: "all", groupBy: []string{"country"}, from: from, to: to},
		{name: "all total, odd bounds", gran: "all", from: from.Add(17*time.Minute + 500*time.Millisecond), to: from.Add(3*time.Hour + 7*time.Minute)},
		{name: "filter one", gran: "15m", filters: map[string][]string{"country": {"US"}}, from: from, to: to},
		{name: "filter or", gran: "1h", groupBy: []string{"country"}, filters: map[string][]string{"country": {"US", "DE"}}, from: from, to: to},
		{name: "filter and", gran: "30m", groupBy: []string{"device"}, filters: map[string][]string{"country": {"FR"}, "device": {"mobile", "tablet"}}, from: from, to: to},
		{name: "filter missing country", gran: "1h", filters: map[string][]string{"country": {""}}, from: from, to: to},
		{name: "no latency country: null min/max", gran: "1h", groupBy: []string{"country"}, filters: map[string][]string{"country": {"XX"}}, from: from, to: to},
		{name: "filter matches nothing", gran: "1h", filters: map[string][]string{"country": {"nowhere"}}, from: from, to: to},
		{name: "measures subset", gran: "10m", groupBy: []string{"country"}, measures: []string{"users", "views"}, from: from, to: to},
		{name: "one measure, the gap hour", gran: "1m", measures: []string{"max_latency"}, from: from.Add(50 * time.Minute), to: from.Add(100 * time.Minute)},
		{name: "range after the data", from: to.Add(time.Hour), to: to.Add(2 * time.Hour)},
	}
}

func runMatrix(t *testing.T, base string, d *dataset, include func(event) bool) {
	t.Helper()
	for _, c := range queryMatrix() {
		t.Run(c.name, func(t *testing.T) {
			a := query(t, base, c.params())
			want := c.truth(d, include)
			checkAnswer(t, a.Rows, want, c.groupBy, c.measureList())
		})
	}
}

// TestServing runs the query API on real S3 (FakeS3) and ClickHouse over a
// dataset whose truth the test computes from the events, through every
// state of the batch/speed seam.
func TestServing(t *testing.T) {
	e := newEnv(t, false)
	d := genDataset(t, e.cfg, 3000, 1)
	chunks := d.chunks()
	require.GreaterOrEqual(t, chunks[0], int64(10))
	ctx := context.Background()

	t.Run("empty: no run, no speed rows", func(t *testing.T) {
		a := query(t, e.url, qcase{from: base, to: base.Add(time.Hour)}.params())
		require.Empty(t, a.Rows)
		require.NotNil(t, a.Rows, "rows is [] not null")
		require.Nil(t, a.Freshness.BatchRun)
		require.Nil(t, a.Freshness.SpeedMaxEventTime)
		require.Empty(t, a.Warnings)
	})

	speedRows := insertSpeed(t, e.db, d)
	require.Greater(t, speedRows, 1000)

	t.Run("speed only", func(t *testing.T) {
		runMatrix(t, e.url, d, nil)
		a := query(t, e.url, qcase{from: base, to: base.Add(time.Hour)}.params())
		require.Nil(t, a.Freshness.BatchRun)
		require.NotNil(t, a.Freshness.SpeedMaxEventTime)
		last := d.events[0].ev.Time
		for _, ev := range d.events {
			if ev.ev.Time.After(last) {
				last = ev.ev.Time
			}
		}
		require.Equal(t, last.Truncate(time.Minute), a.Freshness.SpeedMaxEventTime.UTC())
	})

	// A run absorbing part of each partition: the seam runs through the
	// data, and speed rows of absorbed chunks are still in ClickHouse.
	seam := map[int32]int64{0: chunks[0] / 2, 1: chunks[1]/2 + 1}
	publish(t, e.store, e.cfg, d, "run-seam", seam)
	waitRun(t, e.url, "run-seam")

	t.Run("batch and speed with a chunk seam", func(t *testing.T) {
		runMatrix(t, e.url, d, nil)
		a := query(t, e.url, qcase{from: base, to: base.Add(time.Hour)}.params())
		require.Equal(t, "run-seam", *a.Freshness.BatchRun)
		require.Equal(t, map[string]int64{"0": seam[0] * 100, "1": seam[1] * 100}, a.Freshness.Absorbed)
		require.Empty(t, a.Warnings)
	})

	t.Run("csv and arrow decode to the json answer", func(t *testing.T) {
		for _, c := range []qcase{
			{gran: "1h", groupBy: []string{"country", "device"}, from: base, to: base.Add(4 * time.Hour)},
			{gran: "all", filters: map[string][]string{"country": {"XX"}}, from: base, to: base.Add(4 * time.Hour)},
			{gran: "15m", measures: []string{"latency", "views"}, from: base, to: base.Add(2 * time.Hour)},
		} {
			checkFlatFormats(t, e.url, c)
		}
	})

	t.Run("views listing", func(t *testing.T) {
		code, _, body := get(t, e.url+"/v1/views", nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		var out struct {
			Views []struct {
				Name, Stream, Granularity string
				Dimensions                []string
				Measures                  []struct{ Name, Type, Field, Result string }
				Freshness                 struct {
					BatchRun          string           `json:"batch_run"`
					Absorbed          map[string]int64 `json:"batch_absorbed_offsets"`
					SpeedMaxEventTime *time.Time       `json:"speed_max_event_time"`
				}
			}
		}
		require.NoError(t, json.Unmarshal(body, &out))
		require.Len(t, out.Views, 1)
		v := out.Views[0]
		require.Equal(t, viewName, v.Name)
		require.Equal(t, "pageviews", v.Stream)
		require.Equal(t, "1m", v.Granularity)
		require.Equal(t, []string{"country", "device"}, v.Dimensions)
		require.Len(t, v.Measures, 6)
		require.Equal(t, "users", v.Measures[4].Name)
		require.Equal(t, "distinct", v.Measures[4].Type)
		require.Equal(t, "user_id", v.Measures[4].Field)
		require.Equal(t, "run-seam", v.Freshness.BatchRun)
		require.Equal(t, seam[0]*100, v.Freshness.Absorbed["0"])
		require.NotNil(t, v.Freshness.SpeedMaxEventTime)
	})

	t.Run("every 400 and the 404", func(t *testing.T) {
		ok := "from=2026-11-20T22:00:00Z&to=2026-11-21T02:00:00Z"
		for _, raw := range []string{
			"", "to=2026-11-21T02:00:00Z", ok + "&granularity=7s", "from=2026-11-21&to=2026-11-22T00:00:00Z",
			"from=2026-11-21T02:00:00Z&to=2026-11-20T22:00:00Z", "from=2020-01-01T00:00:00Z&to=2026-11-21T02:00:00Z",
			ok + "&group_by=city", ok + "&measures=clicks", ok + "&filter=nope", ok + "&filter=city:x",
			ok + "&from=2026-11-20T22:00:00Z", ok + "&bogus=1", ok + "&filter=country:%ff%zz",
			ok + "&group_by=country,country", ok + "&measures=", ok + "&filter=country:" + strings.Repeat("a", 3000),
		} {
			code, hdr, body := get(t, e.url+"/v1/views/"+viewName+"/query?"+raw, nil)
			require.Equal(t, http.StatusBadRequest, code, "%s → %s", raw, body)
			require.Equal(t, "application/json", hdr.Get("Content-Type"))
			var er struct{ Error string }
			require.NoError(t, json.Unmarshal(body, &er), "%s", body)
			require.NotEmpty(t, er.Error)
		}
		code, _, body := get(t, e.url+"/v1/views/nope/query?"+ok, nil)
		require.Equal(t, http.StatusNotFound, code)
		require.Contains(t, string(body), `unknown view`)
		code, _, _ = get(t, e.url+"/v1/views?x=1", nil)
		require.Equal(t, http.StatusBadRequest, code)
	})

	t.Run("injection attempts change nothing", func(t *testing.T) {
		before := speedFingerprint(t, e)
		attempts := []string{
			"' OR 1=1 --", "US'); DROP TABLE tandem.pageviews_by_country_speed; --", `\' OR \'1\'=\'1`,
			"US\x00", "`country`", "1) OR (1=1", "%27", "'; SELECT sleep(3); --",
		}
		from, to := base.Format(time.RFC3339), base.Add(4*time.Hour).Format(time.RFC3339)
		for _, x := range attempts {
			// A filter value is data: it matches nothing, and is not an error.
			a := query(t, e.url, url.Values{"from": {from}, "to": {to}, "filter": {"country:" + x}})
			require.Empty(t, a.Rows, "filter value %q", x)
			a = query(t, e.url, url.Values{"from": {from}, "to": {to}, "filter": {"country:US", "device:" + x}})
			require.Empty(t, a.Rows, "filter value %q", x)
			// As a prefix it matches nothing; negated, it leaves every row.
			a = query(t, e.url, url.Values{"from": {from}, "to": {to}, "filter": {"country^:" + x}})
			require.Empty(t, a.Rows, "prefix %q", x)
			everything := qcase{from: base, to: base.Add(4 * time.Hour)}.truth(d, nil)
			for _, f := range []string{"country!:" + x, "device!^:" + x} {
				a = query(t, e.url, url.Values{"from": {from}, "to": {to}, "filter": {f}})
				checkAnswer(t, a.Rows, everything, nil, allMeasures)
			}
			// Anywhere else it is a bad parameter or an unknown view.
			for _, p := range []url.Values{
				{"from": {from}, "to": {to}, "group_by": {x}},
				{"from": {from}, "to": {to}, "measures": {x}},
				{"from": {from}, "to": {to}, "granularity": {x}},
				{"from": {x}, "to": {to}},
				{"from": {from}, "to": {x}},
				{"from": {from}, "to": {to}, "filter": {x + ":US"}},
				{"from": {from}, "to": {to}, "filter": {"country" + x + ":US"}},
				{"from": {from}, "to": {to}, "having": {x}},
				{"from": {from}, "to": {to}, "having": {"views>" + x}},
				{"from": {from}, "to": {to}, "having": {x + ">1"}},
				{"from": {from}, "to": {to}, "order_by": {x}},
				{"from": {from}, "to": {to}, "order_by": {"views:" + x}},
				{"from": {from}, "to": {to}, "limit": {x}},
				{"from": {from}, "to": {to}, x: {"1"}},
			} {
				code, _, body := get(t, queryURL(e.url, p), nil)
				require.Equal(t, http.StatusBadRequest, code, "%v → %s", p, body)
			}
			code, _, _ := get(t, e.url+"/v1/views/"+url.PathEscape(x)+"/query?from="+from+"&to="+to, nil)
			require.Equal(t, http.StatusNotFound, code, "view %q", x)
		}
		require.Equal(t, before, speedFingerprint(t, e), "ClickHouse data changed")
		runMatrix(t, e.url, d, nil) // and the answers are still the truth
	})

	// A run absorbing every chunk: the batch half alone answers, every
	// speed row is of an absorbed chunk and must be ignored.
	publish(t, e.store, e.cfg, d, "run-all", chunks)
	waitRun(t, e.url, "run-all")
	t.Run("batch only", func(t *testing.T) {
		runMatrix(t, e.url, d, nil)
		a := query(t, e.url, qcase{from: base, to: base.Add(time.Hour)}.params())
		require.Nil(t, a.Freshness.SpeedMaxEventTime, "no unabsorbed speed rows")
	})

	// Back to the seam run, then take ClickHouse away: the answer is the
	// batch half (absorbed events only) with a loud warning.
	publish(t, e.store, e.cfg, d, "run-seam-2", seam)
	waitRun(t, e.url, "run-seam-2")
	t.Run("speed side down", func(t *testing.T) {
		e.ch.Stop()
		defer e.ch.Start()
		absorbedOnly := func(ev event) bool { return ev.offset < seam[ev.partition]*100 }
		for _, c := range queryMatrix()[:6] {
			a := query(t, e.url, c.params())
			require.Len(t, a.Warnings, 1, c.name)
			require.Contains(t, a.Warnings[0], "speed layer unavailable")
			require.Contains(t, a.Warnings[0], "rows newer than the batch run run-seam-2 are missing")
			checkAnswer(t, a.Rows, c.truth(d, absorbedOnly), c.groupBy, c.measureList())
		}
		code, hdr, body := get(t, queryURL(e.url, qcase{gran: "1h", from: base, to: base.Add(4 * time.Hour)}.params()), map[string]string{"Accept": "text/csv"})
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Contains(t, hdr.Get("X-Tandem-Warning"), "speed layer unavailable")
		require.Contains(t, metricsText(t, e.url), `tandem_serve_speed_failures_total{view="pageviews_by_country"}`)
	})
	t.Run("speed side back", func(t *testing.T) {
		require.Eventually(t, func() bool {
			a := query(t, e.url, qcase{from: base, to: base.Add(time.Hour)}.params())
			return len(a.Warnings) == 0
		}, 20*time.Second, 200*time.Millisecond)
		runMatrix(t, e.url, d, nil)
	})

	t.Run("ops endpoints", func(t *testing.T) {
		code, _, _ := get(t, e.url+"/healthz", nil)
		require.Equal(t, http.StatusOK, code)
		code, _, body := get(t, e.url+"/readyz", nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		m := metricsText(t, e.url)
		for _, name := range []string{
			`tandem_serve_query_duration_seconds_count{code="200",view="pageviews_by_country"}`,
			`tandem_serve_query_duration_seconds_count{code="400",view="pageviews_by_country"}`,
			`tandem_serve_query_duration_seconds_count{code="404",view="unknown"}`,
			"tandem_serve_cache_hits_total", "tandem_serve_cache_misses_total",
			`tandem_serve_batch_run_age_seconds{view="pageviews_by_country"}`,
			`tandem_serve_manifest_switches_total{view="pageviews_by_country"} 3`,
			`tandem_serve_errors_total{code="400",endpoint="query"}`,
		} {
			require.Contains(t, m, name)
		}
		require.NotContains(t, m, "tandem_serve_cache_hits_total 0\n", "repeated queries hit the cache")
	})
	_ = ctx
}

// equalOrSum requires got == want, except for the sum measure (revenue),
// which is exact to float rounding: each format is a separate request,
// and two requests may add the same values in another order (ClickHouse
// sums in parallel; closed speed chunks come from the cache on the second).
func equalOrSum(t *testing.T, col string, want, got float64, msgAndArgs ...any) {
	t.Helper()
	if col == "revenue" {
		require.InDelta(t, want, got, 1e-12*math.Max(1, math.Abs(want)), msgAndArgs...)
		return
	}
	require.Equal(t, want, got, msgAndArgs...)
}

// waitRun waits until the service answers from runID (it polls manifests
// every 100ms; a new run must be noticed within seconds).
func waitRun(t testing.TB, base, runID string) {
	t.Helper()
	t0 := time.Now()
	require.Eventually(t, func() bool {
		a := query(t, base, qcase{from: time.Unix(0, 0), to: time.Unix(3600, 0)}.params())
		return a.Freshness.BatchRun != nil && *a.Freshness.BatchRun == runID
	}, 5*time.Second, 20*time.Millisecond, "run %s not noticed", runID)
	t.Logf("run %s noticed after %s", runID, time.Since(t0).Round(time.Millisecond))
}

func metricsText(t testing.TB, base string) string {
	code, _, body := get(t, base+"/metrics", nil)
	require.Equal(t, http.StatusOK, code)
	return string(body)
}

// speedFingerprint summarises the ClickHouse data and tables, to show a
// request changed nothing.
func speedFingerprint(t testing.TB, e *env) string {
	var n, views uint64
	var sum float64
	row := e.db.Conn().QueryRow(context.Background(), "SELECT count(), toUInt64(sum(views)), sum(revenue) FROM tandem.pageviews_by_country_speed")
	require.NoError(t, row.Scan(&n, &views, &sum))
	rows, err := e.db.Conn().Query(context.Background(), "SELECT name FROM system.tables WHERE database = 'tandem' ORDER BY name")
	require.NoError(t, err)
	defer rows.Close()
	var names []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		names = append(names, s)
	}
	return fmt.Sprintf("%d %d %.6f %v", n, views, sum, names)
}

// checkFlatFormats asks for c as JSON, CSV and Arrow and checks the flat
// answers hold the same values as the JSON one.
func checkFlatFormats(t *testing.T, base string, c qcase) {
	t.Helper()
	js := query(t, base, c.params())
	require.NotEmpty(t, js.Rows)
	ms := c.measureList()
	// The flat columns, and the JSON value each should hold.
	var cols []string
	cols = append(cols, "window_start")
	cols = append(cols, c.groupBy...)
	for _, m := range ms {
		if m == "latency" {
			cols = append(cols, "latency_p50", "latency_p90", "latency_p99")
		} else {
			cols = append(cols, m)
		}
	}
	expect := func(r apiRow, col string) (string, bool) { // value, non-null
		if col == "window_start" {
			return r.WindowStart.UTC().Format(time.RFC3339Nano), true
		}
		if v, ok := r.Dimensions[col]; ok {
			return v, true
		}
		if strings.HasPrefix(col, "latency_p") {
			raw := r.Measures["latency"]
			if string(raw) == "null" {
				return "", false
			}
			var q map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(raw, &q))
			return string(q[strings.TrimPrefix(col, "latency_")]), true
		}
		raw := string(r.Measures[col])
		return raw, raw != "null"
	}

	// CSV
	code, hdr, body := get(t, queryURL(base, c.params()), map[string]string{"Accept": "text/csv"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.True(t, strings.HasPrefix(hdr.Get("Content-Type"), "text/csv"))
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, cols, recs[0])
	require.Len(t, recs, len(js.Rows)+1)
	for i, r := range js.Rows {
		for j, col := range cols {
			want, ok := expect(r, col)
			if !ok {
				want = ""
			}
			got := recs[i+1][j]
			if f, err := strconv.ParseFloat(want, 64); err == nil && col != "window_start" {
				g, err := strconv.ParseFloat(got, 64)
				require.NoError(t, err, "csv row %d %s", i, col)
				equalOrSum(t, col, f, g, "csv row %d %s", i, col)
				continue
			}
			require.Equal(t, want, got, "csv row %d %s", i, col)
		}
	}

	// Arrow
	code, hdr, body = get(t, queryURL(base, c.params()), map[string]string{"Accept": "application/vnd.apache.arrow.stream"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Equal(t, "application/vnd.apache.arrow.stream", hdr.Get("Content-Type"))
	rd, err := ipc.NewReader(bytes.NewReader(body))
	require.NoError(t, err)
	defer rd.Release()
	sc := rd.Schema()
	require.Equal(t, len(cols), sc.NumFields())
	for i, col := range cols {
		require.Equal(t, col, sc.Field(i).Name)
	}
	require.Equal(t, arrow.TIMESTAMP, sc.Field(0).Type.ID())
	require.Equal(t, "UTC", sc.Field(0).Type.(*arrow.TimestampType).TimeZone)
	fr, ok := sc.Metadata().GetValue("tandem.freshness")
	require.True(t, ok)
	require.Contains(t, fr, `"batch_run"`)
	require.True(t, rd.Next())
	rec := rd.RecordBatch()
	require.Equal(t, int64(len(js.Rows)), rec.NumRows())
	for i, r := range js.Rows {
		for j, col := range cols {
			want, nonNull := expect(r, col)
			arr := rec.Column(j)
			if !nonNull {
				require.True(t, arr.IsNull(i), "arrow row %d %s is null", i, col)
				continue
			}
			require.False(t, arr.IsNull(i), "arrow row %d %s", i, col)
			switch a := arr.(type) {
			case *array.Timestamp:
				require.Equal(t, want, time.UnixMilli(int64(a.Value(i))).UTC().Format(time.RFC3339Nano))
			case *array.String:
				require.Equal(t, want, a.Value(i))
			case *array.Int64:
				require.Equal(t, want, strconv.FormatInt(a.Value(i), 10), col)
				require.Equal(t, "views", col)
			case *array.Uint64:
				require.Equal(t, want, strconv.FormatUint(a.Value(i), 10), col)
				require.Equal(t, "users", col)
			case *array.Float64:
				f, err := strconv.ParseFloat(want, 64)
				require.NoError(t, err)
				equalOrSum(t, col, f, a.Value(i), "arrow row %d %s", i, col)
			default:
				t.Fatalf("column %s has unexpected type %T", col, arr)
			}
		}
	}
	require.False(t, rd.Next(), "one record batch")
}

// TestManifestSwitchMidStream alternates the published run between two runs
// absorbing different chunks while clients query: every answer must be the
// truth, which holds only if each query used one run for both halves (old
// batch + new K_p would miss chunks, new batch + old K_p double counts).
func TestManifestSwitchMidStream(t *testing.T) {
	e := newEnv(t, false)
	d := genDataset(t, e.cfg, 2000, 2)
	chunks := d.chunks()
	insertSpeed(t, e.db, d)
	runA := writeRun(t, e.store, e.cfg, d, "run-a", map[int32]int64{0: 2, 1: 3})
	runB := writeRun(t, e.store, e.cfg, d, "run-b", map[int32]int64{0: chunks[0] - 1, 1: chunks[1]})
	publishManifest(t, e.store, runA)
	waitRun(t, e.url, "run-a")

	c := qcase{gran: "1h", groupBy: []string{"country"}, measures: []string{"views", "revenue", "min_latency", "max_latency"}, from: base, to: base.Add(4 * time.Hour)}
	want := c.truth(d, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var seen sync.Map
	var queries atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a := query(t, e.url, c.params())
				checkAnswer(t, a.Rows, want, c.groupBy, c.measureList())
				seen.Store(*a.Freshness.BatchRun, true)
				queries.Add(1)
			}
		}()
	}
	for i := 0; ctx.Err() == nil; i++ {
		m := runA
		if i%2 == 0 {
			m = runB
		}
		publishManifest(t, e.store, m)
		time.Sleep(150 * time.Millisecond)
	}
	wg.Wait()
	_, sawA := seen.Load("run-a")
	_, sawB := seen.Load("run-b")
	require.True(t, sawA && sawB, "queries saw both runs")
	t.Logf("%d queries across switches, all exact", queries.Load())
}

// TestSwitchWarmsCache: serving loads the new run's row groups before it
// switches to it, so the first query after a batch run reads nothing from
// S3 (no cache miss) and is exact.
func TestSwitchWarmsCache(t *testing.T) {
	e := newEnv(t, false)
	d := genDataset(t, e.cfg, 2000, 2)
	chunks := d.chunks()
	insertSpeed(t, e.db, d)
	publishManifest(t, e.store, writeRun(t, e.store, e.cfg, d, "run-a", map[int32]int64{0: 2, 1: 3}))
	waitRun(t, e.url, "run-a")
	publishManifest(t, e.store, writeRun(t, e.store, e.cfg, d, "run-b", map[int32]int64{0: chunks[0] - 1, 1: chunks[1]}))
	waitRun(t, e.url, "run-b")

	misses := func() float64 {
		for _, line := range strings.Split(metricsText(t, e.url), "\n") {
			if v, ok := strings.CutPrefix(line, "tandem_serve_cache_misses_total "); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				return f
			}
		}
		t.Fatal("no tandem_serve_cache_misses_total")
		return 0
	}
	before := misses()
	c := qcase{gran: "1h", groupBy: []string{"country"}, measures: []string{"views", "revenue", "min_latency", "max_latency"}, from: base, to: base.Add(4 * time.Hour)}
	a := query(t, e.url, c.params())
	checkAnswer(t, a.Rows, c.truth(d, nil), c.groupBy, c.measureList())
	require.Equal(t, before, misses(), "the first query after the switch found every row group in the cache")
}

// TestS3Down: without the manifest store a query cannot know which chunks
// the batch absorbed, so it fails with 503 and a clear error, and /readyz
// says why.
func TestS3Down(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	s3srv, store, _, db := newBackends(t, cfg, true)
	d := genDataset(t, cfg, 500, 3)
	insertSpeed(t, db, d)
	publish(t, store, cfg, d, "run-1", map[int32]int64{0: 1, 1: 1})
	s3srv.Stop()
	_, url, _ := startService(t, cfg)
	code, hdr, body := get(t, queryURL(url, qcase{from: base, to: base.Add(time.Hour)}.params()), nil)
	require.Equal(t, http.StatusServiceUnavailable, code, "%s", body)
	require.Contains(t, string(body), "manifest of view pageviews_by_country")
	require.NotEmpty(t, hdr.Get("Retry-After"))
	code, _, body = get(t, url+"/readyz", nil)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, string(body), "manifest")

	s3srv.Start()
	require.Eventually(t, func() bool {
		code, _, _ := get(t, url+"/readyz", nil)
		return code == http.StatusOK
	}, 20*time.Second, 100*time.Millisecond)
	c := qcase{gran: "1h", groupBy: []string{"device"}, from: base, to: base.Add(4 * time.Hour)}
	checkAnswer(t, query(t, url, c.params()).Rows, c.truth(d, nil), c.groupBy, allMeasures)
}

// TestTokens: with auth.query_tokens set, the query endpoints need one of
// them; failures are counted by endpoint and tokens never reach the logs.
func TestTokens(t *testing.T) {
	const secret, other = "s3cr3t-query-token-aaaa", "second-token-bbbb"
	cfg := loadConfig(t, configYAML(t)+"\nauth: { query_tokens: [\""+secret+"\", \""+other+"\"] }\n")
	_, store, _, db := newBackends(t, cfg, false)
	d := genDataset(t, cfg, 300, 4)
	insertSpeed(t, db, d)
	publish(t, store, cfg, d, "run-1", map[int32]int64{0: 1})
	_, url, logs := startService(t, cfg)
	q := queryURL(url, qcase{from: base, to: base.Add(4 * time.Hour), gran: "all"}.params())

	for _, h := range []map[string]string{
		nil,
		{"Authorization": "Bearer wrong"},
		{"Authorization": "Bearer " + secret + "x"},
		{"Authorization": "Bearer " + secret[:len(secret)-1]},
		{"Authorization": "Basic " + secret},
		{"Authorization": secret},
		{"Authorization": "Bearer "},
	} {
		code, hdr, body := get(t, q, h)
		require.Equal(t, http.StatusUnauthorized, code, "%v", h)
		require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer")
		require.Contains(t, string(body), `"error"`)
	}
	code, _, _ := get(t, url+"/v1/views", map[string]string{"Authorization": "Bearer nope"})
	require.Equal(t, http.StatusUnauthorized, code)

	// The scheme is case-insensitive (RFC 7235), as at ingest and /v1/status.
	for _, tok := range []string{"Bearer " + secret, "Bearer " + other, "bearer " + secret, "BEARER " + other} {
		code, _, body := get(t, q, map[string]string{"Authorization": tok})
		require.Equal(t, http.StatusOK, code, "%s", body)
		code, _, _ = get(t, url+"/v1/views", map[string]string{"Authorization": tok})
		require.Equal(t, http.StatusOK, code)
	}
	// Operators' endpoints stay open for probes and scrapers.
	code, _, _ = get(t, url+"/healthz", nil)
	require.Equal(t, http.StatusOK, code)
	m := metricsText(t, url)
	require.Contains(t, m, `tandem_serve_auth_failures_total{endpoint="query"} 7`)
	require.Contains(t, m, `tandem_serve_auth_failures_total{endpoint="views"} 1`)
	require.NotContains(t, logs.String(), secret[:10])
	require.NotContains(t, logs.String(), other[:10])
}
