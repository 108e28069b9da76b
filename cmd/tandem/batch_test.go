package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestSplitFlags: the split-run flags give a worker, the publisher, the
// local form or a one-process run, and refuse what names no run or no N.
func TestSplitFlags(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		workers              int
		worker, run          string
		publish, noPublish   bool
		wantWorker, wantN    int
		wantPublish, wantErr string
	}{
		{name: "one process", wantWorker: -1},
		{name: "worker 0 publishes", worker: "0/3", run: "j", wantWorker: 0, wantN: 3, wantPublish: "yes"},
		{name: "worker 2", worker: "2/3", run: "j", wantWorker: 2, wantN: 3},
		{name: "worker 0 no publish", worker: "0/3", run: "j", noPublish: true, wantWorker: 0, wantN: 3},
		{name: "publisher", workers: 3, run: "j", publish: true, wantWorker: -1, wantN: 3},
		{name: "local", workers: 2, wantWorker: -1, wantN: 2},
		{name: "worker without run", worker: "0/3", wantErr: "--worker needs --run"},
		{name: "bad worker", worker: "3/3", run: "j", wantErr: "0 ≤ I < N"},
		{name: "worker N disagrees", worker: "1/3", workers: 2, run: "j", wantErr: "disagree on N"},
		{name: "publisher without N", run: "j", publish: true, wantErr: "--publish needs --run NAME and --workers N"},
		{name: "run without N", run: "j", wantErr: "give --workers N"},
		{name: "negative workers", workers: -2, wantErr: "at least 1"},
		{name: "no-publish alone", noPublish: true, wantErr: "--no-publish is for a worker"},
		{name: "bad name", workers: 2, run: "a/b", wantErr: "--run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			so, err := splitFlags(tc.workers, tc.worker, tc.run, tc.publish, tc.noPublish, time.Minute)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			if tc.name == "one process" {
				require.Zero(t, so.Workers)
				return
			}
			require.Equal(t, tc.wantWorker, so.Worker)
			require.Equal(t, tc.wantN, so.Workers)
			require.Equal(t, tc.wantPublish == "yes", so.Publish)
			require.NotEmpty(t, so.Name)
		})
	}
}

