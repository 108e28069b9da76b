package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// event is what the test knows of one accepted valid event, parsed from
// its JSON with encoding/json, independently of tandem's decoder.
type event struct {
	ID      string
	TimeMs  int64
	Country string // "" when absent: a missing dimension groups as ""
	Device  string
	User    *string
	Amount  *float64
	Latency *float64
}

// parseEvent reads one event the way tandem.example.yaml defines the stream: ts is
// an RFC 3339 string or epoch milliseconds; optional fields may be absent.
func parseEvent(raw []byte) (event, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return event{}, err
	}
	var ev event
	id, ok := m["event_id"].(string)
	if !ok || id == "" {
		return event{}, fmt.Errorf("event without event_id: %s", raw)
	}
	ev.ID = id
	switch ts := m["ts"].(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return event{}, fmt.Errorf("event %s: ts %q: %v", id, ts, err)
		}
		ev.TimeMs = t.UnixMilli()
	case json.Number:
		n, err := ts.Int64()
		if err != nil {
			return event{}, fmt.Errorf("event %s: ts %q: %v", id, ts, err)
		}
		ev.TimeMs = n
	default:
		return event{}, fmt.Errorf("event %s: ts is %T", id, m["ts"])
	}
	ev.Country, _ = m["country"].(string)
	ev.Device, _ = m["device"].(string)
	if u, ok := m["user_id"].(string); ok {
		ev.User = &u
	}
	num := func(name string) (*float64, error) {
		n, ok := m[name].(json.Number)
		if !ok {
			return nil, nil
		}
		f, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("event %s: %s %q: %v", id, name, n, err)
		}
		return &f, nil
	}
	var err error
	if ev.Amount, err = num("amount"); err != nil {
		return event{}, err
	}
	if ev.Latency, err = num("latency_ms"); err != nil {
		return event{}, err
	}
	return ev, nil
}

// readTruthFile reads a truth file of `tandem gen` and returns the events
// deduplicated by id, keeping the first.
func readTruthFile(path string) ([]event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []event
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var line struct {
			Event json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("truth file %s: %v", path, err)
		}
		ev, err := parseEvent(line.Event)
		if err != nil {
			return nil, err
		}
		if seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		out = append(out, ev)
	}
	return out, sc.Err()
}

// query is one query of the REST API.
type query struct {
	from, to    time.Time
	granularity string   // "" (the view's), "1h", "all", …
	groupBy     []string // dimensions
	filters     []string // "dim:value"
}

func (q query) values() url.Values {
	v := url.Values{}
	v.Set("from", q.from.UTC().Format(time.RFC3339))
	v.Set("to", q.to.UTC().Format(time.RFC3339))
	if q.granularity != "" {
		v.Set("granularity", q.granularity)
	}
	if len(q.groupBy) > 0 {
		v.Set("group_by", strings.Join(q.groupBy, ","))
	}
	for _, f := range q.filters {
		v.Add("filter", f)
	}
	return v
}

func (q query) String() string { return q.values().Encode() }

// truthRow is the expected answer for one row, in plain values.
type truthRow struct {
	count     int64
	sum       float64
	min, max  *float64
	users     map[string]bool
	latencies []float64
}

// totalLatency is the truth of a total_latency measure (sum of latency_ms).
func (r *truthRow) totalLatency() float64 {
	var s float64
	for _, l := range r.latencies {
		s += l
	}
	return s
}

// rowKey identifies a row of an answer: its window start and group-by
// values joined by "|".
type rowKey struct {
	windowMs int64
	dims     string
}

func (k rowKey) String() string {
	return fmt.Sprintf("%s [%s]", time.UnixMilli(k.windowMs).UTC().Format(time.RFC3339), k.dims)
}

func dimValue(ev *event, dim string) string {
	switch dim {
	case "country":
		return ev.Country
	case "device":
		return ev.Device
	}
	panic("unknown dimension " + dim)
}

