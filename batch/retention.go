package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// Retention (docs/architecture.md, "Retention"): the batch run drops view
// days before each view's retained start (they are simply not carried into
// the new run, and the runs that still hold them are collected after
// batch.keep_runs), and deletes the master dataset's oldest objects once
// the partition's dedup clock has passed streams[].retention.
//
// Deleting raw objects cuts the master dataset: a run can no longer read
// it from the partition's first offset. What it needs instead is the
// record below, written before any object goes, and the stream state of
// the run that absorbed the deleted offsets: its duplicate offsets decide
// the retained offsets exactly, since the first occurrences of their ids
// may be among the deleted ones.

// retentionRecord is batch/<stream>/_retention.json: how far retention
// has cut the stream's master dataset. It only ever grows.
type retentionRecord struct {
	Stream string `json:"stream"`
	// Cut is, per partition, the first offset retention kept: every raw
	// object wholly below it was (or is being) deleted.
	Cut map[int32]int64 `json:"cut_offsets"`
	// Before is the latest Kafka-time cutoff (Stream.RawCutoff) applied:
	// every deleted object's messages have a dedup clock before it.
	Before time.Time `json:"before"`
}

func retentionKey(stream string) string { return fmt.Sprintf("batch/%s/_retention.json", stream) }

// readRetention returns the stream's retention record; nil when retention
// never cut its master dataset.
func readRetention(ctx context.Context, st objstore.Bucket, stream string) (*retentionRecord, error) {
	data, err := objstore.GetBytes(ctx, st, retentionKey(stream))
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("batch: reading the retention record of %s: %w", stream, err)
	}
	var r retentionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("batch: retention record of %s: %w", stream, err)
	}
	if r.Cut == nil {
		r.Cut = map[int32]int64{}
	}
	return &r, nil
}

// firstWholeDay is the first UTC day every valid event of which is still
// in the master dataset: a valid event's time is at most maxFutureSkew past
// its Kafka time, and every message at or after Before was kept. Days
// before it can no longer be computed. The zero time for a nil record.
func (r *retentionRecord) firstWholeDay(maxFutureSkew time.Duration) time.Time {
	if r == nil || r.Before.IsZero() {
		return time.Time{}
	}
	t := r.Before.UTC().Add(maxFutureSkew)
	if d := t.Truncate(schemas.Day); !d.Equal(t) {
		return d.Add(schemas.Day)
	}
	return t
}

