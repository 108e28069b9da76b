package testenv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

func TestRepoRootAndFreePort(t *testing.T) {
	root := testenv.RepoRoot(t)
	require.FileExists(t, filepath.Join(root, "go.mod"))
	require.FileExists(t, filepath.Join(root, "deploy", "local", "clickhouse", "config.xml"))

	p := testenv.FreePort(t)
	require.Greater(t, p, 0)
}

func TestUniqueName(t *testing.T) {
	a, b := testenv.UniqueName(t, "tandem.events"), testenv.UniqueName(t, "tandem.events")
	require.NotEqual(t, a, b)
	require.True(t, strings.HasPrefix(a, "tandem.events.TestUniqueName."), a)
	require.Regexp(t, regexp.MustCompile(`^[a-zA-Z0-9._-]+$`), a)

	t.Run("odd/sub test name!", func(t *testing.T) {
		n := testenv.UniqueName(t, "")
		require.Regexp(t, regexp.MustCompile(`^[a-zA-Z0-9._-]+$`), n)
		require.LessOrEqual(t, len(n), 200)
	})
}

func TestClickHouse(t *testing.T) {
	start := time.Now()
	ch := testenv.ClickHouse(t)
	t.Logf("ClickHouse up at %s in %s", ch.Addr, time.Since(start))

	ctx := context.Background()
	conn := ch.Conn(t)
	var version string
	require.NoError(t, conn.QueryRow(ctx, "SELECT version()").Scan(&version))
	t.Logf("server version %s", version)
	require.NotEmpty(t, version)

	require.NoError(t, conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+ch.Database))
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE "+ch.Database+".t (x UInt64) ENGINE = MergeTree ORDER BY x"))
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+ch.Database+".t (x)")
	require.NoError(t, err)
	for i := uint64(1); i <= 3; i++ {
		require.NoError(t, batch.Append(i))
	}
	require.NoError(t, batch.Send())

	t.Run("analyst is read-only", func(t *testing.T) {
		analyst := ch.AnalystConn(t)
		var n uint64
		require.NoError(t, analyst.QueryRow(ctx, "SELECT count() FROM "+ch.Database+".t").Scan(&n))
		require.EqualValues(t, 3, n)

		err := analyst.Exec(ctx, "CREATE TABLE "+ch.Database+".u (x UInt64) ENGINE = Memory")
		require.ErrorContains(t, err, "readonly")

		b, err := analyst.PrepareBatch(ctx, "INSERT INTO "+ch.Database+".t (x)")
		if err == nil {
			require.NoError(t, b.Append(uint64(4)))
			err = b.Send()
		}
		require.ErrorContains(t, err, "readonly")

		require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+ch.Database+".t").Scan(&n))
		require.EqualValues(t, 3, n, "the analyst's insert must not have landed")
	})

	// The shipped analyst profile (deploy/local/clickhouse/users.xml)
	// bounds a query's time and memory and a person's concurrent queries,
	// and the analyst cannot lift them (readonly=1 refuses SET).
	t.Run("analyst has limits", func(t *testing.T) {
		analyst := ch.AnalystConn(t)
		rows, err := analyst.Query(ctx, "SELECT name, value FROM system.settings WHERE name IN ('max_execution_time', 'max_memory_usage', 'max_concurrent_queries_for_user')")
		require.NoError(t, err)
		got := map[string]string{}
		for rows.Next() {
			var name, value string
			require.NoError(t, rows.Scan(&name, &value))
			got[name] = value
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Equal(t, map[string]string{"max_execution_time": "60", "max_memory_usage": "4000000000", "max_concurrent_queries_for_user": "4"}, got)
		require.ErrorContains(t, analyst.Exec(ctx, "SET max_execution_time = 0"), "readonly")
	})

	t.Run("wrong password is refused", func(t *testing.T) {
		o := ch.Options()
		o.Auth.Username, o.Auth.Password = ch.AnalystUser, "wrong"
		bad, err := clickhouse.Open(o)
		if err == nil {
			defer bad.Close()
			err = bad.Ping(ctx)
		}
		require.ErrorContains(t, err, "password")
	})

	t.Run("stop and start keep data and address", func(t *testing.T) {
		stop := time.Now()
		ch.Stop()
		t.Logf("ClickHouse stopped in %s", time.Since(stop))
		down := ch.Conn(t)
		shortCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		require.Error(t, down.Ping(shortCtx), "server should be down")

		start := time.Now()
		ch.Start()
		t.Logf("ClickHouse restarted in %s", time.Since(start))
		var n uint64
		require.NoError(t, ch.Conn(t).QueryRow(ctx, "SELECT count() FROM "+ch.Database+".t").Scan(&n))
		require.EqualValues(t, 3, n)
	})
}

