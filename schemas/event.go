package schemas

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Limits on one event. They protect every consumer from hostile producers:
// an event over a limit is invalid, reported, and goes to the dead-letter topic.
const (
	MaxEventBytes  = 1 << 20 // one JSON object
	MaxStringBytes = 16 << 10
	MaxNesting     = 32 // of undeclared values kept in the raw JSON
)

// Event times must fit every store: ClickHouse DateTime ends in 2106.
var (
	MinEventTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxEventTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Value is one declared field of a decoded event. Set is false when the event
// lacks the field or gives null.
type Value struct {
	Set   bool
	Str   string    // string fields
	Int   int64     // int64 fields
	Float float64   // float64 fields; int64 fields too, for measures
	Bool  bool      // bool fields
	Time  time.Time // timestamp fields, UTC
}

// Number returns the value of a numeric field as float64.
func (v Value) Number() (float64, bool) { return v.Float, v.Set }

// Event is one decoded, valid event of a stream.
type Event struct {
	ID     string
	Time   time.Time // event time, UTC, millisecond precision
	Values []Value   // one per Stream.Fields, same order
}

// FieldError says which field of an event is wrong and why.
type FieldError struct {
	Field  string // empty when the problem is the whole event
	Reason Reason // the kind of refusal, the metrics' label
	Detail string // what exactly is wrong, for people
	Err    error  // a sentinel such as ErrFutureEvent, for errors.Is; may be nil
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Detail
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Detail)
}

// ErrFutureEvent is wrapped by the error for an event time too far ahead of
// the time the event was ingested.
var ErrFutureEvent = errors.New("event time too far in the future")

// Decoder validates events of one stream. Validation depends only on the
// event bytes and its ingest time (the Kafka message timestamp), so every
// layer that decodes the same message reaches the same verdict.
type Decoder struct {
	Stream *Stream
	// MaxFutureSkew rejects events whose time is later than ingest time plus
	// this much. Zero turns the check off.
	MaxFutureSkew time.Duration
}

// NewDecoder returns a Decoder for the stream with the configured skew.
func NewDecoder(s *Stream, maxFutureSkew time.Duration) *Decoder {
	return &Decoder{Stream: s, MaxFutureSkew: maxFutureSkew}
}

