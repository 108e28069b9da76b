package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/status"
)

// TestEverythingOverTLS wires ingest, the speed layer and the archiver as
// the commands do, from a tandem.yaml whose every service is behind TLS
// with a CA of its own: Kafka SASL_SSL (SCRAM-SHA-512; the in-process
// broker, or Apache Kafka 4.x in the Apache Kafka tier), ClickHouse 18.16
// on its secure native port, MinIO serving HTTPS only. Events posted to
// the gateway come out exactly in the speed view and in the archive's
// progress, and the health report reaches all three stores.
func TestEverythingOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ClickHouse and MinIO")
	}
	certs := testenv.NewCerts(t)
	k := testenv.SecureKafka(t)
	ch := testenv.ClickHouseTLS(t, certs)
	minio := testenv.MinIOTLS(t, certs)
	dir := t.TempDir()
	pw := filepath.Join(dir, "kafka-password")
	require.NoError(t, os.WriteFile(pw, []byte(k.Password+"\n"), 0o600))

	example, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "tandem.example.yaml"))
	require.NoError(t, err)
	topic := testenv.UniqueName(t, "tandem.pv")
	conf := strings.NewReplacer(
		`kafka:      { brokers: ["127.0.0.1:9092"] }`, fmt.Sprintf(`kafka:
  brokers: [%q]
  group_prefix: %s
  tls: { ca_file: %q }
  sasl: { mechanism: SCRAM-SHA-512, username: %q, password_file: %q }`, k.Brokers[0], testenv.UniqueName(t, "g"), k.CAFile, k.Username, pw),
		`addr: "127.0.0.1:9000"`, fmt.Sprintf(`addr: %q, tls: { ca_file: %q }`, ch.SecureAddr, certs.CAFile),
		`endpoint: "127.0.0.1:9100"`, fmt.Sprintf(`endpoint: %q, tls: { ca_file: %q }`, minio.Endpoint, certs.CAFile),
		`secure: false`, `secure: true`,
		`listen: "127.0.0.1:8080"`, fmt.Sprintf(`listen: "127.0.0.1:%d"`, testenv.FreePort(t)),
		`topic: tandem.pageviews`, "topic: "+topic,
		`flush_interval: 1s`, `flush_interval: 100ms`,
	).Replace(string(example))
	cfg, err := config.Parse("tandem.yaml", []byte(conf), func(string) (string, bool) { return "", false })
	require.NoError(t, err, conf)
	require.True(t, cfg.Kafka.TLS.On() && cfg.ClickHouse.TLS.On() && cfg.S3.TLS.On(), "the replacements must reach every service")

	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	gw, closeProducer, err := newIngest(ctx, cfg, log, ops.NewRegistry())
	require.NoError(t, err)
	db, err := clickhouse.Open(ctx, cfg.ClickHouse)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Migrate(ctx, cfg.Config)
	require.NoError(t, err)
	svc, closeDLQ, err := newSpeedService(ctx, cfg, db, ops.NewRegistry(), log)
	require.NoError(t, err)
	archiveConf := cfg.Archive
	archiveConf.TmpDir, archiveConf.SessionTimeout = t.TempDir(), 6*time.Second
	arch, err := newArchiver(ctx, cfg, archiveConf, ops.NewRegistry(), log)
	require.NoError(t, err)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 3)
	for _, run := range []func(context.Context) error{gw.Run, svc.Run, arch.Run} {
		go func() { done <- run(runCtx) }()
	}
	stopped := false
	stopAll := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		for range 3 {
			require.NoError(t, <-done)
		}
		closeDLQ()
		require.NoError(t, closeProducer())
	}
	defer stopAll()

	const n = 300
	var body bytes.Buffer
	now := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&body, `{"event_id":"e-%d","ts":%q,"country":"NL","device":"d%d","user_id":"u%d","amount":1,"latency_ms":%d}`+"\n",
			i, now.Add(-time.Duration(i)*time.Second).Format(time.RFC3339), i%3, i%7, i)
	}
	res, err := http.Post("http://"+gw.Addr()+"/v1/streams/pageviews/events", "application/x-ndjson", &body)
	require.NoError(t, err)
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "%v", answer)

	// Speed: every event counted once, read over SASL_SSL, written over TLS.
	var views int64
	require.Eventually(t, func() bool {
		err := db.Conn().QueryRow(ctx, "SELECT toInt64(sum(views)) FROM tandem."+clickhouse.SpeedTable("pageviews_by_country")+" FINAL").Scan(&views)
		return err == nil && views == n
	}, 60*time.Second, 100*time.Millisecond, "speed layer counted %d of %d events", &views, n)

	// Status reaches Kafka, S3 and ClickHouse with the same keys.
	statusConf := cfg.Status
	statusConf.Timeout = 10 * time.Second
	mon, err := status.New(statusConf, status.Deps{Schema: cfg.Config, Deployment: cfg.Deployment(), Log: log})
	require.NoError(t, err)
	rep := mon.Gather(ctx)
	mon.Close()
	for _, name := range []string{"store.kafka", "store.s3", "store.clickhouse"} {
		c := rep.Check(name)
		require.NotNil(t, c, name)
		require.Equal(t, status.Green, c.Verdict, "%s: %s", name, c.Detail)
	}

	// Archive: stopping uploads the open files, and the progress object
	// says every offset of every partition is archived.
	stopAll()
	store, err := s3.New(cfg.S3)
	require.NoError(t, err)
	data, err := objstore.GetBytes(ctx, store, schemas.ArchiveProgressKey("pageviews"))
	require.NoError(t, err)
	var progress schemas.ArchiveProgress
	require.NoError(t, json.Unmarshal(data, &progress))
	var archived int64
	for _, next := range progress.Next {
		archived += next
	}
	require.Equal(t, int64(n), archived, "archive progress %v", progress.Next)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
