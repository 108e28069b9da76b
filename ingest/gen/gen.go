// Package gen generates realistic events for a stream: skewed countries and
// devices, Zipf-distributed users, long-tailed latencies, optional fields
// left out, and chosen fractions of late, out-of-order, duplicate and
// invalid events. It is deterministic for a seed and start time.
//
// Use it as a library (New, then Next as an iterator, or Run with a Sink) or
// through `tandem gen`. Run writes a truth file, one line per accepted event,
// from which tests compute the expected aggregates independently:
//
//	{"event":{...original bytes...}}
//	{"event":{...same bytes as an earlier line...},"dup":true}
//
// Optional "late" and "ooo" flags say how the event time was chosen. Lines
// with "dup" repeat an earlier event byte for byte (same id); deduplicating by
// id, or dropping dup lines, gives the events every layer must count.
package gen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// Options configure a Generator. Zero values are sensible defaults.
type Options struct {
	Stream *schemas.Stream
	Seed   uint64
	// Start is the event time of the first event. Zero: now minus the time
	// the run spans (Events × Spacing), so the newest events are about now.
	Start time.Time
	// Spacing is the event-time step from one event to the next. Zero: 1/Rate;
	// with Rate unlimited 1ms, or 10µs when Events is unlimited too.
	Spacing time.Duration
	// Rate is events per second sent by Run; 0 sends as fast as the sink takes them.
	Rate float64
	// Events stops Run after this many events (0: no limit).
	Events int64
	// Duration stops Run after this long (0: no limit).
	Duration time.Duration
	// Batch is the events per Sink call (default 1000).
	Batch int
	// Concurrency is how many batches Run has in flight at once (default 1).
	Concurrency int
	// Fractions of all events, each in [0,1], together at most 1.
	Late       float64 // event time 1–6 hours before the clock
	OutOfOrder float64 // event time 1 s – 2 min before the clock
	Dups       float64 // exact copy of one of the last few hundred valid events
	Invalid    float64 // fails validation, for one of several reasons
	// MaxFutureSkew is the gateway's ingest.max_future_skew; when positive,
	// some invalid events are too far in the future. Their event time is in
	// 2099, so they are invalid for any ingest time before then.
	MaxFutureSkew time.Duration
}

// Event is one generated event.
type Event struct {
	Raw        []byte    // the JSON bytes, one line, no newline
	ID         string    // the id it carries ("" when the invalid event has none)
	Time       time.Time // its event time (zero for invalid events)
	Dup        bool      // an exact copy of an earlier event
	Late       bool
	OutOfOrder bool
	Invalid    string // why it is invalid; "" for a valid event
}

// DupWindow is how far back (in valid events) a duplicate's original lies at
// most, so the speed layer sees it in the same or the previous chunk.
const DupWindow = 256

// Generator produces events. It is not safe for concurrent use.
type Generator struct {
	o       Options
	rng     *rand.Rand
	users   *rand.Zipf
	vals    *rand.Zipf
	prefix  string
	n       int64 // events generated
	ids     int64 // ids handed out
	recent  [][]byte
	recentN int
	roles   []fieldRole
	numeric int // index of a numeric non-key field, or -1
}

type fieldRole uint8

const (
	roleGeneric fieldRole = iota
	roleID
	roleTime
	roleCountry
	roleDevice
	roleUser
	roleAmount
	roleLatency
)

