package schemas

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// allTypes is testenv.AllTypesYAML: a stream with every field type and a
// view with every measure type over it. The decoder, measure and fuzz
// tests share it with the batch package's.
var allTypes = testenv.AllTypesYAML(nil)

func allTypesConfig(tb testing.TB) *Config {
	tb.Helper()
	cfg, err := Parse("all.yaml", []byte(allTypes), noEnv)
	require.NoError(tb, err)
	return cfg
}

func exampleConfig(tb testing.TB) *Config {
	tb.Helper()
	cfg, err := LoadFile("../tandem.example.yaml")
	require.NoError(tb, err)
	return cfg
}

// base is the smallest valid event of the "ev" stream.
const baseEvent = `{"id":"e1","ts":"2026-11-25T10:00:00Z","kind":"view"`

func withFields(extra string) string {
	if extra == "" {
		return baseEvent + "}"
	}
	return baseEvent + "," + extra + "}"
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// nested returns depth levels of arrays around 1, e.g. [[1]] for 2.
func nested(depth int) string {
	return strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth)
}

// TestDecodeValid checks accepted events field by field. want maps a field
// to its expected Go value: string, int64, float64, bool, time.Time, or nil
// for "not set". Fields not listed must be unset unless they are id, ts or
// kind, which are checked against the base event.
func TestDecodeValid(t *testing.T) {
	cfg := allTypesConfig(t)
	s := cfg.Stream("ev")
	dec := NewDecoder(s, 0) // the skew has its own test
	cases := []struct {
		name string
		json string
		want map[string]any
	}{
		{"minimal", withFields(""), nil},
		{"rfc3339 positive offset", `{"id":"e1","ts":"2026-11-25T12:30:00+02:30","kind":"view"}`, nil},
		{"rfc3339 negative offset", `{"id":"e1","ts":"2026-11-25T05:00:00-05:00","kind":"view"}`, nil},
		{"rfc3339 fraction truncated to ms", `{"id":"e1","ts":"2026-11-25T10:00:00.123999999Z","kind":"view"}`,
			map[string]any{"ts": t0.Add(123 * time.Millisecond)}},
		{"rfc3339 fraction and offset", `{"id":"e1","ts":"2026-11-25T11:00:00.5+01:00","kind":"view"}`,
			map[string]any{"ts": t0.Add(500 * time.Millisecond)}},
		{"epoch millis", fmt.Sprintf(`{"id":"e1","ts":%d,"kind":"view"}`, t0.UnixMilli()+7), map[string]any{"ts": t0.Add(7 * time.Millisecond)}},
		{"epoch zero is 1970", `{"id":"e1","ts":0,"kind":"view"}`, map[string]any{"ts": MinEventTime}},
		{"last ms of 2099", `{"id":"e1","ts":"2099-12-31T23:59:59.999Z","kind":"view"}`,
			map[string]any{"ts": MaxEventTime.Add(-time.Millisecond)}},
		{"string", withFields(`"s":"héllo 🌍"`), map[string]any{"s": "héllo 🌍"}},
		{"string escapes", withFields(`"s":"a\"b\\c\nd\u00e9"`), map[string]any{"s": "a\"b\\c\nd\u00e9"}},
		// A NUL is a valid JSON string character when escaped; every store
		// (ClickHouse String, Parquet BYTE_ARRAY, JoinDims) carries it, so
		// it is allowed. A raw 0x00 byte is invalid JSON (see the rejects).
		{"escaped NUL allowed", withFields(`"s":"a\u0000b"`), map[string]any{"s": "a\x00b"}},
		{"empty string", withFields(`"s":""`), map[string]any{"s": ""}},
		{"string at the limit", withFields(`"s":"` + strings.Repeat("x", MaxStringBytes) + `"`),
			map[string]any{"s": strings.Repeat("x", MaxStringBytes)}},
		{"int64", withFields(`"i":42`), map[string]any{"i": int64(42)}},
		{"int64 negative", withFields(`"i":-7`), map[string]any{"i": int64(-7)}},
		{"int64 zero", withFields(`"i":0`), map[string]any{"i": int64(0)}},
		{"int64 max", withFields(`"i":9223372036854775807`), map[string]any{"i": int64(math.MaxInt64)}},
		{"int64 min", withFields(`"i":-9223372036854775808`), map[string]any{"i": int64(math.MinInt64)}},
		{"float64", withFields(`"f":1.5`), map[string]any{"f": 1.5}},
		{"float64 exponent", withFields(`"f":-2.5e-3`), map[string]any{"f": -2.5e-3}},
		{"float64 integer literal", withFields(`"f":3`), map[string]any{"f": 3.0}},
		{"float64 near max", withFields(`"f":1.7976931348623157e308`), map[string]any{"f": math.MaxFloat64}},
		{"float64 underflow is zero", withFields(`"f":1e-400`), map[string]any{"f": 0.0}},
		{"bool true", withFields(`"b":true`), map[string]any{"b": true}},
		{"bool false", withFields(`"b":false`), map[string]any{"b": false}},
		{"optional timestamp epoch", withFields(`"at":1000`), map[string]any{"at": time.UnixMilli(1000).UTC()}},
		{"optional timestamp rfc3339", withFields(`"at":"2001-02-03T04:05:06Z"`), map[string]any{"at": time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)}},
		{"nulls are unset", withFields(`"s":null,"i":null,"f":null,"b":null,"at":null`), nil},
		{"undeclared scalars", withFields(`"extra":1,"more":"x","flag":false,"nothing":null`), nil},
		{"undeclared nested", withFields(`"ctx":{"a":[1,{"b":{"c":[true,null,"x"]}}],"d":{}}`), nil},
		{"undeclared string over MaxStringBytes", withFields(`"blob":"` + strings.Repeat("y", MaxStringBytes+1) + `"`), nil},
		{"brackets inside strings do not nest", withFields(`"s":"` + strings.Repeat("[{", 100) + `\"]"`), map[string]any{"s": strings.Repeat("[{", 100) + `"]`}},
		{"nesting at the limit", withFields(`"deep":` + nested(MaxNesting-1)), nil},
		{"surrounding whitespace", " \t\r\n" + withFields("") + "\r\n", nil},
		{"key order does not matter", `{"kind":"view","s":"x","ts":"2026-11-25T10:00:00Z","id":"e1"}`, map[string]any{"s": "x"}},
		// encoding/json keeps the last of repeated keys; what matters is
		// that the verdict is a function of the bytes (TestDecodeDeterministic).
		{"repeated key keeps the last", withFields(`"s":"first","s":"last"`), map[string]any{"s": "last"}},
		{"keys are case-sensitive", withFields(`"S":5,"I":"x"`), nil},
		{"past event far behind ingest", `{"id":"e1","ts":"1999-01-01T00:00:00Z","kind":"view"}`, map[string]any{"ts": time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := dec.Decode([]byte(tc.json), t0)
			require.NoError(t, err)
			want := map[string]any{"id": "e1", "ts": t0, "kind": "view"}
			for k, v := range tc.want {
				want[k] = v
			}
			require.Equal(t, want["id"], ev.ID)
			require.Equal(t, want["ts"], ev.Time)
			require.Equal(t, time.UTC, ev.Time.Location())
			require.Len(t, ev.Values, len(s.Fields))
			for i, f := range s.Fields {
				requireValue(t, f, want[f.Name], ev.Values[i])
			}
		})
	}
}

