package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// devTotals is the all-time total of the example view, as the query API
// answers it.
type devTotals struct {
	Views      int64    `json:"views"`
	Revenue    float64  `json:"revenue"`
	MinLatency *float64 `json:"min_latency"`
	MaxLatency *float64 `json:"max_latency"`
}

// TestDevEndToEnd runs `tandem dev` as a new user would, on free ports and
// from a directory outside the repository: it
// sends events, reads the exact totals back, reaches the same services from
// a separate `tandem batch run`, survives a kill -9 (ClickHouse left
// running) with its data, and stops everything on SIGTERM.
func TestDevEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tandem dev with real ClickHouse and MinIO")
	}
	bin := testenv.BuildTandem(t)
	root := testenv.RepoRoot(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	port := func() string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) }
	kafkaAddr, chAddr, s3Addr := port(), port(), port()
	ingestAddr, serveAddr, speedAddr, archiveAddr := port(), port(), port(), port()
	example, err := os.ReadFile(filepath.Join(root, "tandem.example.yaml"))
	require.NoError(t, err)
	conf := strings.NewReplacer(
		`"127.0.0.1:9092"`, `"`+kafkaAddr+`"`,
		`"127.0.0.1:9000"`, `"`+chAddr+`"`,
		`"127.0.0.1:9100"`, `"`+s3Addr+`"`,
		`"127.0.0.1:8080"`, `"`+ingestAddr+`"`,
		`"127.0.0.1:8081"`, `"`+serveAddr+`"`,
		`"127.0.0.1:8082"`, `"`+speedAddr+`"`,
		`"127.0.0.1:8083"`, `"`+archiveAddr+`"`,
		`max_file_age: 5m`, `max_file_age: 1s`,
		`every: 10m`, `every: 0`,
		`chunk_size: 10000`, `chunk_size: 20`,
	).Replace(string(example))
	cfgPath := filepath.Join(dir, "tandem.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(conf), 0o600))
	// The daemons outlive a killed dev process by design; the test stops them.
	t.Cleanup(func() { stopDevServices(root, dataDir, chAddr) })

	startDev := func() (*exec.Cmd, *bytes.Buffer, chan error) {
		var out bytes.Buffer
		// Started outside the repository, as an installed binary is: the
		// scripts it starts ClickHouse and MinIO with are the ones built in.
		cmd := exec.Command(bin, "dev", "--config", cfgPath, "--data-dir", dataDir, "--gen-rate", "0")
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				<-done
			}
		})
		require.Eventually(t, func() bool {
			select {
			case err := <-done:
				done <- err
				return true // fail below with the log
			default:
			}
			res, err := http.Get("http://" + serveAddr + "/readyz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		}, 90*time.Second, 200*time.Millisecond, "serve never became ready:\n%s", &out)
		select {
		case err := <-done:
			t.Fatalf("tandem dev exited early: %v\n%s", err, out.String())
		default:
		}
		return cmd, &out, done
	}

	dev, out, done := startDev()
	require.Contains(t, out.String(), "tandem dev is up")

	// 300 events, 30 of them repeated ids, spread over the last two hours.
	now := time.Now().UTC()
	var body bytes.Buffer
	var want devTotals
	minL, maxL := 1e18, -1e18
	for i := 0; i < 300; i++ {
		id := i
		if i%10 == 9 {
			id = i - 1 // a duplicate of the previous event
		}
		ts := now.Add(-time.Duration(id%120) * time.Minute)
		amount := float64(id%7) + 0.25
		latency := float64(10 + id%50)
		fmt.Fprintf(&body, `{"event_id":"dev-%d","ts":%q,"country":"C%d","device":"d","user_id":"u%d","amount":%g,"latency_ms":%g}`+"\n",
			id, ts.Format(time.RFC3339), id%3, id%11, amount, latency)
		if i%10 == 9 {
			continue
		}
		want.Views++
		want.Revenue += amount
		minL, maxL = min(minL, latency), max(maxL, latency)
	}
	want.MinLatency, want.MaxLatency = &minL, &maxL
	res, err := http.Post("http://"+ingestAddr+"/v1/streams/pageviews/events", "application/x-ndjson", &body)
	require.NoError(t, err)
	resBody, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, string(resBody))
	require.Contains(t, string(resBody), `"accepted":300`)

	q := url.Values{}
	q.Set("from", now.Add(-3*time.Hour).Truncate(time.Hour).Format(time.RFC3339))
	q.Set("to", now.Add(time.Hour).Truncate(time.Hour).Format(time.RFC3339))
	q.Set("granularity", "all")
	queryURL := "http://" + serveAddr + "/v1/views/pageviews_by_country/query?" + q.Encode()
	totals := func() (devTotals, string) {
		res, err := http.Get(queryURL)
		if err != nil {
			return devTotals{}, err.Error()
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var r struct {
			Rows []struct {
				Measures devTotals `json:"measures"`
			} `json:"rows"`
		}
		if res.StatusCode != http.StatusOK || json.Unmarshal(raw, &r) != nil || len(r.Rows) != 1 {
			return devTotals{}, string(raw)
		}
		return r.Rows[0].Measures, string(raw)
	}
	exact := func(stage string) {
		t.Helper()
		var got devTotals
		var raw string
		require.Eventually(t, func() bool {
			got, raw = totals()
			return got.Views == want.Views
		}, 60*time.Second, 250*time.Millisecond, "%s: views never reached %d; last answer %s", stage, want.Views, raw)
		require.InDelta(t, want.Revenue, got.Revenue, 1e-9*want.Revenue, stage)
		require.NotNil(t, got.MinLatency, stage)
		require.NotNil(t, got.MaxLatency, stage)
		require.Equal(t, *want.MinLatency, *got.MinLatency, stage)
		require.Equal(t, *want.MaxLatency, *got.MaxLatency, stage)
	}
	exact("speed layer only")

	// A separate command with the same config reaches the dev services. The
	// archiver rolls files every second; wait until a run absorbs something.
	require.Eventually(t, func() bool {
		out, err := exec.Command(bin, "batch", "run", "--config", cfgPath).CombinedOutput()
		require.NoError(t, err, string(out))
		_, raw := totals()
		return strings.Contains(raw, `"batch_run":"`)
	}, 60*time.Second, time.Second, "no batch run was published")
	exact("batch run published")

	// kill -9: ClickHouse and MinIO keep running; the next start reuses them
	// and the embedded broker and S3 state come back from the data dir.
	require.NoError(t, dev.Process.Signal(syscall.SIGKILL))
	<-done
	dev, out, done = startDev()
	exact("after kill -9 and restart")

	// The edit-and-restart loop: a measure added to the view and a new view
	// on the stream. tandem dev registers the changed definition as a new
	// version — the old one answers meanwhile — and runs a batch run at
	// once (batch.every is set now), which switches to it; both views
	// answer exactly.
	stop := func() {
		t.Helper()
		require.NoError(t, dev.Process.Signal(syscall.SIGTERM))
		select {
		case err := <-done:
			require.NoError(t, err, out.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("tandem dev did not stop within 60 s of SIGTERM\n%s", out.String())
		}
	}
	stop()
	const measure = "      - { name: latency,     type: quantiles, field: latency_ms }\n"
	require.Equal(t, 1, strings.Count(conf, measure))
	edited := strings.Replace(conf, measure, measure+"      - { name: total_latency, type: sum, field: latency_ms }\n", 1)
	edited = strings.Replace(edited, "every: 0", "every: 1h", 1)
	edited += `  - name: pageviews_by_device
    stream: pageviews
    granularity: 1m
    dimensions: [device]
    measures:
      - { name: views, type: count }
`
	require.NoError(t, os.WriteFile(cfgPath, []byte(edited), 0o600))
	dev, out, done = startDev()
	exact("after adding a measure")
	var wantLatency float64
	for i := 0; i < 300; i++ {
		if i%10 != 9 {
			wantLatency += float64(10 + i%50)
		}
	}
	get := func(view string) (int, string) {
		res, err := http.Get("http://" + serveAddr + "/v1/views/" + view + "/query?" + q.Encode())
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(raw)
	}
	require.Eventually(t, func() bool {
		code, raw := get("pageviews_by_country")
		return code == http.StatusOK && strings.Contains(raw, fmt.Sprintf(`"total_latency":%g`, wantLatency))
	}, 60*time.Second, 250*time.Millisecond, "the added measure never answered %g:\n%s", wantLatency, out)
	require.Eventually(t, func() bool {
		code, raw := get("pageviews_by_device")
		return code == http.StatusOK && strings.Contains(raw, fmt.Sprintf(`"views":%d`, want.Views))
	}, 60*time.Second, 250*time.Millisecond, "the added view never answered %d views:\n%s", want.Views, out)
	require.Contains(t, out.String(), "definition changed: computing it as a new version; the old version answers until the new one is exact")
	// The SQL switch follows once the run's speed-row release is done.
	require.Eventually(t, func() bool {
		return strings.Contains(out.String(), "the new version of a view is exact and now answers REST and SQL")
	},
		90*time.Second, 250*time.Millisecond, "the batch run never switched the new version:\n%s", out)
	require.Contains(t, out.String(), "running one now")

	require.NoError(t, dev.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err, out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("tandem dev did not stop within 60 s of SIGTERM\n%s", out.String())
	}
	_, err = http.Get("http://" + serveAddr + "/healthz")
	require.Error(t, err, "serve still answers after SIGTERM")
}

// stopDevServices stops the ClickHouse and MinIO a `tandem dev` with data
// under dataDir started: they outlive a killed dev process by design.
func stopDevServices(root, dataDir, chAddr string) {
	chPort := chAddr[strings.LastIndexByte(chAddr, ':')+1:]
	for _, s := range [][]string{
		{"clickhouse.sh", "TANDEM_CH_DIR=" + filepath.Join(dataDir, "clickhouse"), "TANDEM_CH_PORT=" + chPort},
		{"minio.sh", "TANDEM_MINIO_DIR=" + filepath.Join(dataDir, "minio")},
	} {
		cmd := exec.Command("bash", filepath.Join(root, "scripts", s[0]), "stop")
		cmd.Env = append(os.Environ(), s[1:]...)
		_ = cmd.Run()
	}
}
