package archive_test

import (
	"fmt"
	"io"
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

// archiverProcess is `tandem archive` running as a subprocess.
type archiverProcess struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func startProcess(t *testing.T, bin, config, tmpDir string, session time.Duration) *archiverProcess {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "archive-*.log")
	require.NoError(t, err)
	cmd := exec.Command(bin, "archive", "--config", config, "--tmp-dir", tmpDir, "--session-timeout", session.String())
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	p := &archiverProcess{cmd: cmd, done: make(chan error, 1), log: logf.Name()}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			data, _ := os.ReadFile(p.log)
			lines := strings.Split(string(data), "\n")
			t.Logf("archiver log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

func (p *archiverProcess) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
}

// terminate sends SIGTERM and requires a clean exit. It first waits for
// the process to log that it listens, which it does after installing its
// signal handler: a SIGTERM during the runtime's start would kill it
// (this happens when the archive is complete before a fresh process is
// even up).
func (p *archiverProcess) terminate(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(p.log)
		if strings.Contains(string(data), "msg=listening") {
			break
		}
		require.True(t, time.Now().Before(deadline), "tandem archive did not start listening within 30 s")
	}
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		require.NoError(t, err, "tandem archive exits 0 on SIGTERM")
	case <-time.After(60 * time.Second):
		t.Fatal("tandem archive did not exit within 60 s of SIGTERM")
	}
}

// backgroundProducer produces events from..to in bursts until done.
func backgroundProducer(t *testing.T, p *producer, from, to, burst int, every time.Duration) (wait func()) {
	var wg sync.WaitGroup
	var failed error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := from; i < to; i += burst {
			ft := &fakeT{}
			func() {
				defer func() { recover() }()
				p.produce(ft, i, min(i+burst, to))
			}()
			if ft.failed != nil {
				failed = ft.failed
				return
			}
			time.Sleep(every)
		}
	}()
	return func() {
		wg.Wait()
		require.NoError(t, failed, "producing")
	}
}

// TestExactlyOnceUnderKill9 runs `tandem archive` as a subprocess against
// MinIO, kills it with SIGKILL at random moments while events are being
// produced, restarts it, lets it finish, and checks the archive holds every
// message exactly once, byte for byte.
func TestExactlyOnceUnderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: subprocess kill test")
	}
	start := time.Now()
	bin := testenv.BuildTandem(t)
	k := kafkaCluster(t)
	e := newEnv(t, k, testenv.MinIO(t), 3, 48<<10, "1s")
	t.Logf("%s: built and started", time.Since(start).Round(time.Millisecond))
	config := e.writeConfig(t)
	tmpDir := t.TempDir()
	p := newProducer(t, e)
	const total = 15000
	p.produce(t, 0, 3000)
	wait := backgroundProducer(t, p, 3000, total, 300, 150*time.Millisecond)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	for i := range 6 {
		proc := startProcess(t, bin, config, tmpDir, sessionTimeout(k))
		d := time.Duration(300+rng.IntN(2700)) * time.Millisecond
		time.Sleep(d)
		proc.kill(t)
		t.Logf("%s: kill -9 number %d after %s", time.Since(start).Round(time.Millisecond), i+1, d)
	}
	wait()
	t.Logf("%s: all %d events produced", time.Since(start).Round(time.Millisecond), total)
	truth := kafkaTruth(t, e)
	proc := startProcess(t, bin, config, tmpDir, sessionTimeout(k))
	waitArchived(t, e, truth, 90*time.Second)
	t.Logf("%s: all archived", time.Since(start).Round(time.Millisecond))
	proc.terminate(t)
	t.Logf("%s: terminated", time.Since(start).Round(time.Millisecond))
	requireExact(t, e, truth)
	t.Logf("%s: checked", time.Since(start).Round(time.Millisecond))
	n := 0
	for _, recs := range truth {
		n += len(recs)
	}
	require.Equal(t, total, n)
	left, _ := filepath.Glob(filepath.Join(tmpDir, "*.tmp"))
	require.Empty(t, left, "the last archiver removed the files killed ones left behind")
}

// TestS3Outage stops MinIO for about 10 s while the archiver runs: the
// archiver stalls (readiness fails, errors counted), loses and duplicates
// nothing, and catches up when S3 is back.
func TestS3Outage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: subprocess outage test")
	}
	bin := testenv.BuildTandem(t)
	k := kafkaCluster(t)
	srv := testenv.MinIO(t)
	e := newEnv(t, k, srv, 3, 48<<10, "1s")
	config := e.writeConfig(t)
	p := newProducer(t, e)
	p.produce(t, 0, 2000)
	proc := startProcess(t, bin, config, t.TempDir(), sessionTimeout(k))
	waitArchived(t, e, kafkaTruth(t, e), 60*time.Second)
	base := "http://" + e.conf.Listen
	require.Equal(t, http.StatusOK, httpStatus(t, base+"/readyz"))

	srv.Stop()
	outage := time.Now()
	wait := backgroundProducer(t, p, 2000, 5000, 300, 300*time.Millisecond)
	sawNotReady := false
	for time.Since(outage) < 10*time.Second {
		if httpStatus(t, base+"/readyz") == http.StatusServiceUnavailable {
			sawNotReady = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	require.True(t, sawNotReady, "/readyz reports the stalled archiver during the outage")
	metrics := httpBody(t, base+"/metrics")
	require.Contains(t, metrics, "tandem_archive_upload_errors_total")
	require.NotContains(t, metrics, "tandem_archive_upload_errors_total 0\n")
	srv.Start()
	wait()
	truth := kafkaTruth(t, e)
	waitArchived(t, e, truth, 90*time.Second)
	require.Equal(t, http.StatusOK, httpStatus(t, base+"/readyz"))
	proc.terminate(t)
	requireExact(t, e, truth)
}

// TestSIGTERMUploadsOpenFiles: with a one-hour max_file_age nothing is
// uploaded by age; SIGTERM uploads the open files before the process exits.
func TestSIGTERMUploadsOpenFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: subprocess test")
	}
	bin := testenv.BuildTandem(t)
	k := kafkaCluster(t)
	e := newEnv(t, k, testenv.FakeS3(t), 3, 128<<20, "1h")
	p := newProducer(t, e)
	p.produce(t, 0, 900)
	proc := startProcess(t, bin, e.writeConfig(t), t.TempDir(), sessionTimeout(k))
	// Wait until the archiver has read everything (its records counter).
	base := "http://" + e.conf.Listen
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(httpBody(t, base+"/metrics"), `tandem_archive_records_total{stream="pageviews"} 900`) {
		require.True(t, time.Now().Before(deadline), "archiver did not read the 900 messages")
		time.Sleep(100 * time.Millisecond)
	}
	proc.terminate(t)
	requireExact(t, e, kafkaTruth(t, e))
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// fakeT lets helpers that take a *testing.T run in a goroutine: the first
// failure is recorded instead of calling FailNow off the test goroutine.
type fakeT struct{ failed error }

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	if f.failed == nil {
		f.failed = fmt.Errorf(format, args...)
	}
}
func (f *fakeT) FailNow() { panic(f) }
