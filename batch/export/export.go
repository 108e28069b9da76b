// Package export writes tandem's data lake: per stream, the deduplicated,
// valid events of the master dataset, partitioned by UTC event date as
// Hive-style folders of plain Parquet that Spark, Trino and DuckDB read:
//
//	lake/<stream>/dt=<YYYY-MM-DD>/part-<fingerprint>-<n>.parquet
//	lake/<stream>/dt=<YYYY-MM-DD>/_SUCCESS
//
// It exports up to the absorbed offsets of the stream's current batch runs,
// so the lake and the batch views describe the same events. Columns: every
// declared field, typed and nullable (timestamps as TIMESTAMP(MILLIS,
// isAdjustedToUTC)), then _partition and _offset (lineage: where the event
// sat in Kafka, which finds its original bytes in the master dataset) and
// _kafka_ts. The original JSON (_raw) is left out: the lake is the typed,
// cleaned view; undeclared fields stay in the master dataset.
//
// Export is idempotent per day: _SUCCESS records a fingerprint of the day's
// content (which events, under which schema), and a day is rewritten only
// when it changed. A rewrite deletes _SUCCESS first and writes it last, so
// a reader that honours _SUCCESS (Spark's and Hadoop's committers do)
// never reads a half-written day.
package export

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// SuccessName is the marker written last in a complete day folder.
const SuccessName = "_SUCCESS"

// rowsPerFile caps one part file.
const rowsPerFile = 1 << 20

// Options configure an export. Config and Store are required.
type Options struct {
	Config  *schemas.Config
	Store   objstore.Bucket
	Log     *slog.Logger
	TempDir string
	// Now is the clock streams[].retention is measured against (default
	// time.Now).
	Now func() time.Time
}

// Result says what an export did, per stream.
type Result struct {
	Streams []StreamResult
}

// StreamResult is the export of one stream.
type StreamResult struct {
	Stream    string
	Absorbed  map[int32]int64
	Days      int // days holding events
	Written   int // days (re)written
	Unchanged int // days whose content had not changed
	Rows      int64
	// RetainedFrom is the first day the lake keeps (streams[].retention);
	// zero: every day. Deleted counts the day folders dropped before it.
	RetainedFrom time.Time
	Deleted      int
}

// Success is the content of a day's _SUCCESS marker.
type Success struct {
	Fingerprint string          `json:"fingerprint"`
	Rows        int64           `json:"rows"`
	Files       []string        `json:"files"`
	Absorbed    map[int32]int64 `json:"absorbed_offsets"`
	WrittenAt   time.Time       `json:"written_at"`
}

// Run exports every stream that has views with a published batch run.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	now := o.Now().UTC()
	res := &Result{}
	for _, s := range o.Config.Streams {
		absorbed, runID, ok, err := absorbedOf(ctx, o, s)
		if err != nil {
			return nil, err
		}
		if !ok {
			o.Log.Info("export: no published batch run of this stream yet; skipped", "stream", s.Name)
			continue
		}
		sr, err := exportStream(ctx, o, s, absorbed, runID, now)
		if err != nil {
			return nil, err
		}
		o.Log.Info("export: done", "stream", s.Name, "days", sr.Days, "written", sr.Written, "unchanged", sr.Unchanged, "rows", sr.Rows, "absorbed", absorbed,
			"retained_from", sr.RetainedFrom, "deleted_days", sr.Deleted)
		res.Streams = append(res.Streams, sr)
	}
	return res, nil
}

// absorbedOf returns the offsets the stream's current runs absorbed: the
// lowest per partition over its views, so the lake never runs ahead of a
// view (they agree after every complete batch run). runID is the run they
// are all on, "" when they are on different runs.
func absorbedOf(ctx context.Context, o Options, s *schemas.Stream) (map[int32]int64, string, bool, error) {
	var out map[int32]int64
	runID := ""
	for i, v := range o.Config.ViewsOf(s.Name) {
		m, err := batch.ReadManifest(ctx, o.Store, v.Name)
		if err != nil {
			return nil, "", false, err
		}
		if m == nil {
			return nil, "", false, nil
		}
		if i == 0 {
			runID = m.RunID
		} else if m.RunID != runID {
			runID = ""
		}
		if out == nil {
			out = map[int32]int64{}
			for p, off := range m.Absorbed {
				out[p] = off
			}
			continue
		}
		for p := range out {
			out[p] = min(out[p], m.Absorbed[p])
		}
	}
	return out, runID, out != nil, nil
}

