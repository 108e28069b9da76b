package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/serving"
)

// fuzzConfig is the example configuration's stream and view.
func fuzzConfig(t testing.TB) *config.Config {
	t.Helper()
	yaml := testenv.ExampleConfigYAML(t, "max_body_bytes: 8388608", "max_body_bytes: 65536, max_inflight_bytes: 1048576")
	cfg, err := config.Parse("fuzz.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// FuzzParseQuery feeds arbitrary query strings to serving.ParseQuery. It
// must never panic; every refusal is a *serving.ParamError with a short,
// valid-UTF-8 message; every accepted query refers only to the view's own
// dimensions and measures, has from < to within the range limit and a
// granularity that is "all" or a multiple of the view's; and the query
// written back canonically (filters with their operators, having,
// order_by, limit, tz) parses to the same query.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z",
		"from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z&granularity=1h&group_by=country,device&filter=country:US&filter=country:DE&filter=device:&measures=views,latency",
		"from=2026-11-25T00:00:00.123456789%2B02:00&to=2026-11-26T00:00:00Z&granularity=all",
		"from=1970-01-01T00:00:00Z&to=9999-01-01T00:00:00Z&granularity=1d",
		"from=x&to=y&granularity=1m'--&group_by=country;DROP",
		"filter=country:%00&filter=:&from=%ff",
		"from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z&group_by=country,country",
		"measures=views,,revenue&from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z",
		"%zz=1&;&&=",
		"from=2026-10-24T00:00:00Z&to=2026-10-27T00:00:00Z&granularity=1d&tz=Europe/Amsterdam&group_by=country&filter=country!:US&filter=country^:D&filter=device!^:mob&having=views>=10&having=latency.p99<250&order_by=revenue:asc&limit=3",
		"from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z&granularity=6h&tz=Asia/Kolkata&having=users!=-1e3&order_by=latency.p50",
	} {
		f.Add(s)
	}
	v := fuzzConfig(f).View("pageviews_by_country")
	const maxRange = 400 * 24 * time.Hour
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := serving.ParseQuery(v, raw, maxRange)
		if err != nil {
			var pe *serving.ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a ParamError", err, err)
			}
			if !utf8.ValidString(pe.Msg) || len(pe.Msg) > 1024 {
				t.Fatalf("error message is %d bytes or not UTF-8: %q", len(pe.Msg), pe.Msg)
			}
			return
		}
		if q.View != v || !q.From.Before(q.To) || q.To.Sub(q.From) > maxRange {
			t.Fatalf("accepted a bad range: %v – %v", q.From, q.To)
		}
		if q.Granularity != 0 && (q.Granularity <= 0 || q.Granularity.D()%v.Granularity.D() != 0) {
			t.Fatalf("accepted granularity %v", q.Granularity)
		}
		seen := map[int]bool{}
		for _, i := range q.GroupBy {
			if i < 0 || i >= len(v.Dimensions) || seen[i] {
				t.Fatalf("group-by index %d (of %v)", i, q.GroupBy)
			}
			seen[i] = true
		}
		seen = map[int]bool{}
		for _, i := range q.Measures {
			if i < 0 || i >= len(v.Measures) || seen[i] {
				t.Fatalf("measure index %d (of %v)", i, q.Measures)
			}
			seen[i] = true
		}
		if len(q.Measures) == 0 || len(q.Filters) != len(v.Dimensions) {
			t.Fatalf("no measures or a filter per dimension missing: %+v", q)
		}

		// Written back canonically, it parses to the same query.
		c := url.Values{}
		c.Set("from", q.From.Format(time.RFC3339Nano))
		c.Set("to", q.To.Format(time.RFC3339Nano))
		c.Set("granularity", q.GranularityName())
		var names []string
		for _, i := range q.GroupBy {
			names = append(names, v.Dimensions[i])
		}
		if len(names) > 0 {
			c.Set("group_by", strings.Join(names, ","))
		}
		names = nil
		for _, i := range q.Measures {
			names = append(names, v.Measures[i].Name)
		}
		c.Set("measures", strings.Join(names, ","))
		for i, f := range q.Filters {
			if f == nil {
				continue
			}
			d := v.Dimensions[i]
			for val := range f.Is {
				c.Add("filter", d+":"+val)
			}
			for _, p := range f.Prefixes {
				c.Add("filter", d+"^:"+p)
			}
			for val := range f.Not {
				c.Add("filter", d+"!:"+val)
			}
			for _, p := range f.NotPrefixes {
				c.Add("filter", d+"!^:"+p)
			}
		}
		ref := func(j, part int) string {
			name := v.Measures[q.Measures[j]].Name
			if part >= 0 {
				name += "." + []string{"p50", "p90", "p99"}[part]
			}
			return name
		}
		for _, h := range q.Having {
			c.Add("having", ref(h.Measure, h.Part)+h.Op+strconv.FormatFloat(h.Number, 'g', -1, 64))
		}
		if ob := q.OrderBy; ob != nil {
			dir := ":asc"
			if ob.Desc {
				dir = ":desc"
			}
			c.Set("order_by", ref(ob.Measure, ob.Part)+dir)
		}
		if q.Limit > 0 {
			c.Set("limit", strconv.Itoa(q.Limit))
		}
		if q.Loc != nil {
			c.Set("tz", q.Loc.String())
		}
		q2, err := serving.ParseQuery(v, c.Encode(), maxRange)
		if err != nil {
			t.Fatalf("the canonical form %q of an accepted query is refused: %v", c.Encode(), err)
		}
		if !q2.From.Equal(q.From) || !q2.To.Equal(q.To) || q2.Granularity != q.Granularity ||
			!equalInts(q2.GroupBy, q.GroupBy) || !equalInts(q2.Measures, q.Measures) || !reflect.DeepEqual(q2.Filters, q.Filters) ||
			!reflect.DeepEqual(q2.Having, q.Having) || !reflect.DeepEqual(q2.OrderBy, q.OrderBy) || q2.Limit != q.Limit ||
			(q2.Loc == nil) != (q.Loc == nil) || (q.Loc != nil && q2.Loc.String() != q.Loc.String()) || !reflect.DeepEqual(q2.Local, q.Local) {
			t.Fatalf("round trip changed the query:\n%+v\n%+v", q, q2)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// memLog is an in-memory ingest.Log for fuzzing the gateway's handler.
type memLog struct {
	mu           sync.Mutex
	keys, values [][]byte
}

func (m *memLog) Append(_ context.Context, _ string, _ time.Time, _ map[string]string, keys, values [][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys = append(m.keys, keys...)
	m.values = append(m.values, values...)
	return nil
}

func (m *memLog) Ready() error { return nil }

// FuzzGatewayBody posts arbitrary bodies to the gateway's events endpoint
// (NDJSON or a JSON array). It must never panic; it answers 200, 400, 413
// or 415 with its JSON response; on 200, accepted + rejected is the number
// of events in the body (counted here independently: non-blank lines, or
// the elements encoding/json finds in the array), the accepted events are
// exactly what reached the log, each valid JSON keyed by its own event_id,
// and the listed errors point at distinct events in ascending order.
func FuzzGatewayBody(f *testing.F) {
	ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	for _, s := range []string{
		`{"event_id":"a","ts":"` + ts + `","country":"US"}` + "\n" + `{"event_id":"b","ts":1700000000000}`,
		`[{"event_id":"a","ts":"` + ts + `"}, {"event_id":"b"}, 7, "x", [1,2]]`,
		`{"event_id":"a","ts":"` + ts + `"}`,
		"\n\n  \n",
		`[]`,
		`[{"event_id":"a,b]","ts":"` + ts + `","x":"\"]}"}]`,
		"{\"event_id\":\"\xff\",\"ts\":\"" + ts + "\"}",
		`{"event_id":"n","ts":"` + ts + `","amount":1e400}`,
		`[[[[[[[[[[]]]]]]]]]]`,
	} {
		f.Add(true, []byte(s))
		f.Add(false, []byte(s))
	}
	cfg := fuzzConfig(f)
	f.Fuzz(func(t *testing.T, ndjson bool, body []byte) {
		log := &memLog{}
		gw, err := ingest.New(cfg.Ingest, ingest.Deps{Schema: cfg.Config, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		ctype := "application/json"
		if ndjson {
			ctype = "application/x-ndjson"
		}
		req := httptest.NewRequest(http.MethodPost, "/v1/streams/pageviews/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		rw := httptest.NewRecorder()
		gw.Handler().ServeHTTP(rw, req)
		var resp ingest.Response
		if err := json.Unmarshal(rw.Body.Bytes(), &resp); err != nil {
			t.Fatalf("status %d with a body that is not the gateway's JSON: %v: %q", rw.Code, err, rw.Body.String())
		}
		switch rw.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			if resp.Error == "" || len(log.values) > 0 {
				t.Fatalf("status %d without an error sentence or with events in the log: %+v", rw.Code, resp)
			}
			if rw.Code == http.StatusBadRequest && ndjson {
				t.Fatalf("NDJSON is read line by line; a whole-body 400 is wrong: %s", resp.Error)
			}
			return
		default:
			t.Fatalf("status %d: %s", rw.Code, rw.Body.String())
		}

		// Count the events independently.
		var n int
		if ndjson {
			for _, line := range bytes.Split(body, []byte("\n")) {
				if len(bytes.TrimSpace(line)) > 0 {
					n++
				}
			}
		} else {
			trimmed := bytes.TrimSpace(body)
			if len(trimmed) > 0 && trimmed[0] == '{' {
				n = 1
			} else {
				var elems []json.RawMessage
				if err := json.Unmarshal(body, &elems); err != nil {
					t.Fatalf("200 for a body encoding/json cannot read as an array: %v", err)
				}
				n = len(elems)
			}
		}
		if resp.Accepted+resp.Rejected != n {
			t.Fatalf("accepted %d + rejected %d, but the body holds %d events", resp.Accepted, resp.Rejected, n)
		}
		if resp.Accepted != len(log.values) {
			t.Fatalf("accepted %d, but %d events reached the log", resp.Accepted, len(log.values))
		}
		if len(resp.Errors) > ingest.MaxErrors || len(resp.Errors) > resp.Rejected || (resp.Rejected > 0 && len(resp.Errors) == 0) {
			t.Fatalf("%d errors listed for %d rejected", len(resp.Errors), resp.Rejected)
		}
		for i, e := range resp.Errors {
			if e.Index < 0 || e.Index >= n || (i > 0 && e.Index <= resp.Errors[i-1].Index) || e.Error == "" {
				t.Fatalf("error %d: %+v (of %d events)", i, e, n)
			}
		}
		for i, v := range log.values {
			var m map[string]any
			if err := json.Unmarshal(v, &m); err != nil {
				t.Fatalf("accepted event %q is not a JSON object: %v", v, err)
			}
			// (encoding/json replaces invalid UTF-8, so compare only valid text.)
			if id, _ := m["event_id"].(string); id == "" || utf8.Valid(v) && !bytes.Equal(log.keys[i], []byte(id)) {
				t.Fatalf("accepted event %q has key %q", v, log.keys[i])
			}
		}
	})
}
