package main

import (
	"bytes"
	"fmt"
	"net/http"
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

// TestIngestAndGenCommands runs `tandem ingest` and `tandem gen` as a user
// would: as processes, with a config file, then SIGTERM.
func TestIngestAndGenCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tandem binary")
	}
	bin := testenv.BuildTandem(t)
	k := testenv.Kafka(t)
	dir := t.TempDir()
	topic := testenv.UniqueName(t, "tandem.pv")
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	example, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "tandem.example.yaml"))
	require.NoError(t, err)
	conf := strings.NewReplacer(
		`brokers: ["127.0.0.1:9092"]`, fmt.Sprintf(`brokers: [%q]`, k.Brokers[0]),
		`listen: "127.0.0.1:8080"`, fmt.Sprintf(`listen: %q`, listen),
		`topic: tandem.pageviews`, "topic: "+topic,
	).Replace(string(example))
	cfgPath := filepath.Join(dir, "tandem.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(conf), 0o600))

	var ingestLog bytes.Buffer
	ing := exec.Command(bin, "ingest", "--config", cfgPath)
	ing.Stdout, ing.Stderr = &ingestLog, &ingestLog
	require.NoError(t, ing.Start())
	exited := make(chan error, 1)
	go func() { exited <- ing.Wait() }()
	t.Cleanup(func() {
		if ing.ProcessState == nil {
			ing.Process.Kill()
			<-exited
		}
	})
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "ingest did not become ready: %s", &ingestLog)

	truth := filepath.Join(dir, "truth.ndjson")
	out, err := exec.Command(bin, "gen", "--config", cfgPath, "--events", "3000", "--batch", "500",
		"--dups", "0.02", "--invalid", "0.01", "--late", "0.05", "--seed", "11", "--truth", truth).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "sent 3000")
	lines := strings.Count(readFile(t, truth), "\n")

	out, err = exec.Command(bin, "gen", "--config", cfgPath, "--target", "kafka", "--events", "1000", "--seed", "12").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "sent 1000, accepted 1000")

	require.NoError(t, ing.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "ingest must exit 0 on SIGTERM: %s", &ingestLog)
	case <-time.After(30 * time.Second):
		t.Fatalf("ingest did not stop on SIGTERM: %s", &ingestLog)
	}
	require.Contains(t, ingestLog.String(), "ingest is open to anyone")

	// Everything accepted is in the topic: the gateway's events and the direct ones.
	require.Equal(t, lines+1000, countTopic(t, k.Brokers, topic, 6))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func countTopic(t *testing.T, brokers []string, topic string, partitions int) int {
	t.Helper()
	n := int64(0)
	for _, end := range testenv.TopicEnds(t, brokers, topic, partitions) {
		n += end
	}
	return int(n)
}
