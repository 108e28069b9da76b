// Package status is tandem's health report (docs/status.md): the questions
// an operator asks after the platform has run for hours, each answered with
// a measured value, a threshold and a green/yellow/red verdict.
//
// It is the operator surface and knows no other layer's internals: it reads
// the running components' /metrics and /readyz over HTTP (at the listen
// addresses of the configuration) and the state the layers leave in the
// stores — Kafka high-water marks, the archiver's progress objects and the
// batch manifests in S3, speed rows and system.parts in ClickHouse.
// `tandem status`, serve's GET /v1/status and the web dashboard all use
// Gather / Monitor.Gather.
//
// Rates (events/s, errors per minute, latency percentiles) are computed
// between two scrapes: a Monitor remembers its previous scrape of each
// component and uses it when it is recent; otherwise it scrapes twice,
// Options.Interval apart. Ratios fall back to the counters since the
// component started when nothing happened between the scrapes.
//
// Every check has a name (ingest.reject_ratio, speed.freshness_seconds, …)
// and a default threshold; `status.thresholds.<name>: {yellow, red}` in the
// configuration overrides it. A value at or over yellow is yellow, at or
// over red is red. DefaultThresholds lists them all; docs/status.md
// explains each.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/schemas"
)

// Verdict is the colour of one answer.
type Verdict string

// Verdicts, from good to bad. Unknown marks a check whose source did not
// answer: the source's own check is red, so unknown adds no colour.
const (
	Green   Verdict = "green"
	Yellow  Verdict = "yellow"
	Red     Verdict = "red"
	Unknown Verdict = "unknown"
)

func (v Verdict) rank() int {
	switch v {
	case Yellow:
		return 1
	case Red:
		return 2
	}
	return 0
}

// worse returns the worse of two verdicts.
func worse(a, b Verdict) Verdict {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// Threshold is a yellow/red pair. A bound of +Inf is "never" (JSON: null).
type Threshold struct {
	Yellow float64 `yaml:"yellow"`
	Red    float64 `yaml:"red"`
}

// MarshalJSON writes {"yellow": y, "red": r} with null for an infinite bound.
func (t Threshold) MarshalJSON() ([]byte, error) {
	f := func(v float64) any {
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return nil
		}
		return v
	}
	return json.Marshal(map[string]any{"yellow": f(t.Yellow), "red": f(t.Red)})
}

// UnmarshalJSON reads what MarshalJSON writes (null: never).
func (t *Threshold) UnmarshalJSON(b []byte) error {
	var raw struct{ Yellow, Red *float64 }
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	t.Yellow, t.Red = never, never
	if raw.Yellow != nil {
		t.Yellow = *raw.Yellow
	}
	if raw.Red != nil {
		t.Red = *raw.Red
	}
	return nil
}

// Judge gives value's verdict.
func (t Threshold) Judge(value float64) Verdict {
	switch {
	case value >= t.Red:
		return Red
	case value >= t.Yellow:
		return Yellow
	}
	return Green
}

// Check is one answer of the report.
type Check struct {
	// Area groups checks: components, stores, ingestion, processing,
	// storage, batch, serving, security.
	Area string `json:"area"`
	// Name is the check's stable name, also its key in status.thresholds.
	Name     string `json:"name"`
	Question string `json:"question"`
	// Value is the measurement in Unit; null when it could not be measured
	// (Detail says why).
	Value   *float64 `json:"value"`
	Unit    string   `json:"unit"`
	Display string   `json:"display"`
	// Threshold is absent for informational checks (always green).
	Threshold *Threshold `json:"threshold,omitempty"`
	Verdict   Verdict    `json:"verdict"`
	Detail    string     `json:"detail,omitempty"`
	// Source says where the value came from.
	Source string `json:"source,omitempty"`
}

// Component is what one long-running component answered.
type Component struct {
	Name      string  `json:"name"`
	Addr      string  `json:"addr"`
	Reachable bool    `json:"reachable"`
	Ready     bool    `json:"ready"`
	Error     string  `json:"error,omitempty"`
	Uptime    float64 `json:"uptime_seconds,omitempty"`
}

