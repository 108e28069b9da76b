package serving

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// testConfig is the example configuration on a small scale (as the
// external tests' configYAML) plus a second, coarser view.
func testConfig(t testing.TB) *schemas.Config {
	t.Helper()
	yaml := testenv.ExampleConfigYAML(t,
		`serve:      { listen: "127.0.0.1:8081" }`, `serve:      { listen: "127.0.0.1:0", max_query_range: 30d, manifest_poll: 100ms }`,
		"chunk_size: 10000", "chunk_size: 100",
		"partitions: 6", "partitions: 2") + `
  - name: pageviews_5m
    stream: pageviews
    granularity: 5m
    dimensions: [device]
    measures:
      - { name: views, type: count }
  - name: pageviews_1h
    stream: pageviews
    granularity: 1h
    dimensions: [device]
    measures:
      - { name: views, type: count }
`
	cfg, err := schemas.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

func TestParseQueryValid(t *testing.T) {
	cfg := testConfig(t)
	v := cfg.View("pageviews_by_country")
	q, err := ParseQuery(v, "from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z", 0)
	require.NoError(t, err)
	require.Equal(t, v.Granularity, q.Granularity)
	require.Empty(t, q.GroupBy)
	require.Equal(t, []int{0, 1, 2, 3, 4, 5}, q.Measures)
	require.Equal(t, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), q.From)

	q, err = ParseQuery(v, url.Values{
		"from": {"2026-11-25T01:00:00+01:00"}, "to": {"2026-11-25T12:00:00.5Z"},
		"granularity": {"90m"}, "group_by": {"device,country"},
		"filter":   {"country:US", "country:DE", "device:mobile", "country:a:b"},
		"measures": {"users,views"},
	}.Encode(), 0)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), q.From, "from is converted to UTC")
	require.Equal(t, schemas.Granularity(90*time.Minute), q.Granularity)
	require.Equal(t, []int{1, 0}, q.GroupBy)
	require.Equal(t, map[string]bool{"US": true, "DE": true, "a:b": true}, q.Filters[0].Is, "a value may contain ':'")
	require.Equal(t, map[string]bool{"mobile": true}, q.Filters[1].Is)
	require.Equal(t, []int{4, 0}, q.Measures)
	require.Equal(t, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixMilli()+500, q.ToMs())

	q, err = ParseQuery(v, "from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z&granularity=all&filter=country:", 0)
	require.NoError(t, err)
	require.True(t, q.All())
	require.Equal(t, "all", q.GranularityName())
	require.Equal(t, map[string]bool{"": true}, q.Filters[0].Is, "filter=country: matches a missing country")

	// The filter operators and having.
	q, err = ParseQuery(v, url.Values{
		"from": {"2026-11-25T00:00:00Z"}, "to": {"2026-11-26T00:00:00Z"},
		"filter": {"country!:US", "country!:", "country^:D", "country!^:DX", "device^:mob", "device:tablet", "device!:mobile-x"},
		"having": {"views>=10", "latency.p99<250.5", "users!=-3", "revenue=1e3"},
	}.Encode(), 0)
	require.NoError(t, err)
	require.Equal(t, &DimFilter{Not: map[string]bool{"US": true, "": true}, Prefixes: []string{"D"}, NotPrefixes: []string{"DX"}}, q.Filters[0])
	require.Equal(t, &DimFilter{Is: map[string]bool{"tablet": true}, Prefixes: []string{"mob"}, Not: map[string]bool{"mobile-x": true}}, q.Filters[1])
	for s, want := range map[string]bool{"DE": true, "D": true, "DX": false, "DXY": false, "US": false, "": false, "FR": false} {
		require.Equal(t, want, q.Filters[0].Accept(s), "country %q", s)
	}
	for s, want := range map[string]bool{"mobile": true, "mob": true, "tablet": true, "mobile-x": false, "desktop": false} {
		require.Equal(t, want, q.Filters[1].Accept(s), "device %q", s)
	}
	require.Equal(t, []Having{{Measure: 0, Part: -1, Op: ">=", Number: 10}, {Measure: 5, Part: 2, Op: "<", Number: 250.5},
		{Measure: 4, Part: -1, Op: "!=", Number: -3}, {Measure: 1, Part: -1, Op: "=", Number: 1000}}, q.Having)
	require.True(t, q.Cut(), "having cuts the answer")

	// tz: local buckets where the view's windows tile them.
	v1h := cfg.View("pageviews_1h")
	for _, tc := range []struct {
		view       *schemas.View
		tz, gran   string
		local, loc bool
	}{
		{v1h, "Europe/Amsterdam", "1d", true, true},
		{v1h, "America/New_York", "1h", true, true},
		{v1h, "Asia/Kolkata", "all", false, true},                      // one bucket: nothing to align
		{v, "Asia/Kolkata", "1d", true, true},                          // 1m windows tile +05:30 days
		{v, "UTC", "1d", false, false},                                 // the epoch-aligned buckets
		{cfg.View("pageviews_5m"), "Asia/Kathmandu", "1h", true, true}, // +05:45 on 5m windows
	} {
		q, err := ParseQuery(tc.view, "from=2026-03-28T00:00:00Z&to=2026-04-01T00:00:00Z&tz="+tc.tz+"&granularity="+tc.gran, 0)
		require.NoError(t, err, "%s %s", tc.tz, tc.gran)
		require.Equal(t, tc.local, q.Local != nil, "%s %s", tc.tz, tc.gran)
		require.Equal(t, tc.loc, q.Loc != nil, "%s %s", tc.tz, tc.gran)
	}

	// Sub-millisecond bounds round up: a window start w is in the query
	// exactly when w >= from and w < to.
	q, err = ParseQuery(v, "from=2026-11-25T00:00:00.0000001Z&to=2026-11-25T00:01:00.0000001Z", 0)
	require.NoError(t, err)
	base := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC).UnixMilli()
	require.Equal(t, base+1, q.FromMs())
	require.Equal(t, base+60001, q.ToMs())
}

