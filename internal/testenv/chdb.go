package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// CHDBLibPath returns the path of libchdb.so, a current ClickHouse engine
// that github.com/chdb-io/chdb-go loads in-process (set CHDB_LIB_PATH to
// this path before the first chdb call). Tests use it to check that tandem's
// DDL and queries also run on a current ClickHouse, not only on 18.16.
//
// It honours CHDB_LIB_PATH when that names an existing file, else looks
// where `make chdb-lib` (scripts/chdb.sh) installs the npm package
// @chdb/lib-linux-x64-gnu. A missing library fails the test (skips it under
// -short).
func CHDBLibPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CHDB_LIB_PATH"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(CacheDir(), "chdb", "node_modules", "@chdb", "lib-linux-x64-gnu", "libchdb.so")
	if _, err := os.Stat(p); err != nil {
		missing(t, "libchdb.so is not installed at %s; install it with `make chdb-lib` (scripts/chdb.sh, ~180 MB)", p)
	}
	return p
}
