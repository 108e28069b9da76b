package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
