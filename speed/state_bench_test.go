package speed

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// parseExample is tandem.example.yaml, the benchmark's stream and view.
func parseExample(t testing.TB) *schemas.Config {
	t.Helper()
	cfg, err := schemas.Parse("example.yaml", []byte(testenv.ExampleConfigYAML(t)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

// messages are n pageviews of one partition shaped like the end-to-end
// benchmark's load: 1 % resends within 300 messages, 5 % up to three days
// late, 0.5 % invalid.
func messages(n int, seed uint64, base time.Time) []kafka.Record {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	countries := []string{"US", "DE", "FR", "JP", "BR", ""}
	devices := []string{"ios", "android", "web"}
	out := make([]kafka.Record, 0, n)
	for i := 0; len(out) < n; i++ {
		m := kafka.Record{Offset: int64(len(out)), Time: base}
		switch {
		case len(out) > 10 && r.Float64() < 0.01:
			m.Value = out[len(out)-1-r.IntN(min(300, len(out)-1))].Value
		case r.Float64() < 0.005:
			m.Value = []byte(fmt.Sprintf(`{"event_id": "bad-%d", "ts": %q, "amount": "lots"}`, i, base.Format(time.RFC3339)))
		default:
			ts := base.Add(-time.Duration(r.IntN(600)) * time.Second)
			if r.Float64() < 0.05 {
				ts = base.Add(-time.Duration(1+r.IntN(72*60)) * time.Minute)
			}
			ts = ts.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
			obj := map[string]any{"event_id": fmt.Sprintf("ev-%d-%d", seed, i), "ts": ts.UTC().Format(time.RFC3339Nano),
				"device": devices[r.IntN(len(devices))], "user_id": fmt.Sprintf("u%d", r.IntN(500))}
			if c := countries[r.IntN(len(countries))]; c != "" {
				obj["country"] = c
			}
			if r.IntN(10) > 0 {
				obj["amount"] = math.Round(r.Float64()*10000) / 100
			}
			if r.IntN(10) > 0 {
				obj["latency_ms"] = 1 + math.Round(r.ExpFloat64()*8000)/100
			}
			m.Value, _ = json.Marshal(obj)
		}
		out = append(out, m)
	}
	return out
}

// BenchmarkProcess is the speed layer's per-message work (decode, dedup,
// fold into the example view) over 10,000-offset chunks; ns/op is per
// message. The flush's share is BenchmarkFlushRows.
func BenchmarkProcess(b *testing.B) {
	cfg := parseExample(b)
	st := cfg.Streams[0]
	msgs := benchMessages()
	dec := schemas.NewDecoder(st, time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var p *partState
	for i := 0; i < b.N; i++ {
		j := i % len(msgs)
		if j == 0 {
			p = newPartState(st, cfg.ViewsOf(st.Name), dec, 0, cfg.ChunkSize, planResume(-1, cfg.ChunkSize))
		}
		p.process(&msgs[j])
		if p.changed >= 50_000 {
			p.markWritten()
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

var benchMsgs []kafka.Record

func benchMessages() []kafka.Record {
	if benchMsgs == nil {
		benchMsgs = messages(50_000, 1, time.Now().UTC())
	}
	return benchMsgs
}

// cpuTime is the process's user+system CPU time in nanoseconds: on a
// loaded machine it is steadier than wall time.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkFlushRows is the CPU side of one flush: the rows of one view
// after a second's worth of one partition's messages (3,000), turned into
// cells as the ClickHouse sink does; ns/op is per flush.
func BenchmarkFlushRows(b *testing.B) {
	cfg := parseExample(b)
	st := cfg.Streams[0]
	v := cfg.ViewsOf(st.Name)[0]
	msgs := messages(3_000, 2, time.Now().UTC())
	p := newPartState(st, cfg.ViewsOf(st.Name), schemas.NewDecoder(st, time.Hour), 0, cfg.ChunkSize, planResume(-1, cfg.ChunkSize))
	for i := range msgs {
		p.process(&msgs[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		rows := p.rows(0)
		for mi := range v.Measures {
			for ri := range rows {
				_ = v.Measures[mi].Cell(&rows[ri].Agg[mi])
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(p.rows(0))), "rows/flush")
}
