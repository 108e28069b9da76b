package serving

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAdmissionIsFIFO: queries that find every slot taken are admitted in
// arrival order, a freed slot goes to the oldest waiter before any query
// that arrives later, the queue holds at most its bound, and a wait ends
// at the timeout or when the caller leaves — giving back a slot handed to
// it just then.
func TestAdmissionIsFIFO(t *testing.T) {
	ctx := context.Background()
	a := newAdmission(1, 3, time.Minute)
	out, _ := a.admit(ctx)
	require.Equal(t, admitted, out)

	order := make(chan int, 3)
	for i := 1; i <= 3; i++ {
		go func() {
			out, _ := a.admit(ctx)
			require.Equal(t, admitted, out)
			order <- i
		}()
		// The next one arrives only once this one stands in line.
		require.Eventually(t, func() bool { _, w := a.counts(); return w == i }, 5*time.Second, time.Millisecond)
	}
	out, _ = a.admit(ctx)
	require.Equal(t, queueFull, out, "a fourth waiter passes serve.max_queued_queries")
	for want := 1; want <= 3; want++ {
		a.release() // the holder's slot goes to the oldest waiter
		require.Equal(t, want, <-order)
		// A newcomer does not take a slot while one is held by the
		// admitted waiter, nor jump ahead of the rest of the line.
		running, _ := a.counts()
		require.Equal(t, 1, running)
	}
	a.release()
	require.Equal(t, [2]int{0, 0}, func() [2]int { r, w := a.counts(); return [2]int{r, w} }())

	// Timeout and a caller that leaves: both leave the line, holding
	// nothing.
	b := newAdmission(1, 2, 50*time.Millisecond)
	out, _ = b.admit(ctx)
	require.Equal(t, admitted, out)
	out, waited := b.admit(ctx)
	require.Equal(t, queueTimeout, out)
	require.GreaterOrEqual(t, waited, 50*time.Millisecond)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	out, _ = b.admit(cctx)
	require.Equal(t, admitGone, out)
	running, waiting := b.counts()
	require.Equal(t, [2]int{1, 0}, [2]int{running, waiting})
	b.release()

	// No queue: refused at once when full.
	c := newAdmission(1, 0, time.Minute)
	out, _ = c.admit(ctx)
	require.Equal(t, admitted, out)
	out, _ = c.admit(ctx)
	require.Equal(t, queueFull, out)
}
