package archive_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestRollBySize: with a small max_file_bytes and a long max_file_age,
// objects are cut by size; the archive is exact, invalid messages included,
// and the progress file and metrics agree.
func TestRollBySize(t *testing.T) {
	e := newEnv(t, kafkaCluster(t), testenv.FakeS3(t), 2, 64<<10, "1h")
	p := newProducer(t, e)
	p.produce(t, 0, 6000)
	reg := prometheus.NewRegistry()
	stop := startArchiver(t, e, reg, func(c *archive.Config) { c.RowGroupBytes = 16 << 10 })
	truth := kafkaTruth(t, e)
	// Once every message is in a file, a stop uploads the tails below
	// max_file_bytes (the age limit is 1 h).
	deadline := time.Now().Add(30 * time.Second)
	for metricSum(t, reg, "tandem_archive_records_total") < 6000 {
		require.True(t, time.Now().Before(deadline), "archiver did not read every message within 30 s")
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	waitArchived(t, e, truth, 5*time.Second)
	requireExact(t, e, truth)

	got := readArchive(t, e)
	for part, objs := range got {
		require.Greater(t, len(objs), 4, "partition %d is cut into several objects by size", part)
		for _, o := range objs[:len(objs)-1] {
			info, err := e.store.Stat(context.Background(), o.Key)
			require.NoError(t, err)
			// The cut happens on the uncompressed estimate, so the
			// compressed object is smaller than the limit.
			require.Less(t, info.Size, int64(64<<10), o.Key)
		}
	}
	invalid := 0
	for _, objs := range got {
		for _, o := range objs {
			for _, r := range o.Records {
				if r.Event == nil {
					invalid++
				}
			}
		}
	}
	require.Greater(t, invalid, 400, "invalid messages are archived")
	require.Equal(t, float64(6000), metricSum(t, reg, "tandem_archive_records_total"))
	require.Equal(t, float64(invalid), metricSum(t, reg, "tandem_archive_invalid_records_total"))
	files := 0
	for _, objs := range got {
		files += len(objs)
	}
	require.Equal(t, float64(files), metricSum(t, reg, "tandem_archive_files_total"))
}

// TestRollByAge: a trickle of events is uploaded when the open file reaches
// max_file_age, even when no further message arrives.
func TestRollByAge(t *testing.T) {
	e := newEnv(t, kafkaCluster(t), testenv.FakeS3(t), 1, 128<<20, "1s")
	p := newProducer(t, e)
	startArchiver(t, e, nil)
	p.produce(t, 0, 10)
	truth := kafkaTruth(t, e)
	waitArchived(t, e, truth, 20*time.Second)
	p.produce(t, 10, 15)
	truth = kafkaTruth(t, e)
	waitArchived(t, e, truth, 20*time.Second)
	requireExact(t, e, truth)
	got := readArchive(t, e)
	require.Len(t, got[0], 2, "two objects, one per burst")
	require.Equal(t, int64(0), got[0][0].First)
	require.Equal(t, int64(9), got[0][0].Last)
	require.Equal(t, int64(10), got[0][1].First)
	require.Equal(t, int64(14), got[0][1].Last)

	prog, err := archive.ReadProgress(context.Background(), e.store, e.stream().Name)
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{0: 15}, prog.Next)
	require.WithinDuration(t, time.Now(), prog.UpdatedAt, time.Minute)
}

// TestResumeFromBucket: a second archiver continues exactly where the
// bucket ends, whatever the group's committed offsets say.
func TestResumeFromBucket(t *testing.T) {
	e := newEnv(t, kafkaCluster(t), testenv.FakeS3(t), 2, 128<<20, "1s")
	p := newProducer(t, e)
	p.produce(t, 0, 500)
	stop := startArchiver(t, e, nil)
	waitArchived(t, e, kafkaTruth(t, e), 20*time.Second)
	stop()
	// A new group id: no committed offsets at all.
	e.cfg.Kafka.GroupPrefix += "-other"
	p.produce(t, 500, 900)
	startArchiver(t, e, nil)
	truth := kafkaTruth(t, e)
	waitArchived(t, e, truth, 20*time.Second)
	requireExact(t, e, truth)
}

// TestLostRaceIsDiscarded: when another member (a zombie) uploaded the
// range this member is building, the member's file is discarded and the
// partition re-claimed from the bucket's new end, so objects stay
// contiguous and every offset is archived once.
func TestLostRaceIsDiscarded(t *testing.T) {
	e := newEnv(t, kafkaCluster(t), testenv.FakeS3(t), 1, 128<<20, "2s")
	p := newProducer(t, e)
	p.produce(t, 0, 100)
	reg := prometheus.NewRegistry()
	startArchiver(t, e, reg)
	waitArchived(t, e, kafkaTruth(t, e), 20*time.Second)

	// The zombie: offsets 100..149 archived behind the archiver's back,
	// from Kafka's own records.
	p.produce(t, 100, 200)
	truth := kafkaTruth(t, e)
	uploadObject(t, e, 0, truth[0][100:150])
	waitArchived(t, e, truth, 30*time.Second)
	requireExact(t, e, truth)
	require.Equal(t, 1.0, metricSum(t, reg, "tandem_archive_discarded_files_total"))
	got := readArchive(t, e)
	require.Equal(t, int64(150), got[0][len(got[0])-1].First)
}

