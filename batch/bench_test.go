package batch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// BenchmarkBatchRecomputeVsScan recomputes both test views from a master
// dataset of TANDEM_BENCH_EVENTS (default 10 million) raw events in MinIO,
// and, in the same run, scans the same raw objects with bare parquet-go
// (download + read every row of every column, same parallelism) before and
// after it. It reports both rates, their ratio (target ≥ 0.40), the ratio
// of rates per CPU second of this process, and the recompute's peak RSS. Run with -benchtime=1x; the raw files are generated once into
// $TMPDIR/tandem-bench-raw-* and reused.
func BenchmarkBatchRecomputeVsScan(b *testing.B) {
	n := int64(10_000_000)
	if v := os.Getenv("TANDEM_BENCH_EVENTS"); v != "" {
		n, _ = strconv.ParseInt(v, 10, 64)
	}
	if os.Getenv("TANDEM_BENCH_DOWNLOAD") != "" {
		rawReadRanged = false // download raw objects whole instead of ranged reads
		defer func() { rawReadRanged = true }()
	}
	const partitions = 4
	ctx := context.Background()
	srv := testenv.MinIO(b)
	cfg := testConfig(b, 100_000, partitions, srv)
	st := testStore(b, cfg)
	s := cfg.Stream("pv")
	dir := benchRaw(b, s, partitions, n, rawShape{})
	files, _ := filepath.Glob(filepath.Join(dir, "*.parquet"))
	for _, f := range files {
		key := strings.ReplaceAll(filepath.Base(f), "~", "/")
		fh, err := os.Open(f)
		if err != nil {
			b.Fatal(err)
		}
		info, _ := fh.Stat()
		if err := st.Put(ctx, key, fh, info.Size()); err != nil {
			b.Fatal(err)
		}
		fh.Close()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Baseline: bare parquet-go scan of the same objects, once before
		// and once after the recompute; the rate is that of the two
		// together, so a change in the machine's load during the run
		// weighs on both sides alike.
		t0, c0 := time.Now(), cpuTime()
		scanned := bareScan(b, ctx, st, s, partitions)
		scanDur, scanCPU := time.Since(t0), cpuTime()-c0

		runtime.GC()
		resetPeakRSS()
		t1, c1 := time.Now(), cpuTime()
		res, err := Run(ctx, Options{Config: cfg, Store: st, Full: true, Log: benchLog(), TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		recDur, recCPU := time.Since(t1), cpuTime()-c1
		peak := peakRSS()

		runtime.GC()
		t2, c2 := time.Now(), cpuTime()
		scanned2 := bareScan(b, ctx, st, s, partitions)
		scanDur += time.Since(t2)
		scanCPU += cpuTime() - c2

		m := res.Views[0].Manifest
		read := m.Events + m.Duplicates + m.Invalid
		if scanned != read || scanned2 != read {
			b.Fatalf("the scans read %d and %d rows, the recompute %d", scanned, scanned2, read)
		}
		scanRate := float64(scanned+scanned2) / scanDur.Seconds()
		recRate := float64(read) / recDur.Seconds()
		// CPU seconds of this process alone (MinIO's are not counted), a
		// figure the machine's load disturbs much less than wall time.
		cpuRatio := (float64(read) / recCPU.Seconds()) / (float64(scanned+scanned2) / scanCPU.Seconds())
		b.ReportMetric(float64(read), "events")
		b.ReportMetric(recRate, "recompute_events/s")
		b.ReportMetric(scanRate, "scan_rows/s")
		b.ReportMetric(recRate/scanRate, "recompute/scan")
		b.ReportMetric(cpuRatio, "recompute/scan_cpu")
		b.ReportMetric(float64(peak)/(1<<20), "peak_rss_MB")
		b.Logf("events %d (kept %d, duplicates %d, invalid %d); scan (twice) %s (%.0f rows/s, %.1f s CPU); recompute %s (%.0f events/s, %.1f s CPU) = %.2f of scan (%.2f per CPU second); peak RSS %d MB; GOMAXPROCS %d",
			read, m.Events, m.Duplicates, m.Invalid, scanDur.Round(time.Millisecond), scanRate, scanCPU.Seconds(), recDur.Round(time.Millisecond), recRate, recCPU.Seconds(),
			recRate/scanRate, cpuRatio, peak>>20, runtime.GOMAXPROCS(0))
	}
}

// rawShape varies benchRaw's master dataset; the zero value is the
// scaling benchmark's.
type rawShape struct {
	// span spreads each partition's Kafka timestamps evenly over this long
	// (0: 50 ms apart), in files of one chunk, and adds 1 % repeats of an
	// id from anywhere earlier.
	span time.Duration
}

// BenchmarkBatchDedupWindow is the duplicate horizon at scale: a master
// dataset of TANDEM_BENCH_EVENTS (default 2 million) events over
// TANDEM_BENCH_DAYS (default 60) days of Kafka time, dedup_window: 7d; a full run over all but the last file
// of each partition, then an incremental run over those files. It reports
// each run's peak RSS and seconds per million events, the ids the
// incremental run loaded and the id tables' slots (32 bytes each): with
// the window these follow the window's events, not the history.
func BenchmarkBatchDedupWindow(b *testing.B) {
	n := int64(2_000_000)
	if v := os.Getenv("TANDEM_BENCH_EVENTS"); v != "" {
		n, _ = strconv.ParseInt(v, 10, 64)
	}
	const partitions = 4
	ctx := context.Background()
	srv := testenv.MinIO(b)
	cfg := testConfig(b, 100_000, partitions, srv)
	cfg.Stream("pv").DedupWindow = schemas.Duration(7 * 24 * time.Hour)
	st := testStore(b, cfg)
	s := cfg.Stream("pv")
	days := benchDays(b)
	dir := benchRaw(b, s, partitions, n, rawShape{span: time.Duration(days) * 24 * time.Hour})
	files, _ := filepath.Glob(filepath.Join(dir, "*.parquet"))
	sort.Strings(files)
	last := map[int32]string{} // the last file of each partition
	for _, f := range files {
		_, p, _, _, ok := schemas.ParseRawKey(strings.ReplaceAll(filepath.Base(f), "~", "/"))
		if !ok {
			b.Fatalf("not a raw object: %s", f)
		}
		last[p] = f // names sort by partition, then offset (zero-padded)
	}
	put := func(f string) {
		key := strings.ReplaceAll(filepath.Base(f), "~", "/")
		fh, err := os.Open(f)
		if err != nil {
			b.Fatal(err)
		}
		defer fh.Close()
		info, _ := fh.Stat()
		if err := st.Put(ctx, key, fh, info.Size()); err != nil {
			b.Fatal(err)
		}
	}
	isLast := map[string]bool{}
	for _, f := range last {
		isLast[f] = true
	}
	// TANDEM_BENCH_DEDUP_MEMORY sets batch.dedup_memory (bytes; default
	// the configuration's): the id tables' bound, so peak RSS is the run's
	// fixed costs plus it, whatever the events.
	bc, err := ConfigFrom(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if v := os.Getenv("TANDEM_BENCH_DEDUP_MEMORY"); v != "" {
		if bc.DedupMemory, err = strconv.ParseInt(v, 10, 64); err != nil {
			b.Fatalf("TANDEM_BENCH_DEDUP_MEMORY=%q: %v", v, err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, f := range files {
			if !isLast[f] {
				put(f)
			}
		}
		run := func(full bool) (*Result, time.Duration, int64) {
			runtime.GC()
			resetPeakRSS()
			t0 := time.Now()
			res, err := Run(ctx, Options{Config: cfg, Store: st, Full: full, Log: benchLog(), TempDir: b.TempDir(), Batch: &bc})
			if err != nil {
				b.Fatal(err)
			}
			return res, time.Since(t0), peakRSS()
		}
		full, fullDur, fullPeak := run(true)
		for f := range isLast {
			put(f)
		}
		inc, incDur, incPeak := run(false)
		if !inc.Views[0].Incremental {
			b.Fatal("the second run was not incremental")
		}
		fm, im := full.Views[0].Manifest, inc.Views[0].Manifest
		fullRead := fm.Events + fm.Duplicates + fm.Invalid
		incRead := im.Events + im.Duplicates + im.Invalid - fullRead
		b.ReportMetric(float64(n), "events")
		b.ReportMetric(float64(days), "days")
		b.ReportMetric(float64(fullPeak)/(1<<20), "full_peak_rss_MB")
		b.ReportMetric(fullDur.Seconds()/float64(fullRead)*1e6, "full_s/Mevent")
		b.ReportMetric(float64(full.Views[0].IDTableSlots), "full_id_slots")
		b.ReportMetric(float64(incPeak)/(1<<20), "inc_peak_rss_MB")
		b.ReportMetric(incDur.Seconds()/float64(incRead)*1e6, "inc_s/Mevent")
		b.ReportMetric(float64(inc.Views[0].IDsLoaded), "inc_ids_loaded")
		b.ReportMetric(float64(inc.Views[0].IDTableSlots), "inc_id_slots")
		b.ReportMetric(float64(full.Views[0].IDsSpilled), "full_ids_spilled")
		b.ReportMetric(float64(inc.Views[0].IDsSpilled), "inc_ids_spilled")
		b.Logf("events %d over %d days, dedup_window 7d, dedup_memory %d: full run over %d (kept %d, duplicates %d) %s, peak RSS %d MB, id table slots %d, ids spilled %d; incremental run over %d more %s, peak RSS %d MB, ids loaded %d, id table slots %d, ids spilled %d; GOMAXPROCS %d",
			n, days, bc.DedupMemory, fullRead, fm.Events, fm.Duplicates, fullDur.Round(time.Millisecond), fullPeak>>20, full.Views[0].IDTableSlots, full.Views[0].IDsSpilled,
			incRead, incDur.Round(time.Millisecond), incPeak>>20, inc.Views[0].IDsLoaded, inc.Views[0].IDTableSlots, inc.Views[0].IDsSpilled, runtime.GOMAXPROCS(0))
	}
}

// benchDays is TANDEM_BENCH_DAYS, the days of Kafka time the duplicate
// horizon's benchmarks spread their events over (default 60): a fixed span
// with more events puts more ids in the window; more days at a fixed rate
// is a longer history with the same window.
func benchDays(b *testing.B) int {
	days := 60
	if v := os.Getenv("TANDEM_BENCH_DAYS"); v != "" {
		var err error
		if days, err = strconv.Atoi(v); err != nil || days < 8 {
			b.Fatalf("TANDEM_BENCH_DAYS=%q: want a whole number of days, at least 8 (the window is 7)", v)
		}
	}
	return days
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bareScan downloads every raw object and reads all rows of all columns.
func bareScan(b *testing.B, ctx context.Context, st *s3.Store, s *schemas.Stream, partitions int) int64 {
	var total int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	tmp := b.TempDir()
	for p := int32(0); p < int32(partitions); p++ {
		g.Go(func() error {
			objs, err := objstore.List(gctx, st, schemas.RawPrefix(s.Name, p))
			if err != nil {
				return err
			}
			rows := make([]pq.Row, 512)
			var n int64
			for _, o := range objs {
				body, err := st.Get(gctx, o.Key)
				if err != nil {
					return err
				}
				f, err := os.CreateTemp(tmp, "scan-*")
				if err != nil {
					return err
				}
				os.Remove(f.Name())
				size, err := io.Copy(f, body)
				body.Close()
				if err != nil {
					return err
				}
				pf, err := pq.OpenFile(f, size)
				if err != nil {
					return err
				}
				r := pq.NewReader(pf)
				for {
					k, err := r.ReadRows(rows)
					n += int64(k)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
				}
				r.Close()
				f.Close()
			}
			mu.Lock()
			total += n
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return total
}

// benchRaw generates (once) n raw events over the partitions as files of
// about 500k events, the way the archiver writes them, and returns the
// directory; file names are object keys with / written as ~.
func benchRaw(b *testing.B, s *schemas.Stream, partitions int, n int64, shape rawShape) string {
	name := fmt.Sprintf("tandem-bench-raw-v3-%d-%d", partitions, n)
	if shape.span > 0 {
		name = fmt.Sprintf("tandem-bench-raw-span-%d-%d-%s", partitions, n, shape.span)
	}
	dir := filepath.Join(os.TempDir(), name)
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Logf("generating %d raw events into %s (once)", n, dir)
	per := n / int64(partitions)
	fileEvents := int64(500_000)
	spacing := 50 * time.Millisecond
	if shape.span > 0 {
		fileEvents = 100_000 // a chunk: a run can absorb a file at a time
		spacing = shape.span / time.Duration(per)
	}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for p := int32(0); p < int32(partitions); p++ {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(p), 99))
			dec := schemas.NewDecoder(s, time.Hour)
			countries := []string{"US", "DE", "FR", "GB", "JP", "BR", "IN", ""}
			var raw []byte
			for first := int64(0); first < per; first += fileEvents {
				last := min(first+fileEvents, per) - 1
				key := schemas.RawKey(s.Name, p, first, last)
				f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(key, "/", "~")))
				if err != nil {
					return err
				}
				bw := bufio.NewWriterSize(f, 1<<20)
				w := parquet.NewRawWriter(bw, s, parquet.RawWriterOptions{Partition: p, Decoder: dec})
				for off := first; off <= last; off++ {
					kts := genBase.Add(time.Duration(off) * spacing)
					id := off
					if rng.IntN(100) < 3 && off > 1000 {
						id = off - 1 - int64(rng.IntN(1000)) // a duplicate
					} else if shape.span > 0 && rng.IntN(100) < 1 && off > 1000 {
						id = int64(rng.IntN(int(off))) // a repeat from anywhere before, mostly past a window
					}
					ts := kts.Add(-time.Duration(rng.IntN(600_000)) * time.Millisecond)
					raw = raw[:0]
					raw = append(raw, `{"event_id":"p`...)
					raw = strconv.AppendInt(raw, int64(p), 10)
					raw = append(raw, '-')
					raw = strconv.AppendInt(raw, id, 10)
					raw = append(raw, `","ts":`...)
					if rng.IntN(200) == 0 {
						raw = append(raw, `"not a time"`...) // invalid
					} else {
						raw = strconv.AppendInt(raw, ts.UnixMilli(), 10)
					}
					if c := countries[rng.IntN(len(countries))]; c != "" {
						raw = append(raw, `,"country":"`...)
						raw = append(raw, c...)
						raw = append(raw, '"')
					}
					raw = append(raw, `,"user_id":"u`...)
					raw = strconv.AppendInt(raw, int64(rng.IntN(100_000)), 10)
					raw = append(raw, `","amount":`...)
					raw = strconv.AppendFloat(raw, float64(rng.IntN(100_000))/100, 'f', -1, 64)
					raw = append(raw, `,"latency":`...)
					raw = strconv.AppendInt(raw, int64(rng.IntN(5000)), 10)
					raw = append(raw, '}')
					rec := parquet.RawRecord{Raw: append([]byte(nil), raw...), Partition: p, Offset: off, KafkaTime: kts}
					if ev, err := dec.Decode(rec.Raw, kts); err == nil {
						rec.Event = &ev
					}
					if err := w.Write(rec); err != nil {
						return err
					}
				}
				if err := w.Close(); err != nil {
					return err
				}
				if err := bw.Flush(); err != nil {
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// resetPeakRSS resets VmHWM (Linux: writing 5 to clear_refs).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS reads VmHWM from /proc/self/status, in bytes.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func benchLog() *slog.Logger {
	lv := slog.LevelWarn
	if os.Getenv("TANDEM_BENCH_LOG") != "" {
		lv = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
}
