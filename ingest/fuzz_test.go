package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzSplitBody checks the gateway's body splitters against the standard
// library: splitArray finds exactly the elements encoding/json finds in a
// valid array (each its original bytes), refuses what it refuses, and both
// splitters stop with errTooManyEvents exactly past maxEvents, never
// returning more.
func FuzzSplitBody(f *testing.F) {
	for _, s := range []string{`[{"a":1},{"b":"x,]"}]`, ` [ 1 , [2,[3]] , "s\"]" , {} ] `, `{"one":1}`, `[]`, "[1,2,3", "\n a \r\n\n\tb\n", `[1,,2]`, "\x00"} {
		f.Add([]byte(s), 2)
	}
	f.Fuzz(func(t *testing.T, body []byte, maxEvents int) {
		if maxEvents <= 0 || maxEvents > 1000 {
			return
		}
		els, err := splitArray(body, maxEvents)
		var want []json.RawMessage
		trimmed := bytes.TrimSpace(body)
		jerr := json.Unmarshal(trimmed, &want)
		switch {
		case len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed):
			if err != nil || len(els) != 1 || !bytes.Equal(els[0], trimmed) {
				t.Fatalf("an object body is one event: %q, %v", els, err)
			}
		case jerr != nil:
			if err == nil {
				t.Fatalf("splitArray took %q, which encoding/json refuses (%v)", body, jerr)
			}
		case len(want) > maxEvents:
			if !errors.Is(err, errTooManyEvents) {
				t.Fatalf("%d elements over a limit of %d: got %d, %v", len(want), maxEvents, len(els), err)
			}
		default:
			if err != nil || len(els) != len(want) {
				t.Fatalf("splitArray found %d elements (%v), encoding/json %d in %q", len(els), err, len(want), body)
			}
			for i := range want {
				if !bytes.Equal(els[i], want[i]) {
					t.Fatalf("element %d: %q, want %q", i, els[i], want[i])
				}
			}
		}

		lines, err := splitLines(body, maxEvents)
		var wantLines [][]byte
		for _, l := range bytes.Split(body, []byte{'\n'}) {
			if l = bytes.TrimSpace(l); len(l) > 0 {
				wantLines = append(wantLines, l)
			}
		}
		if len(wantLines) > maxEvents {
			if !errors.Is(err, errTooManyEvents) || lines != nil {
				t.Fatalf("%d lines over a limit of %d: got %d, %v", len(wantLines), maxEvents, len(lines), err)
			}
			return
		}
		if err != nil || len(lines) != len(wantLines) {
			t.Fatalf("splitLines: %d lines (%v), want %d", len(lines), err, len(wantLines))
		}
		for i := range lines {
			if !bytes.Equal(lines[i], wantLines[i]) {
				t.Fatalf("line %d: %q, want %q", i, lines[i], wantLines[i])
			}
		}
	})
}