// expect computes the answer to q from events: the window of an event is
// its time floored to the view's granularity (1m); it is in the query when
// that window starts in [from, to); rows roll up to q's granularity.
func expect(events []event, q query) map[rowKey]*truthRow {
	const viewGran = int64(time.Minute / time.Millisecond)
	var gran int64
	switch q.granularity {
	case "", "1m":
		gran = viewGran
	case "all":
		gran = 0
	default:
		d, err := time.ParseDuration(q.granularity)
		if err != nil {
			panic(err)
		}
		gran = d.Milliseconds()
	}
	filters := map[string]map[string]bool{}
	for _, f := range q.filters {
		dim, val, _ := strings.Cut(f, ":")
		if filters[dim] == nil {
			filters[dim] = map[string]bool{}
		}
		filters[dim][val] = true
	}
	from, to := q.from.UnixMilli(), q.to.UnixMilli()
	out := map[rowKey]*truthRow{}
	for i := range events {
		ev := &events[i]
		w := floorDiv(ev.TimeMs, viewGran) * viewGran
		if w < from || w >= to {
			continue
		}
		ok := true
		for dim, vals := range filters {
			if !vals[dimValue(ev, dim)] {
				ok = false
			}
		}
		if !ok {
			continue
		}
		k := rowKey{windowMs: from}
		if gran > 0 {
			k.windowMs = floorDiv(ev.TimeMs, gran) * gran
		}
		dims := make([]string, len(q.groupBy))
		for j, d := range q.groupBy {
			dims[j] = dimValue(ev, d)
		}
		k.dims = strings.Join(dims, "|")
		r := out[k]
		if r == nil {
			r = &truthRow{users: map[string]bool{}}
			out[k] = r
		}
		r.count++
		if ev.Amount != nil {
			r.sum += *ev.Amount
		}
		if ev.Latency != nil {
			v := *ev.Latency
			if r.min == nil || v < *r.min {
				mn := v
				r.min = &mn
			}
			if r.max == nil || v > *r.max {
				mx := v
				r.max = &mx
			}
			r.latencies = append(r.latencies, v)
		}
		if ev.User != nil {
			r.users[*ev.User] = true
		}
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// answer is the JSON answer of GET /v1/views/{view}/query.
type answer struct {
	View        string `json:"view"`
	Granularity string `json:"granularity"`
	Rows        []struct {
		WindowStart time.Time                  `json:"window_start"`
		Dimensions  map[string]string          `json:"dimensions"`
		Measures    map[string]json.RawMessage `json:"measures"`
	} `json:"rows"`
	Freshness struct {
		BatchRun          *string          `json:"batch_run"`
		Absorbed          map[string]int64 `json:"batch_absorbed_offsets"`
		SpeedMaxEventTime *time.Time       `json:"speed_max_event_time"`
	} `json:"freshness"`
	Warnings []string `json:"warnings"`
}

// gotRow is one row of an answer, decoded.
type gotRow struct {
	count     int64
	sum       float64
	min, max  *float64
	users     uint64
	quantiles *struct{ P50, P90, P99 float64 }
}

// rows decodes the answer's rows by key for q's group-by.
func (a *answer) rows(q query) (map[rowKey]*gotRow, error) {
	out := map[rowKey]*gotRow{}
	for _, r := range a.Rows {
		dims := make([]string, len(q.groupBy))
		for j, d := range q.groupBy {
			v, ok := r.Dimensions[d]
			if !ok {
				return nil, fmt.Errorf("row at %s lacks dimension %q", r.WindowStart, d)
			}
			dims[j] = v
		}
		if len(r.Dimensions) != len(q.groupBy) {
			return nil, fmt.Errorf("row at %s has dimensions %v; asked for %v", r.WindowStart, r.Dimensions, q.groupBy)
		}
		k := rowKey{windowMs: r.WindowStart.UnixMilli(), dims: strings.Join(dims, "|")}
		if out[k] != nil {
			return nil, fmt.Errorf("row %s appears twice", k)
		}
		g := &gotRow{}
		m := r.Measures
		if err := json.Unmarshal(m["views"], &g.count); err != nil {
			return nil, fmt.Errorf("row %s: views %s: %v", k, m["views"], err)
		}
		if err := json.Unmarshal(m["revenue"], &g.sum); err != nil {
			return nil, fmt.Errorf("row %s: revenue %s: %v", k, m["revenue"], err)
		}
		if err := json.Unmarshal(m["min_latency"], &g.min); err != nil {
			return nil, fmt.Errorf("row %s: min_latency: %v", k, err)
		}
		if err := json.Unmarshal(m["max_latency"], &g.max); err != nil {
			return nil, fmt.Errorf("row %s: max_latency: %v", k, err)
		}
		if err := json.Unmarshal(m["users"], &g.users); err != nil {
			return nil, fmt.Errorf("row %s: users %s: %v", k, m["users"], err)
		}
		if err := json.Unmarshal(m["latency"], &g.quantiles); err != nil {
			return nil, fmt.Errorf("row %s: latency %s: %v", k, m["latency"], err)
		}
		out[k] = g
	}
	return out, nil
}

// diff lists every difference between an answer and the truth: rows
// missing or extra, count/min/max not equal, sum beyond 1e-9 relative,
// distinct and quantiles outside the sketches' stated bounds.
func diff(want map[rowKey]*truthRow, got map[rowKey]*gotRow) []string {
	var out []string
	keys := make([]rowKey, 0, len(want)+len(got))
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if want[k] == nil {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].windowMs != keys[j].windowMs {
			return keys[i].windowMs < keys[j].windowMs
		}
		return keys[i].dims < keys[j].dims
	})
	for _, k := range keys {
		w, g := want[k], got[k]
		switch {
		case g == nil:
			out = append(out, fmt.Sprintf("%s: missing (want count %d)", k, w.count))
			continue
		case w == nil:
			out = append(out, fmt.Sprintf("%s: unexpected row (count %d)", k, g.count))
			continue
		}
		if g.count != w.count {
			out = append(out, fmt.Sprintf("%s: count %d, want %d", k, g.count, w.count))
		}
		if !closeRel(g.sum, w.sum, 1e-9) {
			out = append(out, fmt.Sprintf("%s: sum %v, want %v", k, g.sum, w.sum))
		}
		if !eqPtr(g.min, w.min) || !eqPtr(g.max, w.max) {
			out = append(out, fmt.Sprintf("%s: min/max %s/%s, want %s/%s", k, show(g.min), show(g.max), show(w.min), show(w.max)))
		}
		if n := float64(len(w.users)); math.Abs(float64(g.users)-n) > schemas.DistinctBound(n) {
			out = append(out, fmt.Sprintf("%s: distinct users %d, want %d within %.1f", k, g.users, len(w.users), schemas.DistinctBound(n)))
		}
		out = append(out, diffQuantiles(k, w.latencies, g.quantiles)...)
	}
	return out
}

