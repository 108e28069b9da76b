package archive_test

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// bareRow is the raw schema of the test stream as a Go struct, for the
// baseline: parquet-go's own typed writer, nothing else.
type bareRow struct {
	EventID   *string    `parquet:"event_id,optional,dict"`
	TS        *time.Time `parquet:"ts,optional,timestamp(millisecond)"`
	Country   *string    `parquet:"country,optional,dict"`
	Amount    *float64   `parquet:"amount,optional"`
	Raw       string     `parquet:"_raw"`
	Partition int32      `parquet:"_partition"`
	Offset    int64      `parquet:"_offset"`
	KafkaTS   time.Time  `parquet:"_kafka_ts,timestamp(millisecond)"`
}

// BenchmarkArchiverVsBareParquet measures the archiver end to end on one
// partition (Kafka fetch from the in-process broker → decode → Parquet →
// upload to in-process S3, until every event is uploaded) against a bare
// parquet-go write of the same rows in the same run, and reports both
// rates and their ratio (the target), and also the archiver's steady rate
// (without its start and stop) and that rate's ratio.
func BenchmarkArchiverVsBareParquet(b *testing.B) {
	const events = 200_000
	k := testenv.KafkaWith(b, testenv.KafkaOptions{InMemory: true})

	var archived, bare, steady time.Duration
	var steadyN float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A fresh bucket: the archiver resumes where the bucket ends.
		e := newEnv(b, k, testenv.FakeS3(b), 1, 16<<20, "1h")
		p := newProducer(b, e)
		for from := 0; from < events; from += 20_000 {
			p.produce(b, from, from+20_000)
		}
		rows := bareRows(b, e, events)
		runtime.GC()
		b.StartTimer()

		// Baseline: the same rows through parquet-go's typed writer, zstd.
		t0 := time.Now()
		var buf bytes.Buffer
		w := pq.NewGenericWriter[bareRow](&buf, pq.Compression(&zstd.Codec{Level: zstd.SpeedDefault}))
		for j := 0; j < len(rows); j += 512 {
			_, err := w.Write(rows[j:min(j+512, len(rows))])
			require.NoError(b, err)
		}
		require.NoError(b, w.Close())
		bare += time.Since(t0)

		// The archiver, from start until its stop has uploaded everything.
		reg := prometheus.NewRegistry()
		t0 = time.Now()
		conf := e.conf
		conf.TmpDir, conf.SessionTimeout = b.TempDir(), 6*time.Second
		a, err := archive.New(conf, archive.Deps{Schema: e.cfg, Store: e.store, Registry: reg})
		require.NoError(b, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		// The steady rate leaves out the start (joining the group,
		// claiming the partition, the first fetch) and the stop (the last
		// upload): from the first poll that sees records until every record
		// is written.
		var firstAt time.Time
		var firstN float64
		for {
			n := metricSum(b, reg, "tandem_archive_records_total")
			if n >= events {
				break
			}
			if firstAt.IsZero() && n > 0 {
				firstAt, firstN = time.Now(), n
			}
			time.Sleep(2 * time.Millisecond)
		}
		if !firstAt.IsZero() {
			steady += time.Since(firstAt)
			steadyN += events - firstN
		}
		cancel()
		require.NoError(b, <-done)
		archived += time.Since(t0)
		b.StopTimer()
		prog, err := archive.ReadProgress(context.Background(), e.store, e.stream().Name)
		require.NoError(b, err)
		require.Equal(b, int64(events), prog.Next[0], "everything uploaded")
		b.StartTimer()
	}
	n := float64(events) * float64(b.N)
	archEPS, bareEPS := n/archived.Seconds(), n/bare.Seconds()
	b.ReportMetric(archEPS, "archiver_events/s")
	b.ReportMetric(bareEPS, "bare_parquet_events/s")
	b.ReportMetric(100*archEPS/bareEPS, "ratio_%")
	if steady > 0 {
		// A second view, for reading the first: the archiver's rate while
		// it streams, without its fixed start and stop costs.
		b.ReportMetric(steadyN/steady.Seconds(), "archiver_steady_events/s")
		b.ReportMetric(100*steadyN/steady.Seconds()/bareEPS, "steady_ratio_%")
	}
	b.ReportMetric(0, "ns/op")
}

// bareRows decodes the events as the archiver would, into baseline rows.
func bareRows(b *testing.B, e *env, n int) []bareRow {
	dec := schemas.NewDecoder(e.stream(), time.Hour)
	rows := make([]bareRow, n)
	now := time.Now()
	for i := range rows {
		raw := event(i)
		r := bareRow{Raw: string(raw), Offset: int64(i), KafkaTS: now}
		if ev, err := dec.Decode(raw, now); err == nil {
			id, ts := ev.ID, ev.Time
			r.EventID, r.TS = &id, &ts
			if v := ev.Values[2]; v.Set {
				r.Country = &v.Str
			}
			if v := ev.Values[3]; v.Set {
				f := v.Float
				r.Amount = &f
			}
		}
		rows[i] = r
	}
	return rows
}
