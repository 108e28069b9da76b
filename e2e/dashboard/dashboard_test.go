// Package dashboard_test runs the real platform (`tandem dev` as a process,
// on free ports, with tokens and TLS on serve) and checks the operator
// surface end to end: `tandem status` verdicts and JSON, GET /v1/status,
// the web dashboard in headless Chromium, and the security settings.
package dashboard_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/status"
)

const (
	ingestToken = "ingest-secret-8f3a1c"
	queryToken  = "query-secret-5d2e9b"
	wrongToken  = "wrong-token-77aa01"
	view        = "pageviews_by_country"
)

type cell struct {
	views   int64
	revenue float64
}

func TestPlatformStatusAndDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole platform")
	}
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	text, addrs := configText(t, map[string]string{
		"serve:": fmt.Sprintf(`serve:      { listen: "%s", tls: { cert_file: "%s", key_file: "%s" } }`, "SERVE", certFile, keyFile),
		"auth:":  fmt.Sprintf(`auth:       { ingest_tokens: ["%s"], query_tokens: ["%s"] }`, ingestToken, queryToken),
		"batch:": `batch:      { every: 0 }`,
	})
	text = strings.Replace(text, `"SERVE"`, `"`+addrs["serve"]+`"`, 1)
	cfgPath := filepath.Join(dir, "tandem.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(text), 0o644))

	dev := startTandem(t, dir, "dev", "--config", cfgPath, "--data-dir", filepath.Join(dir, "data"),
		"--scripts", filepath.Join(testenv.RepoRoot(t), "scripts"), "--gen-rate", "20")
	https := tlsClient(pool)
	serveURL := "https://" + addrs["serve"]
	waitHTTP(t, dev, https, serveURL+"/readyz", 3*time.Minute)
	waitHTTP(t, dev, http.DefaultClient, "http://"+addrs["speed"]+"/readyz", time.Minute)

	// Known events on a day the sample traffic never touches (it writes
	// now and up to six hours back), so the explorer's numbers are stable
	// and the truth is computed here from the events themselves.
	base := time.Now().UTC().Add(-72 * time.Hour).Truncate(time.Hour)
	truth := sendEvents(t, "http://"+addrs["ingest"], base)
	from, to := base.Format(time.RFC3339), base.Add(3*time.Hour).Format(time.RFC3339)
	q := url.Values{"from": {from}, "to": {to}, "granularity": {"1h"}, "group_by": {"country"}}
	waitForTruth(t, https, serveURL+"/v1/views/"+view+"/query?"+q.Encode(), truth)

	t.Run("status healthy", func(t *testing.T) {
		out, errOut, code := runStatus(t, dir, "--config", cfgPath, "--json", "--interval", "1s")
		var rep status.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep), "stdout: %s\nstderr: %s", out, errOut)
		var reds []string
		for _, c := range rep.Checks {
			if c.Verdict == status.Red {
				reds = append(reds, c.Name+": "+c.Detail)
			}
		}
		require.Empty(t, reds)
		require.Equal(t, 0, code)
		require.Contains(t, []status.Verdict{status.Green, status.Yellow}, rep.Verdict)
		checkShape(t, out, rep)
		// Live numbers: traffic flows, speed keeps up, and events are fresh.
		require.Greater(t, val(t, rep, "ingest.events_per_second"), 0.0)
		require.Greater(t, val(t, rep, "speed.events_per_second"), 0.0)
		require.Less(t, val(t, rep, "speed.freshness_seconds"), 60.0)
		require.Len(t, rep.Partitions, 6)
		for _, p := range rep.Partitions {
			require.Positive(t, p.HighWater, "partition %d", p.Partition)
			require.GreaterOrEqual(t, p.SpeedLag, int64(0))
		}
		// Open surfaces: tokens on both APIs, ingest on loopback: none.
		require.Equal(t, 0.0, val(t, rep, "security.open_surfaces"))
		// The table for people says the same.
		text, _, code := runStatus(t, dir, "--config", cfgPath, "--interval", "1s")
		require.Equal(t, 0, code)
		require.Contains(t, text, "speed.freshness_seconds")
		require.Contains(t, text, "PARTITIONS")
	})

	t.Run("status with a stopped component is red", func(t *testing.T) {
		dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		out, _, code := runStatus(t, dir, "--config", cfgPath, "--interval", "1s", "--addr", "speed="+dead)
		require.NotEqual(t, 0, code)
		require.Contains(t, out, "speed: not reachable at "+dead)
		out, _, code = runStatus(t, dir, "--config", cfgPath, "--json", "--interval", "1s", "--addr", "speed="+dead)
		require.Equal(t, 1, code)
		var rep status.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, status.Red, rep.Verdict)
		require.Equal(t, status.Red, rep.Check("component.speed").Verdict)
		require.Equal(t, status.Unknown, rep.Check("speed.events_per_second").Verdict)
		require.Nil(t, rep.Check("speed.events_per_second").Value)
		// Store-based answers still come: lag from Kafka and ClickHouse.
		require.NotNil(t, rep.Check("kafka.speed_lag_messages").Value)
	})

	t.Run("v1/status over TLS with a token", func(t *testing.T) {
		resp, body := get(t, https, serveURL+"/v1/status", "")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, body)
		resp, body = get(t, https, serveURL+"/v1/status", wrongToken)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, body)
		resp, body = get(t, https, serveURL+"/v1/status", queryToken)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		var rep status.Report
		require.NoError(t, json.Unmarshal([]byte(body), &rep))
		checkShape(t, body, rep)
		require.Equal(t, "in-process", rep.Components[3].Addr) // serve reads itself
	})

	t.Run("browser", func(t *testing.T) {
		modules := browserTools(t)
		shot := filepath.Join(t.TempDir(), "dashboard.png")
		cmd := exec.Command("node", filepath.Join(testenv.RepoRoot(t), "e2e", "dashboard", "dashboard.mjs"))
		cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "BASE_URL="+serveURL, "TOKEN="+queryToken, "VIEW="+view,
			"FROM="+from, "TO="+to, "GRANULARITY=1h", "GROUP_BY=country", "SCREENSHOT="+shot,
			"LIMIT2=1", "ORDER2=views", "FILTER2=country!:DE", "TZ2=Europe/Amsterdam",
			"USER_DATA_DIR="+filepath.Join(t.TempDir(), "profile"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr := cmd.Run()
		var out struct {
			StatusChecked int                 `json:"statusChecked"`
			CanvasInk     map[string]int      `json:"canvasInk"`
			Table         []map[string]string `json:"table"`
			API           struct {
				Rows []struct {
					WindowStart string            `json:"window_start"`
					Dimensions  map[string]string `json:"dimensions"`
					Measures    map[string]any    `json:"measures"`
				} `json:"rows"`
			} `json:"api"`
			Table2 []map[string]string `json:"table2"`
			API2   struct {
				TZ        string `json:"tz"`
				Truncated bool   `json:"truncated"`
				Rows      []struct {
					WindowStart string            `json:"window_start"`
					Dimensions  map[string]string `json:"dimensions"`
				} `json:"rows"`
			} `json:"api2"`
			QueryURL2     string                       `json:"queryUrl2"`
			Info2         string                       `json:"info2"`
			SVG           struct{ Series, Points int } `json:"svg"`
			TokenPrompted bool                         `json:"tokenPrompted"`
			Errors        []string                     `json:"errors"`
		}
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "node: %v\nstdout: %s\nstderr: %s", runErr, stdout.String(), stderr.String())
		require.Empty(t, out.Errors)
		require.NoError(t, runErr, stderr.String())
		if d := os.Getenv("TANDEM_SCREENSHOT_DIR"); d != "" {
			b, err := os.ReadFile(shot)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(d, "dashboard.png"), b, 0o644))
		}
		info, err := os.Stat(shot)
		require.NoError(t, err)
		require.Greater(t, info.Size(), int64(20000), "the screenshot is nearly empty")

		require.True(t, out.TokenPrompted, "the page must ask for the query token")
		require.GreaterOrEqual(t, out.StatusChecked, 40, "numbers on the page checked against /v1/status")
		require.Positive(t, out.CanvasInk["card-throughput"], "the throughput chart drew nothing")
		require.Positive(t, out.CanvasInk["card-freshness"], "the freshness chart drew nothing")
		require.GreaterOrEqual(t, out.SVG.Series, len(countries))
		require.GreaterOrEqual(t, out.SVG.Points, 2*len(countries), "each country has two windows: a line each")

		// The table equals the API's answer and the truth from the events.
		require.Len(t, out.Table, len(truth))
		require.Len(t, out.API.Rows, len(truth))
		for i, row := range out.Table {
			api := out.API.Rows[i]
			require.Equal(t, api.WindowStart, row["window_start"])
			require.Equal(t, api.Dimensions["country"], row["dim.country"])
			for _, m := range []string{"views", "revenue", "min_latency", "max_latency", "users"} {
				got, err := strconv.ParseFloat(row[m], 64)
				require.NoError(t, err, "%s %q", m, row[m])
				require.Equal(t, api.Measures[m], got, "row %d %s", i, m)
			}
			ws, err := time.Parse(time.RFC3339, row["window_start"])
			require.NoError(t, err)
			want, ok := truth[key{ws, row["dim.country"]}]
			require.True(t, ok, "row %v is not in the truth", row)
			views, _ := strconv.ParseInt(row["views"], 10, 64)
			revenue, _ := strconv.ParseFloat(row["revenue"], 64)
			require.Equal(t, want.views, views, "views of %v", row)
			require.InDelta(t, want.revenue, revenue, 1e-9*math.Max(1, want.revenue), "revenue of %v", row)
		}

		// The explorer's top 1 by views per Amsterdam hour, DE left out:
		// the truth's best country of each hour, a tie (FR and US have 40
		// views each) going to the first by name.
		for _, p := range []string{"order_by=views%3Adesc", "limit=1", "filter=country%21%3ADE", "tz=Europe%2FAmsterdam"} {
			require.Contains(t, out.QueryURL2, p)
		}
		require.Equal(t, "Europe/Amsterdam", out.API2.TZ)
		require.True(t, out.API2.Truncated)
		require.Contains(t, out.Info2, "top 1 per bucket")
		amsterdam, err := time.LoadLocation("Europe/Amsterdam")
		require.NoError(t, err)
		best := map[time.Time]string{}
		for k, c := range truth {
			if k.country == "DE" {
				continue
			}
			b, ok := best[k.window]
			if !ok || c.views > truth[key{k.window, b}].views || (c.views == truth[key{k.window, b}].views && k.country < b) {
				best[k.window] = k.country
			}
		}
		require.Len(t, out.Table2, len(best))
		require.Len(t, out.API2.Rows, len(best))
		for i, row := range out.Table2 {
			require.Equal(t, out.API2.Rows[i].WindowStart, row["window_start"])
			ws, err := time.Parse(time.RFC3339, row["window_start"])
			require.NoError(t, err)
			require.Equal(t, ws.In(amsterdam).Format(time.RFC3339), row["window_start"], "window_start in Amsterdam time")
			require.Equal(t, best[ws.UTC()], row["dim.country"], "hour %s", row["window_start"])
		}
	})

	t.Run("security", func(t *testing.T) {
		// Plain HTTP to the TLS listener is refused.
		resp, err := http.Get("http://" + addrs["serve"] + "/v1/views")
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		}
		for _, tc := range []struct{ name, url, token string }{
			{"query without token", serveURL + "/v1/views", ""},
			{"query with a wrong token", serveURL + "/v1/views/" + view + "/query?" + q.Encode(), wrongToken},
		} {
			resp, body := get(t, https, tc.url, tc.token)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, tc.name+": "+body)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+addrs["ingest"]+"/v1/streams/pageviews/events", strings.NewReader(`{"event_id":"x","ts":1}`))
		req.Header.Set("Authorization", "Bearer "+wrongToken)
		resp, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

		// Counted by endpoint …
		_, metrics := get(t, https, serveURL+"/metrics", "")
		require.Regexp(t, `tandem_serve_auth_failures_total\{endpoint="views"\} [1-9]`, metrics)
		require.Regexp(t, `tandem_auth_failures_total\{endpoint="status"\} [1-9]`, metrics)
		_, metrics = get(t, http.DefaultClient, "http://"+addrs["ingest"]+"/metrics", "")
		require.Regexp(t, `tandem_auth_failures_total\{endpoint="ingest"\} [1-9]`, metrics)
		// … logged (the status endpoint's refusals) and never with a token.
		logs := dev.stderr.String()
		require.Contains(t, logs, "refused a request without a valid token")
		for _, tok := range []string{ingestToken, queryToken, wrongToken} {
			require.NotContains(t, logs, tok)
		}
	})
}