// Decode parses one JSON object and validates it against the stream. Fields
// the stream does not declare are allowed (they stay in the raw bytes) but
// must be well-formed and nested no deeper than MaxNesting. ingestTime zero
// skips the future-skew check.
func (d *Decoder) Decode(raw []byte, ingestTime time.Time) (Event, error) {
	var ev Event
	if err := d.decodeInto(&ev, raw, ingestTime, false); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// DecodeInto is Decode for a caller that decodes message after message and
// keeps no event past the next call (the speed layer): the verdict and the
// event's content are Decode's, but the event is written into *ev, reusing
// the storage of ev.Values when it is large enough, and its strings that
// need no unescaping (the ID among them) share raw's memory instead of
// copying it. So *ev is valid only while raw is neither modified nor
// reused; copy (strings.Clone) what you keep. On error *ev is the zero
// Event except that ev.Values keeps its storage (length 0).
func (d *Decoder) DecodeInto(ev *Event, raw []byte, ingestTime time.Time) error {
	err := d.decodeInto(ev, raw, ingestTime, true)
	if err != nil {
		*ev = Event{Values: ev.Values[:0]}
	}
	return err
}

// decodeInto decodes raw into *ev; alias lets strings share raw's memory.
func (d *Decoder) decodeInto(ev *Event, raw []byte, ingestTime time.Time, alias bool) error {
	s := d.Stream
	if len(raw) > MaxEventBytes {
		return &FieldError{Reason: ReasonTooLarge, Detail: fmt.Sprintf("event is %d bytes, over the limit of %d", len(raw), MaxEventBytes)}
	}
	var lits [16]json.RawMessage
	var fieldLits []json.RawMessage
	if len(s.Fields) > len(lits) {
		fieldLits = make([]json.RawMessage, len(s.Fields))
	} else {
		fieldLits = lits[:len(s.Fields)]
	}
	if !s.scanEvent(raw, fieldLits) {
		// Not certainly a valid event: take the careful path, which finds
		// the same literals for a valid one and says why anything else is
		// refused.
		clear(fieldLits)
		if err := s.checkEvent(raw, fieldLits); err != nil {
			return err
		}
	}
	vals := ev.Values[:0]
	if cap(vals) < len(s.Fields) {
		vals = make([]Value, len(s.Fields))
	} else {
		vals = vals[:len(s.Fields)]
		clear(vals)
	}
	*ev = Event{Values: vals}
	for i, f := range s.Fields {
		lit := fieldLits[i]
		if lit != nil && !bytes.Equal(lit, []byte("null")) {
			v, err := decodeValue(f.Type, lit, alias)
			if err != nil {
				return &FieldError{Field: f.Name, Reason: ReasonBadField, Detail: err.Error()}
			}
			vals[i] = v
		} else if f.Required {
			return &FieldError{Field: f.Name, Reason: ReasonMissingField, Detail: "required field is missing"}
		}
	}
	ev.ID = vals[s.idIndex].Str
	if ev.ID == "" {
		return &FieldError{Field: s.IDField, Reason: ReasonBadField, Detail: "id must not be empty"}
	}
	ev.Time = vals[s.timeIndex].Time
	if d.TooFarAhead(ev.Time, ingestTime) {
		return &FieldError{Field: s.TimeField, Err: ErrFutureEvent, Reason: ReasonFutureTime, Detail: fmt.Sprintf("%v: %s is more than %s after ingest time %s",
			ErrFutureEvent, ev.Time.Format(time.RFC3339), d.MaxFutureSkew, ingestTime.UTC().Format(time.RFC3339))}
	}
	return nil
}

// TooFarAhead is Decode's future-skew check: whether an event of time t,
// ingested at ingestTime, is refused as more than MaxFutureSkew ahead of
// it. It is the only part of a verdict that depends on the configuration,
// so a layer holding an event decoded with the check off (zero ingest
// time) applies it to reach Decode's verdict.
func (d *Decoder) TooFarAhead(t, ingestTime time.Time) bool {
	return d.MaxFutureSkew > 0 && !ingestTime.IsZero() && t.After(ingestTime.Add(d.MaxFutureSkew))
}

// checkEvent is the careful path of Decode: each check in turn, so an event
// breaking several rules always gets the same error. For a valid event it
// stores the literal of each declared field in lits, like scanEvent.
func (s *Stream) checkEvent(raw []byte, lits []json.RawMessage) error {
	if !utf8.Valid(raw) {
		return &FieldError{Reason: ReasonMalformed, Detail: "event is not valid UTF-8"}
	}
	if depth, ok := nesting(raw); !ok {
		return &FieldError{Reason: ReasonMalformed, Detail: "event is not valid JSON: brackets or quotes do not balance"}
	} else if depth > MaxNesting {
		return &FieldError{Reason: ReasonTooLarge, Detail: fmt.Sprintf("event nests %d levels deep, over the limit of %d", depth, MaxNesting)}
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return &FieldError{Reason: ReasonMalformed, Detail: "event is not a JSON object"}
	}
	if !json.Valid(trimmed) {
		// Only broken input gets here, to say where it breaks.
		var obj map[string]json.RawMessage
		err := json.Unmarshal(trimmed, &obj)
		if err == nil {
			err = errors.New("not a JSON object")
		}
		return &FieldError{Reason: ReasonMalformed, Detail: "event is not valid JSON: " + jsonReason(err)}
	}
	if err := s.topLevelFields(trimmed, lits); err != nil {
		return &FieldError{Reason: ReasonMalformed, Detail: "event is not valid JSON: " + err.Error()}
	}
	return nil
}

// scanEvent is Decode's fast path: one pass over raw that reports true only
// when checkEvent would accept raw, and then has stored the same literals
// in lits. It accepts exactly the JSON grammar json.Valid accepts (RFC
// 8259), with valid UTF-8 inside strings, ASCII whitespace around, a
// top-level object and nesting within MaxNesting; anything else (invalid
// input, but also valid input it does not bother with, such as Unicode
// spaces around the object) returns false, and checkEvent decides. So the
// verdicts and error messages are checkEvent's whatever this returns; it
// replaces utf8.Valid, nesting, json.Valid and topLevelFields (four passes,
// one of them json's byte-at-a-time state machine) for the events that
// matter for throughput.
func (s *Stream) scanEvent(b []byte, lits []json.RawMessage) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		end, escaped, ok := scanString(b, i)
		if !ok {
			return false
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		vend, ok := scanValue(b, i, 1)
		if !ok {
			return false
		}
		if idx := s.scanFieldIndex(key, escaped); idx >= 0 {
			lits[idx] = b[i:vend]
		}
		i = skipSpace(b, vend)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// scanFieldIndex is the position of the field named by the body of a key
// literal (escaped: it holds escapes), -1 for an undeclared key. A stream
// has few fields, so comparing names beats hashing the key.
func (s *Stream) scanFieldIndex(key []byte, escaped bool) int {
	if escaped {
		k, ok := jsonString(append(append([]byte{'"'}, key...), '"'))
		if i, found := s.fieldIndex[k]; ok && found {
			return i
		}
		return -1
	}
	for i := range s.Fields {
		if s.Fields[i].Name == string(key) {
			return i
		}
	}
	return -1
}

// scanValue returns the index just past the JSON value at b[i] and whether
// it is valid; depth is the nesting of the object or array holding it.
func scanValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case c == '{' || c == '[':
		if depth >= MaxNesting {
			return i, false
		}
		return scanContainer(b, i, depth+1)
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return i + 4, len(b) >= i+4 && string(b[i:i+4]) == "true"
	case c == 'f':
		return i + 5, len(b) >= i+5 && string(b[i:i+5]) == "false"
	case c == 'n':
		return i + 4, len(b) >= i+4 && string(b[i:i+4]) == "null"
	}
	return i, false
}

