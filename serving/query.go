package serving

import (
	"errors"
	"fmt"
	"net/url"
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
	// GroupBy lists positions in View.Dimensions, in the order asked.
	GroupBy []int
	// Filters, per position in View.Dimensions, the accepted values; nil
	// where the dimension is not filtered. Values of one dimension are ORed,
	// dimensions are ANDed.
	Filters []map[string]bool
	// Measures lists positions in View.Measures, in the order asked.
	Measures []int
	// MaxRows is the most answer rows (buckets × groups) the query may
	// produce; 0 means no limit. A Merger stops taking new groups past it
	// and reports the overflow, so the answer is refused, never cut short.
	// Service.Query sets it from serve.max_result_rows.
	MaxRows int
}

// TooManyRowsError is returned when an answer would hold more than
// serve.max_result_rows rows. The HTTP layer answers 400 with its message.
type TooManyRowsError struct{ Limit int }

func (e *TooManyRowsError) Error() string {
	return fmt.Sprintf("the answer would hold more than %d rows (serve.max_result_rows); narrow the query: "+
		"a coarser granularity, fewer group_by dimensions, a filter, or a shorter from/to range", e.Limit)
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

var queryParams = map[string]bool{"from": true, "to": true, "granularity": true, "group_by": true, "filter": true, "measures": true}

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
			return nil, paramErrorf("unknown parameter %q (known: from, to, granularity, group_by, filter, measures)", clip(name))
		}
		if name != "filter" && len(vs) > 1 {
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
	q := &Query{View: v, Granularity: v.Granularity, Filters: make([]map[string]bool, len(v.Dimensions))}

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
		name, value, ok := strings.Cut(f, ":")
		if !ok {
			return nil, paramErrorf("filter %q: want dimension:value", clip(f))
		}
		i := v.DimensionIndex(name)
		if i < 0 {
			return nil, paramErrorf("filter %q: view %s has no dimension %q (dimensions: %s)", clip(f), v.Name, clip(name), strings.Join(v.Dimensions, ", "))
		}
		if q.Filters[i] == nil {
			q.Filters[i] = map[string]bool{}
		}
		if !q.Filters[i][value] {
			nvalues++
		}
		q.Filters[i][value] = true
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
	return q, nil
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