// TestParseQueryErrors holds every way a query's parameters can be wrong.
func TestParseQueryErrors(t *testing.T) {
	cfg := testConfig(t)
	v := cfg.View("pageviews_by_country")
	v5 := cfg.View("pageviews_5m")
	const ok = "from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z"
	cases := []struct {
		name, raw, want string
		view            *schemas.View
	}{
		{"missing from", "to=2026-11-26T00:00:00Z", `"from" is required`, v},
		{"missing to", "from=2026-11-26T00:00:00Z", `"to" is required`, v},
		{"bad date", "from=2026-11-25&to=2026-11-26T00:00:00Z", "not an RFC 3339", v},
		{"bad month", "from=2026-13-25T00:00:00Z&to=2026-11-26T00:00:00Z", "not an RFC 3339", v},
		{"epoch number", "from=1700000000&to=2026-11-26T00:00:00Z", "not an RFC 3339", v},
		{"before 1970", "from=1969-12-31T00:00:00Z&to=2026-11-26T00:00:00Z", "outside", v},
		{"from equals to", "from=2026-11-25T00:00:00Z&to=2026-11-25T00:00:00Z", "must be before", v},
		{"from after to", "from=2026-11-26T00:00:00Z&to=2026-11-25T00:00:00Z", "must be before", v},
		{"range too long", "from=2026-01-01T00:00:00Z&to=2026-11-26T00:00:00Z", "max_query_range", v},
		{"granularity not a multiple", ok + "&granularity=7m", "not a multiple", v5},
		{"granularity smaller", ok + "&granularity=1m", "not a multiple", v5},
		{"granularity unit", ok + "&granularity=1s", "granularity", v},
		{"granularity junk", ok + "&granularity=hourly", "granularity", v},
		{"granularity zero", ok + "&granularity=0m", "granularity", v},
		{"granularity negative", ok + "&granularity=-1h", "granularity", v},
		{"granularity ALL", ok + "&granularity=ALL", "granularity", v},
		{"granularity that would wrap around", ok + "&granularity=9999999d", "longer than the longest granularity, 36500d", v},
		{"unknown group_by", ok + "&group_by=city", `no dimension "city"`, v},
		{"group_by twice in list", ok + "&group_by=country,country", "twice", v},
		{"group_by empty item", ok + "&group_by=country,", "empty dimension", v},
		{"group_by a measure", ok + "&group_by=views", `no dimension "views"`, v},
		{"filter without colon", ok + "&filter=country", "dimension:value", v},
		{"filter unknown dim", ok + "&filter=city:Paris", `no dimension "city"`, v},
		{"unknown measure", ok + "&measures=views,clicks", `no measure "clicks"`, v},
		{"measure twice", ok + "&measures=views,views", "twice", v},
		{"measure a dimension", ok + "&measures=country", `no measure "country"`, v},
		{"repeated from", ok + "&from=2026-11-25T01:00:00Z", `"from" is given 2 times`, v},
		{"repeated granularity", ok + "&granularity=1h&granularity=1h", "given 2 times", v},
		{"repeated group_by", ok + "&group_by=country&group_by=device", "given 2 times", v},
		{"repeated measures", ok + "&measures=views&measures=users", "given 2 times", v},
		{"empty param", ok + "&group_by=", "is empty", v},
		{"unknown param", ok + "&groupby=country", `unknown parameter "groupby"`, v},
		{"malformed escape", ok + "&filter=country:%zz", "malformed", v},
		{"semicolon", ok + ";group_by=country", "malformed", v},
		{"absurd value", ok + "&filter=country:" + strings.Repeat("x", 5000), "limit", v},
		{"absurd query", ok + strings.Repeat("&filter=country:x", 1200), "limit", v},
		{"too many filters", ok + strings.Repeat("&filter=country:x", 300), "limit", v},
		{"filter unknown operator", ok + "&filter=country*:US", `no dimension "country*"`, v},
		{"filter operator twice", ok + "&filter=country!!:US", `"!!" is no operator`, v},
		{"filter empty prefix", ok + "&filter=country^:", "prefix after country^: is empty", v},
		{"filter empty not prefix", ok + "&filter=country!^:", "is empty", v},
		{"filter operator alone", ok + "&filter=!:US", `no dimension ""`, v},
		{"having no operator", ok + "&having=views", "want <measure><op><number>", v},
		{"having no measure", ok + "&having=>3", "want <measure><op><number>", v},
		{"having unknown measure", ok + "&having=clicks>3", `no measure "clicks"`, v},
		{"having not asked", ok + "&measures=views&having=users>3", "not among the measures asked for", v},
		{"having no number", ok + "&having=views>", "not a finite number", v},
		{"having junk number", ok + "&having=views>ten", "not a finite number", v},
		{"having NaN", ok + "&having=views>NaN", "not a finite number", v},
		{"having infinite", ok + "&having=views<Inf", "not a finite number", v},
		{"having double operator", ok + "&having=views>>3", "not a finite number", v},
		{"having quantiles whole", ok + "&having=latency>3", "name one quantile", v},
		{"too many having", ok + strings.Repeat("&having=views>1", 17), "17 having parameters; the limit is 16", v},
		{"order_by unknown measure", ok + "&order_by=clicks", `no measure "clicks"`, v},
		{"order_by not asked", ok + "&measures=views&order_by=revenue", "not among the measures asked for", v},
		{"order_by bad direction", ok + "&order_by=views:down", "desc or asc", v},
		{"order_by quantiles whole", ok + "&order_by=latency", "name one quantile", v},
		{"order_by bad quantile", ok + "&order_by=latency.p95", "want p50, p90 or p99", v},
		{"order_by part of a count", ok + "&order_by=views.p99", "has no parts", v},
		{"order_by twice", ok + "&order_by=views&order_by=users", "given 2 times", v},
		{"limit zero", ok + "&limit=0", "from 1 to", v},
		{"limit negative", ok + "&limit=-3", "from 1 to", v},
		{"limit junk", ok + "&limit=ten", "from 1 to", v},
		{"limit huge", ok + "&limit=99999999999999999999", "from 1 to", v},
	}
	v1h := cfg.View("pageviews_1h")
	cases = append(cases, []struct {
		name, raw, want string
		view            *schemas.View
	}{
		{"tz unknown", ok + "&tz=Mars/Olympus", "not a time zone of the IANA database", v},
		{"tz path", ok + "&tz=../../etc/passwd", "not a time zone", v},
		{"tz Local", ok + "&tz=Local", "server's", v},
		{"tz uneven granularity", ok + "&tz=Europe/Amsterdam&granularity=7m", "granularity 7m with tz Europe/Amsterdam: local-time buckets need a granularity that divides a day", v},
		{"tz 36h", ok + "&tz=Europe/Amsterdam&granularity=36h", "divides a day", v},
		{"tz half-hour offset on a 1h view", ok + "&tz=Asia/Kolkata&granularity=1d", "tz Asia/Kolkata: the UTC offset +05:30 puts 1d bucket boundaries inside view pageviews_1h's 1h windows", v1h},
		{"tz 45-minute offset on a 1h view, hours", ok + "&tz=Asia/Kathmandu&granularity=2h", "the UTC offset +05:45 puts 2h bucket boundaries inside view pageviews_1h's 1h windows", v1h},
		{"tz twice", ok + "&tz=UTC&tz=UTC", "given 2 times", v},
		{"tz over centuries", "from=1970-01-01T00:00:00Z&to=9000-01-01T00:00:00Z&granularity=1d&tz=Europe/Amsterdam", "crosses more than 400 clock changes, the most local buckets take", v},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			maxRange := 30 * 24 * time.Hour
			if strings.HasPrefix(tc.name, "tz over") {
				maxRange = 0 // the pieces' bound, not the range's
			}
			_, err := ParseQuery(tc.view, tc.raw, maxRange)
			require.Error(t, err)
			var pe *ParamError
			require.True(t, errors.As(err, &pe), "want a *ParamError, got %T", err)
			require.Contains(t, err.Error(), tc.want)
			require.Less(t, len(err.Error()), 400, "error messages stay short even for absurd input")
		})
	}
}

