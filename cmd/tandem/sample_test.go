package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestSampleTrafficOutlivesItsGenerator: when the sample generator gives up
// (here the gateway refuses its first requests outright), `tandem dev`'s
// sample traffic logs it, pauses and starts again; it never ends the
// platform with an error.
func TestSampleTrafficOutlivesItsGenerator(t *testing.T) {
	root := testenv.RepoRoot(t)
	example, err := os.ReadFile(filepath.Join(root, "tandem.example.yaml"))
	require.NoError(t, err)
	var posts, refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if posts.Add(1) <= 2 {
			refused.Add(1)
			http.Error(w, `{"error":"refused for the test"}`, http.StatusBadRequest)
			return
		}
		n := bytes.Count(bytes.TrimSpace(b), []byte("\n")) + 1
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"accepted":`+strconv.Itoa(n)+`,"rejected":0,"errors":[]}`)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	conf := strings.ReplaceAll(string(example), `"127.0.0.1:8080"`, `"`+addr+`"`)
	cfg, err := config.Parse("tandem.yaml", []byte(conf), func(string) (string, bool) { return "", false })
	require.NoError(t, err)

	var logs bytes.Buffer
	s := &sampleTraffic{cfg: cfg, rate: 50, log: slog.New(slog.NewTextHandler(&logs, nil)), pause: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.Eventually(t, func() bool { return posts.Load() >= 5 }, 10*time.Second, 20*time.Millisecond,
		"the sample traffic did not start again after its generator gave up")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("sample traffic did not stop with its context")
	}
	require.Equal(t, int64(2), refused.Load())
	require.Equal(t, 2, strings.Count(logs.String(), "sample traffic gave up"), logs.String())
}
