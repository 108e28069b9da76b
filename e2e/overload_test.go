package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/ingest/gen"
)

// TestOverload drives the gateway far past its in-flight limit (64 KiB of
// bodies, 64 clients sending as fast as they can): it must reject the
// excess quickly with 429/503, keep its memory bounded, and every event it
// acknowledged must reach the master dataset.
func TestOverload(t *testing.T) {
	p := newPlatform(t, platformOptions{maxBodyBytes: 32 << 10, maxInflightBytes: 64 << 10})
	// With Go's default GC pacing the heap of a process allocating this
	// fast floats at about twice its live data plus headroom (measured:
	// ~160-200 MiB RSS under this load with no limit). A deployment bounds
	// it with GOMEMLIMIT; the test does the same and checks the bound holds,
	// i.e. that the live data stays small however many clients push.
	const memLimit = 64 << 20
	p.env["ingest"] = []string{fmt.Sprintf("GOMEMLIMIT=%d", memLimit)}
	p.start("ingest", "archive")
	pid := p.proc("ingest").pid()
	idle := rssBytes(t, pid)

	var (
		peak   int64
		peakGo = map[string]float64{} // Go runtime gauges from /metrics
		stopMu sync.Mutex
		done   = make(chan struct{})
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if r := rssBytes(t, pid); r > 0 {
				stopMu.Lock()
				peak = max(peak, r)
				stopMu.Unlock()
			}
			if _, body := httpGet(p.ingestURL + "/metrics"); body != nil {
				for _, line := range strings.Split(string(body), "\n") {
					for _, name := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines", "tandem_ingest_inflight_bytes"} {
						if v, ok := strings.CutPrefix(line, name+" "); ok {
							f, _ := strconv.ParseFloat(v, 64)
							stopMu.Lock()
							peakGo[name] = max(peakGo[name], f)
							stopMu.Unlock()
						}
					}
				}
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	const clients = 64
	rec := newRecorder()
	sink := newRetrySink(p.ingestURL, rec, clients)
	sink.minPause, sink.maxPause = 5*time.Millisecond, 50*time.Millisecond // keep the pressure on
	g, err := gen.New(gen.Options{Stream: p.cfg.Stream(streamName), Seed: uint64(time.Now().UnixNano()),
		Duration: 15 * time.Second, Batch: 60, Concurrency: clients, Dups: 0.02, Invalid: 0.02, MaxFutureSkew: time.Hour})
	require.NoError(t, err)
	rep, err := g.Run(context.Background(), gen.RunOptions{Sink: sink})
	close(done)
	wg.Wait()
	require.NoError(t, err)

	rejected, accepted := sink.latencies()
	require.NotEmpty(t, rejected, "64 clients against 64 KiB in flight must be turned away sometimes")
	sortDur(rejected)
	sortDur(accepted)
	t.Logf("gen: %s", rep)
	t.Logf("answers: %d accepted (p50 %s, p99 %s), %d rejected with 429/503 (p50 %s, p99 %s, max %s); 429s %d, 503s %d",
		len(accepted), pct(accepted, 0.5), pct(accepted, 0.99), len(rejected), pct(rejected, 0.5), pct(rejected, 0.99), pct(rejected, 1),
		sink.retries429.Load(), sink.retries503.Load())
	t.Logf("gateway RSS: %.1f MiB idle, %.1f MiB peak under overload; peaks from /metrics: %v", float64(idle)/(1<<20), float64(peak)/(1<<20), peakGo)

	// A rejection is an answer at once, not a queue: faster than an
	// acceptance (which waits for Kafka) in the same run, and never slow in
	// absolute terms. (Client-side timing on a shared 2-core machine: the
	// bounds leave room for scheduling noise; the figures are in the log.)
	require.Less(t, pct(rejected, 0.5), pct(accepted, 0.5), "median rejection slower than a median acceptance")
	require.Less(t, pct(rejected, 0.99), time.Second, "p99 latency of rejections")
	require.Less(t, pct(rejected, 1), 2*time.Second, "max latency of rejections")
	// Bounded memory: 64 KiB of bodies in flight keep the live heap under
	// the soft limit, whatever the number of clients; RSS adds the runtime's
	// and the binary's own pages.
	require.Less(t, peak, int64(memLimit+64<<20), "gateway RSS grew from %d to %d bytes", idle, peak)
	// The 64 clients share one address and send no token: they are one
	// client to the gateway, held to its share of the in-flight bytes
	// (ingest.max_inflight_bytes_per_client, by default a quarter of the
	// total and at least max_body_bytes), counted as bytes arrive.
	share := float64(p.cfg.Ingest.InflightPerClient())
	require.Positive(t, peakGo["tandem_ingest_inflight_bytes"])
	require.LessOrEqual(t, peakGo["tandem_ingest_inflight_bytes"], share, "one client held more than its share")

	acked := rec.ackedEvents()
	require.NotEmpty(t, acked)
	var missing []string
	require.Eventually(t, func() bool {
		missing = p.readMasterDataset(t).missing(acked)
		return len(missing) == 0
	}, 90*time.Second, 2*time.Second, "acknowledged events missing from the master dataset")
	require.False(t, p.proc("ingest").exited(), "the gateway survived the overload")
}

// rssBytes reads VmRSS of a process from /proc; 0 when it is gone.
func rssBytes(t *testing.T, pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	return 0
}

func sortDur(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

// pct is the q-quantile of sorted durations (q=1: the maximum).
func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}