// cutBelow names a partition whose master dataset retention cut; "" when none.
func (r *retentionRecord) cutBelow() string {
	if r == nil {
		return ""
	}
	ps := make([]int32, 0, len(r.Cut))
	for p, off := range r.Cut {
		if off > 0 {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return fmt.Sprintf("offset %d of partition %d", r.Cut[ps[0]], ps[0])
}

// laterOf returns the later of two instants (the zero time is earliest).
func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// cutScanState is the stored state ScanDays continues from when retention
// cut the master dataset (below cut): that of run runID, which must have
// absorbed exactly absorbed under the configuration's validation.
func cutScanState(ctx context.Context, st objstore.Bucket, cfg *schemas.Config, s *schemas.Stream, absorbed map[int32]int64, runID, cut string) (*streamState, error) {
	cannot := func(why string) error {
		return fmt.Errorf("batch: stream %s: streams[%s].retention deleted the master dataset below %s, so its events can only be read with the duplicate decisions of the batch run that absorbed them, but %s", s.Name, s.Name, cut, why)
	}
	if runID == "" {
		return nil, cannot("the stream's views are on different runs (run the batch again)")
	}
	stt, err := loadState(ctx, st, s.Name, runID)
	if err != nil {
		if isNotFound(err) {
			return nil, cannot("run " + runID + " left no state")
		}
		return nil, err
	}
	switch {
	case !sameAbsorbed(nonZero(absorbed), nonZero(stt.Absorbed)):
		return nil, cannot(fmt.Sprintf("run %s absorbed %v, not %v", runID, stt.Absorbed, absorbed))
	case stt.SchemaVersion != s.SchemaVersion() || stt.DecoderVersion != schemas.DecoderVersion ||
		stt.MaxFutureSkew != cfg.MaxFutureSkew.D().String() || stt.DedupWindow != s.DedupWindow.D().String():
		return nil, cannot("run " + runID + " validated or deduplicated under other settings (fields, decoder, ingest.max_future_skew or dedup_window)")
	}
	return stt, nil
}

func nonZero(m map[int32]int64) map[int32]int64 {
	out := map[int32]int64{}
	for p, off := range m {
		if off > 0 {
			out[p] = off
		}
	}
	return out
}

// LakeRetainedFrom is the first UTC day the lake export of s keeps at now:
// streams[].retention's (Stream.LakeRetainedFrom), and never a day the cut
// master dataset no longer holds whole. The zero time keeps every day.
func LakeRetainedFrom(ctx context.Context, st objstore.Bucket, cfg *schemas.Config, s *schemas.Stream, now time.Time) (time.Time, error) {
	rec, err := readRetention(ctx, st, s.Name)
	if err != nil {
		return time.Time{}, err
	}
	skew := cfg.MaxFutureSkew.D()
	return laterOf(s.LakeRetainedFrom(now, skew), rec.firstWholeDay(skew)), nil
}

// retainedFrom is the first instant view v's run keeps: the view's own
// retention at now, never before the first day the cut master dataset can
// still compute and, when the run carries days over from prev, never
// before prev's (the days before it are gone; only dirty ones would come
// back, and a range with some of its days missing is a wrong answer).
func retainedFrom(v *schemas.View, now time.Time, rec *retentionRecord, skew time.Duration, prev *schemas.Manifest, carried bool) time.Time {
	from := laterOf(v.RetainedFrom(now), rec.firstWholeDay(skew))
	if carried {
		from = laterOf(from, prev.Retained())
	}
	return from
}

// keepFromDay is the first day (days since the epoch) any of the views
// keeps, math.MinInt64 when one of them keeps everything.
func keepFromDay(from []time.Time) int64 {
	min := int64(math.MaxInt64)
	for _, f := range from {
		if f.IsZero() {
			return math.MinInt64
		}
		min = minInt(min, dayOf(f))
	}
	if len(from) == 0 {
		return math.MinInt64
	}
	return min
}

func minInt(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// dropDaysBefore removes the days before first from days.
func dropDaysBefore(days map[int64]bool, first int64) {
	for d := range days {
		if d < first {
			delete(days, d)
		}
	}
}

// applyRawRetention deletes, per partition, the oldest raw objects whose
// messages all have a dedup clock before s.RawCutoff(now) — the running
// maximum of _kafka_ts from the partition's first object, read from each
// object's footer statistics, so what goes is a prefix of the partition —
// and only objects absorbed by the state just stored (absorbed), whose
// duplicate offsets decide the retained offsets from now on. The newest
// object of a partition always stays, so the archiver, which resumes after
// the last object it finds, never re-archives what was deleted. The
// record is written before the first deletion; a crash part-way leaves
// objects the next run deletes. It returns how many objects it deleted.
func applyRawRetention(ctx context.Context, o *options, s *schemas.Stream, plan *streamPlan, absorbed map[int32]int64, rec *retentionRecord, now time.Time) (int, error) {
	cutoff := s.RawCutoff(now)
	if cutoff.IsZero() {
		return 0, nil
	}
	if rec == nil {
		rec = &retentionRecord{Stream: s.Name, Cut: map[int32]int64{}}
	}
	cutMs := cutoff.UnixMilli()
	type doomed struct {
		keys []string
		cut  int64
	}
	var plans []doomed
	for _, p := range plan.Partitions {
		objs, err := objstore.List(ctx, o.Store, schemas.RawPrefix(s.Name, p.Partition))
		if err != nil {
			return 0, fmt.Errorf("batch: listing the raw objects of %s partition %d: %w", s.Name, p.Partition, err)
		}
		var newest int64 = -1
		for _, ob := range objs {
			if name, part, _, last, ok := schemas.ParseRawKey(ob.Key); ok && name == s.Name && part == p.Partition {
				newest = max(newest, last)
			}
		}
		// Walk the planned files in offset order while the clock stays
		// before the cutoff; cut is the first offset kept.
		var clock int64 = math.MinInt64
		cut := p.Start
		for _, f := range p.Files {
			if f.Last >= newest || f.Last+1 > absorbed[p.Partition] {
				break
			}
			maxTS, ok, err := rawMaxKafkaMs(ctx, o, s, f.Key)
			if err != nil {
				return 0, err
			}
			if !ok {
				break // no statistics: keep it and everything after it
			}
			clock = max(clock, maxTS)
			if clock >= cutMs {
				break
			}
			cut = f.Last + 1
		}
		if cut <= p.Start {
			continue // nothing of this partition is old enough
		}
		var keys []string
		for _, ob := range objs {
			if name, part, _, last, ok := schemas.ParseRawKey(ob.Key); ok && name == s.Name && part == p.Partition && last < cut {
				keys = append(keys, ob.Key)
			}
		}
		if len(keys) > 0 {
			plans = append(plans, doomed{keys: keys, cut: cut})
		}
		if cut > rec.Cut[p.Partition] {
			rec.Cut[p.Partition] = cut
		}
	}
	if len(plans) == 0 {
		return 0, nil
	}
	rec.Before = laterOf(rec.Before, cutoff)
	data, _ := json.MarshalIndent(rec, "", "  ")
	if err := objstore.PutBytes(ctx, o.Store, retentionKey(s.Name), data); err != nil {
		return 0, fmt.Errorf("batch: storing the retention record of %s: %w", s.Name, err)
	}
	n := 0
	for _, d := range plans {
		for _, k := range d.keys {
			if err := o.Store.Delete(ctx, k); err != nil && !isNotFound(err) {
				return n, fmt.Errorf("batch: deleting %s (streams[%s].retention): %w", k, s.Name, err)
			}
			n++
		}
	}
	return n, nil
}

// rawMaxKafkaMs returns the highest _kafka_ts (Unix ms) of a raw object,
// from its row groups' statistics; ok is false when one lacks them.
func rawMaxKafkaMs(ctx context.Context, o *options, s *schemas.Stream, key string) (int64, bool, error) {
	r, err := openRawFile(ctx, o.Store, key, o.TempDir, s, o.Schema.MaxFutureSkew.D())
	if err != nil {
		return 0, false, fmt.Errorf("batch: reading the footer of %s: %w", key, err)
	}
	defer r.Close()
	var hi int64 = math.MinInt64
	for g := 0; g < r.numRowGroups(); g++ {
		_, h, ok := r.pf.Int64Bounds(g, r.colTS)
		if !ok {
			return 0, false, nil
		}
		hi = max(hi, h)
	}
	return hi, hi != math.MinInt64, nil
}