func TestNegotiate(t *testing.T) {
	for accept, want := range map[string]string{
		"":                                    ContentJSON,
		"*/*":                                 ContentJSON,
		"application/json":                    ContentJSON,
		"text/csv":                            ContentCSV,
		"text/csv;q=0.5, application/json":    ContentJSON,
		"application/vnd.apache.arrow.stream": ContentArrow,
		"text/html, application/vnd.apache.arrow.stream;q=0.9": ContentArrow,
		"garbage;;;": ContentJSON,
	} {
		require.Equal(t, want, negotiate(accept), "Accept: %q", accept)
	}
}

func TestLRU(t *testing.T) {
	c := newLRU(100)
	evicted := 0
	c.onEvict = func(int64) { evicted++ }
	c.put("a", 1, 40)
	c.put("b", 2, 40)
	_, ok := c.get("a") // a is now the most recently used
	require.True(t, ok)
	c.put("c", 3, 40) // evicts b
	_, ok = c.get("b")
	require.False(t, ok)
	v, ok := c.get("a")
	require.True(t, ok)
	require.Equal(t, 1, v)
	c.put("huge", 4, 101) // larger than the capacity: not cached, nothing evicted
	_, ok = c.get("huge")
	require.False(t, ok)
	used, n := c.usage()
	require.Equal(t, int64(80), used)
	require.Equal(t, 2, n)
	require.Equal(t, 1, evicted)
	c.put("a", 5, 60) // replacing an entry frees its old size first
	used, _ = c.usage()
	require.LessOrEqual(t, used, int64(100))
}

// TestCSVTextEscapesFormulas: a dimension value a spreadsheet would run as
// a formula is written as text.
func TestCSVTextEscapesFormulas(t *testing.T) {
	for in, want := range map[string]string{
		`=HYPERLINK("http://x","y")`: `'=HYPERLINK("http://x","y")`,
		"+1":                         "'+1", "-2+3": "'-2+3", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\rx": "'\rx",
		"": "", "US": "US", "a=b": "a=b", "'quoted": "'quoted",
	} {
		require.Equal(t, want, csvText(in), "%q", in)
	}
}