// requireValue checks one decoded value against a plain Go value.
func requireValue(t *testing.T, f Field, want any, got Value) {
	t.Helper()
	if want == nil {
		require.Equal(t, Value{}, got, "field %q must be unset", f.Name)
		return
	}
	require.True(t, got.Set, "field %q must be set", f.Name)
	switch w := want.(type) {
	case string:
		require.Equal(t, TypeString, f.Type)
		require.Equal(t, Value{Set: true, Str: w}, got, f.Name)
	case int64:
		require.Equal(t, TypeInt64, f.Type)
		require.Equal(t, Value{Set: true, Int: w, Float: float64(w)}, got, f.Name)
		n, ok := got.Number()
		require.True(t, ok)
		require.Equal(t, float64(w), n)
	case float64:
		require.Equal(t, TypeFloat64, f.Type)
		require.Equal(t, Value{Set: true, Float: w}, got, f.Name)
	case bool:
		require.Equal(t, TypeBool, f.Type)
		require.Equal(t, Value{Set: true, Bool: w}, got, f.Name)
	case time.Time:
		require.Equal(t, TypeTimestamp, f.Type)
		require.Equal(t, Value{Set: true, Time: w}, got, f.Name)
	default:
		t.Fatalf("unknown expectation %T", want)
	}
}

