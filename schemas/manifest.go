package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Object-store layout (docs/architecture.md, Storage layout). Every layer
// builds keys with these functions and nothing else.

// RawPrefix is the folder of one partition of a stream's master dataset.
func RawPrefix(stream string, partition int32) string {
	return fmt.Sprintf("raw/%s/partition=%d/", stream, partition)
}

// RawKey names the raw object holding offsets [first, last] of a partition.
// Offsets are zero-padded so keys sort in offset order.
func RawKey(stream string, partition int32, first, last int64) string {
	return fmt.Sprintf("%s%020d-%020d.parquet", RawPrefix(stream, partition), first, last)
}

var rawKeyPattern = regexp.MustCompile(`^raw/([a-z][a-z0-9_]*)/partition=(\d+)/(\d{20})-(\d{20})\.parquet$`)

// ParseRawKey reads back what RawKey wrote. ok is false for any other key,
// including keys RawKey would have written differently (leading zeros in
// the partition, numbers out of range), so a parsed key names one object.
func ParseRawKey(key string) (stream string, partition int32, first, last int64, ok bool) {
	m := rawKeyPattern.FindStringSubmatch(key)
	if m == nil {
		return "", 0, 0, 0, false
	}
	p, errP := strconv.ParseInt(m[2], 10, 32)
	first, errF := strconv.ParseInt(m[3], 10, 64)
	last, errL := strconv.ParseInt(m[4], 10, 64)
	if errP != nil || errF != nil || errL != nil || last < first || RawKey(m[1], int32(p), first, last) != key {
		return "", 0, 0, 0, false
	}
	return m[1], int32(p), first, last, true
}

// ArchiveProgressKey is where the archiver publishes how far each partition
// of a stream is archived.
func ArchiveProgressKey(stream string) string { return fmt.Sprintf("raw/%s/_progress.json", stream) }

// ArchiveProgress says, per partition, the next offset not yet archived:
// every offset below it is in exactly one raw object.
type ArchiveProgress struct {
	Stream    string          `json:"stream"`
	UpdatedAt time.Time       `json:"updated_at"`
	Next      map[int32]int64 `json:"next_offset"`
}

// ViewRunPrefix is the folder of one batch run of a view.
func ViewRunPrefix(view, runID string) string { return fmt.Sprintf("views/%s/runs/%s/", view, runID) }

// ViewDayKey names one Parquet file of a run for one UTC day.
func ViewDayKey(view, runID string, day time.Time, part int) string {
	return fmt.Sprintf("%sdt=%s/part-%05d.parquet", ViewRunPrefix(view, runID), day.UTC().Format("2006-01-02"), part)
}

// ViewLevelDayKey names one Parquet file of a run holding the view's rows
// rolled up to a coarse level for one UTC day.
func ViewLevelDayKey(view, runID string, level Granularity, day time.Time, part int) string {
	return fmt.Sprintf("%slevel=%s/dt=%s/part-%05d.parquet", ViewRunPrefix(view, runID), level, day.UTC().Format("2006-01-02"), part)
}

// ManifestKey is the pointer to a view's current run, written last.
func ManifestKey(view string) string { return path.Join("views", view, "_current.json") }

// LakeStreamPrefix is the folder of a stream's lake: the day folders
// (LakeDayPrefix) are under it as dt=<YYYY-MM-DD>/.
func LakeStreamPrefix(stream string) string { return fmt.Sprintf("lake/%s/", stream) }

// LakeDayPrefix is the folder of one event date of a stream's lake export.

func LakeDayPrefix(stream string, day time.Time) string {
	return fmt.Sprintf("lake/%s/dt=%s/", stream, day.UTC().Format("2006-01-02"))
}

