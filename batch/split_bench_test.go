package batch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// BenchmarkBatchSplit is one process against a split run of
// TANDEM_BENCH_WORKERS (default 2) workers, each a separate process (this
// test binary run again as TestSplitProcess), over the same master dataset
// of TANDEM_BENCH_EVENTS (default 1.6 million) events over
// TANDEM_BENCH_DAYS (default 60) days, 4 partitions, dedup_window 7d, in two
// buckets. It reports the one
// process's and each worker's peak RSS (the child's VmHWM), the wall
// times, and fails unless both publish the same bytes.
func BenchmarkBatchSplit(b *testing.B) {
	n := int64(1_600_000)
	if v := os.Getenv("TANDEM_BENCH_EVENTS"); v != "" {
		n, _ = strconv.ParseInt(v, 10, 64)
	}
	workers := 2
	if v := os.Getenv("TANDEM_BENCH_WORKERS"); v != "" {
		workers, _ = strconv.Atoi(v)
	}
	const partitions = 4
	ctx := context.Background()
	srv := testenv.MinIO(b)
	cfgs := map[string]*schemas.Config{}
	for _, bucket := range []string{"one", "split"} {
		cfg := splitBenchConfig(b, srv.Endpoint, bucket, srv.AccessKey, srv.SecretKey, srv.Region)
		st := testStore(b, cfg)
		if err := st.EnsureBucket(ctx); err != nil {
			b.Fatal(err)
		}
		dir := benchRaw(b, cfg.Stream("pv"), partitions, n, rawShape{span: time.Duration(benchDays(b)) * 24 * time.Hour})
		files, _ := filepath.Glob(filepath.Join(dir, "*.parquet"))
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				b.Fatal(err)
			}
			info, _ := fh.Stat()
			err = st.Put(ctx, strings.ReplaceAll(filepath.Base(f), "~", "/"), fh, info.Size())
			fh.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		cfgs[bucket] = cfg
	}
	child := func(bucket, role string) (time.Duration, int64) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSplitProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TANDEM_SPLIT_PROCESS="+strings.Join([]string{srv.Endpoint, bucket, srv.AccessKey, srv.SecretKey, srv.Region, role}, ","))
		cmd.Stderr = os.Stderr
		t0 := time.Now()
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("%s %s: %v\n%s", bucket, role, err, out)
		}
		// The child's own VmHWM: getrusage's ru_maxrss of a child counts
		// this process's peak too (Linux keeps it across the exec).
		var peak int64
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "PEAK_RSS "); ok {
				peak, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		if peak == 0 {
			b.Fatalf("%s %s reported no peak RSS:\n%s", bucket, role, out)
		}
		return time.Since(t0), peak
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		oneDur, onePeak := child("one", "one")
		t0 := time.Now()
		durs := make([]time.Duration, workers)
		peaks := make([]int64, workers)
		var wg sync.WaitGroup
		name := fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				durs[w], peaks[w] = child("split", fmt.Sprintf("%s:%d/%d", name, w, workers))
			}()
		}
		wg.Wait()
		workDur := time.Since(t0)
		pubDur, pubPeak := child("split", name+":publish/"+strconv.Itoa(workers))
		want := publishedState(b, ctx, testStore(b, cfgs["one"]), cfgs["one"])
		got := publishedState(b, ctx, testStore(b, cfgs["split"]), cfgs["split"])
		if len(want) != len(got) {
			b.Fatalf("split run: %d objects, one process %d", len(got), len(want))
		}
		for k, w := range want {
			if got[k] != w {
				b.Fatalf("split run: %s differs from one process's", k)
			}
		}
		load, _ := os.ReadFile("/proc/loadavg")
		b.ReportMetric(float64(n), "events")
		b.ReportMetric(oneDur.Seconds(), "one_s")
		b.ReportMetric(float64(onePeak)/(1<<20), "one_peak_rss_MB")
		b.ReportMetric(workDur.Seconds()+pubDur.Seconds(), "split_s")
		b.ReportMetric(pubDur.Seconds(), "publish_s")
		var maxPeak int64
		for _, p := range peaks {
			maxPeak = max(maxPeak, p)
		}
		b.ReportMetric(float64(maxPeak)/(1<<20), "worker_peak_rss_MB")
		b.Logf("%d events over %d days, %d partitions, dedup_window 7d: one process %s, peak RSS %d MB; %d workers %v (wall %s), peak RSS %v MB; publish %s, peak RSS %d MB; %d objects byte-identical; load %s",
			n, benchDays(b), partitions, oneDur.Round(time.Millisecond), onePeak>>20, workers, roundAll(durs), workDur.Round(time.Millisecond), mbAll(peaks),
			pubDur.Round(time.Millisecond), pubPeak>>20, len(want), strings.TrimSpace(string(load)))
	}
}

func roundAll(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond).String()
	}
	return out
}

func mbAll(xs []int64) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = x >> 20
	}
	return out
}

// splitBenchConfig is the benchmark's configuration: 4 partitions,
// chunk_size 100,000, dedup_window 7d.
func splitBenchConfig(t testing.TB, endpoint, bucket, access, secret, region string) *schemas.Config {
	cfg := testConfig(t, 100_000, 4, &testenv.S3Server{Endpoint: endpoint, Bucket: bucket, AccessKey: access, SecretKey: secret, Region: region})
	cfg.Stream("pv").DedupWindow = schemas.Duration(7 * 24 * time.Hour)
	return cfg
}

// TestSplitProcess is a process of BenchmarkBatchSplit (skipped unless
// TANDEM_SPLIT_PROCESS names one): "one" for a one-process run,
// "NAME:I/N" for worker I of N of split run NAME, "NAME:publish/N" for its
// publisher.
func TestSplitProcess(t *testing.T) {
	env := os.Getenv("TANDEM_SPLIT_PROCESS")
	if env == "" {
		t.Skip("a process of BenchmarkBatchSplit")
	}
	f := strings.Split(env, ",")
	cfg := splitBenchConfig(t, f[0], f[1], f[2], f[3], f[4])
	o := Options{Config: cfg, Store: testStore(t, cfg), Log: benchLog(), TempDir: t.TempDir()}
	if f[5] != "one" {
		name, role, _ := strings.Cut(f[5], ":")
		who, nStr, _ := strings.Cut(role, "/")
		n, _ := strconv.Atoi(nStr)
		o.Split = SplitOptions{Name: name, Workers: n, Worker: -1, Wait: time.Minute}
		if who != "publish" {
			o.Split.Worker, _ = strconv.Atoi(who)
		}
	}
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("PEAK_RSS %d\n", peakRSS())
}
