package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kgo "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// kafka-go and minio-go keep idle connections and their reapers.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*connPool).discover"),
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*conn).run"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run"),
		goleak.IgnoreAnyFunction("github.com/minio/minio-go/v7.(*Client).newRetryTimer"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}

// kafkaCluster starts the test broker allowing short consumer-group
// sessions, so a killed archiver's partitions move on quickly.
func kafkaCluster(t *testing.T) *testenv.KafkaCluster {
	return testenv.KafkaWith(t, testenv.KafkaOptions{Extra: []kfake.Opt{kfake.GroupMinSessionTimeout(500 * time.Millisecond)}})
}

// sessionTimeout is the group session timeout tests use: short on the
// in-process broker, Kafka's minimum (6 s) on a real one.
func sessionTimeout(k *testenv.KafkaCluster) time.Duration {
	if k.External {
		return 6 * time.Second
	}
	return 2 * time.Second
}

// env is one test's configuration: a stream on a fresh topic, Kafka and S3.
type env struct {
	cfg   *schemas.Config
	conf  archive.Config // the archive section of yaml
	yaml  string
	k     *testenv.KafkaCluster
	s3    *testenv.S3Server
	store *s3.Store
}

func (e *env) stream() *schemas.Stream { return e.cfg.Streams[0] }

func newEnv(t testing.TB, k *testenv.KafkaCluster, srv *testenv.S3Server, partitions int, maxBytes int64, maxAge string) *env {
	t.Helper()
	topic := testenv.UniqueName(t, "tandem")
	group := testenv.UniqueName(t, "g")
	text := fmt.Sprintf(`
kafka: { brokers: [%q], group_prefix: %q }
s3: { endpoint: %q, bucket: %q, access_key: %q, secret_key: %q, region: %q }
ingest: { max_future_skew: 1h }
archive: { listen: "127.0.0.1:%d", max_file_bytes: %d, max_file_age: %s }
`, strings.Join(k.Brokers, `","`), group, srv.Endpoint, srv.Bucket, srv.AccessKey, srv.SecretKey, srv.Region,
		testenv.FreePort(t), maxBytes, maxAge) +
		testenv.ExampleStreamsYAML(t, "topic: tandem.pageviews", "topic: "+topic, "partitions: 6", fmt.Sprintf("partitions: %d", partitions))
	cfg, err := schemas.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	store, err := s3.New(cfg.S3)
	require.NoError(t, err)
	conf, err := archive.ConfigFrom(cfg)
	require.NoError(t, err)
	e := &env{cfg: cfg, conf: conf, yaml: text, k: k, s3: srv, store: store}
	client := &kgo.Client{Addr: kgo.TCP(k.Brokers...), Timeout: 10 * time.Second}
	resp, err := client.CreateTopics(context.Background(), &kgo.CreateTopicsRequest{Topics: []kgo.TopicConfig{
		{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1},
	}})
	require.NoError(t, err)
	require.NoError(t, resp.Errors[topic])
	return e
}

func (e *env) writeConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tandem.yaml")
	require.NoError(t, os.WriteFile(p, []byte(e.yaml), 0o600))
	return p
}

// event returns the JSON of event i: every 13th is invalid (bad time), every
// 31st not JSON at all.
func event(i int) []byte {
	switch {
	case i%31 == 30:
		return []byte(fmt.Sprintf(`not json %d`, i))
	case i%13 == 12:
		return []byte(fmt.Sprintf(`{"event_id":"e%d","ts":"yesterday"}`, i))
	}
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return []byte(fmt.Sprintf(`{"event_id":"e%d","ts":%q,"country":%q,"amount":%d.25,"pad":%q}`,
		i, ts.Format(time.RFC3339), []string{"US", "DE", "FR"}[i%3], i, strings.Repeat("x", i%50)))
}

// producer writes events i..j to explicit partitions (i % partitions).
type producer struct {
	w          *kgo.Writer
	partitions int
}