// Manifest describes one published batch run of a view. Serving reads only
// what a manifest lists, so a run becomes visible all at once.
type Manifest struct {
	View        string `json:"view"`
	RunID       string `json:"run_id"`
	Fingerprint string `json:"fingerprint"` // View.Fingerprint of the definition the run computed
	ChunkSize   int64  `json:"chunk_size"`
	// Fields are the stream's field declarations the run validated events
	// under (Stream.FieldDecls); absent in manifests written before.
	Fields    map[string]string `json:"fields,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	// Absorbed is, per partition, the end (exclusive) of the absorbed
	// offsets: a multiple of ChunkSize. Chunks below Absorbed[p]/ChunkSize
	// are answered from this run; partitions not listed absorbed nothing.
	Absorbed map[int32]int64 `json:"absorbed_offsets"`
	// Levels are the coarse levels the run published besides the base
	// rows, coarsest first. Every day with a base file has one file per
	// level, built from that day's base rows, so each level answers
	// exactly what the base rows do. Manifests written before levels
	// existed have none.
	Levels []Granularity  `json:"levels,omitempty"`
	Files  []ManifestFile `json:"files"`
	// Rows counts the base rows (files of Level 0).
	Rows   int64 `json:"rows"`
	Events int64 `json:"events"`
	// Duplicates is how many events were dropped as repeats of an earlier id.
	Duplicates int64 `json:"duplicates"`
	// Invalid is how many raw events failed validation and were left out.
	Invalid  int64   `json:"invalid"`
	Duration float64 `json:"duration_seconds"`
	// PreviousRunID is the run this one replaced, if any.
	PreviousRunID string `json:"previous_run_id,omitempty"`
	// RetainedFrom, when set, is the first instant (a UTC midnight) the
	// run answers: views[].retention dropped every day before it, and a
	// query reaching before it is refused (docs/api.md). Nil: the view
	// keeps everything.
	RetainedFrom *time.Time `json:"retained_from,omitempty"`
}

// Retained returns RetainedFrom, the zero time when the view keeps
// everything.
func (m *Manifest) Retained() time.Time {
	if m == nil || m.RetainedFrom == nil {
		return time.Time{}
	}
	return *m.RetainedFrom
}

// ManifestFile is one Parquet file of a run.
type ManifestFile struct {
	Key string `json:"key"`
	// Level is the window size of the file's rows when it holds a coarse
	// level; 0 for the base rows (at the view's granularity).
	Level   Granularity `json:"level,omitempty"`
	Day     time.Time   `json:"day"`
	Rows    int64       `json:"rows"`
	Bytes   int64       `json:"bytes"`
	MinTime time.Time   `json:"min_window"`
	MaxTime time.Time   `json:"max_window"`
}

// AbsorbedChunks returns K_p: the number of chunks of partition p the run
// absorbed (chunks 0..K_p-1).
func (m *Manifest) AbsorbedChunks(p int32) int64 {
	if m == nil || m.ChunkSize <= 0 {
		return 0
	}
	return m.Absorbed[p] / m.ChunkSize
}

// BaseFiles returns the files of the base rows, leaving out the levels.
func (m *Manifest) BaseFiles() []ManifestFile {
	var out []ManifestFile
	for _, f := range m.Files {
		if f.Level == 0 {
			out = append(out, f)
		}
	}
	return out
}

// ErrBadManifest is wrapped by DecodeManifest's errors.
var ErrBadManifest = errors.New("manifest is invalid")

// DecodeManifest parses and checks a manifest read from the store.
func DecodeManifest(data []byte) (*Manifest, error) {
	if len(data) > 64<<20 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadManifest, len(data))
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	switch {
	case m.View == "" || m.RunID == "":
		return nil, fmt.Errorf("%w: view and run_id are required", ErrBadManifest)
	case m.ChunkSize <= 0:
		return nil, fmt.Errorf("%w: chunk_size %d", ErrBadManifest, m.ChunkSize)
	case !namePattern.MatchString(m.View):
		return nil, fmt.Errorf("%w: view %q is not a view name", ErrBadManifest, m.View)
	case !validRunID(m.RunID):
		return nil, fmt.Errorf("%w: run_id %q must be one path segment of printable characters", ErrBadManifest, m.RunID)
	}
	for p, off := range m.Absorbed {
		if p < 0 || off < 0 || off%m.ChunkSize != 0 {
			return nil, fmt.Errorf("%w: absorbed offset %d of partition %d is not a chunk boundary", ErrBadManifest, off, p)
		}
	}
	for i, l := range m.Levels {
		if l <= 0 || (24*time.Hour)%l.D() != 0 || i > 0 && l >= m.Levels[i-1] {
			return nil, fmt.Errorf("%w: levels %v must divide one day, coarsest first", ErrBadManifest, m.Levels)
		}
	}
	if r := m.RetainedFrom; r != nil && !r.Equal(r.UTC().Truncate(Day)) {
		return nil, fmt.Errorf("%w: retained_from %s is not a UTC midnight", ErrBadManifest, r)
	}
	prefix := ViewRunPrefix(m.View, m.RunID)
	for _, f := range m.Files {
		if f.Level != 0 && !slices.Contains(m.Levels, f.Level) {
			return nil, fmt.Errorf("%w: file %q is of level %s, which the manifest does not list", ErrBadManifest, f.Key, f.Level)
		}
		// path.Clean also catches "..", "." and empty segments that would
		// climb out of the folder when a reader maps keys to file paths.
		if len(f.Key) <= len(prefix) || f.Key[:len(prefix)] != prefix || path.Clean(f.Key) != f.Key {
			return nil, fmt.Errorf("%w: file %q is outside the run's folder", ErrBadManifest, f.Key)
		}
	}
	return &m, nil
}

// validRunID reports whether id can name a folder: one path segment, not
// "." or "..", printable ASCII.
func validRunID(id string) bool {
	if id == "." || id == ".." || len(id) > 200 || strings.ContainsAny(id, "/\\") {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return id != ""
}