func TestKafka(t *testing.T) {
	start := time.Now()
	k := testenv.Kafka(t)
	t.Logf("Kafka (%s) up in %s", k, time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	topic := testenv.UniqueName(t, "tandem.test")
	createTopic(ctx, t, k, topic, 3)

	produce(ctx, t, k, topic, 0, 10)
	g1 := testenv.UniqueName(t, "g1")
	got := consume(ctx, t, k, topic, g1, 10)
	require.Len(t, got, 10)

	if k.External {
		return
	}
	t.Run("restart keeps records and committed offsets", func(t *testing.T) {
		start := time.Now()
		k.Restart()
		t.Logf("Kafka restarted in %s", time.Since(start))

		produce(ctx, t, k, topic, 10, 5)
		// Group g1 committed all of 0..9 before the restart: it must
		// resume with exactly the 5 new records.
		again := consume(ctx, t, k, topic, g1, 5)
		for _, v := range again {
			require.GreaterOrEqual(t, v, 10, "record %d was delivered again after the restart", v)
		}
		// A new group reads everything, so the old records survived.
		all := consume(ctx, t, k, topic, testenv.UniqueName(t, "g2"), 15)
		require.Len(t, all, 15)
	})
}

func createTopic(ctx context.Context, t *testing.T, k *testenv.KafkaCluster, topic string, partitions int) {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1},
	}})
	require.NoError(t, err)
	require.NoError(t, resp.Errors[topic])
}

// produce writes records "start".."start+n-1" with acks from all in-sync
// replicas, through a Writer with its own Transport (a Writer on the shared
// default transport can miss a just-created topic).
func produce(ctx context.Context, t *testing.T, k *testenv.KafkaCluster, topic string, start, n int) {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(k.Brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		Transport:    &kafka.Transport{},
	}
	defer w.Close()
	var msgs []kafka.Message
	for i := start; i < start+n; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint(i))})
	}
	require.NoError(t, w.WriteMessages(ctx, msgs...))
}

// consume reads want records in consumer group group, committing each, and
// returns their values.
func consume(ctx context.Context, t *testing.T, k *testenv.KafkaCluster, topic, group string, want int) []int {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        k.Brokers,
		Topic:          topic,
		GroupID:        group,
		StartOffset:    kafka.FirstOffset,
		MaxWait:        100 * time.Millisecond,
		CommitInterval: 0, // synchronous commits
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var got []int
	for len(got) < want {
		m, err := r.FetchMessage(ctx)
		// A group Reader reports the broker's transient group errors and
		// retries by itself: Apache Kafka answers Not Coordinator while it
		// creates __consumer_offsets on a group's first use.
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.Temporary() && ctx.Err() == nil {
			t.Logf("retrying after a transient error: %v", err)
			continue
		}
		require.NoError(t, err, "after %d of %d records", len(got), want)
		var v int
		_, err = fmt.Sscan(string(m.Value), &v)
		require.NoError(t, err)
		got = append(got, v)
		require.NoError(t, r.CommitMessages(ctx, m))
	}
	return got
}

