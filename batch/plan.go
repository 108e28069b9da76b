package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// rawFile is one raw object of a partition and the part of it a run reads:
// the rows with offsets in [From, To).
type rawFile struct {
	Key         string
	First, Last int64 // offsets named by the key, inclusive
	From, To    int64 // offsets to read, [From, To)
	Size        int64
}

// partitionPlan is what a run absorbs of one Kafka partition.
type partitionPlan struct {
	Partition int32
	// Start is the first offset of the master dataset (0, or the first
	// offset Kafka still held when archiving began).
	Start int64
	// Covered is the end (exclusive) of the contiguous coverage from Start.
	Covered int64
	// Absorbed is Covered rounded down to a chunk boundary: the run reads
	// offsets [Start, Absorbed) and answers chunks below Absorbed/C.
	Absorbed int64
	Files    []rawFile // in offset order, trimmed to [Start, Absorbed)
}

// streamPlan is what a run absorbs of one stream.
type streamPlan struct {
	Stream     *schemas.Stream
	Partitions []partitionPlan // one per configured partition, in order
}

// Absorbed returns the absorbed offsets per partition, omitting partitions
// that absorbed nothing (the manifest's convention).
func (sp *streamPlan) Absorbed() map[int32]int64 {
	out := map[int32]int64{}
	for _, p := range sp.Partitions {
		if p.Absorbed > 0 {
			out[p.Partition] = p.Absorbed
		}
	}
	return out
}

// planStream lists the raw objects of every partition of s and works out,
// per partition, the contiguous coverage the batch layer may trust and the
// chunks it can absorb.
//
// Coverage starts at the first object's first offset and extends while the
// next object starts at or before the current end; an object wholly below
// the end (a re-upload of a range already covered) is skipped, one that
// overlaps is read only from the end on. A gap stops coverage unless the
// archiver's progress vouches for the offsets beyond it (Kafka may leave
// offsets unused, e.g. transaction markers; the archiver knows, we do not).
// Only whole chunks are absorbed: a partially archived chunk is not.
func planStream(ctx context.Context, st objstore.Bucket, s *schemas.Stream, chunkSize int64) (*streamPlan, error) {
	progress, err := readProgress(ctx, st, s.Name)
	if err != nil {
		return nil, err
	}
	sp := &streamPlan{Stream: s}
	for p := int32(0); p < int32(s.Partitions); p++ {
		objs, err := objstore.List(ctx, st, schemas.RawPrefix(s.Name, p))
		if err != nil {
			return nil, fmt.Errorf("listing the raw objects of %s partition %d: %w", s.Name, p, err)
		}
		var files []rawFile
		for _, o := range objs {
			name, part, first, last, ok := schemas.ParseRawKey(o.Key)
			if !ok || name != s.Name || part != p {
				continue // temporary or foreign objects are not the master dataset
			}
			files = append(files, rawFile{Key: o.Key, First: first, Last: last, Size: o.Size})
		}
		var vouched int64 = -1
		if progress != nil {
			if n, ok := progress.Next[p]; ok {
				vouched = n
			}
		}
		sp.Partitions = append(sp.Partitions, coverPartition(p, files, vouched, chunkSize))
	}
	return sp, nil
}

// coverPartition is planStream's rule for one partition (see there).
// vouched is the archiver's next offset, or -1 when unknown.
func coverPartition(p int32, files []rawFile, vouched, chunkSize int64) partitionPlan {
	sort.Slice(files, func(i, j int) bool {
		if files[i].First != files[j].First {
			return files[i].First < files[j].First
		}
		return files[i].Last > files[j].Last // the longest first: it covers the others
	})
	pp := partitionPlan{Partition: p}
	if len(files) == 0 {
		return pp
	}
	pp.Start = files[0].First
	end := pp.Start
	var used []rawFile
	for _, f := range files {
		if f.Last+1 <= end {
			continue // wholly covered already
		}
		if f.First > end && (vouched < 0 || f.First > vouched) {
			break // a gap nobody vouches for: stop here
		}
		f.From = max(f.First, end)
		f.To = f.Last + 1
		used = append(used, f)
		end = f.To
	}
	pp.Covered = end
	// Chunks are absolute (offset/C), so the absorbed end is the highest
	// boundary at or below the coverage end. The first chunk may start
	// before Start (retention); its missing offsets are gone for every layer.
	pp.Absorbed = schemas.ChunkStart(schemas.ChunkOf(end, chunkSize), chunkSize)
	if pp.Absorbed <= pp.Start {
		pp.Absorbed = 0 // not one whole chunk above Start yet
	}
	for _, f := range used {
		if f.From >= pp.Absorbed {
			break
		}
		f.To = min(f.To, pp.Absorbed)
		pp.Files = append(pp.Files, f)
	}
	return pp
}

// readProgress reads the archiver's progress object; nil when there is none.
func readProgress(ctx context.Context, st objstore.Bucket, stream string) (*schemas.ArchiveProgress, error) {
	data, err := objstore.GetBytes(ctx, st, schemas.ArchiveProgressKey(stream))
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading the archiver's progress of %s: %w", stream, err)
	}
	var pr schemas.ArchiveProgress
	if err := json.Unmarshal(data, &pr); err != nil {
		// The listing alone is enough to plan; a bad progress file only
		// loses the vouching for gaps.
		return nil, nil
	}
	return &pr, nil
}

func isNotFound(err error) bool { return errors.Is(err, objstore.ErrNotFound) }
