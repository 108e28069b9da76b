package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// serviceStopWait bounds how long stop waits for a service's Run to
// return after its context is cancelled: a service that does not stop is
// a failure, not a hung test.
const serviceStopWait = 60 * time.Second

// RunService runs run (a service's Run) in a goroutine with a context of
// its own and returns stop, which cancels that context and waits for run
// to return, failing t when run returns an error or has not returned
// within 60 s. stop runs once however often it is called, and at the end
// of the test (t.Cleanup) if the test has not called it; then, after
// stops, run in order, close what the service used.
func RunService(t testing.TB, name string, run func(context.Context) error, then ...func()) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		var failure string
		select {
		case err := <-done:
			if err != nil {
				failure = fmt.Sprintf("testenv: %s returned an error when stopped: %v", name, err)
			}
		case <-time.After(serviceStopWait):
			failure = fmt.Sprintf("testenv: %s did not stop within %s of cancellation", name, serviceStopWait)
		}
		for _, f := range then {
			f()
		}
		if failure != "" {
			t.Fatal(failure)
		}
	}
	t.Cleanup(stop)
	return stop
}
