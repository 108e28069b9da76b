package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// levelsStart is the first day of TestLevelsEqualBaseRows's events; they
// span three UTC days.
var levelsStart = time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)

// writeRawDataset writes perPartition events to each partition of the
// view's stream as raw Parquet files of one chunk each, as the archiver
// would: random times over three days (and a few on hour and day
// boundaries), every field sometimes missing.
func writeRawDataset(t *testing.T, cfg *schemas.Config, store *s3.Store, perPartition int64, seed uint64) {
	t.Helper()
	ctx := context.Background()
	s := cfg.View(viewName).StreamDef()
	dec := schemas.NewDecoder(s, cfg.MaxFutureSkew.D())
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	kts := levelsStart.Add(72 * time.Hour)
	for p := int32(0); int(p) < s.Partitions; p++ {
		for first := int64(0); first < perPartition; first += cfg.ChunkSize {
			var buf bytes.Buffer
			w := parquet.NewRawWriter(&buf, s, parquet.RawWriterOptions{Partition: p, Decoder: dec})
			last := min(first+cfg.ChunkSize, perPartition) - 1
			for off := first; off <= last; off++ {
				ts := levelsStart.Add(time.Duration(rng.Int64N(int64(72 * time.Hour)))).Truncate(time.Millisecond)
				if rng.IntN(20) == 0 {
					ts = ts.Truncate(time.Hour) // on a level boundary
				}
				obj := map[string]any{"event_id": fmt.Sprintf("e-%d-%d", p, off), "ts": ts.Format(time.RFC3339Nano)}
				if c := countries[rng.IntN(len(countries))]; c != "" {
					obj["country"] = c
				}
				obj["device"] = devices[rng.IntN(len(devices))]
				if rng.IntN(10) > 0 {
					obj["user_id"] = fmt.Sprintf("u%d", rng.IntN(100000)) // groups of all events pass 2,000 distinct users
				}
				if rng.IntN(5) > 0 {
					obj["amount"] = float64(rng.IntN(100000)) / 100
				}
				if rng.IntN(10) > 0 {
					obj["latency_ms"] = math.Round(math.Exp(rng.NormFloat64()+4)*1000) / 1000
				}
				raw, err := json.Marshal(obj)
				require.NoError(t, err)
				rec := parquet.RawRecord{Raw: raw, Partition: p, Offset: off, KafkaTime: kts}
				if ev, err := dec.Decode(raw, kts); err == nil {
					rec.Event = &ev
				}
				require.NoError(t, w.Write(rec))
			}
			require.NoError(t, w.Close())
			require.NoError(t, objstore.PutBytes(ctx, store, schemas.RawKey(s.Name, p, first, last), buf.Bytes()))
		}
	}
}