// New checks the options and returns a generator.
func New(o Options) (*Generator, error) {
	if o.Stream == nil {
		return nil, errors.New("gen: no stream")
	}
	for name, f := range map[string]float64{"late": o.Late, "out-of-order": o.OutOfOrder, "dups": o.Dups, "invalid": o.Invalid} {
		if f < 0 || f > 1 || math.IsNaN(f) {
			return nil, fmt.Errorf("gen: the %s fraction must be between 0 and 1; got %g", name, f)
		}
	}
	if s := o.Late + o.OutOfOrder + o.Dups + o.Invalid; s > 1 {
		return nil, fmt.Errorf("gen: the fractions of late, out-of-order, duplicate and invalid events add up to %g, over 1", s)
	}
	if o.Rate < 0 || o.Events < 0 || o.Duration < 0 {
		return nil, errors.New("gen: rate, events and duration must not be negative")
	}
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Spacing <= 0 {
		o.Spacing = time.Millisecond
		if o.Rate == 0 && o.Events == 0 {
			// Unbounded and unpaced: keep the event-time clock near the wall
			// clock at ~100k events/s, so events do not run into the future.
			o.Spacing = 10 * time.Microsecond
		}
		if o.Rate > 0 {
			o.Spacing = time.Duration(float64(time.Second) / o.Rate)
		}
	}
	if o.Start.IsZero() {
		o.Start = time.Now().UTC().Truncate(time.Millisecond).Add(-time.Duration(o.Events) * o.Spacing)
	}
	o.Start = o.Start.UTC()
	rng := rand.New(rand.NewPCG(o.Seed, 0x74616e64656d)) // "tandem"
	h := fnv.New32a()
	binary.Write(h, binary.LittleEndian, o.Seed)
	g := &Generator{
		o: o, rng: rng,
		users:   rand.NewZipf(rng, 1.2, 4, 199_999),
		vals:    rand.NewZipf(rng, 1.1, 2, 999),
		prefix:  fmt.Sprintf("%08x", h.Sum32()),
		recent:  make([][]byte, DupWindow),
		numeric: -1,
	}
	s := o.Stream
	g.roles = make([]fieldRole, len(s.Fields))
	for i, f := range s.Fields {
		switch {
		case f.Name == s.IDField:
			g.roles[i] = roleID
		case f.Name == s.TimeField:
			g.roles[i] = roleTime
		case f.Type == schemas.TypeString && f.Name == "country":
			g.roles[i] = roleCountry
		case f.Type == schemas.TypeString && f.Name == "device":
			g.roles[i] = roleDevice
		case f.Type == schemas.TypeString && f.Name == "user_id":
			g.roles[i] = roleUser
		case f.Type == schemas.TypeFloat64 && f.Name == "amount":
			g.roles[i] = roleAmount
		case f.Type == schemas.TypeFloat64 && f.Name == "latency_ms":
			g.roles[i] = roleLatency
		}
		if f.Type.Numeric() && g.numeric < 0 {
			g.numeric = i
		}
	}
	return g, nil
}

// Options returns the options with defaults filled in.
func (g *Generator) Options() Options { return g.o }

// Clock is the event time of the next normal event.
func (g *Generator) Clock() time.Time { return g.o.Start.Add(time.Duration(g.n) * g.o.Spacing) }

// Next returns the next event. The sequence depends only on the options.
func (g *Generator) Next() Event {
	clock := g.Clock()
	g.n++
	x := g.rng.Float64()
	o := g.o
	switch {
	case x < o.Dups:
		if g.recentN > 0 {
			n := min(g.recentN, DupWindow)
			raw := g.recent[g.rng.IntN(n)]
			ev := g.decodeKnown(raw)
			ev.Dup = true
			return ev
		}
	case x < o.Dups+o.Invalid:
		return g.invalid(clock)
	case x < o.Dups+o.Invalid+o.Late:
		ev := g.valid(clock.Add(-time.Hour - time.Duration(g.rng.Int64N(int64(5*time.Hour)))))
		ev.Late = true
		return ev
	case x < o.Dups+o.Invalid+o.Late+o.OutOfOrder:
		ev := g.valid(clock.Add(-time.Second - time.Duration(g.rng.Int64N(int64(119*time.Second)))))
		ev.OutOfOrder = true
		return ev
	}
	return g.valid(clock)
}

