package speed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/speed"
)

// env is one test's services and configuration.
type env struct {
	ch      *testenv.ClickHouseServer
	kafka   *testenv.KafkaCluster
	cfg     *schemas.Config
	conf    speed.Config // the speed section of cfgText
	cfgText string
	conn    driver.Conn
	db      *clickhouse.DB
}

type envOptions struct {
	partitions int
	chunkSize  int64
	flush      string // flush_interval
	rawEvents  bool
	listen     string
	window     string // streams[].dedup_window, "" for unset
}

// configText is tandem.example.yaml's stream and view with the test's
// services, topic and sizes.
func configText(t testing.TB, brokers []string, chAddr, db, topic, group string, o envOptions) string {
	t.Helper()
	if o.flush == "" {
		o.flush = "200ms"
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	streamExtra := fmt.Sprintf("    raw_events: %t\n", o.rawEvents)
	if o.window != "" {
		streamExtra += "    dedup_window: " + o.window + "\n"
	}
	return fmt.Sprintf(`kafka:      { brokers: [%q], group_prefix: %q }
clickhouse: { addr: %q, database: %s, username: default, password: "" }
speed:      { listen: %q, flush_interval: %s, flush_rows: 5000 }
ingest:     { max_future_skew: 1h }
chunk_size: %d
`, strings.Join(brokers, ","), group, chAddr, db, o.listen, o.flush, o.chunkSize) +
		testenv.ExampleStreamsYAML(t,
			"topic: tandem.pageviews", "topic: "+topic,
			"partitions: 6", fmt.Sprintf("partitions: %d", o.partitions),
			"time_field: ts\n", "time_field: ts\n"+streamExtra)
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ch := testenv.ClickHouse(t)
	k := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "pv")
	group := testenv.UniqueName(t, "g")
	text := configText(t, k.Brokers, ch.Addr, ch.Database, topic, group, o)
	cfg, err := schemas.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopics(ctx, k.Brokers, cfg))
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	_, err = db.Migrate(ctx, cfg)
	require.NoError(t, err)
	conf, err := speed.ConfigFrom(cfg)
	require.NoError(t, err)
	return &env{ch: ch, kafka: k, cfg: cfg, conf: conf, cfgText: text, conn: ch.Conn(t), db: db}
}