// PartitionLag is the position of each consumer on one partition.
// Offsets are "next offset"; -1 means unknown.
type PartitionLag struct {
	Stream    string `json:"stream"`
	Partition int32  `json:"partition"`
	HighWater int64  `json:"high_water"`
	// SpeedNext is one past the highest offset folded into speed rows.
	SpeedNext int64 `json:"speed_next"`
	SpeedLag  int64 `json:"speed_lag"`
	// ArchiveNext is the archiver's published progress.
	ArchiveNext int64 `json:"archive_next"`
	ArchiveLag  int64 `json:"archive_lag"`
	// Absorbed is the smallest absorbed offset over the stream's views.
	Absorbed   int64 `json:"absorbed"`
	Unabsorbed int64 `json:"unabsorbed"`
}

// Report is the health report.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	Verdict     Verdict   `json:"verdict"`
	// Window is the time between the two scrapes rates were computed over.
	Window     float64        `json:"window_seconds"`
	Components []Component    `json:"components"`
	Checks     []Check        `json:"checks"`
	Partitions []PartitionLag `json:"partitions"`
}

// Check returns the named check, or nil.
func (r *Report) Check(name string) *Check {
	for i := range r.Checks {
		if r.Checks[i].Name == name {
			return &r.Checks[i]
		}
	}
	return nil
}

// Red reports whether anything in the report is red.
func (r *Report) Red() bool { return r.Verdict == Red }

// Deps are what a Monitor reads besides its own section. Schema is
// required (streams, views and the connections to the stores).
type Deps struct {
	Schema *schemas.Config
	// Deployment says where the components listen and the intervals some
	// thresholds follow.
	Deployment Deployment
	// Local reads a component's metrics from an in-process registry instead
	// of over HTTP (serve reports on itself this way).
	Local map[string]prometheus.Gatherer
	// Skip leaves components out (not deployed).
	Skip []string
	// HTTPClient is used for every scrape (default: one per component that
	// trusts the component's own TLS certificate file).
	HTTPClient *http.Client
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Components are the long-running components a report reads, in order.
var Components = []string{"ingest", "speed", "archive", "serve"}

// Monitor gathers reports and remembers its previous scrapes, so repeated
// calls (the dashboard polling /v1/status) compute rates between calls
// without waiting. It is safe for concurrent use; concurrent calls within a
// second share one report.
type Monitor struct {
	cfg    *schemas.Config
	conf   Config
	opts   Deps
	th     map[CheckName]Threshold
	stores *stores

	mu   sync.Mutex
	prev map[string]*scrape
	last *Report
}

// New returns a Monitor. It does no I/O.
func New(cfg Config, deps Deps) (*Monitor, error) {
	if deps.Schema == nil {
		return nil, errors.New("status: Deps need the Schema")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.MaxBaseline <= 0 {
		cfg.MaxBaseline = 2 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	return &Monitor{cfg: deps.Schema, conf: cfg, opts: deps, th: Thresholds(cfg, deps.Deployment), prev: map[string]*scrape{},
		stores: &stores{cfg: deps.Schema, timeout: cfg.Timeout}}, nil
}

// Close releases the store connections.
func (m *Monitor) Close() error {
	m.stores.close()
	return nil
}

// Gather reads everything once and returns the report: a one-shot
// Monitor (two scrapes 2 s apart unless cfg says otherwise).
func Gather(ctx context.Context, cfg Config, deps Deps) (Report, error) {
	m, err := New(cfg, deps)
	if err != nil {
		return Report{}, err
	}
	defer m.Close()
	return m.Gather(ctx), nil
}

func (m *Monitor) targets() []target {
	skip := map[string]bool{}
	for _, s := range m.opts.Skip {
		skip[s] = true
	}
	var out []target
	for _, name := range Components {
		if skip[name] {
			continue
		}
		t := target{name: name, local: m.opts.Local[name]}
		if len(m.cfg.Auth.MetricsTokens) > 0 {
			t.token = m.cfg.Auth.MetricsTokens[0]
		}
		e := m.opts.Deployment.Endpoints[name]
		t.addr, t.https, t.caFile = e.Listen, e.TLS.Enabled(), e.TLS.CertFile
		if a, ok := m.conf.Addrs[name]; ok {
			t.addr = a
		}
		out = append(out, t)
	}
	return out
}

type reading struct {
	t         target
	cur, prev *scrape
	ready     string
	err       error
}

// Gather reads the components and stores and judges every check.
func (m *Monitor) Gather(ctx context.Context) Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	if m.last != nil && now.Sub(m.last.GeneratedAt) < time.Second {
		return *m.last
	}
	targets := m.targets()
	readings := make([]*reading, len(targets))
	var st *storeState
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st = m.stores.read(ctx) }()
	// First pass: components without a recent baseline get one now.
	need := false
	for i, t := range targets {
		readings[i] = &reading{t: t}
		if p := m.prev[t.name]; p != nil && now.Sub(p.at) <= m.conf.MaxBaseline && now.Sub(p.at) >= 500*time.Millisecond {
			readings[i].prev = p
		} else {
			need = true
		}
	}
	if need {
		m.scrapeAll(ctx, readings, true)
		select {
		case <-ctx.Done():
		case <-time.After(m.conf.Interval):
		}
	}
	m.scrapeAll(ctx, readings, false)
	wg.Wait()
	for _, r := range readings {
		if r.cur != nil {
			m.prev[r.t.name] = r.cur
		} else {
			delete(m.prev, r.t.name)
		}
	}
	rep := m.judge(m.opts.Now(), readings, st)
	m.last = &rep
	return rep
}

// scrapeAll reads every target in parallel; first fills prev of the
// readings that lack a baseline, otherwise cur of all.
func (m *Monitor) scrapeAll(ctx context.Context, rs []*reading, first bool) {
	var wg sync.WaitGroup
	for _, r := range rs {
		if first && r.prev != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, m.conf.Timeout)
			defer cancel()
			client := httpClientFor(r.t, m.opts.HTTPClient, m.conf.Timeout)
			s, ready, err := read(cctx, r.t, client, m.opts.Now())
			if first {
				r.prev = s
				return
			}
			r.cur, r.ready, r.err = s, ready, err
		}()
	}
	wg.Wait()
}