// decodeKnown rebuilds the Event of bytes this generator made (for dups).
func (g *Generator) decodeKnown(raw []byte) Event {
	ev, err := schemas.NewDecoder(g.o.Stream, 0).Decode(raw, time.Time{})
	if err != nil {
		panic("gen: a generated valid event does not decode: " + err.Error())
	}
	return Event{Raw: raw, ID: ev.ID, Time: ev.Time}
}

func (g *Generator) nextID() string {
	g.ids++
	return g.prefix + "-" + strconv.FormatInt(g.ids, 10)
}

var (
	countries       = []string{"US", "IN", "GB", "DE", "BR", "FR", "JP", "CA", "MX", "ES", "IT", "NL", "AU", "KR", "PL", "SE", "TR", "ID", "NG", "AR"}
	countryWeights  = []float64{30, 12, 8, 7, 6, 5, 5, 4, 3, 3, 3, 2, 2, 2, 2, 1.5, 1.5, 1.5, 1, 1}
	devices         = []string{"mobile", "desktop", "tablet", "tv"}
	deviceWeights   = []float64{55, 35, 8, 2}
	pages           = []string{"/", "/search", "/product", "/cart", "/checkout", "/account", "/help"}
	countryCumul    = cumulative(countryWeights)
	deviceCumul     = cumulative(deviceWeights)
	timeFormatMilli = "2006-01-02T15:04:05.000Z07:00"
)

func cumulative(w []float64) []float64 {
	out := make([]float64, len(w))
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	acc := 0.0
	for i, x := range w {
		acc += x / sum
		out[i] = acc
	}
	return out
}

func (g *Generator) pick(items []string, cumul []float64) string {
	x := g.rng.Float64()
	for i, c := range cumul {
		if x < c {
			return items[i]
		}
	}
	return items[len(items)-1]
}

// valid builds a valid event at event time ts.
func (g *Generator) valid(ts time.Time) Event {
	ts = ts.Truncate(time.Millisecond)
	id := g.nextID()
	b := make([]byte, 0, 192)
	b = append(b, '{')
	first := true
	field := func(name string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, name)
		b = append(b, ':')
	}
	for i, f := range g.o.Stream.Fields {
		role := g.roles[i]
		switch role {
		case roleID:
			field(f.Name)
			b = appendString(b, id)
			continue
		case roleTime:
			field(f.Name)
			b = g.appendTime(b, ts)
			continue
		}
		if g.missing(role, f.Required) {
			continue
		}
		field(f.Name)
		switch role {
		case roleCountry:
			b = appendString(b, g.pick(countries, countryCumul))
		case roleDevice:
			b = appendString(b, g.pick(devices, deviceCumul))
		case roleUser:
			b = appendString(b, "u"+strconv.FormatUint(g.users.Uint64()+1, 10))
		case roleAmount:
			// Purchase amounts: log-normal around 30, in cents.
			v := math.Round(math.Exp(3.2+0.9*g.rng.NormFloat64())*100) / 100
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		case roleLatency:
			// Long-tailed: log-normal body, 2% slow outliers ten to fifty times slower.
			v := math.Exp(3.7 + 0.8*g.rng.NormFloat64())
			if g.rng.Float64() < 0.02 {
				v *= 10 + 40*g.rng.Float64()
			}
			b = strconv.AppendFloat(b, math.Round(v*10)/10, 'f', -1, 64)
		default:
			b = g.appendGeneric(b, f.Type, ts)
		}
	}
	// An undeclared field: the gateway must keep it in the bytes it stores.
	if g.rng.Float64() < 0.5 {
		field("page")
		b = appendString(b, pages[g.rng.IntN(len(pages))])
	}
	b = append(b, '}')
	g.recent[g.recentN%DupWindow] = b
	g.recentN++
	return Event{Raw: b, ID: id, Time: ts}
}

// missing decides whether an optional field is left out.
func (g *Generator) missing(role fieldRole, required bool) bool {
	if required {
		return false
	}
	p := 0.05
	switch role {
	case roleAmount:
		p = 0.75 // most page views buy nothing
	case roleCountry:
		p = 0.02
	case roleLatency:
		p = 0.03
	}
	return g.rng.Float64() < p
}

