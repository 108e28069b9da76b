package serving

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// Limits on what one query may ask for. They bound the work and memory of a
// request before any storage is touched, and keep error messages short.
const (
	maxRawQuery     = 16 << 10 // bytes of the whole query string
	maxParamValue   = 2048     // bytes of one parameter value
	maxFilters      = 256      // filter= parameters in one query
	maxFilterValues = 4096     // distinct values across all filters
)

// Query is a validated request for one view: every field refers to the
// view's own definition, so nothing in it comes from the client unchecked.
type Query struct {
	View *schemas.View
	// From and To bound the window starts: From <= window_start < To.
	From, To time.Time
	// Granularity is the bucket size the rows are rolled up to; 0 means
	// "all" (one bucket per group, reported at From).
	Granularity schemas.Granularity
	// Loc is the time zone of tz=; nil for UTC. Local, set with Loc and a
	// granularity other than "all", places the buckets in local time; nil
	// means buckets aligned to the Unix epoch.
	Loc   *time.Location
	Local *schemas.LocalBuckets
	// GroupBy lists positions in View.Dimensions, in the order asked.
	GroupBy []int
	// Filters, per position in View.Dimensions, what the dimension's value
	// must be; nil where the dimension is not filtered. Dimensions are
	// ANDed.
	Filters []*DimFilter
	// Having keeps only the groups whose merged measures pass every
	// threshold (ANDed), before OrderBy and Limit.
	Having []Having
	// Measures lists positions in View.Measures, in the order asked.
	Measures []int
	// MaxRows is the most answer rows (buckets × groups) the query may
	// produce; 0 means no limit. A Merger stops taking new groups past it
	// and reports the overflow, so the answer is refused, never cut short.
	// Service.Query sets it from serve.max_result_rows.
	MaxRows int
	// OrderBy, when set, sorts each bucket's groups by one asked measure
	// (ties by the group-by values); nil sorts them by the group-by values.
	OrderBy *OrderBy
	// Limit keeps at most this many groups per bucket (per query with
	// granularity "all"), the first in OrderBy's order; 0 keeps all.
	Limit int
	// MaxGroups is the most groups the merge may hold when the answer is
	// cut (Limit or Having) before it is served; MaxRows then bounds the
	// answer after the cut. 0 means MaxRows bounds the merge too. Service.
	// Query sets it from serve.max_merge_groups.
	MaxGroups int
	// only, when set, restricts the merge to these groups (pushTopN's
	// second pass: the sketches of the groups ClickHouse chose).
	only map[groupKey]bool
}

// OrderBy names the measure the groups of a bucket are sorted by.
type OrderBy struct {
	// Measure is a position in Query.Measures.
	Measure int
	// Part picks a quantile (0 p50, 1 p90, 2 p99) of a quantiles measure;
	// -1 for the other types.
	Part int
	// Desc sorts the largest first (the default of order_by).
	Desc bool
}

// Cut reports whether the answer is cut after merging (limit or having),
// so that the merge may hold more groups than the answer.
func (q *Query) Cut() bool { return q.Limit > 0 || len(q.Having) > 0 }

// DimFilter is what one dimension's value must be: one of Is or starting
// with one of Prefixes (when either is set; the positive terms are ORed),
// and none of Not nor starting with any of NotPrefixes.
type DimFilter struct {
	Is          map[string]bool
	Prefixes    []string
	Not         map[string]bool
	NotPrefixes []string
}

