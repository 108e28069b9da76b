package serving

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tandem-analytics/tandem/schemas"
)

// Media types of the query answer.
const (
	ContentJSON  = "application/json"
	ContentCSV   = "text/csv"
	ContentArrow = "application/vnd.apache.arrow.stream"
)

// Result is the answer to one query, ready to encode.
type Result struct {
	Query     *Query
	Groups    []*Group
	Freshness Freshness
	// Warnings say what the answer is missing (the speed layer could not be
	// reached, say). An answer with warnings is incomplete, never wrong
	// about what it covers.
	Warnings []string
	// Truncated is true when limit left out groups of some bucket.
	Truncated bool
}

// Freshness says what a query's answer is made of: the batch run whose
// files answered the absorbed chunks, those chunks (as offsets), and the
// newest event time the speed half could see.
type Freshness struct {
	BatchRun       string          // "" when no run has been published
	BatchCreatedAt time.Time       // zero when no run
	Absorbed       map[int32]int64 // per partition, the absorbed offsets end (exclusive)
	// SpeedMaxEventTime is zero when unknown (speed side down) or empty.
	SpeedMaxEventTime time.Time
}

// negotiate picks the answer's media type from the Accept header: Arrow or
// CSV when asked for, JSON otherwise.
func negotiate(accept string) string {
	best, bestQ := ContentJSON, 0.0
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				q = f
			}
		}
		switch mt {
		case ContentArrow, ContentCSV, ContentJSON:
			if q > bestQ {
				best, bestQ = mt, q
			}
		}
	}
	return best
}

// appendNumber writes f as a JSON number; non-finite values (a sum that
// overflowed float64) become null rather than invalid JSON.
func appendNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	a := math.Abs(f)
	if a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.AppendFloat(b, f, 'e', -1, 64)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// appendString writes s as json.Marshal does. A string of printable
// ASCII with nothing json.Marshal escapes (the quote, the backslash, and
// <, > and & as HTML-safe escapes) is written between quotes as it is;
// any other goes through json.Marshal. Every window start, dimension and
// measure name of an answer is such a string, and marshalling each was a
// sixth of a 1,680-row answer's CPU.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // strings always marshal
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendTime(b []byte, t time.Time) []byte {
	return appendString(b, formatTime(t))
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// appendMeasure writes the JSON value of one measure's result
// (Measure.Result, or Group.result).
func appendMeasure(b []byte, result any) []byte {
	switch v := result.(type) {
	case int64:
		return strconv.AppendInt(b, v, 10)
	case uint64:
		return strconv.AppendUint(b, v, 10)
	case float64:
		return appendNumber(b, v)
	case *float64:
		if v == nil {
			return append(b, "null"...)
		}
		return appendNumber(b, *v)
	case *schemas.Quantiles:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, `{"p50":`...)
		b = appendNumber(b, v.P50)
		b = append(b, `,"p90":`...)
		b = appendNumber(b, v.P90)
		b = append(b, `,"p99":`...)
		b = appendNumber(b, v.P99)
		return append(b, '}')
	}
	return append(b, "null"...)
}

func appendFreshness(b []byte, f Freshness) []byte {
	b = append(b, `{"batch_run":`...)
	if f.BatchRun == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, f.BatchRun)
	}
	b = append(b, `,"batch_created_at":`...)
	if f.BatchCreatedAt.IsZero() {
		b = append(b, "null"...)
	} else {
		b = appendTime(b, f.BatchCreatedAt)
	}
	b = append(b, `,"batch_absorbed_offsets":{`...)
	parts := make([]int32, 0, len(f.Absorbed))
	for p := range f.Absorbed {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for i, p := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = strconv.AppendInt(b, int64(p), 10)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, f.Absorbed[p], 10)
	}
	b = append(b, `},"speed_max_event_time":`...)
	if f.SpeedMaxEventTime.IsZero() {
		b = append(b, "null"...)
	} else {
		b = appendTime(b, f.SpeedMaxEventTime)
	}
	return append(b, '}')
}

