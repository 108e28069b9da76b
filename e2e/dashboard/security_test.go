package dashboard_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestIngestTLSTokensAndLimits runs `tandem ingest` with a self-signed
// certificate, a token and a small body limit against a real Kafka-protocol
// broker. (Serve's TLS and tokens are covered by
// TestPlatformStatusAndDashboard; the analyst user's read-only grant by
// internal/clickhouse's analyst_test.go.)
func TestIngestTLSTokensAndLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tandem ingest as a process")
	}
	kafka := testenv.Kafka(t)
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	text, _ := configText(t, map[string]string{
		"kafka:":  fmt.Sprintf(`kafka:      { brokers: ["%s"] }`, strings.Join(kafka.Brokers, `", "`)),
		"ingest:": fmt.Sprintf(`ingest:     { listen: "%s", max_body_bytes: 4096, max_inflight_bytes: 8192, tls: { cert_file: "%s", key_file: "%s" } }`, listen, certFile, keyFile),
		"auth:":   fmt.Sprintf(`auth:       { ingest_tokens: ["%s"], query_tokens: ["%s"] }`, ingestToken, queryToken),
	})
	cfgPath := filepath.Join(dir, "tandem.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(text), 0o644))
	ing := startTandem(t, dir, "ingest", "--config", cfgPath)
	https := tlsClient(pool)
	base := "https://" + listen
	waitHTTP(t, ing, https, base+"/readyz", time.Minute)

	post := func(client *http.Client, url, token, body string) int {
		req, err := http.NewRequest(http.MethodPost, url+"/v1/streams/pageviews/events", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-ndjson")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	event := fmt.Sprintf(`{"event_id":"tls-1","ts":"%s","country":"DE"}`+"\n", time.Now().UTC().Format(time.RFC3339))
	for _, tc := range []struct {
		name, token, body string
		want              int
	}{
		{"valid token over TLS", ingestToken, event, http.StatusOK},
		{"no token", "", event, http.StatusUnauthorized},
		{"wrong token", wrongToken, event, http.StatusUnauthorized},
		{"query token is not an ingest token", queryToken, event, http.StatusUnauthorized},
		{"body over ingest.max_body_bytes", ingestToken, strings.Repeat(event, 4096/len(event)+1), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, post(https, base, tc.token, tc.body))
		})
	}
	// Plain HTTP on the TLS port is refused.
	resp, err := http.Post("http://"+listen+"/v1/streams/pageviews/events", "application/x-ndjson", strings.NewReader(event))
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	}
	_, metrics := get(t, https, base+"/metrics", "")
	require.Regexp(t, `tandem_auth_failures_total\{endpoint="ingest"\} 3`, metrics)
	logs := ing.stderr.String()
	for _, tok := range []string{ingestToken, queryToken, wrongToken} {
		require.NotContains(t, logs, tok)
	}
}