// rejectCase is an event the decoder must refuse: field is the field the
// error names ("" for the whole event) and reason a part of its message.
type rejectCase struct {
	name, json, field, reason string
}

func rejectCases() []rejectCase {
	deep := func(n int) string { return withFields(`"deep":` + nested(n)) }
	return []rejectCase{
		// required fields
		{"id missing", `{"ts":"2026-11-25T10:00:00Z","kind":"view"}`, "id", "required field is missing"},
		{"id null", `{"id":null,"ts":"2026-11-25T10:00:00Z","kind":"view"}`, "id", "required field is missing"},
		{"id empty", `{"id":"","ts":"2026-11-25T10:00:00Z","kind":"view"}`, "id", "id must not be empty"},
		{"ts missing", `{"id":"e1","kind":"view"}`, "ts", "required field is missing"},
		{"ts null", `{"id":"e1","ts":null,"kind":"view"}`, "ts", "required field is missing"},
		{"declared required missing", `{"id":"e1","ts":"2026-11-25T10:00:00Z"}`, "kind", "required field is missing"},
		{"declared required null", `{"id":"e1","ts":"2026-11-25T10:00:00Z","kind":null}`, "kind", "required field is missing"},
		// strings
		{"id number", `{"id":12,"ts":"2026-11-25T10:00:00Z","kind":"view"}`, "id", "not a string"},
		{"string number", withFields(`"s":1`), "s", "not a string"},
		{"string bool", withFields(`"s":true`), "s", "not a string"},
		{"string object", withFields(`"s":{"a":"b"}`), "s", "not a string"},
		{"string array", withFields(`"s":["a"]`), "s", "not a string"},
		{"string over the limit", withFields(`"s":"` + strings.Repeat("x", MaxStringBytes+1) + `"`), "s", fmt.Sprintf("string of %d bytes is over the limit of %d", MaxStringBytes+1, MaxStringBytes)},
		{"escaped string over the limit", withFields(`"s":"` + strings.Repeat(`\u00e9`, MaxStringBytes/2+1) + `"`), "s", "over the limit"},
		// int64
		{"int64 string", withFields(`"i":"1"`), "i", "not an integer"},
		{"int64 fraction", withFields(`"i":1.5`), "i", "not an integer"},
		{"int64 exponent", withFields(`"i":1e3`), "i", "not an integer"},
		{"int64 bool", withFields(`"i":true`), "i", "not an integer"},
		{"int64 object", withFields(`"i":{}`), "i", "not an integer"},
		{"int64 array", withFields(`"i":[1]`), "i", "not an integer"},
		{"int64 overflow", withFields(`"i":9223372036854775808`), "i", "integer overflows int64"},
		{"int64 underflow", withFields(`"i":-9223372036854775809`), "i", "integer overflows int64"},
		{"int64 huge", withFields(`"i":123456789012345678901234567890`), "i", "integer overflows int64"},
		// float64
		{"float64 string", withFields(`"f":"1.5"`), "f", "not a number"},
		{"float64 bool", withFields(`"f":false`), "f", "not a number"},
		{"float64 object", withFields(`"f":{"v":1}`), "f", "not a number"},
		{"float64 array", withFields(`"f":[1.5]`), "f", "not a number"},
		{"float64 overflow", withFields(`"f":1e400`), "f", "number overflows float64"},
		{"float64 negative overflow", withFields(`"f":-1e400`), "f", "number overflows float64"},
		// bool
		{"bool string", withFields(`"b":"true"`), "b", "not a boolean"},
		{"bool number", withFields(`"b":1`), "b", "not a boolean"},
		{"bool zero", withFields(`"b":0`), "b", "not a boolean"},
		{"bool object", withFields(`"b":{}`), "b", "not a boolean"},
		// timestamps
		{"ts bool", `{"id":"e1","ts":true,"kind":"view"}`, "ts", "not a timestamp"},
		{"ts object", `{"id":"e1","ts":{},"kind":"view"}`, "ts", "not a timestamp"},
		{"ts array", `{"id":"e1","ts":[1],"kind":"view"}`, "ts", "not a timestamp"},
		{"ts words", `{"id":"e1","ts":"yesterday","kind":"view"}`, "ts", "not a timestamp (want RFC 3339 or epoch milliseconds)"},
		{"ts without zone", `{"id":"e1","ts":"2026-11-25T10:00:00","kind":"view"}`, "ts", "not a timestamp"},
		{"ts space separator", `{"id":"e1","ts":"2026-11-25 10:00:00Z","kind":"view"}`, "ts", "not a timestamp"},
		{"ts date only", `{"id":"e1","ts":"2026-11-25","kind":"view"}`, "ts", "not a timestamp"},
		{"ts epoch millis as string", `{"id":"e1","ts":"1795608000000","kind":"view"}`, "ts", "not a timestamp"},
		{"ts fractional epoch millis", `{"id":"e1","ts":1795608000000.5,"kind":"view"}`, "ts", "epoch milliseconds must be an integer"},
		{"ts exponent epoch millis", `{"id":"e1","ts":1.795608e12,"kind":"view"}`, "ts", "epoch milliseconds must be an integer"},
		{"ts before 1970", `{"id":"e1","ts":"1969-12-31T23:59:59.999Z","kind":"view"}`, "ts", "outside 1970..2099"},
		{"ts negative epoch", `{"id":"e1","ts":-1,"kind":"view"}`, "ts", "outside 1970..2099"},
		{"ts year 2100", `{"id":"e1","ts":"2100-01-01T00:00:00Z","kind":"view"}`, "ts", "outside 1970..2099"},
		{"ts offset pushes into 2100", `{"id":"e1","ts":"2099-12-31T23:30:00-01:00","kind":"view"}`, "ts", "outside 1970..2099"},
		{"ts epoch 2100", fmt.Sprintf(`{"id":"e1","ts":%d,"kind":"view"}`, MaxEventTime.UnixMilli()), "ts", "outside 1970..2099"},
		{"ts epoch beyond int64", `{"id":"e1","ts":99999999999999999999,"kind":"view"}`, "ts", "outside 1970..2099"},
		{"ts epoch max int64", `{"id":"e1","ts":9223372036854775807,"kind":"view"}`, "ts", "outside 1970..2099"},
		{"ts year 0", `{"id":"e1","ts":"0000-01-01T00:00:00Z","kind":"view"}`, "ts", "outside 1970..2099"},
		{"optional timestamp bad", withFields(`"at":"soon"`), "at", "not a timestamp"},
		{"optional timestamp out of range", withFields(`"at":-5`), "at", "outside 1970..2099"},
		// the first bad field in declaration order is the one reported
		{"first bad field wins", withFields(`"b":"no","s":5`), "s", "not a string"},
		// the whole event
		{"array", `[` + withFields("") + `]`, "", "not a JSON object"},
		{"string", `"event"`, "", "not a JSON object"},
		{"number", `42`, "", "not a JSON object"},
		{"null", `null`, "", "not a JSON object"},
		{"true", `true`, "", "not a JSON object"},
		{"empty", ``, "", "not a JSON object"},
		{"blank", " \n\t", "", "not a JSON object"},
		{"byte order mark", "\xef\xbb\xbf" + withFields(""), "", "not a JSON object"},
		{"unclosed object", `{"id":"e1"`, "", "not valid JSON: brackets or quotes do not balance"},
		{"unclosed string", `{"id":"e1`, "", "not valid JSON: brackets or quotes do not balance"},
		{"stray closing bracket", withFields("") + `}`, "", "not valid JSON: brackets or quotes do not balance"},
		{"trailing comma", withFields(`"s":"x",`), "", "not valid JSON"},
		{"single quotes", `{'id':'e1'}`, "", "not valid JSON"},
		{"NaN literal", withFields(`"f":NaN`), "", "not valid JSON"},
		{"bare word", withFields(`"s":hello`), "", "not valid JSON"},
		{"trailing garbage", withFields("") + ` xyz`, "", "not valid JSON"},
		{"two objects", withFields("") + withFields(""), "", "not valid JSON"},
		{"two objects on two lines", withFields("") + "\n" + withFields(""), "", "not valid JSON"},
		{"raw NUL byte in a string", withFields("\"s\":\"a\x00b\""), "", "not valid JSON"},
		{"raw newline in a string", withFields("\"s\":\"a\nb\""), "", "not valid JSON"},
		{"invalid UTF-8 in a value", withFields("\"s\":\"a\xffb\""), "", "not valid UTF-8"},
		{"invalid UTF-8 in a key", withFields("\"\xc3\":1"), "", "not valid UTF-8"},
		{"invalid UTF-8 in an undeclared value", withFields("\"x\":\"\xed\xa0\x80\""), "", "not valid UTF-8"},
		{"too deep in an undeclared field", deep(MaxNesting), "", fmt.Sprintf("event nests %d levels deep, over the limit of %d", MaxNesting+1, MaxNesting)},
		{"too deep objects", withFields(`"deep":` + strings.Repeat(`{"a":`, MaxNesting) + "1" + strings.Repeat("}", MaxNesting)), "", "over the limit of 32"},
		{"too deep in a declared field", withFields(`"s":` + nested(MaxNesting)), "", "over the limit of 32"},
		{"very deep", deep(100000), "", "over the limit of 32"},
		{"event over MaxEventBytes", withFields(`"pad":"` + strings.Repeat("p", MaxEventBytes) + `"`), "", "over the limit of 1048576"},
	}
}

