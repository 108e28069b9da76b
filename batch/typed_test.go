package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/zeebo/xxh3"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// allTypesStream is the "ev" stream of testenv.AllTypesYAML: a field of
// every type, so the typed columns of every physical type (and dictionary
// strings) are read.
func allTypesStream(tb testing.TB) *schemas.Stream {
	tb.Helper()
	cfg, err := schemas.Parse("all.yaml", []byte(testenv.AllTypesYAML(tb)), func(string) (string, bool) { return "", false })
	require.NoError(tb, err)
	return cfg.Stream("ev")
}

// tmsg is one Kafka message of the "ev" stream.
type tmsg struct {
	raw     []byte
	kafkaMs int64
}

var typedBase = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// messyMessages generates n messages of the "ev" stream that stress the
// decoder: every field type, escapes, repeated keys, nulls, numbers at
// their limits, timestamps in both forms and with fractions, events just
// inside and outside the future skew, ids repeated, and invalid messages
// of many kinds.
func messyMessages(rng *rand.Rand, n int) []tmsg {
	out := make([]tmsg, 0, n)
	kinds := []string{`"view"`, `"click"`, `"v\u00e9\"w"`, `""`}
	strs := []string{`"a"`, `""`, `"x\ny"`, `"\ud83d\ude00"`, `null`, `"é"`, `"a","s":"b"`}
	ints := []string{`0`, `-1`, `9223372036854775807`, `-9223372036854775808`, `42`, `null`, `1e2`, `1.5`, `9223372036854775808`}
	floats := []string{`0`, `-0.0`, `1e308`, `5e-324`, `3.14159`, `-2.5E-3`, `null`, `1e309`, `"1"`}
	bools := []string{`true`, `false`, `null`, `"true"`}
	for k := 0; k < n; k++ {
		kts := typedBase.Add(time.Duration(k) * 7 * time.Second)
		var ts string
		switch r := rng.IntN(20); {
		case r < 8:
			ts = strconv.Quote(kts.Add(-time.Duration(rng.IntN(86_400_000)) * time.Millisecond).Format(time.RFC3339Nano))
		case r < 12:
			ts = strconv.FormatInt(kts.UnixMilli()-int64(rng.IntN(86_400_000)), 10)
		case r < 13:
			ts = strconv.Quote(kts.Add(59*time.Minute + 59*time.Second).In(time.FixedZone("x", 5*3600+1800)).Format("2006-01-02T15:04:05.999999999-07:00"))
		case r < 14:
			ts = strconv.FormatInt(kts.Add(time.Hour).UnixMilli(), 10) // exactly at a skew of 1h
		case r < 15:
			ts = strconv.FormatInt(kts.Add(time.Hour).UnixMilli()+1, 10)
		case r < 16:
			ts = strconv.Quote(kts.Add(30 * time.Minute).Format(time.RFC3339))
		case r < 17:
			ts = strconv.Quote(kts.Add(5 * time.Hour).Format(time.RFC3339))
		case r < 18:
			ts = `"2100-01-01T00:00:00Z"` // out of range
		case r < 19:
			ts = `null`
		default:
			ts = `"yesterday"`
		}
		id := strconv.Quote(fmt.Sprintf("e%d", rng.IntN(n/2+1))) // about half repeat an earlier id
		if rng.IntN(30) == 0 {
			id = `"e\u0031` + strconv.Itoa(rng.IntN(5)) + `"` // an escaped id
		}
		if rng.IntN(60) == 0 {
			id = `""`
		}
		var b strings.Builder
		b.WriteString(`{"id":` + id + `,"ts":` + ts)
		if rng.IntN(40) > 0 {
			b.WriteString(`,"kind":` + kinds[rng.IntN(len(kinds))])
		}
		pick := func(name string, vals []string) {
			if rng.IntN(5) > 0 {
				b.WriteString(`,"` + name + `":` + vals[rng.IntN(len(vals))])
			}
		}
		pick("s", strs)
		pick("i", ints)
		pick("f", floats)
		pick("b", bools)
		if rng.IntN(3) == 0 {
			b.WriteString(`,"at":` + strconv.FormatInt(kts.UnixMilli()+int64(rng.IntN(1000)), 10))
		}
		if rng.IntN(10) == 0 {
			b.WriteString(`,"extra":{"deep":[1,{"x":null}]}`)
		}
		b.WriteString("}")
		raw := []byte(b.String())
		switch r := rng.IntN(100); {
		case r < 2:
			raw = raw[:len(raw)/2] // broken JSON
		case r < 3:
			raw = append([]byte(" \t"), append(raw, '\n')...) // whitespace around: valid
		case r < 4:
			raw = append(raw[:len(raw)-1:len(raw)-1], []byte(`,"s":"\xff"}`)...) // not UTF-8
		}
		out = append(out, tmsg{raw: raw, kafkaMs: kts.UnixMilli()})
	}
	return out
}

