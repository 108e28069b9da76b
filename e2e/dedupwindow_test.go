package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/ingest/gen"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestExactnessDedupWindow is the duplicate horizon end to end: a stream
// with dedup_window: 15s, load through the gateway, ids resent inside the
// window (dropped) and after it (counted again, then resent once more
// inside the new occurrence's window), batch runs between the phases; REST
// equals the truth computed here from the messages Kafka holds (the master
// dataset read back) under the documented rule, before and after the
// final batch run.
func TestExactnessDedupWindow(t *testing.T) {
	const window = 15 * time.Second
	p := newPlatform(t, platformOptions{chunkSize: 200})
	setDedupWindow(t, p, "15s")
	p.start("ingest", "speed", "archive", "serve")
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 2))
	t.Logf("seed %d", seed)

	const events = 4000
	g, err := gen.New(gen.Options{
		Stream: p.cfg.Stream(streamName), Seed: seed, Events: events, Rate: 2000,
		Spacing: 10 * time.Minute / events, Batch: 200, Concurrency: 2,
		Late: 0.05, OutOfOrder: 0.05, Dups: 0.03, Invalid: 0.02, MaxFutureSkew: time.Hour,
	})
	require.NoError(t, err)
	truthPath := filepath.Join(p.dir, "truth.ndjson")
	tf, err := os.Create(truthPath)
	require.NoError(t, err)
	rec := newRecorder()
	rep, err := g.Run(context.Background(), gen.RunOptions{Sink: newRetrySink(p.ingestURL, rec, 2), Truth: tf})
	require.NoError(t, err)
	require.NoError(t, tf.Close())
	require.Equal(t, rep.Sent-rep.Invalid, rep.Accepted)
	raws := readTruthRaws(t, truthPath)

	sink := &gen.HTTPSink{URL: p.ingestURL, Stream: streamName, Client: &http.Client{Timeout: 30 * time.Second}}
	resent := int64(0)
	post := func(evs [][]byte) {
		t.Helper()
		batch := make([]gen.Event, len(evs))
		for i, r := range evs {
			batch[i] = gen.Event{Raw: r}
		}
		acc, err := sink.Send(context.Background(), batch)
		require.NoError(t, err)
		for _, a := range acc {
			require.True(t, a, "a resent valid event is accepted")
		}
		resent += int64(len(evs))
	}
	pick := func(from [][]byte, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = from[rng.IntN(len(from))]
		}
		return out
	}
	// Inside the window: recent ids again, within a chunk of the original
	// in their partition (the speed layer's horizon).
	post(pick(raws[len(raws)-60:], 40))
	out, err := p.batchRun(context.Background())
	require.NoError(t, err, "batch run: %s", out)
	// After the window: older ids count again; half of them are resent
	// once more at once, inside their new occurrence's window.
	time.Sleep(window + 2*time.Second)
	again := pick(raws, 150)
	post(again)
	post(again[:75])
	// New events after the resends, so the chunks holding them are whole
	// and the final batch run, not only the speed layer, answers for them.
	g2, err := gen.New(gen.Options{
		Stream: p.cfg.Stream(streamName), Seed: seed + 1, Events: 2400, Rate: 2000,
		Spacing: 10 * time.Minute / events, Batch: 200, Concurrency: 2, MaxFutureSkew: time.Hour,
	})
	require.NoError(t, err)
	rep2, err := g2.Run(context.Background(), gen.RunOptions{Sink: newRetrySink(p.ingestURL, rec, 2)})
	require.NoError(t, err)
	require.Equal(t, rep2.Sent, rep2.Accepted)
	resent += rep2.Accepted

	// The master dataset holds every accepted message; the truth follows
	// from it under the rule.
	var msgs []masterMsg
	require.Eventually(t, func() bool {
		msgs = p.readMasterMessages(t)
		return int64(len(msgs)) == rep.Accepted+resent
	}, 60*time.Second, time.Second, "the archiver did not archive every accepted message")
	truth := windowTruth(t, msgs, window)
	forever := windowTruth(t, msgs, 0)
	require.Greater(t, len(truth), len(forever), "ids resent after the window count again")
	require.Less(t, int64(len(truth)), rep.Accepted+resent, "ids resent inside the window do not")
	// Every resend lies in a whole chunk the final run absorbs.
	var lastResend [partitions]int64
	resends := map[string]bool{}
	for _, r := range again {
		ev, err := parseEvent(r)
		require.NoError(t, err)
		resends[ev.ID] = true
	}
	for _, m := range msgs {
		if ev, err := parseEvent(m.raw); err == nil && resends[ev.ID] {
			lastResend[m.partition] = max(lastResend[m.partition], m.offset)
		}
	}
	ends := map[int32]int64{}
	for _, m := range msgs {
		ends[m.partition] = max(ends[m.partition], m.offset+1)
	}
	for part, last := range lastResend {
		require.Less(t, last, ends[int32(part)]/p.cfg.ChunkSize*p.cfg.ChunkSize, "partition %d: the last resend is in a whole chunk", part)
	}

	lo, hi := truth[0].TimeMs, truth[0].TimeMs
	for _, ev := range truth {
		lo, hi = min(lo, ev.TimeMs), max(hi, ev.TimeMs)
	}
	from := time.UnixMilli(lo).UTC().Truncate(time.Hour)
	to := time.UnixMilli(hi).UTC().Truncate(time.Hour).Add(time.Hour)
	queries := []query{
		{from: from, to: to},
		{from: from, to: to, granularity: "1h", groupBy: []string{"country"}},
		{from: from, to: to, granularity: "all", groupBy: []string{"country", "device"}},
	}
	p.waitExact(t, "after the load", truth, queries)
	out, err = p.batchRun(context.Background())
	require.NoError(t, err, "final batch run: %s", out)
	p.waitExact(t, "after the final batch run", truth, queries)
}