func TestDecodeRejects(t *testing.T) {
	cfg := allTypesConfig(t)
	dec := NewDecoder(cfg.Stream("ev"), time.Hour)
	for _, tc := range rejectCases() {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := dec.Decode([]byte(tc.json), t0)
			require.Error(t, err)
			require.Equal(t, Event{}, ev, "a rejected event must not be half-filled")
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tc.field, fe.Field, err.Error())
			require.Contains(t, err.Error(), tc.reason)
			if tc.field != "" {
				require.True(t, strings.HasPrefix(err.Error(), fmt.Sprintf("field %q: ", tc.field)), err.Error())
			}
			require.False(t, errors.Is(err, ErrFutureEvent))
		})
	}
}

// TestDecodeSizeLimits checks the byte limits at their edges.
func TestDecodeSizeLimits(t *testing.T) {
	cfg := allTypesConfig(t)
	dec := NewDecoder(cfg.Stream("ev"), 0)
	padded := func(size int) []byte {
		head := withFields(`"pad":"`)
		head = head[:len(head)-1] // drop the closing brace
		fill := size - len(head) - len(`"}`)
		return []byte(head + strings.Repeat("p", fill) + `"}`)
	}
	ok := padded(MaxEventBytes)
	require.Len(t, ok, MaxEventBytes)
	_, err := dec.Decode(ok, t0)
	require.NoError(t, err)

	over := padded(MaxEventBytes + 1)
	_, err = dec.Decode(over, t0)
	require.EqualError(t, err, fmt.Sprintf("event is %d bytes, over the limit of %d", MaxEventBytes+1, MaxEventBytes))

	// The string limit counts decoded bytes: é is two bytes in UTF-8.
	_, err = dec.Decode([]byte(withFields(`"s":"`+strings.Repeat(`\u00e9`, MaxStringBytes/2)+`"`)), t0)
	require.NoError(t, err)
}

