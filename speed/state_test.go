package speed

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/schemas"
)

// refKey is a row of the reference: chunk, then View.Key.
type refKey struct {
	chunk int64
	key   schemas.RowKey
}

// reference folds msgs (one partition, from offset 0) the plain way, with
// the exported schemas functions: string ids, View.Key, View.Add. It
// returns, per row, the aggregate over the chunk's events with offsets <=
// through, and the duplicates dropped. The duplicate rule is the speed
// layer's as docs/architecture.md states it: an id seen in the same or the
// previous chunk is a duplicate while the partition's clock (the highest
// Kafka timestamp so far) is less than window (0: forever) past the clock
// of its counted occurrence.
func reference(t *testing.T, v *schemas.View, dec *schemas.Decoder, msgs []kafka.Record, chunkSize, through int64, window time.Duration) (map[refKey]schemas.Aggregate, int) {
	out := map[refKey]schemas.Aggregate{}
	seen := map[int64]map[string]time.Time{} // chunk -> id -> clock of its counted occurrence
	var clock time.Time
	dups := 0
	for i := range msgs {
		m := &msgs[i]
		if m.Offset > through {
			break
		}
		if m.Time.After(clock) {
			clock = m.Time
		}
		c := schemas.ChunkOf(m.Offset, chunkSize)
		ev, err := dec.Decode(m.Value, m.Time)
		if err != nil {
			continue
		}
		if seen[c] == nil {
			seen[c] = map[string]time.Time{}
		}
		live := func(chunk int64) (time.Time, bool) {
			at, ok := seen[chunk][ev.ID]
			return at, ok && (window == 0 || clock.Sub(at) < window)
		}
		atC, dupC := live(c)
		atP, dupP := live(c - 1)
		if dupC || dupP {
			dups++
			if _, ok := seen[c][ev.ID]; !ok {
				seen[c][ev.ID] = atP
			} else if !dupC {
				seen[c][ev.ID] = atC
			}
			continue
		}
		seen[c][ev.ID] = clock
		k := refKey{c, v.Key(&ev)}
		if out[k] == nil {
			out[k] = v.NewAggregate()
		}
		v.Add(out[k], &ev)
	}
	return out, dups
}

// TestPartStateMatchesReference: every row partState hands to a flush holds
// exactly the aggregate of its chunk's events up to its version, as the
// plain fold over the same messages computes it (ids as strings, View.Key),
// and after the last flush the rows with the highest versions are the
// complete chunks. Duplicates reach back up to 300 messages, across one and
// two chunk boundaries; flushes happen at random offsets. With a
// dedup_window, Kafka timestamps advance a second a message with jumps
// ahead (the messages after a jump are behind the clock), so repeats fall
// on both sides of the window.
func TestPartStateMatchesReference(t *testing.T) {
	for _, window := range []time.Duration{0, 100 * time.Second} {
		t.Run(fmt.Sprint("window=", window), func(t *testing.T) { partStateMatchesReference(t, window) })
	}
}

func partStateMatchesReference(t *testing.T, window time.Duration) {
	cfg := parseExample(t)
	st := cfg.Streams[0]
	st.DedupWindow = schemas.Duration(window)
	v := cfg.ViewsOf(st.Name)[0]
	const chunkSize = 250
	base := time.Now().UTC()
	msgs := messages(6_000, 7, base)
	if window > 0 {
		jr := rand.New(rand.NewPCG(3, 4))
		for i := range msgs {
			msgs[i].Time = base.Add(time.Duration(i) * time.Second)
			if jr.IntN(50) == 0 {
				msgs[i].Time = msgs[i].Time.Add(40 * time.Second)
			}
		}
		_, forever := reference(t, v, schemas.NewDecoder(st, time.Hour), msgs, chunkSize, 1<<62, 0)
		_, windowed := reference(t, v, schemas.NewDecoder(st, time.Hour), msgs, chunkSize, 1<<62, window)
		require.Positive(t, windowed, "repeats inside the window")
		require.Less(t, windowed, forever, "repeats after the window count")
	}
	dec := schemas.NewDecoder(st, time.Hour)
	p := newPartState(st, cfg.ViewsOf(st.Name), dec, 3, chunkSize, planResume(-1, chunkSize))
	r := rand.New(rand.NewPCG(1, 2))

	type written struct {
		row     Row
		version int64
	}
	latest := map[string]written{} // chunk|window|dims -> highest version written
	rowID := func(r *Row) string { return fmt.Sprintf("%d|%d|%q", r.Chunk, r.Window.UnixMilli(), r.Dims) }
	check := func() {
		rows := p.rows(0)
		refs := map[int64]map[refKey]schemas.Aggregate{}
		for i := range rows {
			row := &rows[i]
			require.Equal(t, int32(3), row.Partition)
			ref := refs[row.Version]
			if ref == nil {
				ref, _ = reference(t, v, dec, msgs, chunkSize, row.Version, window)
				refs[row.Version] = ref
			}
			want := ref[refKey{row.Chunk, schemas.RowKey{WindowMs: row.Window.UnixMilli(), Dims: schemas.JoinDims(row.Dims)}}]
			require.NotNil(t, want, "row %s has no events in the reference", rowID(row))
			requireSameAggregate(t, v, want, row.Agg, rowID(row))
			if w, ok := latest[rowID(row)]; !ok || w.version <= row.Version {
				latest[rowID(row)] = written{*row, row.Version}
			}
		}
		p.written(0)
	}
	for i := range msgs {
		out, _ := p.process(&msgs[i])
		require.NotEqual(t, outIDOnly, out)
		if r.IntN(400) == 0 {
			check()
		}
	}
	check()

	// What a FINAL read sees is every chunk complete.
	final, _ := reference(t, v, dec, msgs, chunkSize, msgs[len(msgs)-1].Offset, window)
	require.Len(t, latest, len(final))
	for k, want := range final {
		w, ok := latest[fmt.Sprintf("%d|%d|%q", k.chunk, k.key.WindowMs, mustSplit(t, k.key.Dims))]
		require.True(t, ok, "row %v never written", k)
		requireSameAggregate(t, v, want, w.row.Agg, fmt.Sprint(k))
	}
}

func mustSplit(t *testing.T, dims string) []string {
	d, err := schemas.SplitDims(dims)
	require.NoError(t, err)
	return d
}

func requireSameAggregate(t *testing.T, v *schemas.View, want, got schemas.Aggregate, row string) {
	t.Helper()
	for i := range v.Measures {
		m := &v.Measures[i]
		require.Equal(t, want[i].N, got[i].N, "%s: %s", row, m.Name)
		require.Equal(t, m.Result(&want[i]), m.Result(&got[i]), "%s: %s", row, m.Name)
	}
}
