package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzScanEventAgrees checks the one-pass decoder against the careful one: whenever the fast path accepts, the careful path
// accepts with the same literals; and the fast path accepts every valid
// object the careful path accepts (within ASCII whitespace).
var reused = Event{Values: []Value{{Set: true, Str: "dirty", Int: 3, Float: 2, Bool: true, Time: time.Now()}, {Set: true, Str: "x"}, {Set: true}, {Set: true}, {Set: true}, {Set: true}, {Set: true}, {Set: true}, {Set: true}, {Set: true}, {Set: true}, {Set: true}}}

func FuzzScanEventAgrees(f *testing.F) {
	cfg := allTypesConfig(f)
	s := cfg.Stream("ev")
	for _, seed := range []string{withFields(""), withFields(`"s":"a","i":-3,"f":2.5e-3,"b":true,"at":1000`),
		withFields(`"s":null,"x":{"y":[1,2,{"z":null}]}`), withFields(`"s":"a\u0000b","s":"\u00e9x"`), `{}`, ` {"a":1} `,
		withFields(`"deep":` + nested(MaxNesting-1)), withFields(`"deep":` + nested(MaxNesting)), `{"a":"` + "\xff" + `"}`,
		`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":1E+5}`, `{"a":tru}`, `{"a":[1,]}`, `{"a":{"b":1,}}`, "{\"a\":\"\t\"}",
		`{"a":"\x"}`, `{"a":"\u12G4"}`, `{"\u0069d":"x"}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast := make([]json.RawMessage, len(s.Fields))
		slow := make([]json.RawMessage, len(s.Fields))
		ok := s.scanEvent(data, fast)
		err := s.checkEvent(data, slow)
		if ok {
			require.NoError(t, err, "fast path accepted what the careful path refuses")
			require.Equal(t, slow, fast)
		} else if err == nil && bytes.Equal(bytes.Trim(data, " \t\r\n"), bytes.TrimSpace(data)) {
			t.Fatalf("fast path refused a valid event: %q", data)
		}
		// Decode itself agrees with the careful path alone.
		dev, derr := NewDecoder(s, time.Hour).Decode(data, time.Time{})
		if err != nil {
			require.EqualError(t, derr, err.Error())
		}
		// DecodeInto over storage dirtied by earlier inputs: same result.
		ierr := NewDecoder(s, time.Hour).DecodeInto(&reused, data, time.Time{})
		require.Equal(t, fmt.Sprint(derr), fmt.Sprint(ierr))
		if derr == nil {
			require.Equal(t, dev.ID, reused.ID)
			require.Equal(t, dev.Time, reused.Time)
			require.Equal(t, dev.Values, reused.Values)
		} else {
			require.Equal(t, "", reused.ID)
			require.Len(t, reused.Values, 0)
		}
	})
}

func BenchmarkZZScanFast(b *testing.B) {
	s := exampleConfig(b).Stream("pageviews")
	raw := typicalPageview()
	lits := make([]json.RawMessage, len(s.Fields))
	for b.Loop() {
		if !s.scanEvent(raw, lits) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkZZScanCareful(b *testing.B) {
	s := exampleConfig(b).Stream("pageviews")
	raw := typicalPageview()
	lits := make([]json.RawMessage, len(s.Fields))
	for b.Loop() {
		if s.checkEvent(raw, lits) != nil {
			b.Fatal("refused")
		}
	}
}