// TestLevelsEqualBaseRows is the property that makes levels safe: over
// random ranges (ragged, aligned to minutes, hours or days), granularities
// (the view's 1m, 5m, 1h, 1d, all; in UTC and local time zones), group-bys
// and filters, with every
// measure type, the answer read through the coarse levels equals the
// answer merging the base rows, on data written through the real batch run
// into real MinIO. Sums may differ in the last bits (float addition in
// another order; serving's parallel merge already varies it); everything
// else is equal. It also checks that levels make the batch half touch far
// fewer rows.
func TestLevelsEqualBaseRows(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	_, store, _, _ := newBackends(t, cfg.Config, true)
	writeRawDataset(t, cfg.Config, store, 2000, 42)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runBatch(ctx, t.TempDir(), cfg.Config, store)
	require.NoError(t, err)
	m := res.Views[0].Manifest
	require.Equal(t, []schemas.Granularity{schemas.Granularity(24 * time.Hour), schemas.Granularity(time.Hour)}, m.Levels)
	require.EqualValues(t, 4000, m.Events)

	_, base, _ := startService(t, cfg)
	waitRun(t, base, m.RunID)

	rng := rand.New(rand.NewPCG(7, 9))
	grans := []string{"1m", "5m", "1h", "1d", "all"}
	measures := []string{"views", "revenue", "min_latency", "max_latency", "users", "latency"}
	align := []time.Duration{time.Millisecond, time.Second, time.Minute, time.Hour, 24 * time.Hour}
	var levelRows, baseRows float64
	for i := 0; i < 60; i++ {
		gran := grans[i%len(grans)]
		span := 80 * time.Hour
		if gran == "1m" || gran == "5m" {
			span = 10 * time.Hour // keeps answers small
		}
		a := align[rng.IntN(len(align))]
		from := levelsStart.Add(-4 * time.Hour).Add(time.Duration(rng.Int64N(int64(76 * time.Hour)))).Truncate(a)
		to := from.Add(time.Duration(1 + rng.Int64N(int64(span)))).Truncate(align[rng.IntN(len(align))])
		if !to.After(from) {
			to = from.Add(a)
		}
		p := url.Values{"from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}, "granularity": {gran}}
		randomGroupsAndFilters(rng, p)
		if rng.IntN(4) == 0 {
			p.Set("measures", strings.Join(measures[rng.IntN(3):], ","))
		}
		// Local buckets: Amsterdam days start at 23:00 UTC, so the 1d level
		// must not answer them (the 1h level may); Kathmandu's +05:45 leaves
		// only the base rows.
		if tz := []string{"", "Europe/Amsterdam", "America/New_York", "Asia/Kathmandu"}[rng.IntN(4)]; tz != "" {
			p.Set("tz", tz)
		}
		where := p.Encode()

		r0 := batchRowsMerged(t, base)
		viaLevels := query(t, base, p)
		r1 := batchRowsMerged(t, base)
		restore := serving.SetUseLevels(false)
		viaBase := query(t, base, p)
		restore()
		r2 := batchRowsMerged(t, base)
		if p.Get("tz") == "" { // local days read finer levels: the ratio is the UTC queries'
			levelRows += r1 - r0
			baseRows += r2 - r1
		}
		require.LessOrEqual(t, r1-r0, r2-r1, "%s: the levels path merged more rows than the base rows", where)

		sameRows(t, where, viaBase, viaLevels)
	}
	t.Logf("batch rows merged over all queries: %.0f through levels, %.0f from base rows", levelRows, baseRows)
	// Sparse data (about one event per stored minute row) and many 1m and 5m
	// queries keep the ratio modest here; TestLevelsTouchWhatTheAnswerNeeds
	// checks whole-day queries exactly.
	require.Less(t, levelRows*3, baseRows, "levels should cut the rows merged several times over")
}

// TestLevelsTouchWhatTheAnswerNeeds: a query of whole days at 1d, or of
// everything at granularity=all, reads one level row per (day, group)
// combination stored, not the minutes.
func TestLevelsTouchWhatTheAnswerNeeds(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	_, store, _, _ := newBackends(t, cfg.Config, true)
	writeRawDataset(t, cfg.Config, store, 1000, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runBatch(ctx, t.TempDir(), cfg.Config, store)
	require.NoError(t, err)
	m := res.Views[0].Manifest
	var dayRows, hourRows float64
	for _, f := range m.Files {
		switch f.Level {
		case schemas.Granularity(24 * time.Hour):
			dayRows += float64(f.Rows)
		case schemas.Granularity(time.Hour):
			hourRows += float64(f.Rows)
		}
	}
	require.Positive(t, dayRows)
	_, base, _ := startService(t, cfg)
	waitRun(t, base, m.RunID)
	for _, c := range []struct {
		name     string
		from, to time.Time
		gran     string
		want     float64
	}{
		{"three whole days at 1d", levelsStart, levelsStart.Add(72 * time.Hour), "1d", dayRows},
		{"three whole days, all", levelsStart, levelsStart.Add(72 * time.Hour), "all", dayRows},
		{"the first day at 1h", levelsStart, levelsStart.Add(24 * time.Hour), "1h", hourRows / 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			r0 := batchRowsMerged(t, base)
			a := query(t, base, url.Values{"from": {c.from.Format(time.RFC3339)}, "to": {c.to.Format(time.RFC3339)}, "granularity": {c.gran}, "group_by": {"country"}})
			require.NotEmpty(t, a.Rows)
			got := batchRowsMerged(t, base) - r0
			// The hour level's rows of one day are about a third of three days'.
			require.InDelta(t, c.want, got, c.want*0.2+1)
		})
	}
}

// batchRowsMerged reads tandem_serve_batch_rows_total (0 before any query).
func batchRowsMerged(t testing.TB, base string) float64 {
	var total float64
	for _, line := range strings.Split(metricsText(t, base), "\n") {
		if rest, ok := strings.CutPrefix(line, "tandem_serve_batch_rows_total{"); ok {
			var f float64
			_, err := fmt.Sscan(rest[strings.Index(rest, "}")+1:], &f)
			require.NoError(t, err, line)
			total += f
		}
	}
	return total
}

// TestLevelsLargeDistinctGroups: groups of a few thousand distinct users
// are answered alike through levels (a handful of merges per group) and
// from base rows (thousands of merges): whether a group's distinct sketch
// ends dense must not depend on how many rows were merged into it.
func TestLevelsLargeDistinctGroups(t *testing.T) {
	cfg := loadConfig(t, configYAML(t))
	_, store, _, _ := newBackends(t, cfg.Config, true)
	writeRawDataset(t, cfg.Config, store, 20000, 77)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runBatch(ctx, t.TempDir(), cfg.Config, store)
	require.NoError(t, err)
	_, base, _ := startService(t, cfg)
	waitRun(t, base, res.Views[0].Manifest.RunID)
	for _, p := range []url.Values{
		{"granularity": {"all"}, "group_by": {"country,device"}},
		{"granularity": {"all"}, "group_by": {"device"}},
		{"granularity": {"1d"}, "group_by": {"country"}},
		{"granularity": {"all"}},
	} {
		p.Set("from", levelsStart.Format(time.RFC3339))
		p.Set("to", levelsStart.Add(72*time.Hour).Format(time.RFC3339))
		p.Set("measures", "users,views")
		viaLevels := query(t, base, p)
		restore := serving.SetUseLevels(false)
		viaBase := query(t, base, p)
		restore()
		require.Equal(t, len(viaBase.Rows), len(viaLevels.Rows), p.Encode())
		large := 0
		for j, g := range viaLevels.Rows {
			require.Equal(t, viaBase.Rows[j].Dimensions, g.Dimensions)
			require.JSONEq(t, string(viaBase.Rows[j].Measures["users"]), string(g.Measures["users"]), "%s row %d %v", p.Encode(), j, g.Dimensions)
			var n float64
			require.NoError(t, json.Unmarshal(g.Measures["users"], &n))
			if n >= 2000 {
				large++
			}
		}
		require.Positive(t, large, "%s: some group has over 2,000 distinct users", p.Encode())
	}
}

// randomGroupsAndFilters adds to p a random group_by over the harness's
// dimensions and random country and device filters (a country filter
// always admits US as well).
func randomGroupsAndFilters(rng *rand.Rand, p url.Values) {
	var groupBy []string
	for _, d := range []string{"country", "device"} {
		if rng.IntN(2) == 0 {
			groupBy = append(groupBy, d)
		}
	}
	if len(groupBy) > 0 {
		p.Set("group_by", strings.Join(groupBy, ","))
	}
	if rng.IntN(3) == 0 {
		p.Add("filter", "country:"+countries[rng.IntN(len(countries))])
		p.Add("filter", "country:US")
	}
	if rng.IntN(3) == 0 {
		p.Add("filter", "device:"+devices[rng.IntN(len(devices))])
	}
}