func (e *env) writeConfig(t testing.TB, listen string) string {
	t.Helper()
	text := strings.Replace(e.cfgText, `listen: "127.0.0.1:0"`, fmt.Sprintf("listen: %q", listen), 1)
	p := filepath.Join(t.TempDir(), "tandem.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

// event is one produced message and what the test knows about it.
type event struct {
	id      string
	valid   bool
	ts      time.Time
	country string
	device  string
	user    string
	amount  *float64
	latency *float64
	raw     []byte
}

// genOptions shape the generated load: like ingest/gen, duplicates within
// a few hundred events of their original, late and out-of-order event
// times, and invalid events.
type genOptions struct {
	n           int
	seed        uint64
	base        time.Time // "now" of the event times
	dupRate     float64
	lateRate    float64
	invalidRate float64
}

func generate(o genOptions) []event {
	r := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	countries := []string{"US", "DE", "FR", "JP", "BR", ""}
	devices := []string{"ios", "android", "web"}
	var out []event
	for i := 0; len(out) < o.n; i++ {
		if len(out) > 10 && r.Float64() < o.dupRate {
			// A resend of an event at most 300 messages back.
			back := 1 + r.IntN(min(300, len(out)-1))
			out = append(out, out[len(out)-back])
			continue
		}
		if r.Float64() < o.invalidRate {
			out = append(out, invalidEvent(r, i, o.base))
			continue
		}
		ts := o.base.Add(-time.Duration(r.IntN(600)) * time.Second) // out of order within 10 minutes
		if r.Float64() < o.lateRate {
			ts = o.base.Add(-time.Duration(1+r.IntN(72*60)) * time.Minute) // up to three days late
		}
		ts = ts.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
		e := event{id: fmt.Sprintf("ev-%d-%d", o.seed, i), valid: true, ts: ts.UTC().Truncate(time.Millisecond),
			country: countries[r.IntN(len(countries))], device: devices[r.IntN(len(devices))],
			user: fmt.Sprintf("u%d", r.IntN(500))}
		obj := map[string]any{"event_id": e.id, "ts": e.ts.Format(time.RFC3339Nano), "device": e.device, "user_id": e.user}
		if e.country != "" {
			obj["country"] = e.country
		}
		if r.IntN(10) > 0 {
			a := math.Round(r.Float64()*10000) / 100
			e.amount = &a
			obj["amount"] = a
		}
		if r.IntN(10) > 0 {
			l := 1 + math.Round(r.ExpFloat64()*8000)/100
			e.latency = &l
			obj["latency_ms"] = l
		}
		e.raw, _ = json.Marshal(obj)
		out = append(out, e)
	}
	return out
}

func invalidEvent(r *rand.Rand, i int, base time.Time) event {
	id := fmt.Sprintf("bad-%d", i)
	var raw string
	switch r.IntN(4) {
	case 0:
		raw = `{"event_id": "` + id + `", "ts": `
	case 1:
		raw = `{"event_id": "` + id + `"}`
	case 2:
		raw = fmt.Sprintf(`{"event_id": %q, "ts": %q}`, id, base.Add(48*time.Hour).Format(time.RFC3339))
	default:
		raw = fmt.Sprintf(`{"event_id": %q, "ts": %q, "amount": "lots"}`, id, base.Format(time.RFC3339))
	}
	return event{id: id, raw: []byte(raw)}
}

// gatewayHeaders are the headers the ingest gateway puts on every record
// (the stream and its schema version), so consumers read what they read
// in production.
var gatewayHeaders = []kgo.Header{{Key: kafka.HeaderStream, Value: []byte("pageviews")}, {Key: kafka.HeaderSchema, Value: []byte("0123456789abcdef")}}

// produce writes the events with key = id and the gateway's headers, in
// order, through a writer of its own. The message timestamp (ingest time)
// is now.
func produce(t testing.TB, brokers []string, topic string, evs []event) {
	t.Helper()
	produceAt(t, brokers, topic, evs, nil)
}

// produceAt is produce with each message's timestamp set (at[i] for
// evs[i]) rather than now.
func produceAt(t testing.TB, brokers []string, topic string, evs []event, at []time.Time) {
	t.Helper()
	w := &kgo.Writer{
		Addr: kgo.TCP(brokers...), Topic: topic, Balancer: kgo.Murmur2Balancer{},
		RequiredAcks: kgo.RequireAll, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond,
		Transport: &kgo.Transport{Dial: (&net.Dialer{Timeout: 3 * time.Second}).DialContext},
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for len(evs) > 0 {
		n := min(len(evs), 5000)
		msgs := make([]kgo.Message, n)
		for i, e := range evs[:n] {
			msgs[i] = kgo.Message{Key: []byte(e.id), Value: e.raw, Headers: gatewayHeaders}
			if at != nil {
				msgs[i].Time = at[i]
			}
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
		evs = evs[n:]
		if at != nil {
			at = at[n:]
		}
	}
}

// truthRow is the exact answer for one window and dimensions.
type truthRow struct {
	count    int64
	sum      float64
	min, max *float64
}

type rowID struct {
	window          time.Time
	country, device string
}

// truth computes the views' exact measures from the produced events with
// plain maps: invalid events out, duplicates by id keep the first.
func truth(evs []event) map[rowID]*truthRow {
	seen := map[string]bool{}
	var kept []event
	for _, e := range evs {
		if !e.valid || seen[e.id] {
			continue
		}
		seen[e.id] = true
		kept = append(kept, e)
	}
	return aggregate(kept)
}

// aggregate computes the views' exact measures over every event given.
func aggregate(evs []event) map[rowID]*truthRow {
	out := map[rowID]*truthRow{}
	for _, e := range evs {
		k := rowID{e.ts.Truncate(time.Minute), e.country, e.device}
		r := out[k]
		if r == nil {
			r = &truthRow{}
			out[k] = r
		}
		r.count++
		if e.amount != nil {
			r.sum += *e.amount
		}
		if e.latency != nil {
			l := *e.latency
			if r.min == nil || l < *r.min {
				r.min = &l
			}
			if r.max == nil || l > *r.max {
				r.max = &l
			}
		}
	}
	return out
}

// readSpeed reads every speed row (FINAL) and merges rows of the same
// window and dimensions across partitions and chunks with the shared merge
// functions.
func readSpeed(t testing.TB, conn driver.Conn, cfg *schemas.Config) map[rowID]schemas.Aggregate {
	t.Helper()
	v := cfg.Views[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT window_start, country, device, views, revenue, min_latency, max_latency, users, latency FROM %s.%s_speed FINAL",
		cfg.ClickHouse.Database, v.Name))
	require.NoError(t, err)
	defer rows.Close()
	out := map[rowID]schemas.Aggregate{}
	for rows.Next() {
		var (
			w               time.Time
			country, device string
			count           int64
			sum             float64
			mn, mx          *float64
			users, lat      string
		)
		require.NoError(t, rows.Scan(&w, &country, &device, &count, &sum, &mn, &mx, &users, &lat))
		cells := []any{count, sum, mn, mx, users, lat}
		agg := v.NewAggregate()
		for i := range v.Measures {
			st, err := v.Measures[i].StateFromCell(cells[i])
			require.NoError(t, err)
			agg[i] = st
		}
		k := rowID{w.UTC(), country, device}
		if cur, ok := out[k]; ok {
			v.Merge(cur, agg)
		} else {
			out[k] = agg
		}
	}
	require.NoError(t, rows.Err())
	return out
}

// diffTruth compares merged speed rows with the truth: exact for count,
// min and max, sum within float tolerance. It returns the differences.
func diffTruth(cfg *schemas.Config, want map[rowID]*truthRow, got map[rowID]schemas.Aggregate) []string {
	v := cfg.Views[0]
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%v: missing (want count %d)", k, w.count))
			continue
		}
		cnt := v.Measures[0].Result(&g[0]).(int64)
		sum := v.Measures[1].Result(&g[1]).(float64)
		mn := v.Measures[2].Result(&g[2]).(*float64)
		mx := v.Measures[3].Result(&g[3]).(*float64)
		switch {
		case cnt != w.count:
			diffs = append(diffs, fmt.Sprintf("%v: count %d, want %d", k, cnt, w.count))
		case math.Abs(sum-w.sum) > 1e-6*math.Max(1, math.Abs(w.sum)):
			diffs = append(diffs, fmt.Sprintf("%v: sum %v, want %v", k, sum, w.sum))
		case !eqPtr(mn, w.min) || !eqPtr(mx, w.max):
			diffs = append(diffs, fmt.Sprintf("%v: min/max %v/%v, want %v/%v", k, show(mn), show(mx), show(w.min), show(w.max)))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%v: unexpected row", k))
		}
	}
	sort.Strings(diffs)
	return diffs
}

func eqPtr(a, b *float64) bool { return (a == nil && b == nil) || (a != nil && b != nil && *a == *b) }

func show(p *float64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}

// waitExact polls until the speed rows equal the truth or the timeout ends.
func waitExact(t testing.TB, e *env, want map[rowID]*truthRow, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var diffs []string
	for {
		diffs = diffTruth(e.cfg, want, readSpeed(t, e.conn, e.cfg))
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(diffs) > 20 {
		diffs = append(diffs[:20], fmt.Sprintf("… and %d more", len(diffs)-20))
	}
	t.Fatalf("speed rows differ from the truth after %s:\n%s", timeout, strings.Join(diffs, "\n"))
}

func countValid(evs []event) (valid, invalid, dups int) {
	seen := map[string]bool{}
	for _, e := range evs {
		switch {
		case !e.valid: // every copy fails validation again
			invalid++
		case seen[e.id]:
			dups++
		default:
			valid++
		}
		seen[e.id] = true
	}
	return
}

// checkSQLStates holds the speed rows' SQL states of the example view
// against the kept events (valid, first of each id), after kills and
// replays: every latency is in the stored TDigest centroids exactly once
// (their weights add up to the number of latencies: a chunk folded again
// replaced its rows, it did not add to them), and uniqHLL12Merge over the
// merged view has the digits of one state of the kept users.
func checkSQLStates(t testing.TB, e *env, evs []event) {
	t.Helper()
	seen := map[string]bool{}
	var users chstate.Distinct
	latencies := uint64(0)
	for _, ev := range evs {
		if !ev.valid || seen[ev.id] {
			continue
		}
		seen[ev.id] = true
		users.AddString(ev.user)
		if ev.latency != nil {
			latencies++
		}
	}
	v, db := e.cfg.Views[0].Name, e.cfg.ClickHouse.Database
	var weight, distinct uint64
	// Empty counts are that many ones (clickhouse's unitCounts).
	require.NoError(t, e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT toUInt64(sum(arraySum(arrayResize(latency__td_counts, length(latency__td_means), toUInt64(1))))) FROM %s.%s_speed FINAL", db, v)).Scan(&weight))
	require.Equal(t, latencies, weight, "latencies in the stored TDigest centroids")
	require.NoError(t, e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT uniqHLL12Merge(users) FROM %s.%s", db, v)).Scan(&distinct))
	require.Equal(t, users.Estimate(), distinct, "uniqHLL12Merge over the merged view")
	require.LessOrEqual(t, math.Abs(float64(distinct)-float64(len(usersOf(evs, seen)))), chstate.DistinctSQLBound(len(usersOf(evs, seen))))
}

func usersOf(evs []event, kept map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, ev := range evs {
		if ev.valid && kept[ev.id] {
			out[ev.user] = true
		}
	}
	return out
}
