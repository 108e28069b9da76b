package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// ExampleConfigYAML returns tandem.example.yaml with each old string replaced
// by its new one (pairs, in order), so tests share the example's stream and
// view instead of copying them. A replacement whose old string is not in the
// file fails the test: a test must notice when the example it edits changes.
func ExampleConfigYAML(t testing.TB, oldNew ...string) string {
	t.Helper()
	return replaceExample(t, "ExampleConfigYAML", "tandem.example.yaml", exampleConfig(t), oldNew)
}

// ExampleStreamsYAML returns the streams: and views: sections of
// tandem.example.yaml (the pageviews stream and its pageviews_by_country
// view), each old string replaced by its new one as in ExampleConfigYAML.
// A test writes its own store and component settings above it, so the
// fixture every package tests against is the one the example documents.
func ExampleStreamsYAML(t testing.TB, oldNew ...string) string {
	t.Helper()
	s := exampleConfig(t)
	at := strings.Index(s, "\nstreams:\n")
	if at < 0 {
		t.Fatalf("testenv.ExampleStreamsYAML: tandem.example.yaml has no top-level streams: section")
	}
	return replaceExample(t, "ExampleStreamsYAML", "tandem.example.yaml", s[at+1:], oldNew)
}

func exampleConfig(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(RepoRoot(t), "tandem.example.yaml"))
	if err != nil {
		t.Fatalf("testenv: reading the example configuration: %v", err)
	}
	return string(data)
}

// replaceExample applies the old, new pairs to s, the fixture named src.
func replaceExample(t testing.TB, fn, src, s string, oldNew []string) string {
	t.Helper()
	if len(oldNew)%2 != 0 {
		t.Fatalf("testenv.%s: replacements come in old, new pairs; got %d strings", fn, len(oldNew))
	}
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("testenv.%s: %q is not in %s", fn, oldNew[i], src)
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	return s
}

// allTypesYAML declares the "ev" stream with a field of every type, one
// required field besides id and time, and the "every" view with every
// measure type over them: the fixture of the decoder and typed-column
// tests in schemas and batch.
const allTypesYAML = `
chunk_size: 100
streams:
  - name: ev
    partitions: 2
    id_field: id
    time_field: ts
    fields:
      - { name: id,   type: string }
      - { name: ts,   type: timestamp }
      - { name: kind, type: string, required: true }
      - { name: s,    type: string }
      - { name: i,    type: int64 }
      - { name: f,    type: float64 }
      - { name: b,    type: bool }
      - { name: at,   type: timestamp }
views:
  - name: every
    stream: ev
    granularity: 5m
    dimensions: [kind, s]
    measures:
      - { name: n,     type: count }
      - { name: sum_i, type: sum,       field: i }
      - { name: sum_f, type: sum,       field: f }
      - { name: min_i, type: min,       field: i }
      - { name: max_i, type: max,       field: i }
      - { name: min_f, type: min,       field: f }
      - { name: max_f, type: max,       field: f }
      - { name: d_s,   type: distinct,  field: s }
      - { name: d_i,   type: distinct,  field: i }
      - { name: d_f,   type: distinct,  field: f }
      - { name: d_b,   type: distinct,  field: b }
      - { name: d_at,  type: distinct,  field: at }
      - { name: q_i,   type: quantiles, field: i }
      - { name: q_f,   type: quantiles, field: f }
`

// AllTypesYAML returns the every-type fixture (the "ev" stream and its
// "every" view), each old string replaced by its new one as in
// ExampleConfigYAML. t may be nil only when there are no replacements.
func AllTypesYAML(t testing.TB, oldNew ...string) string {
	if len(oldNew) == 0 {
		return allTypesYAML
	}
	t.Helper()
	return replaceExample(t, "AllTypesYAML", "the every-type fixture", allTypesYAML, oldNew)
}

// SectionReject is a component's section of tandem.yaml (the lines after
// "chunk_size: 100") that its owner must refuse with an error containing
// Want.
type SectionReject struct{ Name, Section, Want string }

// CheckSectionConfig holds a component's ConfigFrom to its section's
// rules: every case is refused, its error naming the file (and, as Want
// says, the key and line), while the vocabulary loads fine (parse is
// schemas.Parse, passed in because schemas' own tests use this package);
// and a file without the section gives defaults.
func CheckSectionConfig[S, C any](t *testing.T, parse func(name string, data []byte, lookup func(string) (string, bool)) (S, error), configFrom func(S) (C, error), defaults C, cases []SectionReject) {
	t.Helper()
	noEnv := func(string) (string, bool) { return "", false }
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			sc, err := parse("t.yaml", []byte("chunk_size: 100\n"+tc.Section), noEnv)
			require.NoError(t, err, "the vocabulary is fine")
			_, err = configFrom(sc)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.Want)
			require.True(t, strings.HasPrefix(err.Error(), "t.yaml:"), err.Error())
		})
	}
	sc, err := parse("t.yaml", []byte("chunk_size: 100\n"), noEnv)
	require.NoError(t, err)
	c, err := configFrom(sc)
	require.NoError(t, err)
	require.Equal(t, defaults, c, "a file without the section has the defaults")
}