// scanContainer returns the index just past the object or array at b[i],
// which sits at nesting depth.
func scanContainer(b []byte, i, depth int) (int, bool) {
	obj := b[i] == '{'
	closing := byte(']')
	if obj {
		closing = '}'
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == closing {
		return i + 1, true
	}
	for {
		var ok bool
		if obj {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			if i, _, ok = scanString(b, i); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			i = skipSpace(b, i+1)
		}
		if i, ok = scanValue(b, i, depth); !ok {
			return i, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case closing:
			return i + 1, true
		default:
			return i, false
		}
	}
}

// scanString returns the index just past the string literal at b[i] == '"',
// whether it holds escapes, and whether it is valid JSON and valid UTF-8.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	for j := i + 1; j < len(b); {
		// Go to the first byte that is not plain, eight bytes at a time
		// (byte by byte in the last seven bytes of b).
		if j+8 <= len(b) {
			m := specialBytes(binary.LittleEndian.Uint64(b[j:]))
			if m == 0 {
				j += 8
				continue
			}
			j += bits.TrailingZeros64(m) >> 3
		} else if plainASCII[b[j]] {
			j++
			continue
		}
		c := b[j]
		switch {
		case c == '"':
			return j + 1, escaped, true
		case c == '\\':
			escaped = true
			if j+1 >= len(b) {
				return j, escaped, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) || !isHex(b[j+5]) {
					return j, escaped, false
				}
				j += 6
			default:
				return j, escaped, false
			}
		case c < 0x20:
			return j, escaped, false
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return j, escaped, false
			}
			j += size
		}
	}
	return len(b), escaped, false
}

// specialBytes flags the bytes of x (read little-endian) that are not
// plainASCII: below 0x20, 0x80 or above, the quote, the backslash. It is 0
// when all eight bytes are plain, and otherwise its lowest set bit is the
// high bit of the first byte that is not. (Subtracting 0x20, or 1 from x
// XOR the quote or backslash, sets a byte's high bit exactly when the byte
// is below 0x20 or is that character, unless a borrow comes in from the
// byte below, which happens only when that byte was flagged itself; so
// bytes above the first flagged one may be flagged wrongly, never it.)
func specialBytes(x uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	return (x | (x - 0x20*lo) | ((x ^ '"'*lo) - lo) | ((x ^ '\\'*lo) - lo)) & hi
}

