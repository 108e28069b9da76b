// Package archtest checks the layering rules of docs/architecture.md that
// the compiler does not: each outside system's client library is imported
// only by its adapter under internal/.
package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

const module = "github.com/tandem-analytics/tandem/"

// adapters maps a client library (module path prefix) to the packages
// allowed to import it outside tests. internal/testenv starts and drives
// the real servers for tests and is used by tests only.
var adapters = map[string][]string{
	"github.com/minio/minio-go/":       {"internal/s3", "internal/testenv"},
	"github.com/parquet-go/parquet-go": {"internal/parquet"},
	"github.com/segmentio/kafka-go":    {"internal/kafka", "internal/testenv"},
}

// TestClientLibrariesOnlyInTheirAdapters lists every package's non-test
// imports (go list; test files are in TestImports and XTestImports, not
// read here) and fails naming each package that imports a client library
// outside its adapter.
func TestClientLibrariesOnlyInTheirAdapters(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = testenv.RepoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr.String())

	var violations []string
	users := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg := strings.TrimPrefix(fields[0], module)
		for _, imp := range fields[1:] {
			for lib, allowed := range adapters {
				if !strings.HasPrefix(imp, lib) {
					continue
				}
				users[lib]++
				if !within(pkg, allowed) {
					violations = append(violations, pkg+" imports "+imp+" (allowed only in "+strings.Join(allowed, ", ")+")")
				}
			}
		}
	}
	require.NoError(t, sc.Err())
	sort.Strings(violations)
	require.Empty(t, violations, "client libraries outside their adapters (docs/architecture.md, adapter rules)")
	for lib := range adapters {
		// The check reads what go list says: if a library stopped showing up
		// at all, the listing (or this table) is wrong, not the code clean.
		require.Positive(t, users[lib], "no package imports %s: is the table above stale?", lib)
	}
}

func within(pkg string, allowed []string) bool {
	for _, a := range allowed {
		if pkg == a || strings.HasPrefix(pkg, a+"/") {
			return true
		}
	}
	return false
}
