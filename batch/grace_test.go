package batch

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/zeebo/xxh3"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestGraceCheckEqualsOneTable decides one sequence of occurrences (ids
// repeated near and far, a clock that jumps, prior index entries) with one
// unbounded table and with buckets whose tables hold at most 1,024 slots,
// some of them split again: the same duplicates, the same index, and no
// table past its bound.
func TestGraceCheckEqualsOneTable(t *testing.T) {
	for _, window := range []int64{math.MaxInt64, 500} {
		rng := rand.New(rand.NewPCG(1, uint64(window&0xffff)))
		var prior, occ []idEntry
		hash := func(id int) (uint64, uint64) {
			h := xxh3.HashString128(strconv.Itoa(id))
			return h.Hi, h.Lo
		}
		for id := 0; id < 3000; id++ { // the previous run's index
			h0, h1 := hash(id)
			prior = append(prior, idEntry{h0, h1, int64(id), int64(id / 10)})
		}
		clock := int64(300)
		for off := int64(3000); off < 23000; off++ {
			if rng.IntN(50) == 0 {
				clock += int64(rng.IntN(200)) // a jump ahead
			} else if rng.IntN(3) == 0 {
				clock++
			}
			var id int
			switch r := rng.IntN(10); {
			case r < 6:
				id = int(off) // new
			case r < 8:
				id = int(off) - 1 - rng.IntN(20) // near: inside the window
			default:
				id = rng.IntN(int(off)) // anywhere earlier: either side of it
			}
			h0, h1 := hash(id)
			occ = append(occ, idEntry{h0, h1, off, clock})
		}
		// The zero hash, the table's empty marker, counts like any id.
		prior = append(prior, idEntry{0, 0, 2999, 290})
		occ = append(occ, idEntry{0, 0, 23000, clock}, idEntry{0, 0, 23001, clock + 1000})

		one := newIDTable(len(prior))
		var wantDups []int64
		for _, e := range prior {
			one.put(e)
		}
		for _, e := range occ {
			if !one.admit(e.h0, e.h1, e.off, e.ms, window) {
				wantDups = append(wantDups, e.off)
			}
		}
		wantIndex := indexOf(t, one.entries(), clock+1000, window)
		one.free()

		dir := t.TempDir()
		const bits = 10                                       // 640 ids a table; 23,000 in scope
		g, err := newGraceBuckets(filepath.Join(dir, "b"), 4) // too few: every bucket splits again
		require.NoError(t, err)
		for _, e := range prior {
			require.NoError(t, g.add(e, true))
		}
		for _, e := range occ {
			require.NoError(t, g.add(e, false))
		}
		require.NoError(t, g.finish())
		var idx bytes.Buffer
		bw := bufio.NewWriter(&idx)
		c := &graceCheck{dir: dir, window: window, clock: clock + 1000, bits: bits, index: bw}
		require.NoError(t, c.decide(g, 0))
		require.NoError(t, bw.Flush())
		require.Greater(t, len(c.dupFiles), 4, "buckets split again")
		require.LessOrEqual(t, c.slots, int64(1)<<bits, "no table past its bound")
		m, err := openDupMerge(c.dupFiles)
		require.NoError(t, err)
		var gotDups []int64
		for {
			off, ok, err := m.next()
			require.NoError(t, err)
			if !ok {
				break
			}
			gotDups = append(gotDups, off)
		}
		require.NotEmpty(t, wantDups)
		require.Equal(t, wantDups, gotDups, "window %d", window)
		require.Equal(t, int64(len(wantDups)), c.dups)
		var got []idEntry
		require.NoError(t, readIndexEntries(&idx, func(e idEntry) error { got = append(got, e); return nil }))
		sortEntries(got)
		require.Equal(t, wantIndex, got)
		require.Equal(t, int64(len(got)), c.indexN)
		left, _ := filepath.Glob(filepath.Join(dir, "*", "b*"))
		require.Empty(t, left, "decided buckets are removed")
	}
}

func indexOf(t *testing.T, es []idEntry, clock, window int64) []idEntry {
	var buf bytes.Buffer
	_, err := writeIndexTo(&buf, es, clock, window)
	require.NoError(t, err)
	var out []idEntry
	require.NoError(t, readIndexEntries(&buf, func(e idEntry) error { out = append(out, e); return nil }))
	sortEntries(out)
	return out
}

