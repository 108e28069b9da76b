package testenv_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// stop cancels the service's context, waits for Run to return, then runs
// the closing steps in order, all once however often it is called.
func TestRunService(t *testing.T) {
	var steps []string
	running := make(chan struct{})
	stop := testenv.RunService(t, "the test service", func(ctx context.Context) error {
		close(running)
		<-ctx.Done()
		steps = append(steps, "run returned")
		return nil
	}, func() { steps = append(steps, "closed a") }, func() { steps = append(steps, "closed b") })
	<-running
	require.Empty(t, steps)
	stop()
	stop()
	require.Equal(t, []string{"run returned", "closed a", "closed b"}, steps)
}
