package ops

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER  abc ", "abc", true},
		{"BeArEr\tabc", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearerabc", "", false},
		{"Basic abc", "", false},
		{"abc", "", false},
		{"", "", false},
	} {
		tok, ok := BearerToken(tc.header)
		require.Equal(t, tc.ok, ok, "%q", tc.header)
		require.Equal(t, tc.token, tok, "%q", tc.header)
	}
}

func TestBearerWrapAndClient(t *testing.T) {
	b := NewBearer([]string{"one-secret", "two-secret"})
	h := b.Wrap("x", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("in")) }), nil)
	for _, tc := range []struct {
		header string
		code   int
	}{
		{"", 401}, {"Bearer one", 401}, {"Bearer one-secretx", 401}, {"Basic one-secret", 401},
		{"Bearer one-secret", 200}, {"bearer two-secret", 200}, {"BEARER two-secret", 200},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "192.0.2.7:5555"
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		require.Equal(t, tc.code, w.Code, "%q", tc.header)
		if tc.code == 401 {
			require.Equal(t, `Bearer realm="x"`, w.Header().Get("WWW-Authenticate"))
			require.NotContains(t, w.Body.String(), "secret")
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8::1]:80"
	ok, client := b.Check(r)
	require.False(t, ok)
	require.Equal(t, "addr:2001:db8::1", client)
	r.Header.Set("Authorization", "Bearer one-secret")
	ok, client = b.Check(r)
	require.True(t, ok)
	require.Regexp(t, `^token:[0-9a-f]{16}$`, client)
	require.NotContains(t, client, "secret")
	require.True(t, NewBearer(nil).Open())
}

// TestMetricsTokens: with tokens, /metrics needs one; the probes stay open.
func TestMetricsTokens(t *testing.T) {
	mux := http.NewServeMux()
	MountAuth(mux, prometheus.NewRegistry(), NewBearer([]string{"scrape-secret"}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, 401, get("/metrics", ""))
	require.Equal(t, 401, get("/metrics", "Bearer wrong"))
	require.Equal(t, 200, get("/metrics", "bearer scrape-secret"))
	require.Equal(t, 200, get("/healthz", ""))
	require.Equal(t, 200, get("/readyz", ""))
}

// TestHTTPServerCutsSlowBody: a client that sends its body slower than the
// read timeout is cut there; one that never reads its answer is cut at the
// write timeout.
func TestHTTPServerCutsSlowBody(t *testing.T) {
	var readErr = make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	})
	big := make([]byte, 64<<20)
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(big)
		readErr <- err
	})
	s := &HTTPServer{Name: "t", Addr: "127.0.0.1:0", Handler: mux,
		Timeouts: Timeouts{ReadHeader: 300 * time.Millisecond, Read: 500 * time.Millisecond, Write: time.Second}}
	require.NoError(t, s.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c, err := net.Dial("tcp", s.BoundAddr())
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
	select {
	case err := <-readErr:
		require.Error(t, err)
		require.Less(t, time.Since(start), 2*time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled body was not cut at the read timeout")
	}

	c2, err := net.Dial("tcp", s.BoundAddr())
	require.NoError(t, err)
	defer c2.Close()
	start = time.Now()
	fmt.Fprintf(c2, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	_, err = http.ReadResponse(bufio.NewReader(c2), nil) // the headers, then never read
	require.NoError(t, err)
	select {
	case err := <-readErr:
		require.Error(t, err, "the answer cannot have been written whole")
		require.Less(t, time.Since(start), 3*time.Second)
	case <-time.After(6 * time.Second):
		t.Fatal("a client not reading its answer was not cut at the write timeout")
	}
}