// diffQuantiles checks p50/p90/p99 against the sorted values: DDSketch
// answers the value at rank q·(n-1) within QuantileRelativeAccuracy, so
// the answer must lie within that accuracy of the values at the two ranks
// around q·(n-1).
func diffQuantiles(k rowKey, vals []float64, got *struct{ P50, P90, P99 float64 }) []string {
	if len(vals) == 0 {
		if got != nil {
			return []string{fmt.Sprintf("%s: quantiles %+v, want null (no latency values)", k, *got)}
		}
		return nil
	}
	if got == nil {
		return []string{fmt.Sprintf("%s: quantiles null, want values of %d latencies", k, len(vals))}
	}
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	var out []string
	for _, c := range []struct {
		q   float64
		got float64
	}{{0.5, got.P50}, {0.9, got.P90}, {0.99, got.P99}} {
		r := c.q * float64(len(s)-1)
		lo, hi := s[int(math.Floor(r))], s[min(len(s)-1, int(math.Floor(r))+1)]
		a := schemas.QuantileRelativeAccuracy
		if c.got < lo*(1-a)-1e-9 || c.got > hi*(1+a)+1e-9 {
			out = append(out, fmt.Sprintf("%s: p%g %v, want within %g%% of [%v, %v] (n=%d)", k, c.q*100, c.got, a*100, lo, hi, len(s)))
		}
	}
	return out
}

func closeRel(a, b, rel float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))
}

func eqPtr(a, b *float64) bool { return (a == nil && b == nil) || (a != nil && b != nil && *a == *b) }

func show(p *float64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}