// Accept reports whether a dimension value passes f.
func (f *DimFilter) Accept(s string) bool {
	if f.Not[s] {
		return false
	}
	for _, p := range f.NotPrefixes {
		if strings.HasPrefix(s, p) {
			return false
		}
	}
	if len(f.Is) == 0 && len(f.Prefixes) == 0 {
		return true
	}
	if f.Is[s] {
		return true
	}
	for _, p := range f.Prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Having is one threshold on a merged measure: Value Op Number.
type Having struct {
	// Measure is a position in Query.Measures; Part a quantile (0 p50, 1
	// p90, 2 p99) or -1.
	Measure, Part int
	Op            string // one of havingOps
	Number        float64
}

// havingOps are the comparisons of having=, longest first so that ">="
// is not read as ">" followed by "=5".
var havingOps = []string{">=", "<=", "!=", ">", "<", "="}

// pass reports whether a measure's value k passes h. A group without a
// value (null) passes no threshold, "!=" included.
func (h *Having) pass(k sortKey) bool {
	if k.null {
		return false
	}
	x := k.f
	switch h.Op {
	case ">=":
		return x >= h.Number
	case "<=":
		return x <= h.Number
	case "!=":
		return x != h.Number
	case ">":
		return x > h.Number
	case "<":
		return x < h.Number
	}
	return x == h.Number
}

// mergeBound is the most groups a Merger of q holds; 0 is no bound.
func (q *Query) mergeBound() int {
	if q.Cut() && q.MaxGroups > 0 {
		return q.MaxGroups
	}
	return q.MaxRows
}

// TooManyRowsError is returned when an answer would hold more than
// serve.max_result_rows rows, or (Merge) a cut query would merge more than
// serve.max_merge_groups groups before the cut. The HTTP layer answers 400
// with its message.
type TooManyRowsError struct {
	Limit int
	Merge bool
}

func (e *TooManyRowsError) Error() string {
	if e.Merge {
		return fmt.Sprintf("the query would merge more than %d groups before limit or having cuts them (serve.max_merge_groups); narrow the query: "+
			"a coarser granularity, fewer group_by dimensions, a filter, or a shorter from/to range", e.Limit)
	}
	return fmt.Sprintf("the answer would hold more than %d rows (serve.max_result_rows); narrow the query: "+
		"a coarser granularity, fewer group_by dimensions, a filter, a limit, or a shorter from/to range", e.Limit)
}

// RetentionError is returned for a query whose from is before the view's
// retained start: views[].retention dropped those days, so no exact answer
// exists for them. The HTTP layer answers 400 with its message and
// RetainedFrom as retained_from (docs/api.md).
type RetentionError struct {
	View string
	// RetainedFrom is the first instant the view answers (a UTC midnight).
	RetainedFrom time.Time
}

func (e *RetentionError) Error() string {
	return fmt.Sprintf("from is before %s, the start of what view %s keeps (views[].retention); ask from %s or later",
		e.RetainedFrom.UTC().Format(time.RFC3339), e.View, e.RetainedFrom.UTC().Format(time.RFC3339))
}

// All reports whether the query rolls everything up into one bucket per group.
func (q *Query) All() bool { return q.Granularity == 0 }

// GranularityName is the granularity as the response states it.
func (q *Query) GranularityName() string {
	if q.All() {
		return "all"
	}
	return q.Granularity.String()
}

// FromMs and ToMs are the bounds as Unix milliseconds such that a window
// start w (whole milliseconds) is in the query exactly when FromMs <= w < ToMs.
func (q *Query) FromMs() int64 { return ceilMs(q.From) }

// ToMs: see FromMs.
func (q *Query) ToMs() int64 { return ceilMs(q.To) }

func ceilMs(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// ParamError is a client mistake in the request; the HTTP layer answers 400
// with its message.
type ParamError struct{ Msg string }

func (e *ParamError) Error() string { return e.Msg }

func paramErrorf(format string, args ...any) error {
	return &ParamError{Msg: fmt.Sprintf(format, args...)}
}

var queryParams = map[string]bool{"from": true, "to": true, "granularity": true, "group_by": true, "filter": true, "measures": true,
	"order_by": true, "limit": true, "having": true, "tz": true}

// maxHaving bounds having= parameters in one query.
const maxHaving = 16

// maxLimit bounds limit=; serve.max_result_rows bounds the answer anyway.
const maxLimit = 1 << 30

// ParseQuery validates the parameters of GET /v1/views/{view}/query against
// the view's definition. maxRange bounds To-From (0 = no bound). Every
// failure is a *ParamError.
func ParseQuery(v *schemas.View, rawQuery string, maxRange time.Duration) (*Query, error) {
	if len(rawQuery) > maxRawQuery {
		return nil, paramErrorf("query string is %d bytes; the limit is %d", len(rawQuery), maxRawQuery)
	}
	vals, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, paramErrorf("query string is malformed: %v", err)
	}
	for name, vs := range vals {
		if !queryParams[name] {
			return nil, paramErrorf("unknown parameter %q (known: %s)", clip(name), strings.Join(QueryParameters(), ", "))
		}
		if name != "filter" && name != "having" && len(vs) > 1 {
			return nil, paramErrorf("parameter %q is given %d times; give it once", name, len(vs))
		}
		for _, s := range vs {
			if len(s) > maxParamValue {
				return nil, paramErrorf("parameter %q is %d bytes long; the limit is %d", name, len(s), maxParamValue)
			}
			if s == "" {
				return nil, paramErrorf("parameter %q is empty; leave it out to get the default", name)
			}
		}
	}
	q := &Query{View: v, Granularity: v.Granularity, Filters: make([]*DimFilter, len(v.Dimensions))}

	if q.From, err = parseTime(vals, "from"); err != nil {
		return nil, err
	}
	if q.To, err = parseTime(vals, "to"); err != nil {
		return nil, err
	}
	if !q.From.Before(q.To) {
		return nil, paramErrorf("from (%s) must be before to (%s)", q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
	}
	if maxRange > 0 && q.To.Sub(q.From) > maxRange {
		return nil, paramErrorf("the range from %s to %s is %s long; the limit (serve.max_query_range) is %s",
			q.From.Format(time.RFC3339), q.To.Format(time.RFC3339), q.To.Sub(q.From), maxRange)
	}

	if s := vals.Get("granularity"); s != "" {
		if s == "all" {
			q.Granularity = 0
		} else {
			g, err := schemas.ParseGranularity(s)
			if errors.Is(err, schemas.ErrGranularityTooLong) {
				return nil, paramErrorf("granularity %q is %v", clip(s), schemas.ErrGranularityTooLong)
			}
			if err != nil {
				return nil, paramErrorf("granularity %q: want \"all\" or a whole number of minutes, hours or days such as 5m, 1h or 1d", clip(s))
			}
			if g.D()%v.Granularity.D() != 0 {
				return nil, paramErrorf("granularity %s is not a multiple of view %s's granularity %s", g, v.Name, v.Granularity)
			}
			q.Granularity = g
		}
	}

	if s := vals.Get("tz"); s != "" {
		if err := parseTZ(q, s); err != nil {
			return nil, err
		}
	}

	if s := vals.Get("group_by"); s != "" {
		seen := map[int]bool{}
		for _, name := range strings.Split(s, ",") {
			i := v.DimensionIndex(name)
			switch {
			case name == "":
				return nil, paramErrorf("group_by %q has an empty dimension name", clip(s))
			case i < 0:
				return nil, paramErrorf("group_by: view %s has no dimension %q (dimensions: %s)", v.Name, clip(name), strings.Join(v.Dimensions, ", "))
			case seen[i]:
				return nil, paramErrorf("group_by names dimension %q twice", name)
			}
			seen[i] = true
			q.GroupBy = append(q.GroupBy, i)
		}
	}

	filters := vals["filter"]
	if len(filters) > maxFilters {
		return nil, paramErrorf("%d filter parameters; the limit is %d", len(filters), maxFilters)
	}
	nvalues := 0
	for _, f := range filters {
		term, value, ok := strings.Cut(f, ":")
		if !ok {
			return nil, paramErrorf("filter %q: want dimension:value, dimension!:value (not), dimension^:prefix or dimension!^:prefix (not starting with)", clip(f))
		}
		name := strings.TrimRight(term, "!^")
		op := term[len(name):]
		i := v.DimensionIndex(name)
		if i < 0 {
			return nil, paramErrorf("filter %q: view %s has no dimension %q (dimensions: %s)", clip(f), v.Name, clip(name), strings.Join(v.Dimensions, ", "))
		}
		if q.Filters[i] == nil {
			q.Filters[i] = &DimFilter{}
		}
		df := q.Filters[i]
		switch op {
		case "":
			if df.Is == nil {
				df.Is = map[string]bool{}
			}
			df.Is[value] = true
		case "!":
			if df.Not == nil {
				df.Not = map[string]bool{}
			}
			df.Not[value] = true
		case "^", "!^":
			if value == "" {
				return nil, paramErrorf("filter %q: the prefix after %s%s: is empty (every value starts with it)", clip(f), name, op)
			}
			if op == "^" {
				df.Prefixes = appendNew(df.Prefixes, value)
			} else {
				df.NotPrefixes = appendNew(df.NotPrefixes, value)
			}
		default:
			return nil, paramErrorf("filter %q: %q is no operator; after the dimension write ':' (is), '!:' (is not), '^:' (starts with) or '!^:' (does not start with)", clip(f), op)
		}
		nvalues++
	}
	if nvalues > maxFilterValues {
		return nil, paramErrorf("filters name %d values; the limit is %d", nvalues, maxFilterValues)
	}

	if s := vals.Get("measures"); s != "" {
		seen := map[int]bool{}
		for _, name := range strings.Split(s, ",") {
			i := v.MeasureIndex(name)
			switch {
			case name == "":
				return nil, paramErrorf("measures %q has an empty measure name", clip(s))
			case i < 0:
				return nil, paramErrorf("measures: view %s has no measure %q (measures: %s)", v.Name, clip(name), strings.Join(measureNames(v), ", "))
			case seen[i]:
				return nil, paramErrorf("measures names %q twice", name)
			}
			seen[i] = true
			q.Measures = append(q.Measures, i)
		}
	} else {
		for i := range v.Measures {
			q.Measures = append(q.Measures, i)
		}
	}

	if s := vals.Get("order_by"); s != "" {
		if q.OrderBy, err = parseOrderBy(q, s); err != nil {
			return nil, err
		}
	}
	having := vals["having"]
	if len(having) > maxHaving {
		return nil, paramErrorf("%d having parameters; the limit is %d", len(having), maxHaving)
	}
	for _, s := range having {
		h, err := parseHaving(q, s)
		if err != nil {
			return nil, err
		}
		q.Having = append(q.Having, h)
	}
	if s := vals.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return nil, paramErrorf("limit %q: want a whole number of groups per bucket from 1 to %d", clip(s), maxLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// quantileParts are the suffixes naming one quantile of a quantiles
// measure, by OrderBy.Part.
var quantileParts = []string{"p50", "p90", "p99"}

// measureRef resolves "<measure>" or "<quantiles measure>.p50|p90|p99"
// among q's asked measures: the position in q.Measures and the part (-1
// for a whole measure). what names the parameter for the error message.
func measureRef(q *Query, what, s string) (j, part int, err error) {
	v := q.View
	name, suffix, dotted := strings.Cut(s, ".")
	mi := v.MeasureIndex(name)
	if mi < 0 {
		return 0, 0, paramErrorf("%s %q: view %s has no measure %q (measures: %s)", what, clip(s), v.Name, clip(name), strings.Join(measureNames(v), ", "))
	}
	j = slices.Index(q.Measures, mi)
	if j < 0 {
		return 0, 0, paramErrorf("%s %q: measure %s is not among the measures asked for; add it to measures", what, clip(s), name)
	}
	part = -1
	isQ := v.Measures[mi].Kind().Result == schemas.ResultQuantiles
	switch {
	case isQ && !dotted:
		return 0, 0, paramErrorf("%s %q: %s is a quantiles measure; name one quantile: %s.p50, %s.p90 or %s.p99", what, clip(s), name, name, name, name)
	case isQ:
		if part = slices.Index(quantileParts, suffix); part < 0 {
			return 0, 0, paramErrorf("%s %q: quantile %q of %s: want p50, p90 or p99", what, clip(s), clip(suffix), name)
		}
	case dotted:
		return 0, 0, paramErrorf("%s %q: %s is a %s measure, which has no parts; write %s alone", what, clip(s), name, v.Measures[mi].Type, name)
	}
	return j, part, nil
}

// parseTZ sets q's time zone and, for a granularity other than "all",
// its local buckets; it refuses what the view cannot answer exactly: a
// local bucket boundary that falls inside one of the view's windows.
func parseTZ(q *Query, s string) error {
	if s == "Local" {
		return paramErrorf("tz %q: name a zone of the IANA database such as Europe/Amsterdam or UTC (Local would be the server's)", s)
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		return paramErrorf("tz %q: not a time zone of the IANA database (such as Europe/Amsterdam, America/New_York or UTC)", clip(s))
	}
	if loc == time.UTC {
		return nil
	}
	q.Loc = loc
	if q.All() {
		return nil // one bucket: no boundary to place
	}
	lb, err := schemas.NewLocalBuckets(loc, q.Granularity.D(), q.From, q.To)
	if errors.Is(err, schemas.ErrLocalTooLong) {
		return paramErrorf("tz %s: the range from %s to %s crosses more than %d clock changes, the most local buckets take: shorten the range",
			s, q.From.Format(time.RFC3339), q.To.Format(time.RFC3339), schemas.MaxLocalPieces/2)
	}
	if err != nil {
		return paramErrorf("granularity %s with tz %s: %v", q.Granularity, s, err)
	}
	v := q.View
	if ok, shift := lb.AlignedTo(int64(v.Granularity.D() / time.Second)); !ok {
		why := "a clock change"
		if shift != 0 {
			why = "the UTC offset " + formatOffset(shift)
		}
		return paramErrorf("tz %s: %s puts %s bucket boundaries inside view %s's %s windows, so the view cannot answer them exactly; "+
			"use a view whose granularity divides the offset, or tz=UTC", s, why, q.Granularity, v.Name, v.Granularity)
	}
	q.Local = lb
	return nil
}

func formatOffset(sec int64) string {
	sign := "+"
	if sec < 0 {
		sign, sec = "-", -sec
	}
	return fmt.Sprintf("%s%02d:%02d", sign, sec/3600, sec%3600/60)
}

// parseHaving parses having=<measure><op><number>.
func parseHaving(q *Query, s string) (Having, error) {
	at, op := -1, ""
	for _, o := range havingOps {
		if i := strings.Index(s, o); i >= 0 && (at < 0 || i < at || (i == at && len(o) > len(op))) {
			at, op = i, o
		}
	}
	if at <= 0 {
		return Having{}, paramErrorf("having %q: want <measure><op><number> with op one of >, >=, <, <=, =, != (such as views>100 or latency.p99<=250)", clip(s))
	}
	h := Having{Op: op}
	var err error
	if h.Measure, h.Part, err = measureRef(q, "having", s[:at]); err != nil {
		return Having{}, err
	}
	num := s[at+len(op):]
	h.Number, err = strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(h.Number) || math.IsInf(h.Number, 0) {
		return Having{}, paramErrorf("having %q: %q is not a finite number", clip(s), clip(num))
	}
	return h, nil
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// parseOrderBy parses order_by=<measure>[:desc|asc].
func parseOrderBy(q *Query, s string) (*OrderBy, error) {
	ref, dir, hasDir := strings.Cut(s, ":")
	ob := &OrderBy{Desc: true}
	if hasDir {
		switch dir {
		case "desc":
		case "asc":
			ob.Desc = false
		default:
			return nil, paramErrorf("order_by %q: the direction after ':' must be desc or asc", clip(s))
		}
	}
	var err error
	if ob.Measure, ob.Part, err = measureRef(q, "order_by", ref); err != nil {
		return nil, err
	}
	return ob, nil
}

// earliest and latest bound accepted times, so every bound fits Unix
// milliseconds and formats as four-digit-year RFC 3339.
var (
	earliest = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

func parseTime(vals url.Values, name string) (time.Time, error) {
	s := vals.Get(name)
	if s == "" {
		return time.Time{}, paramErrorf("parameter %q is required (an RFC 3339 time such as 2026-11-25T00:00:00Z)", name)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, paramErrorf("%s %q is not an RFC 3339 time such as 2026-11-25T00:00:00Z", name, clip(s))
	}
	t = t.UTC()
	if t.Before(earliest) || t.After(latest) {
		return time.Time{}, paramErrorf("%s %q is outside 1970-01-01 to 9999-01-01", name, clip(s))
	}
	return t, nil
}

func measureNames(v *schemas.View) []string {
	out := make([]string, len(v.Measures))
	for i, m := range v.Measures {
		out[i] = m.Name
	}
	return out
}

// clip shortens client text quoted back in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