// checkShape checks the JSON of a report: every documented check present,
// every verdict one of four, judged checks carrying their thresholds.
func checkShape(t *testing.T, raw string, rep status.Report) {
	t.Helper()
	var generic map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &generic))
	for _, k := range []string{"generated_at", "verdict", "window_seconds", "components", "checks", "partitions"} {
		require.Contains(t, generic, k)
	}
	require.Len(t, rep.Components, 4)
	for _, c := range rep.Components {
		require.True(t, c.Reachable && c.Ready, "%+v", c)
	}
	defaults := status.DefaultThresholds(status.Deployment{})
	for _, name := range status.CheckNames {
		c := rep.Check(string(name))
		require.NotNil(t, c, "check %s missing", name)
		require.Contains(t, []status.Verdict{status.Green, status.Yellow, status.Red, status.Unknown}, c.Verdict)
		require.NotEmpty(t, c.Question)
		require.NotEmpty(t, c.Display)
		if _, judged := defaults[name]; judged {
			require.NotNil(t, c.Threshold, name)
		}
		if c.Value != nil && c.Threshold != nil {
			require.Equal(t, c.Threshold.Judge(*c.Value), c.Verdict, "%s = %v", name, *c.Value)
		}
	}
	for _, name := range []string{"store.kafka", "store.s3", "store.clickhouse"} {
		require.Equal(t, status.Green, rep.Check(name).Verdict, rep.Check(name).Detail)
	}
}