// writeRawFile writes msgs as one raw file of stream written (the stream's
// definition when the archiver wrote it) with the archiver's verdict under
// archSkew: typed columns for the messages it found valid, nulls for the
// others, as archive.valid decides. The footer records archSkew, as the
// archiver's does, unless unrecorded.
func writeRawFile(t testing.TB, written *schemas.Stream, msgs []tmsg, first int64, archSkew time.Duration, rowGroupBytes int64, unrecorded ...bool) []byte {
	t.Helper()
	dec := schemas.NewDecoder(written, archSkew)
	var buf bytes.Buffer
	opts := parquet.RawWriterOptions{RowGroupBytes: rowGroupBytes, Decoder: dec}
	if len(unrecorded) > 0 && unrecorded[0] {
		opts.Decoder = nil
	}
	w := parquet.NewRawWriter(&buf, written, opts)
	for i, m := range msgs {
		kts := time.UnixMilli(m.kafkaMs)
		rec := parquet.RawRecord{Raw: m.raw, Offset: first + int64(i), KafkaTime: kts}
		if ev, err := dec.Decode(m.raw, kts); err == nil {
			rec.Event = &ev
		}
		require.NoError(t, w.Write(rec))
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// rowResult is what a decode worker concludes of one row.
type rowResult struct {
	Offset  int64
	Verdict uint8
	H0, H1  uint64
	Day     int64
	Rec     string
}

// readBatches reads a raw file through the scan's reader and decode step
// (typed or not), with batches of the given size.
func readBatches(t testing.TB, s *schemas.Stream, file []byte, typed bool, skew time.Duration, rows int) []rowResult {
	return readBatchesKeep(t, s, file, typed, skew, rows, true)
}

// readBatchesKeep is readBatches; without keep, the results are counted
// only (for benchmarks).
func readBatchesKeep(t testing.TB, s *schemas.Stream, file []byte, typed bool, skew time.Duration, rows int, keep bool) []rowResult {
	t.Helper()
	defer func(v bool) { rawTyped = v }(rawTyped)
	rawTyped = typed
	r, err := newRawFileReader(bytes.NewReader(file), io.NopCloser(nil), int64(len(file)), s, skew)
	require.NoError(t, err)
	dec := schemas.NewDecoder(s, skew)
	var out []rowResult
	b := &rawBatch{}
	var rec Record
	count := 0
	flush := func() {
		b.decode(dec, &rec)
		if !keep {
			count += b.n
			b.reset()
			return
		}
		for i := 0; i < b.n; i++ {
			res := rowResult{Offset: b.offsets[i], Verdict: b.verdict[i]}
			if b.verdict[i] == rowValid {
				res.H0, res.H1, res.Day, res.Rec = b.h0[i], b.h1[i], b.days[i], string(b.rec(i))
			}
			out = append(out, res)
		}
		b.reset()
	}
	err = (&scanner{}).readSpan(context.Background(), r, fileSpan{from: 0, to: math.MaxInt64}, nil, func(row *rawRow) error {
		if row.kind == rowTyped {
			b.addTyped(row)
		} else {
			b.add(row.kind, row.off, row.kafkaMs, row.raw)
		}
		if b.n == rows {
			flush()
		}
		return nil
	})
	require.NoError(t, err)
	flush()
	if !keep {
		return make([]rowResult, count)
	}
	return out
}

// decodeTruth is the full-decode path, straight from schemas.Decoder: the
// verdict, id hash, day and spill record of every message.
func decodeTruth(s *schemas.Stream, msgs []tmsg, first int64, skew time.Duration) []rowResult {
	dec := schemas.NewDecoder(s, skew)
	out := make([]rowResult, len(msgs))
	for i, m := range msgs {
		res := rowResult{Offset: first + int64(i), Verdict: rowInvalid}
		ev, err := dec.Decode(m.raw, time.UnixMilli(m.kafkaMs))
		if err == nil {
			h := xxh3.HashString128(ev.ID)
			rec := Record{Offset: res.Offset, KafkaMs: m.kafkaMs, Event: ev}
			res = rowResult{Offset: res.Offset, Verdict: rowValid, H0: h.Hi, H1: h.Lo, Day: dayOf(ev.Time), Rec: string(encodeRecord(nil, s, &rec))}
		}
		out[i] = res
	}
	return out
}

// TestTypedMatchesDecode: for every combination of the archiver's and the
// batch's future skew, reading events from the typed columns gives each
// message exactly the verdict, id hash, day and spill record that decoding
// its original bytes gives, and so does the path that decodes every
// message. Files of another schema or decoder version are not read typed.
func TestTypedMatchesDecode(t *testing.T) {
	s := allTypesStream(t)
	msgs := messyMessages(rand.New(rand.NewPCG(7, 8)), 4000)
	for _, tc := range []struct {
		name              string
		archSkew, runSkew time.Duration
		unrecorded        bool
		rgBytes           int64
		rows              int
		refusedInvalid    bool // the archiver's refusals hold for the run
	}{
		{"same skew", time.Hour, time.Hour, false, 0, 2048, true},
		{"skew not recorded", time.Hour, time.Hour, true, 0, 2048, false},
		{"archiver without skew check", 0, time.Hour, false, 64 << 10, 7, true},
		{"archiver stricter", 10 * time.Minute, time.Hour, false, 16 << 10, 100, false},
		{"archiver looser", 3 * time.Hour, time.Hour, false, 16 << 10, 2048, true},
		{"run without skew check", time.Hour, 0, false, 0, 333, false},
		{"neither checks the skew", 0, 0, false, 0, 2048, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeRawFile(t, s, msgs, 1000, tc.archSkew, tc.rgBytes, tc.unrecorded)
			r, err := newRawFileReader(bytes.NewReader(file), io.NopCloser(nil), int64(len(file)), s, tc.runSkew)
			require.NoError(t, err)
			require.True(t, r.typed())
			require.Equal(t, tc.refusedInvalid, r.refusedInvalid)
			want := decodeTruth(s, msgs, 1000, tc.runSkew)
			typed := readBatches(t, s, file, true, tc.runSkew, tc.rows)
			require.Equal(t, want, typed, "typed columns")
			decoded := readBatches(t, s, file, false, tc.runSkew, tc.rows)
			require.Equal(t, want, decoded, "decoding every message")

			var valid, invalid int
			for _, r := range want {
				if r.Verdict == rowValid {
					valid++
				} else {
					invalid++
				}
			}
			require.Greater(t, valid, len(msgs)/3, "the input holds valid messages")
			require.Greater(t, invalid, len(msgs)/10, "the input holds invalid messages")
		})
	}

	t.Run("versions", func(t *testing.T) {
		file := writeRawFile(t, s, msgs[:50], 0, time.Hour, 0)
		open := func() *rawFileReader {
			r, err := newRawFileReader(bytes.NewReader(file), io.NopCloser(nil), int64(len(file)), s, time.Hour)
			require.NoError(t, err)
			return r
		}
		require.True(t, open().typed(), "a file of the current versions is read typed")

		defer func(v string) { decoderVersion = v }(decoderVersion)
		decoderVersion = "test-upgraded"
		require.False(t, open().typed(), "a file of another decoder version is decoded")
		require.Equal(t, decodeTruth(s, msgs[:50], 0, time.Hour), readBatches(t, s, file, true, time.Hour, 2048))
		decoderVersion = schemas.DecoderVersion

		// The stream as it was: i was a float64.
		old := testenv.AllTypesYAML(t, "{ name: i,    type: int64 }", "{ name: i,    type: float64 }")
		cfg, err := schemas.Parse("old.yaml", []byte(old), func(string) (string, bool) { return "", false })
		require.NoError(t, err)
		oldStream := cfg.Stream("ev")
		require.NotEqual(t, s.SchemaVersion(), oldStream.SchemaVersion())
		file = writeRawFile(t, oldStream, msgs, 0, time.Hour, 16<<10)
		r, err := newRawFileReader(bytes.NewReader(file), io.NopCloser(nil), int64(len(file)), s, time.Hour)
		require.NoError(t, err)
		require.False(t, r.typed(), "a file of another schema version is decoded")
		require.Equal(t, decodeTruth(s, msgs, 0, time.Hour), readBatches(t, s, file, true, time.Hour, 2048))
	})
}

// FuzzTypedMatchesDecode: whatever a message holds, its verdict and event
// from the typed columns are those of decoding its bytes. Run with
//
//	go test ./batch -run '^$' -fuzz '^FuzzTypedMatchesDecode$' -fuzztime 60s
func FuzzTypedMatchesDecode(f *testing.F) {
	for _, m := range messyMessages(rand.New(rand.NewPCG(1, 1)), 60) {
		f.Add(m.raw, m.kafkaMs, uint16(60), uint16(60))
	}
	f.Add([]byte(`{"id":"a","ts":0,"kind":"k"}`), int64(0), uint16(0), uint16(1))
	s := allTypesStream(f)
	// Neighbours, so the fuzzed row shares pages with set and null values.
	around := messyMessages(rand.New(rand.NewPCG(2, 2)), 9)
	f.Fuzz(func(t *testing.T, raw []byte, kafkaMs int64, archSkewMin, runSkewMin uint16) {
		msgs := append(append(append([]tmsg(nil), around[:4]...), tmsg{raw: raw, kafkaMs: kafkaMs}), around[4:]...)
		archSkew, runSkew := time.Duration(archSkewMin)*time.Minute, time.Duration(runSkewMin)*time.Minute
		file := writeRawFile(t, s, msgs, 0, archSkew, 0)
		want := decodeTruth(s, msgs, 0, runSkew)
		require.Equal(t, want, readBatches(t, s, file, true, runSkew, 3))
	})
}

// messyPV returns n messages of partition p of the "pv" stream (on top of
// genPartition's mix) including events ahead of their Kafka time by less
// than the run's skew (1h) but more than a stricter archiver's.
func messyPV(rng *rand.Rand, p int32, n int64, ids *[]string) []genMsg {
	msgs := genPartition(rng, p, 0, n, ids)
	for i := range msgs {
		m := &msgs[i]
		if !m.Valid || rng.IntN(15) > 0 {
			continue
		}
		m.Time = m.KafkaTS.Add(time.Duration(20+rng.IntN(39))*time.Minute + time.Duration(rng.IntN(1000))*time.Millisecond)
		obj := map[string]any{"event_id": m.ID, "ts": m.Time.UnixMilli(), "user_id": m.User}
		if m.Country != "" {
			obj["country"] = m.Country
		}
		if m.Amount != nil {
			obj["amount"] = *m.Amount
		}
		if m.Latency != nil {
			obj["latency"] = *m.Latency
		}
		m.Raw, _ = json.Marshal(obj)
	}
	return msgs
}

// TestTypedRunMatchesDecode: a whole run over a master dataset whose
// partitions were archived under different future-skew settings, with
// duplicates, invalid and future events, and files written under an
// older definition of the stream, publishes exactly the rows of a run
// that decodes every message, and the truth.
func TestTypedRunMatchesDecode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := testenv.MinIO(t)
	defer func(v bool) { rawTyped = v }(rawTyped)

	rng := rand.New(rand.NewPCG(11, 12))
	msgs := map[int32][]genMsg{}
	for p := int32(0); p < 3; p++ {
		var ids []string
		msgs[p] = messyPV(rng, p, 700, &ids)
	}
	base := testConfig(t, 100, 3, srv)
	s := base.Stream("pv")
	// The stream as it was when partition 2's first objects were written.
	oldCfg, err := schemas.Parse("old.yaml", []byte(strings.Replace(fmt.Sprintf(testYAML, 100, 3), "{ name: latency, type: int64 }", "{ name: latency, type: float64 }", 1)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	old := oldCfg.Stream("pv")
	require.NotEqual(t, s.SchemaVersion(), old.SchemaVersion())

	var published [][]string
	for i, typed := range []bool{true, false} {
		rawTyped = typed
		cfg := testConfig(t, 100, 3, srv)
		cfg.S3.Bucket = fmt.Sprintf("%s-typed%d", srv.Bucket, i)
		st := testStore(t, cfg)
		require.NoError(t, st.EnsureBucket(ctx))
		put := func(written *schemas.Stream, p int32, ms []genMsg, archSkew time.Duration) {
			tm := make([]tmsg, len(ms))
			for j, m := range ms {
				tm[j] = tmsg{raw: m.Raw, kafkaMs: m.KafkaTS.UnixMilli()}
			}
			file := writeRawFile(t, written, tm, ms[0].Offset, archSkew, 8<<10)
			key := schemas.RawKey(s.Name, p, ms[0].Offset, ms[len(ms)-1].Offset)
			require.NoError(t, objstore.PutBytes(ctx, st, key, file))
		}
		put(s, 0, msgs[0][:350], time.Hour)
		put(s, 0, msgs[0][350:], time.Hour)
		put(s, 1, msgs[1], 0)                      // an archiver without the skew check
		put(old, 2, msgs[2][:250], 10*time.Minute) // older stream, stricter archiver
		put(s, 2, msgs[2][250:], 10*time.Minute)

		res, err := Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
		require.NoError(t, err)
		if i == 0 {
			// The same data under another decoder: the next run must not
			// continue from verdicts of the old one, so it recomputes in full
			// (publishing, with nothing new absorbed).
			stt, err := loadState(ctx, st, s.Name, res.Views[0].Manifest.RunID)
			require.NoError(t, err)
			require.Equal(t, schemas.DecoderVersion, stt.DecoderVersion)
			stt.DecoderVersion = "test-older"
			data, _ := json.Marshal(stt)
			require.NoError(t, objstore.PutBytes(ctx, st, stateKey(s.Name, stt.RunID), data))
			res, err = Run(ctx, Options{Config: cfg, Store: st, Log: testLog(), TempDir: t.TempDir()})
			require.NoError(t, err)
			require.True(t, res.Views[0].Published)
			require.False(t, res.Views[0].Incremental)
		}
		hourly := cfg.View("pv_hourly")
		m, rows, order := publishedRows(t, ctx, st, hourly)
		want, events, dups, invalid := truth(msgs, m.Absorbed, time.Hour, true)
		require.Equal(t, map[int32]int64{0: 700, 1: 700, 2: 700}, m.Absorbed)
		checkAgainstTruth(t, hourly, rows, want)
		require.Equal(t, []int64{events, dups, invalid}, []int64{m.Events, m.Duplicates, m.Invalid})
		_, _, daily := publishedRows(t, ctx, st, cfg.View("pv_daily"))
		published = append(published, append(order, daily...))
	}
	require.Equal(t, published[0], published[1], "typed and decoding runs publish identical rows")
}

// BenchmarkReadRaw reads one raw object of the batch benchmark's master
// dataset (generated by BenchmarkBatchRecomputeVsScan; skipped without it)
// through the scan's reader and decode step, typed or decoding every
// message, on one goroutine: the per-row cost of the scan, without the
// noise of the whole pipeline.
func BenchmarkReadRaw(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(os.TempDir(), "tandem-bench-raw-v3-4-2000000", "*.parquet"))
	if len(files) == 0 {
		b.Skip("no benchmark raw files; run BenchmarkBatchRecomputeVsScan with TANDEM_BENCH_EVENTS=2000000 first")
	}
	file, err := os.ReadFile(files[0])
	require.NoError(b, err)
	s := testConfig(b, 100_000, 4, nil).Stream("pv")
	for _, typed := range []bool{true, false} {
		b.Run(fmt.Sprintf("typed=%v", typed), func(b *testing.B) {
			var rows int
			for i := 0; i < b.N; i++ {
				rows = len(readBatchesKeep(b, s, file, typed, time.Hour, 2048, false))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rows*b.N), "ns/row")
		})
	}
}