// plainASCII marks the bytes a string literal holds as they are: printable
// ASCII but the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// scanNumber returns the index just past the number at b[i] and whether it
// follows JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	j := i
	if b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		j = skipDigits(b, j+1)
	default:
		return j, false
	}
	if j < len(b) && b[j] == '.' {
		k := skipDigits(b, j+1)
		if k == j+1 {
			return k, false
		}
		j = k
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := skipDigits(b, j)
		if k == j {
			return k, false
		}
		j = k
	}
	return j, true
}

func skipDigits(b []byte, j int) int {
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	return j
}

// Unwrap lets errors.Is find the sentinel of a FieldError.
func (e *FieldError) Unwrap() error { return e.Err }

func decodeValue(t FieldType, lit json.RawMessage, alias bool) (Value, error) {
	switch t {
	case TypeString:
		if lit[0] != '"' {
			return Value{}, errors.New("not a string")
		}
		var s string
		var ok bool
		if alias {
			s, ok = jsonStringAlias(lit)
		} else {
			s, ok = jsonString(lit)
		}
		if !ok {
			return Value{}, errors.New("not a string")
		}
		if len(s) > MaxStringBytes {
			return Value{}, fmt.Errorf("string of %d bytes is over the limit of %d", len(s), MaxStringBytes)
		}
		return Value{Set: true, Str: s}, nil
	case TypeInt64:
		if !isNumber(lit) {
			return Value{}, errors.New("not an integer")
		}
		n, err := strconv.ParseInt(string(lit), 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return Value{}, errors.New("integer overflows int64")
			}
			return Value{}, errors.New("not an integer")
		}
		return Value{Set: true, Int: n, Float: float64(n)}, nil
	case TypeFloat64:
		if !isNumber(lit) {
			return Value{}, errors.New("not a number")
		}
		f, err := strconv.ParseFloat(string(lit), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return Value{}, errors.New("number overflows float64")
		}
		return Value{Set: true, Float: f}, nil
	case TypeBool:
		switch string(lit) {
		case "true":
			return Value{Set: true, Bool: true}, nil
		case "false":
			return Value{Set: true}, nil
		}
		return Value{}, errors.New("not a boolean")
	case TypeTimestamp:
		ts, err := parseTimestamp(lit)
		if err != nil {
			return Value{}, err
		}
		return Value{Set: true, Time: ts}, nil
	}
	return Value{}, fmt.Errorf("unknown type %q", t)
}

// parseTimestamp reads an RFC 3339 string or integer epoch milliseconds.
func parseTimestamp(lit json.RawMessage) (time.Time, error) {
	var ts time.Time
	switch {
	case lit[0] == '"':
		// No copy of the text: time.Parse keeps no reference to its
		// input in the time it returns (its error would, and is dropped
		// here), and UTC drops any location.
		s, ok := jsonStringAlias(lit)
		if !ok {
			return ts, errors.New("not a timestamp")
		}
		if t, ok := parseRFC3339Seconds(s); ok {
			ts = t
			break
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ts, errors.New("not a timestamp (want RFC 3339 or epoch milliseconds)")
		}
		ts = t.UTC().Truncate(time.Millisecond)
	case isNumber(lit):
		ms, err := strconv.ParseInt(string(lit), 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return ts, fmt.Errorf("timestamp %s (epoch milliseconds) is outside 1970..2099", lit)
		}
		if err != nil {
			return ts, errors.New("not a timestamp (epoch milliseconds must be an integer)")
		}
		ts = time.UnixMilli(ms).UTC()
	default:
		return ts, errors.New("not a timestamp (want RFC 3339 or epoch milliseconds)")
	}
	if ts.Before(MinEventTime) || !ts.Before(MaxEventTime) {
		return time.Time{}, fmt.Errorf("timestamp %s is outside 1970..2099", ts.Format(time.RFC3339))
	}
	return ts, nil
}

