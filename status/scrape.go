package status

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tandem-analytics/tandem/schemas"
)

// scrape is one reading of a component's /metrics.
type scrape struct {
	at   time.Time
	fams map[string]*dto.MetricFamily
}

// target is one long-running component to read.
type target struct {
	name   string
	addr   string // host:port
	https  bool
	caFile string // trusted in addition to the system roots (a self-signed cert)
	token  string // sent on /metrics when auth.metrics_tokens is set
	local  prometheus.Gatherer
}

// baseURL is how to reach the target; an unspecified listen host
// (":8080", "0.0.0.0:8080") is reached on loopback.
func (t target) baseURL() string {
	host, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		host, port = t.addr, ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if t.https {
		scheme = "https"
	}
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// httpClientFor returns a client that trusts t's own certificate file when
// it serves HTTPS: status usually runs next to the component with the same
// configuration, so a self-signed certificate needs no extra setup.
func httpClientFor(t target, base *http.Client, timeout time.Duration) *http.Client {
	if base != nil {
		return base
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true, ResponseHeaderTimeout: timeout}
	if t.https {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if t.caFile != "" {
			if pem, err := os.ReadFile(t.caFile); err == nil {
				pool.AppendCertsFromPEM(pem)
			}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// read scrapes t's /metrics and asks its /readyz. ready is "" when ready,
// else the component's reason.
func read(ctx context.Context, t target, client *http.Client, now time.Time) (s *scrape, ready string, err error) {
	if t.local != nil {
		fams, err := t.local.Gather()
		if err != nil {
			return nil, "", fmt.Errorf("reading its registry: %w", err)
		}
		s = &scrape{at: now, fams: map[string]*dto.MetricFamily{}}
		for _, f := range fams {
			s.fams[f.GetName()] = f
		}
		return s, "", nil
	}
	base := t.baseURL()
	body, code, err := get(ctx, client, base+"/metrics", t.token)
	if err != nil {
		return nil, "", err
	}
	if code != http.StatusOK {
		return nil, "", fmt.Errorf("GET /metrics answered %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, "", fmt.Errorf("parsing /metrics: %w", err)
	}
	s = &scrape{at: now, fams: fams}
	rb, code, err := get(ctx, client, base+"/readyz", "")
	switch {
	case err != nil:
		ready = "GET /readyz: " + err.Error()
	case code != http.StatusOK:
		ready = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(rb)), "not ready:"))
		if ready == "" {
			ready = fmt.Sprintf("/readyz answered %d", code)
		}
	}
	return s, ready, nil
}

func get(ctx context.Context, client *http.Client, url, token string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return b, resp.StatusCode, err
}

// labels of one metric as a map.
func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return math.NaN()
}

// has reports whether the scrape holds the family.
func (s *scrape) has(name schemas.Metric) bool {
	if s == nil {
		return false
	}
	_, ok := s.fams[string(name)]
	return ok
}

// sum adds the values of name's series that match (nil matches all). NaN
// values (a gauge with nothing to say yet) are skipped.
func (s *scrape) sum(name schemas.Metric, match func(map[string]string) bool) float64 {
	if s == nil {
		return 0
	}
	f := s.fams[string(name)]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, m := range f.GetMetric() {
		if match != nil && !match(labels(m)) {
			continue
		}
		if v := value(m); !math.IsNaN(v) {
			total += v
		}
	}
	return total
}

// max is the largest value of name's series (NaN when none).
func (s *scrape) max(name schemas.Metric) float64 {
	out := math.NaN()
	if s == nil || s.fams[string(name)] == nil {
		return out
	}
	for _, m := range s.fams[string(name)].GetMetric() {
		if v := value(m); !math.IsNaN(v) && (math.IsNaN(out) || v > out) {
			out = v
		}
	}
	return out
}

// by sums name's series grouped by the values of one label.
func (s *scrape) by(name schemas.Metric, label string) map[string]float64 {
	out := map[string]float64{}
	if s == nil || s.fams[string(name)] == nil {
		return out
	}
	for _, m := range s.fams[string(name)].GetMetric() {
		if v := value(m); !math.IsNaN(v) {
			out[labels(m)[label]] += v
		}
	}
	return out
}

// series returns every series of name with its labels.
func (s *scrape) series(name schemas.Metric) []labeled {
	if s == nil || s.fams[string(name)] == nil {
		return nil
	}
	var out []labeled
	for _, m := range s.fams[string(name)].GetMetric() {
		out = append(out, labeled{labels(m), value(m)})
	}
	return out
}

type labeled struct {
	labels map[string]string
	value  float64
}

// histogram is a cumulative histogram summed over series.
type histogram struct {
	bounds []float64 // upper bounds, ascending, +Inf last
	counts []float64 // cumulative counts per bound
	count  float64
	sum    float64
}

// hist sums name's histogram series that match (nil matches all).
func (s *scrape) hist(name schemas.Metric, match func(map[string]string) bool) *histogram {
	if s == nil || s.fams[string(name)] == nil {
		return nil
	}
	h := &histogram{}
	idx := map[float64]int{}
	for _, m := range s.fams[string(name)].GetMetric() {
		if m.Histogram == nil || (match != nil && !match(labels(m))) {
			continue
		}
		hm := m.GetHistogram()
		h.count += float64(hm.GetSampleCount())
		h.sum += hm.GetSampleSum()
		for _, b := range hm.GetBucket() {
			i, ok := idx[b.GetUpperBound()]
			if !ok {
				i = len(h.bounds)
				idx[b.GetUpperBound()] = i
				h.bounds = append(h.bounds, b.GetUpperBound())
				h.counts = append(h.counts, 0)
			}
			h.counts[i] += float64(b.GetCumulativeCount())
		}
	}
	// Text exposition may leave the +Inf bucket implicit: it is the count.
	if _, ok := idx[math.Inf(1)]; !ok {
		h.bounds = append(h.bounds, math.Inf(1))
		h.counts = append(h.counts, h.count)
	}
	order := make([]int, len(h.bounds))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return h.bounds[order[a]] < h.bounds[order[b]] })
	bs, cs := make([]float64, len(order)), make([]float64, len(order))
	for i, j := range order {
		bs[i], cs[i] = h.bounds[j], h.counts[j]
	}
	h.bounds, h.counts = bs, cs
	return h
}

// minus is h - prev: the observations between two scrapes. A reset (a
// count going down: the component restarted) makes it h itself.
func (h *histogram) minus(prev *histogram) *histogram {
	if h == nil || prev == nil || prev.count > h.count || len(prev.bounds) != len(h.bounds) {
		return h
	}
	d := &histogram{bounds: h.bounds, counts: make([]float64, len(h.counts)), count: h.count - prev.count, sum: h.sum - prev.sum}
	for i := range h.counts {
		d.counts[i] = h.counts[i] - prev.counts[i]
	}
	return d
}

// quantile estimates the q-quantile the way Prometheus' histogram_quantile
// does: linear within the bucket holding the rank; NaN without samples.
func (h *histogram) quantile(q float64) float64 {
	if h == nil || h.count <= 0 {
		return math.NaN()
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, ub := range h.bounds {
		c := h.counts[i]
		if c >= rank {
			if math.IsInf(ub, 1) {
				return lower // past the last finite bound: its bound is the best estimate
			}
			if c == below {
				return ub
			}
			return lower + (ub-lower)*(rank-below)/(c-below)
		}
		lower, below = ub, c
	}
	return lower
}

// mean is sum/count; NaN without samples.
func (h *histogram) mean() float64 {
	if h == nil || h.count <= 0 {
		return math.NaN()
	}
	return h.sum / h.count
}