func newProducer(t testing.TB, e *env) *producer {
	t.Helper()
	p := &producer{partitions: e.stream().Partitions}
	p.w = &kgo.Writer{
		Addr:  kgo.TCP(e.k.Brokers...),
		Topic: e.stream().Topic,
		Balancer: kgo.BalancerFunc(func(m kgo.Message, parts ...int) int {
			var i int
			fmt.Sscanf(string(m.Key), "k%d", &i)
			return parts[i%len(parts)]
		}),
		RequiredAcks: kgo.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    500,
		Transport:    &kgo.Transport{},
	}
	t.Cleanup(func() { p.w.Close() })
	return p
}

// tb is what produce needs of a test, so it can run off the test goroutine.
type tb interface {
	require.TestingT
	Helper()
}

func (p *producer) produce(t tb, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs := make([]kgo.Message, 0, to-from)
	for i := from; i < to; i++ {
		msgs = append(msgs, kgo.Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: event(i), Time: time.Now()})
	}
	require.NoError(t, p.w.WriteMessages(ctx, msgs...))
}

// kafkaRecord is one message as Kafka holds it.
type kafkaRecord struct {
	Offset int64
	Value  string
}

// kafkaTruth reads every partition of the topic from the start to its high
// watermark with a plain reader: what the master dataset must hold.
func kafkaTruth(t *testing.T, e *env) map[int32][]kafkaRecord {
	t.Helper()
	out := map[int32][]kafkaRecord{}
	for p := 0; p < e.stream().Partitions; p++ {
		conn, err := kgo.DialLeader(context.Background(), "tcp", e.k.Brokers[0], e.stream().Topic, p)
		require.NoError(t, err)
		_, high, err := conn.ReadOffsets()
		conn.Close()
		require.NoError(t, err)
		if high == 0 {
			continue
		}
		r := kgo.NewReader(kgo.ReaderConfig{Brokers: e.k.Brokers, Topic: e.stream().Topic, Partition: p, MaxWait: 100 * time.Millisecond})
		require.NoError(t, r.SetOffset(kgo.FirstOffset))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			require.NoError(t, err)
			out[int32(p)] = append(out[int32(p)], kafkaRecord{Offset: m.Offset, Value: string(m.Value)})
			if m.Offset >= high-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	return out
}

// archivedObject is one raw object as read back, without any resolution.
type archivedObject struct {
	Key         string
	First, Last int64
	Records     []parquet.RawRecord
}

// readArchive lists and reads every raw object of every partition, raw:
// no overlap resolution, so duplicates would show.
func readArchive(t *testing.T, e *env) map[int32][]archivedObject {
	t.Helper()
	ctx := context.Background()
	out := map[int32][]archivedObject{}
	for p := int32(0); p < int32(e.stream().Partitions); p++ {
		objs, err := objstore.List(ctx, e.store, schemas.RawPrefix(e.stream().Name, p))
		require.NoError(t, err)
		for _, o := range objs {
			name, part, first, last, ok := schemas.ParseRawKey(o.Key)
			require.True(t, ok, "unexpected key %s", o.Key)
			require.Equal(t, e.stream().Name, name)
			require.Equal(t, p, part)
			obj, err := objstore.Open(ctx, e.store, o.Key)
			require.NoError(t, err)
			r, err := parquet.NewRawReader(e.stream(), obj, obj.Size(), parquet.RawReadOptions{})
			require.NoError(t, err)
			ao := archivedObject{Key: o.Key, First: first, Last: last}
			for {
				rec, err := r.Next()
				if err == io.EOF {
					break
				}
				require.NoError(t, err)
				ao.Records = append(ao.Records, rec)
			}
			obj.Close()
			out[p] = append(out[p], ao)
		}
	}
	return out
}

// requireExact checks the archive holds exactly what Kafka holds: objects
// of a partition contiguous (no overlap, no gap), each record inside its
// object's range, the multiset of (partition, offset) equal to Kafka's,
// every _raw byte-equal, invalid messages kept with null typed columns.
func requireExact(t *testing.T, e *env, truth map[int32][]kafkaRecord) {
	t.Helper()
	got := readArchive(t, e)
	dec := schemas.NewDecoder(e.stream(), time.Hour)
	total := 0
	for p := int32(0); p < int32(e.stream().Partitions); p++ {
		want := truth[p]
		var recs []parquet.RawRecord
		next := int64(-1)
		for _, o := range got[p] {
			if next >= 0 {
				require.Equal(t, next, o.First, "partition %d: object %s does not continue the previous one", p, o.Key)
			}
			next = o.Last + 1
			require.NotEmpty(t, o.Records, o.Key)
			for _, r := range o.Records {
				require.GreaterOrEqual(t, r.Offset, o.First, o.Key)
				require.LessOrEqual(t, r.Offset, o.Last, o.Key)
			}
			require.Equal(t, o.Last, o.Records[len(o.Records)-1].Offset, "an object ends at its last message")
			recs = append(recs, o.Records...)
		}
		require.Equal(t, len(want), len(recs), "partition %d: records archived", p)
		seen := map[int64]int{}
		for i, r := range recs {
			seen[r.Offset]++
			require.Equal(t, 1, seen[r.Offset], "partition %d offset %d archived twice", p, r.Offset)
			require.Equal(t, p, r.Partition)
			require.Equal(t, want[i].Offset, r.Offset, "partition %d record %d", p, i)
			require.Equal(t, want[i].Value, string(r.Raw), "partition %d offset %d", p, r.Offset)
			_, derr := dec.Decode(r.Raw, r.KafkaTime)
			require.Equal(t, derr == nil, r.Event != nil, "offset %d: typed columns set iff the message is valid", r.Offset)
		}
		total += len(recs)
	}
	t.Logf("archive holds exactly the %d messages Kafka holds", total)
}

// startArchiver runs an in-process Archiver until the returned stop is called.
// reg receives its metrics (nil: none); tune changes its tuning.
func startArchiver(t *testing.T, e *env, reg prometheus.Registerer, tune ...func(*archive.Config)) (stop func()) {
	t.Helper()
	opts := e.conf
	for _, f := range tune {
		f(&opts)
	}
	if opts.TmpDir == "" {
		opts.TmpDir = t.TempDir()
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = sessionTimeout(e.k)
	}
	if opts.RetryPause == 0 {
		opts.RetryPause = 200 * time.Millisecond
	}
	a, err := archive.New(opts, archive.Deps{Schema: e.cfg, Store: e.store, Registry: reg})
	require.NoError(t, err)
	return testenv.RunService(t, "the archiver", a.Run)
}

// waitArchived waits until the progress file says every partition is
// archived up to its high watermark in truth.
func waitArchived(t *testing.T, e *env, truth map[int32][]kafkaRecord, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p, err := archive.ReadProgress(context.Background(), e.store, e.stream().Name)
		done := err == nil
		for part, recs := range truth {
			if len(recs) > 0 && p.Next[part] != recs[len(recs)-1].Offset+1 {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not archived within %s: progress %v (err %v)", within, p.Next, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// uploadObject writes recs (consecutive Kafka records of one partition) as
// a raw object, the way another archiver would.
func uploadObject(t *testing.T, e *env, partition int32, recs []kafkaRecord) {
	t.Helper()
	var buf bytes.Buffer
	w := parquet.NewRawWriter(&buf, e.stream(), parquet.RawWriterOptions{Partition: partition})
	dec := schemas.NewDecoder(e.stream(), time.Hour)
	for _, r := range recs {
		rec := parquet.RawRecord{Raw: []byte(r.Value), Partition: partition, Offset: r.Offset, KafkaTime: time.Now()}
		if ev, err := dec.Decode(rec.Raw, rec.KafkaTime); err == nil {
			rec.Event = &ev
		}
		require.NoError(t, w.Write(rec))
	}
	require.NoError(t, w.Close())
	key := schemas.RawKey(e.stream().Name, partition, recs[0].Offset, recs[len(recs)-1].Offset)
	require.NoError(t, objstore.PutBytes(context.Background(), e.store, key, buf.Bytes()))
}

// metricSum adds up every sample of the named counter.
func metricSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