func val(t *testing.T, rep status.Report, name string) float64 {
	t.Helper()
	c := rep.Check(name)
	require.NotNil(t, c, name)
	require.NotNil(t, c.Value, "%s has no value: %s", name, c.Detail)
	return *c.Value
}

func get(t *testing.T, client *http.Client, url, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

type key struct {
	window  time.Time
	country string
}

var countries = []string{"DE", "FR", "US"}

// sendEvents posts 240 events over two hours after base and returns the
// expected views and revenue per (hour, country).
func sendEvents(t *testing.T, ingestURL string, base time.Time) map[key]cell {
	t.Helper()
	truth := map[key]cell{}
	var body strings.Builder
	for i := 0; i < 240; i++ {
		ts := base.Add(time.Duration(i) * 30 * time.Second)
		country := countries[i%len(countries)]
		amount := float64(i%17) * 1.25
		fmt.Fprintf(&body, `{"event_id":"e2e-%d","ts":"%s","country":"%s","device":"d%d","user_id":"u%d","amount":%g,"latency_ms":%d}`+"\n",
			i, ts.Format(time.RFC3339), country, i%2, i%29, amount, 10+i%50)
		k := key{ts.Truncate(time.Hour), country}
		c := truth[k]
		c.views++
		c.revenue += amount
		truth[k] = c
	}
	req, err := http.NewRequest(http.MethodPost, ingestURL+"/v1/streams/pageviews/events", strings.NewReader(body.String()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+ingestToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.Contains(t, string(b), `"accepted":240`)
	return truth
}

// waitForTruth polls the query until the speed layer made every event visible.
func waitForTruth(t *testing.T, client *http.Client, url string, truth map[key]cell) {
	t.Helper()
	var want int64
	for _, c := range truth {
		want += c.views
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, body := get(t, client, url, queryToken)
		if resp.StatusCode == http.StatusOK {
			var res struct {
				Rows []struct {
					Measures map[string]any `json:"measures"`
				} `json:"rows"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &res))
			var got int64
			for _, r := range res.Rows {
				got += int64(r.Measures["views"].(float64))
			}
			if got == want && len(res.Rows) == len(truth) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the query never showed the %d events: %d %s", want, resp.StatusCode, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// browserTools installs Chromium and playwright-core when missing (root
// on Debian; scripts/browser.sh) and returns the node_modules folder.
func browserTools(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(testenv.RepoRoot(t), "scripts", "browser.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "scripts/browser.sh: %s", stderr.String())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