// --- judging ---------------------------------------------------------------

// judge turns the readings into checks.
func (m *Monitor) judge(now time.Time, rs []*reading, st *storeState) Report {
	rep := Report{GeneratedAt: now.UTC(), Verdict: Green}
	by := map[string]*reading{}
	for _, r := range rs {
		by[r.t.name] = r
	}
	j := &judgement{m: m, now: now, rep: &rep, by: by, st: st}
	j.components()
	j.stores()
	j.ingestion()
	j.processing()
	j.storage()
	j.batch()
	j.serving()
	j.security()
	for _, c := range rep.Checks {
		rep.Verdict = worse(rep.Verdict, c.Verdict)
	}
	for _, r := range rs {
		if r.cur != nil && r.prev != nil && r.cur.at.After(r.prev.at) {
			rep.Window = math.Max(rep.Window, r.cur.at.Sub(r.prev.at).Seconds())
		}
	}
	return rep
}

type judgement struct {
	m   *Monitor
	now time.Time
	rep *Report
	by  map[string]*reading
	st  *storeState
}

// add appends a check, judging value against the named threshold (none:
// informational). A NaN value is "not measured": unknown when the source
// is down (why != ""), else green with the detail.
func (j *judgement) add(name CheckName, value float64, detail, source string) *Check {
	spec := checkSpecs[name]
	unit := spec.unit
	c := Check{Area: spec.area, Name: string(name), Question: spec.question, Unit: unit, Detail: detail, Source: source, Verdict: Green}
	th, ok := j.m.th[name]
	if ok {
		t := th
		c.Threshold = &t
	}
	if math.IsNaN(value) {
		c.Display = "—"
	} else {
		v := value
		c.Value = &v
		c.Display = format(value, unit)
		if ok {
			c.Verdict = th.Judge(value)
		}
	}
	j.rep.Checks = append(j.rep.Checks, c)
	return &j.rep.Checks[len(j.rep.Checks)-1]
}

// down adds a check whose source did not answer.
func (j *judgement) down(name CheckName, why string) {
	c := j.add(name, math.NaN(), why, "")
	c.Verdict = Unknown
}

// comp returns the reading of a component that answered, or nil.
func (j *judgement) comp(name string) *reading {
	r := j.by[name]
	if r == nil || r.cur == nil {
		return nil
	}
	return r
}

func (j *judgement) unreachable(name string) string {
	r := j.by[name]
	if r == nil {
		return name + " is not monitored"
	}
	return fmt.Sprintf("%s: not reachable at %s", name, r.t.addr)
}

