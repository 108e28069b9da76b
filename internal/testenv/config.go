package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ExampleConfigYAML returns tandem.example.yaml with each old string replaced
// by its new one (pairs, in order), so tests share the example's stream and
// view instead of copying them. A replacement whose old string is not in the
// file fails the test: a test must notice when the example it edits changes.
func ExampleConfigYAML(t testing.TB, oldNew ...string) string {
	t.Helper()
	return replaceExample(t, "ExampleConfigYAML", exampleConfig(t), oldNew)
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
	return replaceExample(t, "ExampleStreamsYAML", s[at+1:], oldNew)
}

func exampleConfig(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(RepoRoot(t), "tandem.example.yaml"))
	if err != nil {
		t.Fatalf("testenv: reading the example configuration: %v", err)
	}
	return string(data)
}

func replaceExample(t testing.TB, fn, s string, oldNew []string) string {
	t.Helper()
	if len(oldNew)%2 != 0 {
		t.Fatalf("testenv.%s: replacements come in old, new pairs; got %d strings", fn, len(oldNew))
	}
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("testenv.%s: %q is not in tandem.example.yaml", fn, oldNew[i])
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	return s
}