// parseRFC3339Seconds parses the most common timestamp form,
// "2006-01-02T15:04:05Z", several times faster than time.Parse. It accepts
// only text of exactly that shape with every field in range, for which it
// returns what time.Parse(time.RFC3339Nano, s) returns; anything else
// (fractions, offsets, lower case, an invalid date) is for time.Parse.
func parseRFC3339Seconds(s string) (time.Time, bool) {
	if len(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z' {
		return time.Time{}, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return -1
			}
			v = 10*v + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	hour, minute, sec := num(11, 2), num(14, 2), num(17, 2)
	if year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	if day > 28 && day > daysIn(time.Month(month), year) {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC), true
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func isNumber(lit []byte) bool {
	return len(lit) > 0 && (lit[0] == '-' || (lit[0] >= '0' && lit[0] <= '9'))
}

// JSONStructure follows a JSON text byte by byte and tells which bytes
// stand outside its strings: the brackets and commas a scanner may act on
// without decoding (the gateway splitting an array, nesting measuring
// depth). The zero value starts outside any string.
type JSONStructure struct{ inString, escaped bool }

// Outside reports whether c, the text's next byte, stands outside a
// string; a string's quotes belong to it.
func (s *JSONStructure) Outside(c byte) bool {
	if s.inString {
		switch {
		case s.escaped:
			s.escaped = false
		case c == '\\':
			s.escaped = true
		case c == '"':
			s.inString = false
		}
		return false
	}
	if c == '"' {
		s.inString = true
		return false
	}
	return true
}

// nesting returns the deepest nesting of objects and arrays in raw without
// decoding it, so a hostile event cannot make the decoder recurse deeply.
// ok is false when the brackets do not balance.
func nesting(raw []byte) (depth int, ok bool) {
	cur := 0
	var js JSONStructure
	for _, c := range raw {
		if !js.Outside(c) {
			continue
		}
		switch {
		case c == '{' || c == '[':
			cur++
			if cur > depth {
				depth = cur
			}
		case c == '}' || c == ']':
			cur--
			if cur < 0 {
				return depth, false
			}
		}
	}
	return depth, cur == 0
}

func jsonReason(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "not a JSON object"
	}
	return err.Error()
}

// topLevelFields walks the members of a JSON object already checked by
// json.Valid and stores the literal of each declared field in lits (by field
// position; nil when absent). A repeated key keeps its last value, as
// decoding into a map would. This single pass, with no reflection and no map,
// is what lets the gateway validate events at a fraction of the cost of
// producing them.
func (s *Stream) topLevelFields(b []byte, lits []json.RawMessage) error {
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return errors.New("object key is not a string")
		}
		end := skipString(b, i)
		key := b[i:end]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errors.New("object key without a value")
		}
		i = skipSpace(b, i+1)
		vend := skipValue(b, i)
		var idx int
		var ok bool
		if bytes.IndexByte(key, '\\') < 0 {
			idx, ok = s.fieldIndex[string(key[1:len(key)-1])]
		} else if k, valid := jsonString(key); valid {
			idx, ok = s.fieldIndex[k]
		}
		if ok {
			lits[idx] = b[i:vend]
		}
		i = skipSpace(b, vend)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return nil
		}
		return errors.New("object members not separated by commas")
	}
	return errors.New("object does not end")
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the JSON value starting at b[i],
// for input json.Valid accepted.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		return j
	}
}

// jsonStringAlias is jsonString, except that a literal without escapes
// yields a string sharing lit's memory: valid while lit is unchanged.
func jsonStringAlias(lit []byte) (string, bool) {
	if len(lit) >= 2 && lit[0] == '"' && lit[len(lit)-1] == '"' {
		if body := lit[1 : len(lit)-1]; bytes.IndexByte(body, '\\') < 0 && bytes.IndexByte(body, '"') < 0 {
			return unsafe.String(unsafe.SliceData(body), len(body)), true
		}
	}
	return jsonString(lit)
}

// jsonString decodes a JSON string literal, without reflection when it has
// no escapes (the common case).
func jsonString(lit []byte) (string, bool) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return "", false
	}
	body := lit[1 : len(lit)-1]
	if bytes.IndexByte(body, '\\') < 0 && bytes.IndexByte(body, '"') < 0 {
		return string(body), true
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", false
	}
	return s, true
}
