package speed_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// instance is one `tandem speed` subprocess.
type instance struct {
	name   string
	cmd    *exec.Cmd
	listen string
	done   chan error
}

func startInstance(t *testing.T, bin string, e *env, name string) *instance {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfgPath := e.writeConfig(t, listen)
	logf, err := os.OpenFile(filepath.Join(t.TempDir(), name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	cmd := exec.Command(bin, "speed", "--config", cfgPath, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	in := &instance{name: name, cmd: cmd, listen: listen, done: make(chan error, 1)}
	go func() { in.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		in.kill()
		if t.Failed() {
			data, _ := os.ReadFile(logf.Name())
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("log of %s (last lines):\n%s", name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	})
	return in
}

func (in *instance) kill() {
	_ = in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.done
	in.done <- nil // later kills return at once
}

func (in *instance) term(t *testing.T) {
	t.Helper()
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-in.done:
		in.done <- nil
		require.NoError(t, err, "%s exited badly after SIGTERM", in.name)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not exit within 60s of SIGTERM", in.name)
	}
}

func readyz(addr string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String()
}

// TestKillAndRebalanceExactlyOnce runs `tandem speed` as subprocesses while
// events are produced into a four-partition topic with 200-offset chunks,
// kills them with SIGKILL at random moments, and adds and removes a second
// member to force rebalances. At the end the merged speed rows must equal
// the truth computed from the produced events.
func TestKillAndRebalanceExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test takes about a minute")
	}
	bin := testenv.BuildTandem(t)
	e := newEnv(t, envOptions{partitions: 4, chunkSize: 200, flush: "150ms"})
	e.cfgText = strings.Replace(e.cfgText, "flush_rows: 5000", "flush_rows: 300, session_timeout: 6s", 1)
	evs := generate(genOptions{n: 24000, seed: 7, base: time.Now().UTC(), dupRate: 0.05, lateRate: 0.1, invalidRate: 0.02})
	want := truth(evs)

	// Produce in waves while the chaos runs.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(evs); i += 600 {
			produce(t, e.kafka.Brokers, e.cfg.Streams[0].Topic, evs[i:min(i+600, len(evs))])
			time.Sleep(350 * time.Millisecond)
		}
	}()

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	a := startInstance(t, bin, e, "a-0")
	var b *instance
	kills, rebalances := 0, 0
	// 25 s of chaos, longer (up to 90 s) until it has killed members four
	// times: the moves are random and a slow machine fits fewer of them.
	deadline, hardDeadline := time.Now().Add(25*time.Second), time.Now().Add(90*time.Second)
	for step := 1; time.Now().Before(deadline) || kills < 4 && time.Now().Before(hardDeadline); step++ {
		time.Sleep(time.Duration(300+r.IntN(1500)) * time.Millisecond)
		switch x := r.IntN(10); {
		case x < 5: // kill -9 the first member and start a new one
			a.kill()
			kills++
			a = startInstance(t, bin, e, fmt.Sprintf("a-%d", step))
		case x < 8 && b == nil: // add a second member: rebalance
			b = startInstance(t, bin, e, fmt.Sprintf("b-%d", step))
			rebalances++
		case b != nil: // remove it, by kill -9 or by SIGTERM
			if r.IntN(2) == 0 {
				b.kill()
				kills++
			} else {
				b.term(t)
			}
			b = nil
			rebalances++
		}
	}
	wg.Wait()
	if b != nil {
		b.kill()
		kills++
	}
	t.Logf("chaos: %d kill -9, %d membership changes", kills, rebalances)
	require.GreaterOrEqual(t, kills, 4, "the chaos loop must kill members several times")

	waitExact(t, e, want, 150*time.Second)
	checkSQLStates(t, e, evs)

	// The chunks were really crossed: rows of many chunks per partition.
	var chunks uint64
	require.NoError(t, e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT uniqExact(kafka_partition, chunk) FROM %s.%s_speed", e.cfg.ClickHouse.Database, e.cfg.Views[0].Name)).Scan(&chunks))
	require.Greater(t, chunks, uint64(100))

	code, body := readyz(a.listen)
	require.Equal(t, http.StatusOK, code, body)
	a.term(t)
}