func appendWarnings(b []byte, ws []string) []byte {
	b = append(b, '[')
	for i, w := range ws {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, w)
	}
	return append(b, ']')
}

// EncodeJSON writes the answer in the shape docs/api.md shows: rows in
// order, dimensions and measures as objects with keys in the order asked.
func EncodeJSON(w io.Writer, r *Result) error {
	q := r.Query
	b := make([]byte, 0, 4096)
	b = append(b, `{"view":`...)
	b = appendString(b, q.View.Logical())
	b = append(b, `,"granularity":`...)
	b = appendString(b, q.GranularityName())
	if q.Loc != nil {
		b = append(b, `,"tz":`...)
		b = appendString(b, q.Loc.String())
	}
	b = append(b, `,"from":`...)
	b = appendTime(b, q.From)
	b = append(b, `,"to":`...)
	b = appendTime(b, q.To)
	b = append(b, `,"rows":[`...)
	for i, g := range r.Groups {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n"...)
		b = append(b, `{"window_start":`...)
		b = appendString(b, windowText(q, g))
		b = append(b, `,"dimensions":{`...)
		for j, di := range q.GroupBy {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, q.View.Dimensions[di])
			b = append(b, ':')
			b = appendString(b, g.Dims[j])
		}
		b = append(b, `},"measures":{`...)
		for j, mi := range q.Measures {
			if j > 0 {
				b = append(b, ',')
			}
			m := &q.View.Measures[mi]
			b = appendString(b, m.Name)
			b = append(b, ':')
			b = appendMeasure(b, g.Result(q, j))
		}
		b = append(b, "}}"...)
		if len(b) > 32<<10 {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	b = append(b, "],\n"...)
	b = append(b, `"truncated":`...)
	b = strconv.AppendBool(b, r.Truncated)
	b = append(b, `,"freshness":`...)
	b = appendFreshness(b, r.Freshness)
	if len(r.Warnings) > 0 {
		b = append(b, `,"warnings":`...)
		b = appendWarnings(b, r.Warnings)
	}
	b = append(b, "}\n"...)
	_, err := w.Write(b)
	return err
}

// rowTime is the window_start reported for a group: the bucket start, or
// From itself for granularity=all (From may carry sub-millisecond digits).
func rowTime(q *Query, g *Group) time.Time {
	if q.All() {
		return q.From
	}
	return time.UnixMilli(g.WindowMs).UTC()
}

// windowText is window_start as the JSON and CSV answers write it: UTC,
// or with tz= the local time with its offset (2026-03-29T00:00:00+01:00),
// the same instant.
func windowText(q *Query, g *Group) string {
	t := rowTime(q, g)
	if q.Loc != nil {
		return t.In(q.Loc).Format(time.RFC3339Nano)
	}
	return formatTime(t)
}

// flatColumn is one column of the flattened (CSV and Arrow) answer.
type flatColumn struct {
	name    string
	measure int // position in Query.Measures, -1 for window_start/dims
	dim     int // position in Query.GroupBy, -1 otherwise
	part    int // for quantiles: 0 p50, 1 p90, 2 p99
}

// flatColumns lists window_start, the group-by dimensions, then the
// measures with quantiles split into <name>_p50, _p90 and _p99.
func flatColumns(q *Query) []flatColumn {
	cols := []flatColumn{{name: schemas.ColWindowStart, measure: -1, dim: -1}}
	for j, di := range q.GroupBy {
		cols = append(cols, flatColumn{name: q.View.Dimensions[di], measure: -1, dim: j})
	}
	for j, mi := range q.Measures {
		m := q.View.Measures[mi]
		if m.Kind().Result == schemas.ResultQuantiles {
			for k, suffix := range []string{"_p50", "_p90", "_p99"} {
				cols = append(cols, flatColumn{name: m.Name + suffix, measure: j, dim: -1, part: k})
			}
			continue
		}
		cols = append(cols, flatColumn{name: m.Name, measure: j, dim: -1})
	}
	return cols
}

func quantilePart(qs *schemas.Quantiles, part int) float64 {
	switch part {
	case 0:
		return qs.P50
	case 1:
		return qs.P90
	}
	return qs.P99
}

// EncodeCSV writes a header line and one line per row, flattened like the
// Arrow answer; a missing value (min/max/quantiles of no events) is an
// empty field. Freshness and warnings travel in response headers.
func EncodeCSV(w io.Writer, r *Result) error {
	q := r.Query
	cols := flatColumns(q)
	cw := csv.NewWriter(w)
	rec := make([]string, len(cols))
	for i, c := range cols {
		rec[i] = c.name
	}
	if err := cw.Write(rec); err != nil {
		return err
	}
	var num []byte
	for _, g := range r.Groups {
		results := make([]any, len(q.Measures))
		for j := range q.Measures {
			results[j] = g.Result(q, j)
		}
		for i, c := range cols {
			switch {
			case c.measure < 0 && c.dim < 0:
				rec[i] = windowText(q, g)
			case c.dim >= 0:
				rec[i] = csvText(g.Dims[c.dim])
			default:
				num = num[:0]
				switch v := results[c.measure].(type) {
				case int64:
					num = strconv.AppendInt(num, v, 10)
				case uint64:
					num = strconv.AppendUint(num, v, 10)
				case float64:
					num = appendCSVNumber(num, v)
				case *float64:
					if v != nil {
						num = appendCSVNumber(num, *v)
					}
				case *schemas.Quantiles:
					if v != nil {
						num = appendCSVNumber(num, quantilePart(v, c.part))
					}
				}
				rec[i] = string(num)
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvText escapes a text cell (a dimension value, which comes from event
// data) against formula injection: a spreadsheet opening the answer would
// run a cell starting with =, +, -, @, a tab or a carriage return as a
// formula (=HYPERLINK(…) reaching a user as a link). Such a cell gets a
// leading apostrophe, which spreadsheets show as text and do not display
// (OWASP's "CSV injection" advice). Numbers are written by the encoder, never
// from event text, and are left alone so a negative number stays a number.
func csvText(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

func appendCSVNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b
	}
	return appendNumber(b, f)
}

// ArrowSchema is the schema of the Arrow answer to q: window_start as
// timestamp[ms, UTC], group-by dimensions as strings, and each measure by
// its kind's ResultShape: int64, uint64, float64, nullable float64, or (a
// quantiles answer) three nullable float64 columns.
func ArrowSchema(q *Query, meta map[string]string) *arrow.Schema {
	cols := flatColumns(q)
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		switch {
		case c.measure < 0 && c.dim < 0:
			fields[i] = arrow.Field{Name: c.name, Type: arrow.FixedWidthTypes.Timestamp_ms}
		case c.dim >= 0:
			fields[i] = arrow.Field{Name: c.name, Type: arrow.BinaryTypes.String}
		default:
			switch q.View.Measures[q.Measures[c.measure]].Kind().Result {
			case schemas.ResultInt64:
				fields[i] = arrow.Field{Name: c.name, Type: arrow.PrimitiveTypes.Int64}
			case schemas.ResultUint64:
				fields[i] = arrow.Field{Name: c.name, Type: arrow.PrimitiveTypes.Uint64}
			case schemas.ResultFloat64:
				fields[i] = arrow.Field{Name: c.name, Type: arrow.PrimitiveTypes.Float64}
			default:
				fields[i] = arrow.Field{Name: c.name, Type: arrow.PrimitiveTypes.Float64, Nullable: true}
			}
		}
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = meta[k]
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md)
}

// arrowBatchRows is the most answer rows in one Arrow record batch: the
// stream is written batch by batch, so the encoder holds at most this many
// rows in Arrow form besides the answer itself.
const arrowBatchRows = 8192

// EncodeArrow writes an Arrow IPC stream: the schema, then the rows in
// record batches of up to arrowBatchRows (one empty batch for an empty
// answer).
// The schema metadata carries tandem.view, tandem.granularity,
// tandem.freshness and tandem.warnings (JSON).
func EncodeArrow(w io.Writer, r *Result) error {
	q := r.Query
	meta := map[string]string{
		"tandem.view":        q.View.Logical(),
		"tandem.granularity": q.GranularityName(),
		"tandem.from":        formatTime(q.From),
		"tandem.to":          formatTime(q.To),
		"tandem.freshness":   string(appendFreshness(nil, r.Freshness)),
		"tandem.warnings":    string(appendWarnings(nil, r.Warnings)),
		"tandem.truncated":   strconv.FormatBool(r.Truncated),
	}
	if q.Loc != nil {
		meta["tandem.tz"] = q.Loc.String()
	}
	schema := ArrowSchema(q, meta)
	cols := flatColumns(q)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	iw := ipc.NewWriter(w, ipc.WithSchema(schema), ipc.WithAllocator(memory.DefaultAllocator))
	results := make([]any, len(q.Measures))
	// An empty answer is still one (empty) record batch, as readers that
	// expect a batch after the schema have always seen.
	for start := 0; start == 0 || start < len(r.Groups); start += arrowBatchRows {
		batch := r.Groups[start:min(start+arrowBatchRows, len(r.Groups))]
		b.Reserve(len(batch))
		for _, g := range batch {
			for j := range q.Measures {
				results[j] = g.Result(q, j)
			}
			appendArrowRow(b, cols, q, g, results)
		}
		rec := b.NewRecordBatch()
		err := iw.Write(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return iw.Close()
}

// appendArrowRow appends one answer row to b's columns.
func appendArrowRow(b *array.RecordBuilder, cols []flatColumn, q *Query, g *Group, results []any) {
	for i, c := range cols {
		fb := b.Field(i)
		switch {
		case c.measure < 0 && c.dim < 0:
			fb.(*array.TimestampBuilder).Append(arrow.Timestamp(rowTime(q, g).UnixMilli()))
		case c.dim >= 0:
			fb.(*array.StringBuilder).Append(g.Dims[c.dim])
		default:
			switch v := results[c.measure].(type) {
			case int64:
				fb.(*array.Int64Builder).Append(v)
			case uint64:
				fb.(*array.Uint64Builder).Append(v)
			case float64:
				fb.(*array.Float64Builder).Append(v)
			case *float64:
				if v == nil {
					fb.AppendNull()
				} else {
					fb.(*array.Float64Builder).Append(*v)
				}
			case *schemas.Quantiles:
				if v == nil {
					fb.AppendNull()
				} else {
					fb.(*array.Float64Builder).Append(quantilePart(v, c.part))
				}
			default:
				fb.AppendNull()
			}
		}
	}
}

// writeResult encodes r in the negotiated media type, streaming: the
// encoders write group by group through a small buffer, so an answer is
// never held a second time in encoded form (no Content-Length; HTTP/1.1
// sends it chunked). Every error that could refuse the query happened
// before; one here is the client going away mid-answer.
func writeResult(w http.ResponseWriter, ctype string, r *Result) error {
	h := w.Header()
	h.Set("Content-Type", ctype)
	if ctype != ContentJSON {
		// JSON carries these in the body; the flat formats in headers.
		h.Set("X-Tandem-Freshness", string(appendFreshness(nil, r.Freshness)))
		h.Set("X-Tandem-Truncated", strconv.FormatBool(r.Truncated))
		for _, warn := range r.Warnings {
			h.Add("X-Tandem-Warning", strings.ReplaceAll(warn, "\n", " "))
		}
	}
	if ctype == ContentCSV {
		h.Set("Content-Type", ContentCSV+"; charset=utf-8; header=present")
	}
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	var err error
	switch ctype {
	case ContentCSV:
		err = EncodeCSV(bw, r)
	case ContentArrow:
		err = EncodeArrow(bw, r)
	default:
		err = EncodeJSON(bw, r)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}