func TestMinIO(t *testing.T) {
	start := time.Now()
	s := testenv.MinIO(t)
	t.Logf("MinIO up at %s in %s", s.Endpoint, time.Since(start))
	ctx := context.Background()

	t.Run("refuses bad credentials", func(t *testing.T) {
		bad, err := minio.New(s.Endpoint, &minio.Options{
			Creds: credentials.NewStaticV4(s.AccessKey, "not-the-secret", ""), Region: s.Region,
		})
		require.NoError(t, err)
		_, err = bad.PutObject(ctx, s.Bucket, "x", strings.NewReader("x"), 1, minio.PutObjectOptions{})
		require.Error(t, err)
		require.Equal(t, "SignatureDoesNotMatch", minio.ToErrorResponse(err).Code)
	})

	roundTrip(ctx, t, s, "raw/pageviews/partition=0/0-9.parquet", bytes.Repeat([]byte("tandem"), 1000))

	t.Run("stop and start keep objects", func(t *testing.T) {
		stop := time.Now()
		s.Stop()
		t.Logf("MinIO stopped in %s", time.Since(stop))
		requireDown(ctx, t, s)
		start := time.Now()
		s.Start()
		t.Logf("MinIO restarted in %s", time.Since(start))
		requireObject(ctx, t, s, "raw/pageviews/partition=0/0-9.parquet", bytes.Repeat([]byte("tandem"), 1000))
	})
}

func TestFakeS3(t *testing.T) {
	s := testenv.FakeS3(t)
	ctx := context.Background()
	roundTrip(ctx, t, s, "views/v/_current.json", []byte(`{"run":"r1"}`))

	s.Stop()
	requireDown(ctx, t, s)
	s.Start()
	requireObject(ctx, t, s, "views/v/_current.json", []byte(`{"run":"r1"}`))
}

func roundTrip(ctx context.Context, t *testing.T, s *testenv.S3Server, key string, data []byte) {
	t.Helper()
	c := s.Client(t)
	_, err := c.PutObject(ctx, s.Bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
	require.NoError(t, err)
	requireObject(ctx, t, s, key, data)
}

// requireDown checks that the server refuses requests. minio-go retries a
// refused connection with back-off, so the context bounds the wait.
func requireDown(ctx context.Context, t *testing.T, s *testenv.S3Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err := s.Client(t).BucketExists(ctx, s.Bucket)
	require.Error(t, err, "S3 at %s should be down", s.Endpoint)
}

func requireObject(ctx context.Context, t *testing.T, s *testenv.S3Server, key string, want []byte) {
	t.Helper()
	obj, err := s.Client(t).GetObject(ctx, s.Bucket, key, minio.GetObjectOptions{})
	require.NoError(t, err)
	defer obj.Close()
	got, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestCHDBLibPath(t *testing.T) {
	p := testenv.CHDBLibPath(t)
	require.FileExists(t, p)
	require.Equal(t, "libchdb.so", filepath.Base(p))
}

func TestBuildPackage(t *testing.T) {
	bin := testenv.BuildPackage(t, "./internal/testenv/testdata/hello", "hello")
	out, err := exec.Command(bin).Output()
	require.NoError(t, err)
	require.Equal(t, "hello from testenv\n", string(out))
}

func TestKafkaExternal(t *testing.T) {
	// Stand in for an external Apache Kafka with a second in-process broker.
	real := testenv.KafkaWith(t, testenv.KafkaOptions{InMemory: true})
	t.Setenv(testenv.EnvKafka, "apache")
	t.Setenv(testenv.EnvKafkaBrokers, " "+strings.Join(real.Brokers, " , ")+" ")

	k := testenv.Kafka(t)
	require.True(t, k.External)
	require.Equal(t, real.Brokers, k.Brokers)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := testenv.UniqueName(t, "tandem.ext")
	createTopic(ctx, t, k, topic, 1)
	produce(ctx, t, k, topic, 0, 3)
	require.Len(t, consume(ctx, t, k, topic, testenv.UniqueName(t, "g"), 3), 3)
}