// setDedupWindow sets the stream's dedup_window in the platform's
// configuration, before any component starts.
func setDedupWindow(t *testing.T, p *platform, window string) {
	t.Helper()
	text, err := os.ReadFile(p.cfgPath)
	require.NoError(t, err)
	const at = "    time_field: ts\n"
	require.Equal(t, 1, strings.Count(string(text), at))
	text = []byte(strings.Replace(string(text), at, at+"    dedup_window: "+window+"\n", 1))
	require.NoError(t, os.WriteFile(p.cfgPath, text, 0o600))
	p.cfg, err = config.LoadFile(p.cfgPath)
	require.NoError(t, err)
	require.Equal(t, window, p.cfg.Stream(streamName).DedupWindow.D().String())
}

// readTruthRaws returns the JSON of every event of a truth file.
func readTruthRaws(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var line struct {
			Event json.RawMessage `json:"event"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		out = append(out, bytes.Clone(line.Event))
	}
	require.NoError(t, sc.Err())
	return out
}

// masterMsg is one message of the master dataset.
type masterMsg struct {
	partition int32
	offset    int64
	kafkaMs   int64
	raw       []byte
}

// readMasterMessages reads every message of the master dataset, sorted by
// partition and offset.
func (p *platform) readMasterMessages(t *testing.T) []masterMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := p.s3.Client(t)
	s := p.cfg.Stream(streamName)
	var out []masterMsg
	for o := range c.ListObjects(ctx, p.s3.Bucket, minio.ListObjectsOptions{Prefix: "raw/" + streamName + "/", Recursive: true}) {
		require.NoError(t, o.Err)
		if _, _, _, _, ok := schemas.ParseRawKey(o.Key); !ok {
			continue
		}
		obj, err := c.GetObject(ctx, p.s3.Bucket, o.Key, minio.GetObjectOptions{})
		require.NoError(t, err)
		data, err := io.ReadAll(obj)
		obj.Close()
		require.NoError(t, err)
		r, err := parquet.NewRawReader(s, bytes.NewReader(data), int64(len(data)), parquet.RawReadOptions{})
		require.NoError(t, err)
		for rec, err := range r.All() {
			require.NoError(t, err)
			out = append(out, masterMsg{rec.Partition, rec.Offset, rec.KafkaTime.UnixMilli(), bytes.Clone(rec.Raw)})
		}
		r.Close()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].partition != out[j].partition {
			return out[i].partition < out[j].partition
		}
		return out[i].offset < out[j].offset
	})
	return out
}

// windowTruth returns the counted events of msgs (sorted by partition and
// offset) under docs/architecture.md's rule, parsing each message with
// parseEvent, not tandem's decoder: per partition, the clock is the
// highest Kafka timestamp so far (every message); an id is a duplicate
// while the clock is less than window (0: forever) past the clock of its
// counted occurrence.
func windowTruth(t *testing.T, msgs []masterMsg, window time.Duration) []event {
	t.Helper()
	var out []event
	var counted map[string]int64
	var clock int64
	part := int32(-1)
	for _, m := range msgs {
		if m.partition != part {
			part, counted, clock = m.partition, map[string]int64{}, m.kafkaMs
		}
		clock = max(clock, m.kafkaMs)
		ev, err := parseEvent(m.raw)
		require.NoError(t, err, "the gateway accepted only valid events")
		if at, ok := counted[ev.ID]; ok && (window == 0 || clock-at < window.Milliseconds()) {
			continue
		}
		counted[ev.ID] = clock
		out = append(out, ev)
	}
	return out
}