func (g *Generator) appendTime(b []byte, ts time.Time) []byte {
	// Both accepted forms: mostly RFC 3339, some epoch milliseconds.
	if g.rng.Float64() < 0.2 {
		return strconv.AppendInt(b, ts.UnixMilli(), 10)
	}
	b = append(b, '"')
	b = ts.AppendFormat(b, timeFormatMilli)
	return append(b, '"')
}

func (g *Generator) appendGeneric(b []byte, t schemas.FieldType, ts time.Time) []byte {
	switch t {
	case schemas.TypeString:
		return appendString(b, "v"+strconv.FormatUint(g.vals.Uint64(), 10))
	case schemas.TypeInt64:
		return strconv.AppendInt(b, g.rng.Int64N(1_000_000), 10)
	case schemas.TypeFloat64:
		return strconv.AppendFloat(b, math.Round(math.Exp(2+g.rng.NormFloat64())*1000)/1000, 'f', -1, 64)
	case schemas.TypeBool:
		return strconv.AppendBool(b, g.rng.IntN(2) == 0)
	case schemas.TypeTimestamp:
		return g.appendTime(b, ts.Add(-time.Duration(g.rng.Int64N(int64(time.Hour)))).Truncate(time.Millisecond))
	}
	return append(b, "null"...)
}

// Reasons for invalid events, as Event.Invalid.
const (
	InvalidBadTime    = "ts_not_a_timestamp"
	InvalidMissingID  = "missing_id"
	InvalidEmptyID    = "empty_id"
	InvalidBadNumber  = "number_as_string"
	InvalidNotJSON    = "not_json"
	InvalidNotObject  = "not_an_object"
	InvalidFutureTime = "future_time"
)

func (g *Generator) invalid(clock time.Time) Event {
	s := g.o.Stream
	reasons := []string{InvalidBadTime, InvalidMissingID, InvalidEmptyID, InvalidNotJSON, InvalidNotObject}
	if g.numeric >= 0 {
		reasons = append(reasons, InvalidBadNumber)
	}
	if g.o.MaxFutureSkew > 0 {
		reasons = append(reasons, InvalidFutureTime)
	}
	reason := reasons[g.rng.IntN(len(reasons))]
	id := g.nextID()
	ts := clock.Truncate(time.Millisecond).Format(timeFormatMilli)
	obj := func(parts ...string) []byte {
		b := []byte{'{'}
		for i := 0; i+1 < len(parts); i += 2 {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, parts[i])
			b = append(b, ':')
			b = append(b, parts[i+1]...)
		}
		return append(b, '}')
	}
	q := func(v string) string { return string(appendString(nil, v)) }
	ev := Event{ID: id, Invalid: reason}
	switch reason {
	case InvalidBadTime:
		ev.Raw = obj(s.IDField, q(id), s.TimeField, q("yesterday at noon"))
	case InvalidMissingID:
		ev.ID = ""
		ev.Raw = obj(s.TimeField, q(ts))
	case InvalidEmptyID:
		ev.ID = ""
		ev.Raw = obj(s.IDField, q(""), s.TimeField, q(ts))
	case InvalidBadNumber:
		ev.Raw = obj(s.IDField, q(id), s.TimeField, q(ts), s.Fields[g.numeric].Name, q("12.50"))
	case InvalidNotJSON:
		ev.Raw = []byte(`{` + q(s.IDField) + `:` + q(id) + `,` + q(s.TimeField) + `:`)
	case InvalidNotObject:
		ev.Raw = []byte(`[` + q(id) + `,` + q(ts) + `]`)
	case InvalidFutureTime:
		future := time.Date(2099, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(g.rng.Int64N(int64(24 * time.Hour)))).Truncate(time.Millisecond)
		ev.Raw = obj(s.IDField, q(id), s.TimeField, q(future.Format(timeFormatMilli)))
	}
	return ev
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
