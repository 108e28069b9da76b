package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// Segment is one raw object of a partition and the part of it a reader
// takes: the rows with offsets in [From, Last].
//
// The archiver uploads only objects that continue the partition exactly
// (first offset = last archived + 1, checked against the bucket right
// before the upload), so From == First for every object it writes. A member
// that lost its partitions in a rebalance but had not noticed yet (a
// zombie) can still race that check; its object then overlaps the new
// owner's. Kafka's records are immutable, so both copies of an offset are
// the same message, and Plan resolves the overlap by taking each offset
// from the first object (in key order) that holds it.
type Segment struct {
	Key         string
	Partition   int32
	First, Last int64 // the offset range the object accounts for
	From        int64 // read rows with offset >= From
}

// Plan orders the raw objects of one partition (keys as RawKey writes
// them; other keys are ignored) into the segments to read so that every
// offset is read once, and returns next: the end (exclusive) of the
// contiguous archived range, or -1 when nothing is archived. Objects past a
// gap in the range are left out: the master dataset is the contiguous
// prefix only (with this archiver a gap does not occur).
func Plan(keys []string) (segs []Segment, next int64) {
	var objs []Segment
	for _, k := range keys {
		if _, p, first, last, ok := schemas.ParseRawKey(k); ok {
			objs = append(objs, Segment{Key: k, Partition: p, First: first, Last: last, From: first})
		}
	}
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].First != objs[j].First {
			return objs[i].First < objs[j].First
		}
		return objs[i].Last > objs[j].Last // of two starting together, the longer covers more
	})
	next = -1
	for _, o := range objs {
		switch {
		case next < 0:
		case o.Last < next:
			continue // every offset of it is read from an earlier object
		case o.First > next:
			return segs, next // a gap: stop at the contiguous prefix
		default:
			o.From = next
		}
		segs = append(segs, o)
		next = o.Last + 1
	}
	return segs, next
}

// ListPartition lists the raw objects of one partition of a stream and
// plans them (see Plan).
func ListPartition(ctx context.Context, store objstore.Bucket, stream string, partition int32) ([]Segment, int64, error) {
	objs, err := objstore.List(ctx, store, schemas.RawPrefix(stream, partition))
	if err != nil {
		return nil, -1, err
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	segs, next := Plan(keys)
	return segs, next, nil
}

// ReadSegments reads the planned segments in order and calls fn for each
// record, in offset order, every offset once. opts selects columns.
func ReadSegments(ctx context.Context, store objstore.Bucket, s *schemas.Stream, segs []Segment, opts parquet.RawReadOptions, fn func(parquet.RawRecord) error) error {
	for _, seg := range segs {
		if err := readSegment(ctx, store, s, seg, opts, fn); err != nil {
			return err
		}
	}
	return nil
}

func readSegment(ctx context.Context, store objstore.Bucket, s *schemas.Stream, seg Segment, opts parquet.RawReadOptions, fn func(parquet.RawRecord) error) error {
	obj, err := objstore.Open(ctx, store, seg.Key)
	if err != nil {
		return err
	}
	defer obj.Close()
	r, err := parquet.NewRawReader(s, obj, obj.Size(), opts)
	if err != nil {
		return fmt.Errorf("archive: %s: %w", seg.Key, err)
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive: %s: %w", seg.Key, err)
		}
		if rec.Offset < seg.From {
			continue
		}
		if rec.Offset > seg.Last || rec.Partition != seg.Partition {
			return fmt.Errorf("archive: %s holds offset %d of partition %d, outside its key", seg.Key, rec.Offset, rec.Partition)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

// ReadProgress reads the archive progress of a stream; a stream never
// archived has an empty one.
func ReadProgress(ctx context.Context, store objstore.Bucket, stream string) (schemas.ArchiveProgress, error) {
	data, err := objstore.GetBytes(ctx, store, schemas.ArchiveProgressKey(stream))
	if errors.Is(err, objstore.ErrNotFound) {
		return schemas.ArchiveProgress{Stream: stream, Next: map[int32]int64{}}, nil
	}
	if err != nil {
		return schemas.ArchiveProgress{}, err
	}
	var p schemas.ArchiveProgress
	if err := json.Unmarshal(data, &p); err != nil {
		return schemas.ArchiveProgress{}, fmt.Errorf("archive: progress of %s is not valid JSON: %w", stream, err)
	}
	if p.Next == nil {
		p.Next = map[int32]int64{}
	}
	return p, nil
}
