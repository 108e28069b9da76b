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
	if len(oldNew)%2 != 0 {
		t.Fatalf("testenv.ExampleConfigYAML: replacements come in old, new pairs; got %d strings", len(oldNew))
	}
	data, err := os.ReadFile(filepath.Join(RepoRoot(t), "tandem.example.yaml"))
	if err != nil {
		t.Fatalf("testenv: reading the example configuration: %v", err)
	}
	s := string(data)
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("testenv.ExampleConfigYAML: %q is not in tandem.example.yaml", oldNew[i])
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	return s
}