// TestPlanResolvesOverlaps: objects that overlap (a zombie raced the
// contiguity check) are read so that every offset comes once; a gap ends
// the master dataset.
func TestPlanResolvesOverlaps(t *testing.T) {
	key := func(first, last int64) string { return schemas.RawKey("pageviews", 0, first, last) }
	for _, tc := range []struct {
		name  string
		keys  []string
		want  [][3]int64 // first, last, from
		wantN int64
	}{
		{"empty", nil, nil, -1},
		{"contiguous", []string{key(0, 9), key(10, 19)}, [][3]int64{{0, 9, 0}, {10, 19, 10}}, 20},
		{"overlap", []string{key(0, 9), key(5, 14), key(15, 19)}, [][3]int64{{0, 9, 0}, {5, 14, 10}, {15, 19, 15}}, 20},
		{"covered", []string{key(0, 9), key(2, 5), key(10, 12)}, [][3]int64{{0, 9, 0}, {10, 12, 10}}, 13},
		{"same start", []string{key(0, 9), key(0, 4), key(10, 12)}, [][3]int64{{0, 9, 0}, {10, 12, 10}}, 13},
		{"gap", []string{key(0, 9), key(11, 19)}, [][3]int64{{0, 9, 0}}, 10},
		{"starts late", []string{key(500, 509), "raw/pageviews/_progress.json"}, [][3]int64{{500, 509, 500}}, 510},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs, next := archive.Plan(tc.keys)
			require.Equal(t, tc.wantN, next)
			var got [][3]int64
			for _, s := range segs {
				got = append(got, [3]int64{s.First, s.Last, s.From})
			}
			require.Equal(t, tc.want, got)
		})
	}

	// And end to end: real overlapping objects read through ReadSegments.
	e := newEnv(t, kafkaCluster(t), testenv.FakeS3(t), 1, 128<<20, "1h")
	newProducer(t, e).produce(t, 0, 60)
	truth := kafkaTruth(t, e)
	uploadObject(t, e, 0, truth[0][0:30])
	uploadObject(t, e, 0, truth[0][20:45])
	uploadObject(t, e, 0, truth[0][25:40])
	uploadObject(t, e, 0, truth[0][45:60])
	segs, next, err := archive.ListPartition(context.Background(), e.store, "pageviews", 0)
	require.NoError(t, err)
	require.Equal(t, int64(60), next)
	var offsets []int64
	require.NoError(t, archive.ReadSegments(context.Background(), e.store, e.stream(), segs, parquet.RawReadOptions{},
		func(r parquet.RawRecord) error {
			require.Equal(t, truth[0][len(offsets)].Value, string(r.Raw))
			offsets = append(offsets, r.Offset)
			return nil
		}))
	require.Len(t, offsets, 60)
	for i, o := range offsets {
		require.Equal(t, int64(i), o)
	}
}

// TestArchivedObjectReadByArrow reads an object the archiver uploaded with
// Apache Arrow for Go, an independent Parquet reader.
func TestArchivedObjectReadByArrow(t *testing.T) {
	e := newEnv(t, kafkaCluster(t), testenv.FakeS3(t), 1, 128<<20, "1s")
	newProducer(t, e).produce(t, 0, 700)
	startArchiver(t, e, nil)
	truth := kafkaTruth(t, e)
	waitArchived(t, e, truth, 20*time.Second)
	objs, err := objstore.List(context.Background(), e.store, schemas.RawPrefix("pageviews", 0))
	require.NoError(t, err)
	require.NotEmpty(t, objs)
	data, err := objstore.GetBytes(context.Background(), e.store, objs[0].Key)
	require.NoError(t, err)
	_, _, first, last, _ := schemas.ParseRawKey(objs[0].Key)

	pf, err := file.NewParquetReader(bytes.NewReader(data))
	require.NoError(t, err)
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 256}, memory.DefaultAllocator)
	require.NoError(t, err)
	sch, err := fr.Schema()
	require.NoError(t, err)
	want := parquet.ArrowSchemaRaw(e.stream())
	require.Equal(t, want.NumFields(), sch.NumFields())
	for i, f := range want.Fields() {
		got := sch.Field(i)
		require.True(t, f.Name == got.Name && arrow.TypeEqual(f.Type, got.Type) && f.Nullable == got.Nullable,
			"field %d: Arrow reads %s, ArrowSchemaRaw says %s", i, got, f)
	}
	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	require.NoError(t, err)
	defer rr.Release()
	i := int(first)
	for rr.Next() {
		rec := rr.RecordBatch()
		raw := rec.Column(sch.FieldIndices(schemas.ColRaw)[0]).(*array.String)
		off := rec.Column(sch.FieldIndices(schemas.ColOffset)[0]).(*array.Int64)
		id := rec.Column(sch.FieldIndices("event_id")[0]).(*array.String)
		for j := 0; j < int(rec.NumRows()); j++ {
			require.Equal(t, truth[0][i].Offset, off.Value(j))
			require.Equal(t, truth[0][i].Value, raw.Value(j))
			if !id.IsNull(j) {
				require.Contains(t, raw.Value(j), `"event_id":"`+id.Value(j)+`"`)
			}
			i++
		}
	}
	require.NoError(t, rr.Err())
	require.Equal(t, int(last)+1, i, "Arrow read every row of %s", objs[0].Key)
}