func TestDecodeFutureSkew(t *testing.T) {
	cfg := allTypesConfig(t)
	s := cfg.Stream("ev")
	at := func(ts time.Time) []byte {
		return []byte(fmt.Sprintf(`{"id":"e1","ts":%d,"kind":"view"}`, ts.UnixMilli()))
	}
	skew := time.Hour
	dec := NewDecoder(s, skew)
	cases := []struct {
		name   string
		ts     time.Time
		ingest time.Time
		future bool
	}{
		{"at ingest time", t0, t0, false},
		{"exactly at the skew", t0.Add(skew), t0, false},
		{"one ms beyond the skew", t0.Add(skew + time.Millisecond), t0, true},
		{"a day ahead", t0.Add(24 * time.Hour), t0, true},
		{"far in the past", time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC), t0, false},
		{"ingest time in another zone", t0.Add(skew + time.Millisecond), t0.In(time.FixedZone("X", 5*3600)), true},
		{"zero ingest time skips the check", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, false},
		// Only the ingest time counts, not the clock of the decoding machine:
		// an old message replayed years later gets the verdict it had then.
		{"future of a past ingest time", time.Date(2001, 1, 1, 2, 0, 0, 0, time.UTC), time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"far future ingest time", time.Date(2098, 1, 1, 0, 30, 0, 0, time.UTC), time.Date(2098, 1, 1, 0, 0, 0, 0, time.UTC), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := dec.Decode(at(tc.ts), tc.ingest)
			if !tc.future {
				require.NoError(t, err)
				require.Equal(t, tc.ts, ev.Time)
				return
			}
			require.ErrorIs(t, err, ErrFutureEvent)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, "ts", fe.Field)
			require.Contains(t, err.Error(), "more than 1h0m0s after ingest time")
		})
	}
	// MaxFutureSkew zero turns the check off.
	_, err := NewDecoder(s, 0).Decode(at(t0.Add(1000*time.Hour)), t0)
	require.NoError(t, err)
}

// TestDecodeDeterministic: the verdict and the decoded event depend only on
// the bytes and the ingest time, so two decoders (two layers, two machines,
// a replay) agree.
func TestDecodeDeterministic(t *testing.T) {
	inputs := [][]byte{[]byte(withFields(`"s":"a","i":1,"f":2.5,"b":true,"at":5`))}
	for _, tc := range rejectCases() {
		inputs = append(inputs, []byte(tc.json))
	}
	inputs = append(inputs, []byte(`{"id":"e1","ts":"2026-11-25T12:00:00Z","kind":"view"}`))
	ingests := []time.Time{{}, t0, t0.Add(time.Hour), t0.Add(-time.Hour)}
	for _, in := range inputs {
		for _, ingest := range ingests {
			a, errA := NewDecoder(allTypesConfig(t).Stream("ev"), time.Hour).Decode(in, ingest)
			b, errB := NewDecoder(allTypesConfig(t).Stream("ev"), time.Hour).Decode(append([]byte(nil), in...), ingest)
			require.Equal(t, a, b)
			if errA == nil {
				require.NoError(t, errB)
				continue
			}
			require.EqualError(t, errB, errA.Error())
		}
	}
}
