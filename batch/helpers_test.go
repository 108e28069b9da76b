package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

const testYAML = `
chunk_size: %d
batch: { keep_runs: 2, lock_ttl: 1m }
ingest: { max_future_skew: 1h }
streams:
  - name: pv
    topic: t.pv
    partitions: %d
    id_field: event_id
    time_field: ts
    fields:
      - { name: event_id, type: string, required: true }
      - { name: ts, type: timestamp, required: true }
      - { name: country, type: string }
      - { name: user_id, type: string }
      - { name: amount, type: float64 }
      - { name: latency, type: int64 }
views:
  - name: pv_hourly
    stream: pv
    granularity: 1h
    dimensions: [country]
    measures:
      - { name: views, type: count }
      - { name: revenue, type: sum, field: amount }
      - { name: min_latency, type: min, field: latency }
      - { name: max_latency, type: max, field: latency }
      - { name: users, type: distinct, field: user_id }
      - { name: lat, type: quantiles, field: latency }
  - name: pv_daily
    stream: pv
    granularity: 1d
    dimensions: []
    measures:
      - { name: views, type: count }
      - { name: revenue, type: sum, field: amount }
`

func testConfig(t testing.TB, chunkSize int64, partitions int, s3srv *testenv.S3Server) *schemas.Config {
	t.Helper()
	cfg, err := schemas.Parse("test.yaml", []byte(fmt.Sprintf(testYAML, chunkSize, partitions)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	if s3srv != nil {
		cfg.S3 = schemas.S3Config{Endpoint: s3srv.Endpoint, Bucket: s3srv.Bucket, AccessKey: s3srv.AccessKey, SecretKey: s3srv.SecretKey, Region: s3srv.Region}
	}
	return cfg
}

func testStore(t testing.TB, cfg *schemas.Config) *s3.Store {
	t.Helper()
	st, err := s3.New(cfg.S3)
	require.NoError(t, err)
	return st
}

// genMsg is one generated Kafka message and what the generator knows of it.
type genMsg struct {
	Offset  int64
	KafkaTS time.Time
	Raw     []byte
	Valid   bool
	ID      string
	Time    time.Time
	Country string
	User    string
	Amount  *float64
	Latency *int64
}

var genBase = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

// genPartition generates n messages of partition p from offset first:
// about 5% repeats of an earlier id (some with another event time), 3%
// invalid (bad JSON, missing ts, too far in the future), late events up to
// 30 hours back, and events spread over several days.
func genPartition(rng *rand.Rand, p int32, first, n int64, ids *[]string) []genMsg {
	out := make([]genMsg, 0, n)
	countries := []string{"US", "DE", "FR", "", "JP"}
	for i := int64(0); i < n; i++ {
		off := first + i
		kts := genBase.Add(time.Duration(off) * 10 * time.Minute)
		m := genMsg{Offset: off, KafkaTS: kts, Valid: true}
		m.ID = fmt.Sprintf("p%d-e%d", p, off)
		if len(*ids) > 0 && rng.IntN(100) < 5 {
			m.ID = (*ids)[rng.IntN(len(*ids))]
		} else {
			*ids = append(*ids, m.ID)
		}
		late := time.Duration(rng.IntN(3600)) * time.Second
		if rng.IntN(10) == 0 {
			late = time.Duration(rng.IntN(30*3600)) * time.Second // late by up to 30 h
		}
		m.Time = kts.Add(-late).Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		m.Country = countries[rng.IntN(len(countries))]
		m.User = fmt.Sprintf("u%d", rng.IntN(50))
		obj := map[string]any{"event_id": m.ID, "ts": m.Time.Format(time.RFC3339Nano)}
		if m.Country != "" {
			obj["country"] = m.Country
		}
		obj["user_id"] = m.User
		if rng.IntN(10) > 0 {
			a := math.Round(rng.Float64()*10000) / 100
			m.Amount = &a
			obj["amount"] = a
		}
		if rng.IntN(10) > 0 {
			l := int64(rng.IntN(2000))
			m.Latency = &l
			obj["latency"] = l
		}
		raw, _ := json.Marshal(obj)
		switch r := rng.IntN(100); {
		case r < 1:
			raw = []byte(`{"event_id": "broken`)
			m.Valid = false
		case r < 2:
			raw = []byte(fmt.Sprintf(`{"event_id": %q}`, m.ID))
			m.Valid = false
		case r < 3:
			raw = []byte(fmt.Sprintf(`{"event_id": %q, "ts": %q}`, m.ID, kts.Add(3*time.Hour).Format(time.RFC3339)))
			m.Valid = false
		}
		m.Raw = raw
		out = append(out, m)
	}
	return out
}

// writeRaw stores msgs as raw objects of at most per messages each, named
// the archiver's way, with typed columns filled as the archiver does.
func writeRaw(t testing.TB, ctx context.Context, st objstore.Bucket, s *schemas.Stream, p int32, msgs []genMsg, per int) {
	t.Helper()
	dec := schemas.NewDecoder(s, time.Hour)
	for len(msgs) > 0 {
		k := min(per, len(msgs))
		chunk := msgs[:k]
		msgs = msgs[k:]
		var buf bytes.Buffer
		w := parquet.NewRawWriter(&buf, s, parquet.RawWriterOptions{Partition: p, RowGroupBytes: 16 << 10, Decoder: dec})
		for _, m := range chunk {
			rec := parquet.RawRecord{Raw: m.Raw, Partition: p, Offset: m.Offset, KafkaTime: m.KafkaTS}
			if ev, err := dec.Decode(m.Raw, m.KafkaTS); err == nil {
				rec.Event = &ev
			}
			require.NoError(t, w.Write(rec))
		}
		require.NoError(t, w.Close())
		key := schemas.RawKey(s.Name, p, chunk[0].Offset, chunk[len(chunk)-1].Offset)
		require.NoError(t, objstore.PutBytes(ctx, st, key, buf.Bytes()))
	}
}

// truthRow is the expected aggregate of one view row.
type truthRow struct {
	Count    int64
	Sum      float64
	Min, Max *float64
	Users    map[string]bool
	Lat      []float64
}

// truth aggregates, with plain maps, the first valid occurrence of each id
// per partition among messages below absorbed[p], for a granularity and
// whether to group by country.
func truth(msgs map[int32][]genMsg, absorbed map[int32]int64, gran time.Duration, byCountry bool) (map[string]*truthRow, int64, int64, int64) {
	return truthWindow(msgs, absorbed, gran, byCountry, 0)
}

// truthWindow is truth under a dedup_window (0: none), written from the
// documented rule rather than from the code: a partition's clock is the
// highest Kafka timestamp read so far (every message, invalid ones too);
// an id is a duplicate while the clock is less than window past the clock
// of its last counted occurrence.
func truthWindow(msgs map[int32][]genMsg, absorbed map[int32]int64, gran time.Duration, byCountry bool, window time.Duration) (map[string]*truthRow, int64, int64, int64) {
	out := map[string]*truthRow{}
	var events, dups, invalid int64
	for p, ms := range msgs {
		counted := map[string]time.Time{} // id → clock of its counted occurrence
		var clock time.Time
		for _, m := range ms {
			if m.Offset >= absorbed[p] {
				continue
			}
			if m.KafkaTS.After(clock) {
				clock = m.KafkaTS
			}
			if !m.Valid {
				invalid++
				continue
			}
			if at, ok := counted[m.ID]; ok && (window == 0 || clock.Sub(at) < window) {
				dups++
				continue
			}
			counted[m.ID] = clock
			events++
			w := m.Time.UnixMilli() / gran.Milliseconds() * gran.Milliseconds()
			key := fmt.Sprint(w)
			if byCountry {
				key += "|" + m.Country
			}
			r := out[key]
			if r == nil {
				r = &truthRow{Users: map[string]bool{}}
				out[key] = r
			}
			r.Count++
			if m.Amount != nil {
				r.Sum += *m.Amount
			}
			if m.Latency != nil {
				l := float64(*m.Latency)
				if r.Min == nil || l < *r.Min {
					r.Min = &l
				}
				if r.Max == nil || l > *r.Max {
					r.Max = &l
				}
				r.Lat = append(r.Lat, l)
			}
			r.Users[m.User] = true
		}
	}
	return out, events, dups, invalid
}

// publishedRows reads every row of a view's current run, keyed like truth.
func publishedRows(t testing.TB, ctx context.Context, st *s3.Store, v *schemas.View) (*schemas.Manifest, map[string]parquet.ViewRow, []string) {
	t.Helper()
	m, err := ReadManifest(ctx, st, v.Name)
	require.NoError(t, err)
	require.NotNil(t, m)
	rows, order := levelRowsOf(t, ctx, st, v, m, 0)
	return m, rows, order
}

// levelRowsOf reads the rows of m's files of one level (0: the base rows),
// keyed as publishedRows keys them.
func levelRowsOf(t testing.TB, ctx context.Context, st *s3.Store, v *schemas.View, m *schemas.Manifest, level schemas.Granularity) (map[string]parquet.ViewRow, []string) {
	t.Helper()
	rows := map[string]parquet.ViewRow{}
	var order []string
	for _, f := range m.Files {
		if f.Level != level {
			continue
		}
		require.NoError(t, readViewFile(ctx, st, v, f.Key, func(r parquet.ViewRow) error {
			key := fmt.Sprint(r.WindowStart.UnixMilli())
			if len(r.Dims) > 0 {
				key += "|" + r.Dims[0]
			}
			cells := append([]any(nil), r.Cells...)
			rows[key] = parquet.ViewRow{WindowStart: r.WindowStart, Dims: append([]string(nil), r.Dims...), Cells: cells}
			order = append(order, fmt.Sprintf("%s %v %#v", key, r.Dims, cellsString(cells)))
			return nil
		}))
	}
	return rows, order
}

// fileBytes reads every file of m, keyed by level and day.
func fileBytes(t testing.TB, ctx context.Context, st *s3.Store, m *schemas.Manifest) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range m.Files {
		b, err := objstore.GetBytes(ctx, st, f.Key)
		require.NoError(t, err)
		out[f.Level.String()+" "+f.Day.Format(time.DateOnly)] = b
	}
	return out
}

func cellsString(cells []any) string {
	var b bytes.Buffer
	for _, c := range cells {
		switch x := c.(type) {
		case *float64:
			if x == nil {
				b.WriteString("nil ")
			} else {
				fmt.Fprintf(&b, "%v ", *x)
			}
		case []byte:
			fmt.Fprintf(&b, "%x ", x)
		default:
			fmt.Fprintf(&b, "%v ", x)
		}
	}
	return b.String()
}

// checkAgainstTruth compares the hourly view's rows with the truth.
func checkAgainstTruth(t testing.TB, v *schemas.View, rows map[string]parquet.ViewRow, want map[string]*truthRow) {
	t.Helper()
	require.Equal(t, len(want), len(rows), "row count")
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := want[k]
		r, ok := rows[k]
		require.True(t, ok, "row %s missing", k)
		for i, m := range v.Measures {
			st, err := m.StateFromCell(r.Cells[i])
			require.NoError(t, err)
			switch m.Name {
			case "views":
				require.Equal(t, w.Count, r.Cells[i], "count of %s", k)
			case "revenue":
				require.InDelta(t, w.Sum, r.Cells[i].(float64), 1e-6*math.Max(1, math.Abs(w.Sum)), "sum of %s", k)
			case "min_latency":
				require.Equal(t, w.Min, m.Result(&st), "min of %s", k)
			case "max_latency":
				require.Equal(t, w.Max, m.Result(&st), "max of %s", k)
			case "users":
				got := float64(m.Result(&st).(uint64))
				require.InDelta(t, float64(len(w.Users)), got, schemas.DistinctBound(float64(len(w.Users))), "distinct of %s", k)
			case "lat":
				if len(w.Lat) == 0 {
					require.Nil(t, m.Result(&st))
					continue
				}
				sort.Float64s(w.Lat)
				q := m.Result(&st).(*schemas.Quantiles)
				for _, c := range []struct {
					p   float64
					got float64
				}{{0.5, q.P50}, {0.9, q.P90}, {0.99, q.P99}} {
					exact := w.Lat[int(c.p*float64(len(w.Lat)-1))]
					// DDSketch: relative accuracy at the rank; allow one rank either side.
					lo := w.Lat[max(0, int(c.p*float64(len(w.Lat)-1))-1)]
					hi := w.Lat[min(len(w.Lat)-1, int(c.p*float64(len(w.Lat)-1))+1)]
					acc := schemas.QuantileRelativeAccuracy
					require.True(t, c.got >= lo*(1-acc)-1e-9 && c.got <= hi*(1+acc)+1e-9, "p%v of %s: got %v, exact %v", c.p, k, c.got, exact)
				}
			}
		}
	}
}