// TestBatchRunWorkersCommand runs `tandem batch run` as a user would, as
// processes: one process in one bucket, `--workers 2` (two worker
// processes and the publish) in another over the same master dataset;
// every view's manifest (but for its run id and timing) and every file
// must be the same bytes. Then the errors a user meets.
func TestBatchRunWorkersCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tandem binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := testenv.BuildTandem(t)
	srv := testenv.MinIO(t)
	dir := t.TempDir()
	cfgFor := func(bucket string) (string, *schemas.Config, *s3.Store) {
		y := testenv.ExampleConfigYAML(t,
			`endpoint: "127.0.0.1:9100", bucket: tandem, access_key: "${S3_ACCESS_KEY:-tandem}", secret_key: "${S3_SECRET_KEY:-tandem-dev-secret}"`,
			fmt.Sprintf(`endpoint: %q, bucket: %s, access_key: %q, secret_key: %q, region: %q`, srv.Endpoint, bucket, srv.AccessKey, srv.SecretKey, srv.Region),
			"chunk_size: 10000", "chunk_size: 100")
		path := filepath.Join(dir, bucket+".yaml")
		require.NoError(t, os.WriteFile(path, []byte(y), 0o600))
		cfg, err := schemas.LoadFile(path)
		require.NoError(t, err)
		st, err := s3.New(cfg.S3)
		require.NoError(t, err)
		require.NoError(t, st.EnsureBucket(ctx))
		return path, cfg, st
	}
	onePath, cfg, oneSt := cfgFor("one")
	splitPath, _, splitSt := cfgFor("split")
	killedPath, _, killedSt := cfgFor("killed")

	// The master dataset: 6 partitions of 300 messages, the archiver's
	// layout, with repeated ids, late events and an invalid message.
	s := cfg.Streams[0]
	dec := schemas.NewDecoder(s, cfg.MaxFutureSkew.D())
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	countries := []string{"NL", "DE", "US"}
	for p := int32(0); p < int32(s.Partitions); p++ {
		for first := int64(0); first < 300; first += 100 {
			var buf bytes.Buffer
			w := parquet.NewRawWriter(&buf, s, parquet.RawWriterOptions{Partition: p, Decoder: dec})
			for off := first; off < first+100; off++ {
				kts := base.Add(time.Duration(off) * 17 * time.Minute)
				id := fmt.Sprintf("p%d-%d", p, off)
				if off%23 == 5 {
					id = fmt.Sprintf("p%d-%d", p, off/2) // a repeat of an earlier id
				}
				ts := kts.Add(-time.Duration(off%7) * 3 * time.Hour) // late by up to 18 h
				raw := fmt.Sprintf(`{"event_id":%q,"ts":%q,"country":%q,"device":"d%d","user_id":"u%d","amount":%d.25,"latency_ms":%d}`,
					id, ts.Format(time.RFC3339Nano), countries[off%3], off%2, off%11, off%5, off%13)
				if off == 42 {
					raw = `{"event_id":"broken"`
				}
				rec := parquet.RawRecord{Raw: []byte(raw), Partition: p, Offset: off, KafkaTime: kts}
				if ev, err := dec.Decode(rec.Raw, kts); err == nil {
					rec.Event = &ev
				}
				require.NoError(t, w.Write(rec))
			}
			require.NoError(t, w.Close())
			key := schemas.RawKey(s.Name, p, first, first+99)
			for _, st := range []*s3.Store{oneSt, splitSt, killedSt} {
				require.NoError(t, objstore.PutBytes(ctx, st, key, buf.Bytes()))
			}
		}
	}

	out, err := exec.CommandContext(ctx, bin, "batch", "run", "--no-clickhouse", "--config", onePath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.CommandContext(ctx, bin, "batch", "run", "--no-clickhouse", "--workers", "2", "--config", splitPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	log := string(out)
	for _, w := range []string{"0/2", "1/2"} {
		require.Contains(t, log, "worker process exited", "the parent reports each worker")
		require.Regexp(t, `worker done.*worker=`+w+`.*peak_rss_mb=[1-9]`, log, "worker %s logs its own peak RSS", w)
		require.Regexp(t, `scan part stored.*worker=`+w, log, "worker %s logs its scan", w)
	}
	require.Contains(t, log, "split run published")

	// Kubernetes' shape, with a kill -9: worker 1 stores its scan part
	// and waits for worker 0's; it is killed there, run again beside
	// worker 0, which publishes.
	worker := func(i int) *exec.Cmd {
		return exec.CommandContext(ctx, bin, "batch", "run", "--no-clickhouse", "--config", killedPath,
			"--run", "nightly-1", "--worker", fmt.Sprintf("%d/2", i), "--wait", "2m")
	}
	w1 := worker(1)
	w1Log := &testenv.LockedBuffer{}
	w1.Stdout, w1.Stderr = w1Log, w1Log
	require.NoError(t, w1.Start())
	require.Eventually(t, func() bool { return strings.Contains(w1Log.String(), "waiting for the other workers' parts") },
		time.Minute, 50*time.Millisecond, "worker 1 never waited: %s", w1Log)
	require.Contains(t, w1Log.String(), "scan part stored")
	require.NoError(t, w1.Process.Signal(syscall.SIGKILL))
	_ = w1.Wait()
	w0 := worker(0)
	var w0Log bytes.Buffer
	w0.Stdout, w0.Stderr = &w0Log, &w0Log
	require.NoError(t, w0.Start())
	out, err = worker(1).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "part already stored by an earlier attempt", "the killed worker's scan part is reused")
	require.NoError(t, w0.Wait(), "%s", &w0Log)
	require.Contains(t, w0Log.String(), "split run published")

	for _, st := range []*s3.Store{splitSt, killedSt} {
		for _, v := range cfg.Views {
			want, wantFiles := viewBytes(t, ctx, oneSt, v.Name)
			got, gotFiles := viewBytes(t, ctx, st, v.Name)
			require.Equal(t, want, got, "%s view %s: manifest", st.Name(), v.Name)
			require.Equal(t, len(wantFiles), len(gotFiles))
			for k, b := range wantFiles {
				require.True(t, bytes.Equal(b, gotFiles[k]), "%s view %s: %s differs from one process's", st.Name(), v.Name, k)
			}
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--run", "x", "--worker", "2/2"}, "want 0 ≤ I < N"},
		{[]string{"--worker", "0/2"}, "--worker needs --run NAME"},
		{[]string{"--run", "never-planned", "--workers", "2", "--publish", "--wait", "0s"}, "has no plan"},
		{[]string{"--workers", "0", "--run", "x"}, "give --workers N"},
	} {
		out, err := exec.CommandContext(ctx, bin, append([]string{"batch", "run", "--no-clickhouse", "--config", splitPath}, tc.args...)...).CombinedOutput()
		require.Error(t, err, "%v: %s", tc.args, out)
		require.Contains(t, string(out), tc.want, "%v", tc.args)
	}

	// Without ClickHouse a run cannot know the views' versions: a changed
	// definition, or a later version's objects in S3, is refused, saying
	// why and what to run, and nothing is published.
	raw, err := os.ReadFile(onePath)
	require.NoError(t, err)
	changed := strings.Replace(string(raw), "granularity: 1m", "granularity: 5m", 1)
	changedPath := filepath.Join(dir, "changed.yaml")
	require.NoError(t, os.WriteFile(changedPath, []byte(changed), 0o600))
	before, err := objstore.GetBytes(ctx, oneSt, schemas.ManifestKey("pageviews_by_country"))
	require.NoError(t, err)
	for _, args := range [][]string{{}, {"--workers", "2"}, {"--run", "n", "--worker", "0/2"}} {
		out, err = exec.CommandContext(ctx, bin, append([]string{"batch", "run", "--no-clickhouse", "--config", changedPath}, args...)...).CombinedOutput()
		require.Error(t, err, "%v: %s", args, out)
		require.Contains(t, string(out), "the configured definition of view pageviews_by_country differs from its published run's", "%v", args)
		require.Contains(t, string(out), "run tandem migrate, then tandem batch run without --no-clickhouse", "%v", args)
	}
	require.NoError(t, objstore.PutBytes(ctx, oneSt, schemas.ManifestKey("pageviews_by_country__v2"), before))
	out, err = exec.CommandContext(ctx, bin, "batch", "run", "--no-clickhouse", "--config", onePath).CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "view pageviews_by_country has a later version (s3://one/views/pageviews_by_country__v2/)")
	after, err := objstore.GetBytes(ctx, oneSt, schemas.ManifestKey("pageviews_by_country"))
	require.NoError(t, err)
	require.Equal(t, string(before), string(after), "nothing published")
}

// viewBytes returns a view's manifest as JSON without what names its run
// or times it, and its files' bytes by level and day.
func viewBytes(t *testing.T, ctx context.Context, st *s3.Store, view string) (string, map[string][]byte) {
	t.Helper()
	data, err := objstore.GetBytes(ctx, st, schemas.ManifestKey(view))
	require.NoError(t, err)
	m, err := schemas.DecodeManifest(data)
	require.NoError(t, err)
	files := map[string][]byte{}
	for i, f := range m.Files {
		b, err := objstore.GetBytes(ctx, st, f.Key)
		require.NoError(t, err)
		files[f.Level.String()+" "+f.Day.Format(time.DateOnly)] = b
		m.Files[i].Key = strings.Replace(f.Key, m.RunID, "RUN", 1)
	}
	m.RunID, m.PreviousRunID, m.CreatedAt, m.Duration = "", "", time.Time{}, 0
	norm, err := json.Marshal(m)
	require.NoError(t, err)
	return string(norm), files
}