// window is the seconds between the two scrapes of r (0 without baseline).
func (r *reading) window() float64 {
	if r.prev == nil || !r.cur.at.After(r.prev.at) {
		return 0
	}
	return r.cur.at.Sub(r.prev.at).Seconds()
}

// delta is the increase of a counter sum between the scrapes (the value
// since start when there is no baseline or the component restarted).
func (r *reading) delta(name schemas.Metric, match func(map[string]string) bool) float64 {
	cur := r.cur.sum(name, match)
	if r.prev == nil {
		return cur
	}
	prev := r.prev.sum(name, match)
	if prev > cur {
		return cur
	}
	return cur - prev
}

// rate is the per-second increase of a counter between the scrapes; NaN
// without a baseline.
func (r *reading) rate(name schemas.Metric, match func(map[string]string) bool) float64 {
	w := r.window()
	if w <= 0 {
		return math.NaN()
	}
	return r.delta(name, match) / w
}

// minRatioSamples is the smallest denominator a ratio over the window is
// computed from; below it one odd event would swing the verdict, so the
// counters since start answer instead.
const minRatioSamples = 100

// ratio is num/den over the window; when too little happened in the window,
// over the counters since start (sinceStart true). NaN when den is 0 both ways.
func (r *reading) ratio(num, den func(s *scrape) float64) (v float64, sinceStart bool) {
	if r.prev != nil {
		dn, dd := num(r.cur)-num(r.prev), den(r.cur)-den(r.prev)
		if dd >= minRatioSamples && dn >= 0 {
			return dn / dd, false
		}
	}
	n, d := num(r.cur), den(r.cur)
	if d <= 0 {
		return math.NaN(), true
	}
	return n / d, true
}

// histWindow is the histogram of the observations between the scrapes, or
// since start when none happened in the window.
func (r *reading) histWindow(name schemas.Metric, match func(map[string]string) bool) (h *histogram, sinceStart bool) {
	cur := r.cur.hist(name, match)
	if cur == nil {
		return nil, false
	}
	var prev *histogram
	if r.prev != nil {
		prev = r.prev.hist(name, match)
	}
	d := cur.minus(prev)
	if d.count > 0 || prev == nil {
		return d, prev == nil
	}
	return cur, true
}

func windowNote(sinceStart bool) string {
	if sinceStart {
		return "since the component started (too little in the last window)"
	}
	return ""
}

func labelIs(name, val string) func(map[string]string) bool {
	return func(l map[string]string) bool { return l[name] == val }
}

// byLabelDelta is the per-label-value increase of a counter over the window.
func (r *reading) byLabelDelta(name schemas.Metric, label string) map[string]float64 {
	cur := r.cur.by(name, label)
	if r.prev == nil {
		return cur
	}
	prev := r.prev.by(name, label)
	out := map[string]float64{}
	for k, v := range cur {
		if d := v - prev[k]; d > 0 && prev[k] <= v {
			out[k] = d
		} else if prev[k] > v {
			out[k] = v
		}
	}
	return out
}

func joinCounts(m map[string]float64, unit string) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(a, b int) bool { return m[keys[a]] > m[keys[b]] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		if k == "" {
			k = "(none)"
		}
		parts[i] = fmt.Sprintf("%s %s", k, trimFloat(m[k]))
	}
	if len(parts) == 0 {
		return ""
	}
	return unit + strings.Join(parts, ", ")
}

// format writes a value with its unit for people.
func format(v float64, unit string) string {
	switch unit {
	case "seconds":
		return formatSeconds(v)
	case "ratio":
		return fmt.Sprintf("%.2f%%", v*100)
	case "bytes":
		return formatBytes(v)
	case "bytes/s":
		return formatBytes(v) + "/s"
	case "":
		return trimFloat(v)
	}
	return trimFloat(v) + " " + unit
}

func trimFloat(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func formatSeconds(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0s"
	case a < 1e-3:
		return fmt.Sprintf("%.0fµs", v*1e6)
	case a < 1:
		return fmt.Sprintf("%.1fms", v*1e3)
	case a < 120:
		return fmt.Sprintf("%.1fs", v)
	case a < 7200:
		return fmt.Sprintf("%.1fm", v/60)
	case a < 3*86400:
		return fmt.Sprintf("%.1fh", v/3600)
	}
	return fmt.Sprintf("%.1fd", v/86400)
}

func formatBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
