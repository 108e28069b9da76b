package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestConfigValidateReportsEverySection: `tandem config validate` reports
// the problems of the vocabulary and of every component's section in one
// run, each with its line, and accepts the example.
func TestConfigValidateReportsEverySection(t *testing.T) {
	example := testenv.ExampleConfigYAML(t)
	ok := filepath.Join(t.TempDir(), "ok.yaml")
	require.NoError(t, os.WriteFile(ok, []byte(example), 0o644))
	require.NoError(t, cmdConfig(context.Background(), []string{"validate", "--config", ok}))

	bad := testenv.ExampleConfigYAML(t,
		"chunk_size: 10000", "chunk_size: 0",
		"max_body_bytes: 8388608", "max_body_bytes: 0",
		"{ every: 10m }", "{ every: 10m, keep_runs: 1 }",
		`{ listen: "127.0.0.1:8081" }`, `{ listen: "127.0.0.1:8081", max_result_rows: 0 }`,
		"flush_interval: 1s", "flush_interval: 0",
		"max_file_age: 5m", "max_file_age: 0",
	) + "status: { addrs: { gateway: \"x:1\" } }\n"
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o644))
	err := cmdConfig(context.Background(), []string{"validate", "--config", path})
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{"chunk_size must be positive", "ingest.max_body_bytes must be positive", "batch.keep_runs must be at least 2",
		"serve.max_result_rows must be positive", "speed.flush_interval must be positive", "archive.max_file_bytes and archive.max_file_age must be positive",
		`status.addrs: "gateway" is not a component`} {
		require.Contains(t, err.Error(), want)
	}
	for _, l := range lines {
		require.Regexp(t, `^`+regexpQuote(path)+`:\d+: `, l, "every error names its line")
	}
}

func regexpQuote(s string) string {
	return strings.NewReplacer(".", `\.`, "/", `/`, "-", `\-`).Replace(s)
}