func exportStream(ctx context.Context, o Options, s *schemas.Stream, absorbed map[int32]int64, runID string, now time.Time) (StreamResult, error) {
	sr := StreamResult{Stream: s.Name, Absorbed: absorbed}
	from, err := batch.LakeRetainedFrom(ctx, o.Store, o.Config, s, now)
	if err != nil {
		return sr, err
	}
	sr.RetainedFrom = from
	if sr.Deleted, err = deleteDaysBefore(ctx, o.Store, s, from); err != nil {
		return sr, err
	}
	_, err = batch.ScanDays(ctx, o.Store, o.Config, s, absorbed, runID, from, o.TempDir, o.Log, func(day time.Time, each func(func(*batch.Record) error) error) error {
		sr.Days++
		// The fingerprint: the schema and which events (partition, offset)
		// the day holds. Raw objects are immutable, so the same events mean
		// the same content.
		h := xxh3.New()
		h.WriteString(s.SchemaVersion() + "|lake-v2|") // v2: parquet.LakeWriter's column order and encodings
		var rows int64
		var b [12]byte
		if err := each(func(r *batch.Record) error {
			binary.LittleEndian.PutUint32(b[:4], uint32(r.Partition))
			binary.LittleEndian.PutUint64(b[4:], uint64(r.Offset))
			h.Write(b[:])
			rows++
			return nil
		}); err != nil {
			return err
		}
		fp := fmt.Sprintf("%016x", h.Sum64())
		prefix := schemas.LakeDayPrefix(s.Name, day)
		if cur, err := readSuccess(ctx, o.Store, prefix); err == nil && cur.Fingerprint == fp {
			sr.Unchanged++
			sr.Rows += rows
			return nil
		}
		n, err := writeDay(ctx, o, s, prefix, fp, absorbed, each)
		if err != nil {
			return fmt.Errorf("export: %s: %w", prefix, err)
		}
		sr.Written++
		sr.Rows += n
		return nil
	})
	return sr, err
}

// deleteDaysBefore deletes the lake's day folders before from
// (streams[].retention), each _SUCCESS first, so a reader that honours it
// never reads a day being deleted. It returns how many days went.
func deleteDaysBefore(ctx context.Context, st objstore.Bucket, s *schemas.Stream, from time.Time) (int, error) {
	if from.IsZero() {
		return 0, nil
	}
	objs, err := objstore.List(ctx, st, schemas.LakeStreamPrefix(s.Name)+"dt=")
	if err != nil {
		return 0, err
	}
	byDay := map[string][]string{}
	for _, ob := range objs {
		rest := strings.TrimPrefix(ob.Key, schemas.LakeStreamPrefix(s.Name)+"dt=")
		dt, _, ok := strings.Cut(rest, "/")
		day, err := time.Parse(time.DateOnly, dt)
		if !ok || err != nil || !day.Before(from) {
			continue
		}
		prefix := schemas.LakeDayPrefix(s.Name, day)
		byDay[prefix] = append(byDay[prefix], ob.Key)
	}
	for prefix, keys := range byDay {
		if err := st.Delete(ctx, prefix+SuccessName); err != nil && !errors.Is(err, objstore.ErrNotFound) {
			return 0, err
		}
		for _, k := range keys {
			if k == prefix+SuccessName {
				continue
			}
			if err := st.Delete(ctx, k); err != nil && !errors.Is(err, objstore.ErrNotFound) {
				return 0, err
			}
		}
	}
	return len(byDay), nil
}

func readSuccess(ctx context.Context, st objstore.Bucket, prefix string) (*Success, error) {
	data, err := objstore.GetBytes(ctx, st, prefix+SuccessName)
	if err != nil {
		return nil, err
	}
	var s Success
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// writeDay replaces the content of one day folder.
func writeDay(ctx context.Context, o Options, s *schemas.Stream, prefix, fp string, absorbed map[int32]int64,
	each func(func(*batch.Record) error) error) (int64, error) {
	st := o.Store
	if err := st.Delete(ctx, prefix+SuccessName); err != nil {
		return 0, err
	}
	old, err := objstore.List(ctx, st, prefix)
	if err != nil {
		return 0, err
	}
	succ := Success{Fingerprint: fp, Absorbed: absorbed}
	var f *os.File
	var w *parquet.LakeWriter
	var inFile int64
	finish := func() error {
		if w == nil {
			return nil
		}
		if err := w.Close(); err != nil {
			return err
		}
		size, _ := f.Seek(0, 1)
		if _, err := f.Seek(0, 0); err != nil {
			return err
		}
		key := fmt.Sprintf("%spart-%s-%05d.parquet", prefix, fp[:12], len(succ.Files))
		err := st.Put(ctx, key, f, size)
		f.Close()
		os.Remove(f.Name())
		w, f, inFile = nil, nil, 0
		if err == nil {
			succ.Files = append(succ.Files, key)
		}
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	err = each(func(r *batch.Record) error {
		if w == nil {
			var err error
			if f, err = os.CreateTemp(o.TempDir, "lake-*.parquet"); err != nil {
				return err
			}
			w = parquet.NewLakeWriter(f, s)
		}
		if err := w.Write(&r.Event, r.Partition, r.Offset, r.KafkaMs); err != nil {
			return err
		}
		inFile++
		succ.Rows++
		if inFile >= rowsPerFile {
			return finish()
		}
		return nil
	})
	if err == nil {
		err = finish()
	}
	if err != nil {
		return 0, err
	}
	keep := map[string]bool{}
	for _, k := range succ.Files {
		keep[k] = true
	}
	for _, ob := range old {
		if !keep[ob.Key] && !strings.HasSuffix(ob.Key, "/"+SuccessName) {
			if err := st.Delete(ctx, ob.Key); err != nil {
				return 0, err
			}
		}
	}
	succ.WrittenAt = time.Now().UTC()
	data, _ := json.MarshalIndent(succ, "", "  ")
	return succ.Rows, objstore.PutBytes(ctx, st, prefix+SuccessName, data)
}