func sortEntries(es []idEntry) {
	slices.SortFunc(es, func(a, b idEntry) int {
		if a.h0 != b.h0 {
			return cmpU(a.h0, b.h0)
		}
		return cmpU(a.h1, b.h1)
	})
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestDedupMemoryBound runs streams whose ids in scope are far beyond
// batch.dedup_memory (64 KiB: 1,024-slot tables, 640 ids; 1,440 ids a
// partition without a window, up to ~720 in a 5-day one): the runs spill
// to buckets, no table passes its share, the answers equal the truth, and
// every published object has the bytes of a run whose tables held every
// id. Without a window the full run spills from the start; with one the
// table fills mid-scan and hands over. The incremental runs after feed the
// previous run's index through the buckets.
func TestDedupMemoryBound(t *testing.T) {
	const budget = 64 << 10
	bits := dedupTableBits(budget)
	require.Equal(t, uint(10), bits)
	for _, window := range []string{"", "5d"} {
		t.Run("window="+window, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			srv := testenv.MinIO(t)
			var cfg *schemas.Config
			var win time.Duration
			if window == "" {
				cfg = testConfig(t, 100, 2, srv)
			} else {
				cfg = testConfigWindow(t, 100, 2, srv, window)
				win = 5 * 24 * time.Hour
			}
			st := testStore(t, cfg)
			s := cfg.Stream("pv")
			hourly, daily := cfg.View("pv_hourly"), cfg.View("pv_daily")
			hint := windowTableHint
			windowTableHint = 64 // the windowed table starts small and grows to the bound
			t.Cleanup(func() { windowTableHint = hint })

			raw := newWindowedRaw(t, ctx, st, s, rand.New(rand.NewPCG(3, 4)))
			raw.add(0, 1440) // 10 days
			msgs := raw.msgs
			run := func(full bool, mem int64) *Result {
				t.Helper()
				tmp := t.TempDir()
				bc, err := ConfigFrom(cfg)
				require.NoError(t, err)
				if mem != 0 {
					bc.DedupMemory = mem // below MinDedupMemory: small tables for small data
				}
				res, err := Run(ctx, Options{Config: cfg, Store: st, Full: full, Log: testLog(), TempDir: tmp, Batch: &bc})
				require.NoError(t, err)
				left, _ := os.ReadDir(tmp)
				require.Empty(t, left, "the run's spill files are removed")
				return res
			}
			check := func(res *Result, abs map[int32]int64) {
				t.Helper()
				m, rows, _ := publishedRows(t, ctx, st, hourly)
				require.Equal(t, abs, m.Absorbed)
				tr, events, dups, invalid := truthWindow(msgs, abs, time.Hour, true, win)
				checkAgainstTruth(t, hourly, rows, tr)
				require.Equal(t, []int64{events, dups, invalid}, []int64{m.Events, m.Duplicates, m.Invalid})
				require.Positive(t, dups)
			}

			// In memory (the default budget), then within 64 KiB.
			abs1 := map[int32]int64{0: 1400, 1: 1400}
			res := run(true, 0)
			require.Zero(t, res.Views[0].IDsSpilled)
			require.Greater(t, res.Views[0].IDTableSlots, int64(2)<<bits, "the ids in scope need more than the bound")
			wantH, wantD := publishedBytes(t, ctx, st, hourly), publishedBytes(t, ctx, st, daily)
			res = run(true, budget)
			require.Positive(t, res.Views[0].IDsSpilled)
			require.LessOrEqual(t, res.Views[0].IDTableSlots, int64(2)<<bits, "no table past its share of batch.dedup_memory")
			check(res, abs1)
			require.Equal(t, wantH, publishedBytes(t, ctx, st, hourly))
			require.Equal(t, wantD, publishedBytes(t, ctx, st, daily))

			// Two more days, incremental within the budget: the previous
			// index goes through the buckets. Then --full in memory.
			raw.add(1440, 300)
			abs2 := map[int32]int64{0: 1700, 1: 1700}
			res = run(false, budget)
			require.True(t, res.Views[0].Incremental)
			require.Positive(t, res.Views[0].IDsLoaded)
			require.Positive(t, res.Views[0].IDsSpilled)
			require.LessOrEqual(t, res.Views[0].IDTableSlots, int64(2)<<bits)
			check(res, abs2)
			gotH, gotD := publishedBytes(t, ctx, st, hourly), publishedBytes(t, ctx, st, daily)
			res = run(true, 0)
			require.Zero(t, res.Views[0].IDsSpilled)
			check(res, abs2)
			require.Equal(t, gotH, publishedBytes(t, ctx, st, hourly))
			require.Equal(t, gotD, publishedBytes(t, ctx, st, daily))
		})
	}
}

// publishedBytes is the bytes of the current run's files of v, in the
// manifest's order.
func publishedBytes(t *testing.T, ctx context.Context, st *s3.Store, v *schemas.View) [][]byte {
	t.Helper()
	m, err := ReadManifest(ctx, st, v.Name)
	require.NoError(t, err)
	var out [][]byte
	for _, f := range m.Files {
		b, err := objstore.GetBytes(ctx, st, f.Key)
		require.NoError(t, err)
		out = append(out, b)
	}
	require.NotEmpty(t, out)
	return out
}

// TestGraceDiskFull: bucket files on a full disk (/dev/full answers every
// write with ENOSPC) fail with an error naming the directory and
// batch.dedup_memory.
func TestGraceDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here")
	}
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		require.NoError(t, os.Symlink("/dev/full", filepath.Join(dir, fmt.Sprintf("b%04d", i))))
	}
	g, err := newGraceBuckets(dir, 2)
	require.NoError(t, err)
	defer g.close()
	for i := 0; i < 2*graceBufBytes/indexEntryBytes+2 && err == nil; i++ {
		err = g.add(idEntry{uint64(i), uint64(i), int64(i), 0}, false)
	}
	if err == nil {
		err = g.finish()
	}
	require.Error(t, err)
	msg := graceDiskError("pv", 3, dir, 1<<20, err).Error()
	require.Contains(t, msg, "duplicate check of pv partition 3")
	require.Contains(t, msg, "batch.dedup_memory (1048576 bytes)")
	require.Contains(t, msg, dir+", and that disk is full")
}

// writeIndexTo writes an index of es to buf (appendIndex, flushed).
func writeIndexTo(buf *bytes.Buffer, es []idEntry, clock, window int64) (int, error) {
	bw := bufio.NewWriter(buf)
	n, err := appendIndex(bw, es, clock, window)
	if err == nil {
		err = bw.Flush()
	}
	return n, err
}
