package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// masterDataset is what the raw objects of the stream hold.
type masterDataset struct {
	objects int
	records int
	ids     map[string]int // event id → records carrying it
	// twice lists (partition, offset) pairs found in more than one record.
	twice []string
	// ends is, per partition, one past the highest archived offset.
	ends map[int32]int64
}

// readMasterDataset reads every raw object of the stream from S3, with
// minio-go and the Parquet reader, and indexes ids and offsets.
func (p *platform) readMasterDataset(t testing.TB) *masterDataset {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := p.s3.Client(t)
	s := p.cfg.Stream(streamName)
	md := &masterDataset{ids: map[string]int{}, ends: map[int32]int64{}}
	seen := map[[2]int64]bool{}
	var keys []string
	for o := range c.ListObjects(ctx, p.s3.Bucket, minio.ListObjectsOptions{Prefix: "raw/" + streamName + "/", Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("listing the master dataset: %v", o.Err)
		}
		if _, _, _, _, ok := schemas.ParseRawKey(o.Key); ok {
			keys = append(keys, o.Key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		obj, err := c.GetObject(ctx, p.s3.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("reading %s: %v", key, err)
		}
		data, err := io.ReadAll(obj)
		obj.Close()
		if err != nil {
			t.Fatalf("reading %s: %v", key, err)
		}
		r, err := parquet.NewRawReader(s, bytes.NewReader(data), int64(len(data)), parquet.RawReadOptions{Columns: []string{"event_id"}})
		if err != nil {
			t.Fatalf("opening %s: %v", key, err)
		}
		md.objects++
		for rec, err := range r.All() {
			if err != nil {
				t.Fatalf("reading %s: %v", key, err)
			}
			md.records++
			po := [2]int64{int64(rec.Partition), rec.Offset}
			if seen[po] {
				md.twice = append(md.twice, fmt.Sprintf("partition %d offset %d (again in %s)", rec.Partition, rec.Offset, key))
			}
			seen[po] = true
			if rec.Offset+1 > md.ends[rec.Partition] {
				md.ends[rec.Partition] = rec.Offset + 1
			}
			if rec.Event != nil {
				md.ids[rec.Event.ID]++
			}
		}
		r.Close()
	}
	return md
}

// missing returns the acknowledged ids the master dataset lacks.
func (md *masterDataset) missing(acked []event) []string {
	var out []string
	for _, ev := range acked {
		if md.ids[ev.ID] == 0 {
			out = append(out, ev.ID)
		}
	}
	return out
}
