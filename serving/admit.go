package serving

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// admission bounds the queries one replica answers at once
// (serve.max_concurrent_queries) and lets the ones that find it full wait
// their turn: in arrival order, at most serve.max_queued_queries of them,
// each for at most serve.queue_timeout. A freed slot is handed straight to
// the oldest waiter, so a query that arrives later never takes it first
// and no client starves while others are served; a queue that is full, or
// a wait that runs out, is refused (503) rather than growing without
// bound. A waiting query holds only its parsed parameters: the memory
// bound of a query (its merge and answer) applies to running ones.
type admission struct {
	mu      sync.Mutex
	slots   int // serve.max_concurrent_queries
	running int
	maxWait int           // serve.max_queued_queries
	timeout time.Duration // serve.queue_timeout
	waiting list.List     // of chan struct{}, oldest first; closed when handed a slot
}

// admitOutcome is why admit returned.
type admitOutcome int

const (
	admitted     admitOutcome = iota
	queueFull                 // serve.max_queued_queries were already waiting
	queueTimeout              // waited serve.queue_timeout without a slot
	admitGone                 // the caller's context ended while waiting
)

func newAdmission(slots, maxQueued int, timeout time.Duration) *admission {
	return &admission{slots: slots, maxWait: maxQueued, timeout: timeout}
}

// admit takes a slot, waiting in line for one when all are taken. On
// admitted the caller must call release once its answer is written; waited
// is how long it stood in line.
func (a *admission) admit(ctx context.Context) (out admitOutcome, waited time.Duration) {
	a.mu.Lock()
	if a.running < a.slots && a.waiting.Len() == 0 {
		a.running++
		a.mu.Unlock()
		return admitted, 0
	}
	if a.waiting.Len() >= a.maxWait || a.timeout <= 0 {
		a.mu.Unlock()
		return queueFull, 0
	}
	turn := make(chan struct{})
	e := a.waiting.PushBack(turn)
	a.mu.Unlock()

	t0 := time.Now()
	timer := time.NewTimer(a.timeout)
	defer timer.Stop()
	select {
	case <-turn:
		return admitted, time.Since(t0)
	case <-timer.C:
		out = queueTimeout
	case <-ctx.Done():
		out = admitGone
	}
	a.mu.Lock()
	select {
	case <-turn:
		// Handed a slot as the wait ran out: it is ours, so give it on.
		a.mu.Unlock()
		a.release()
		return out, time.Since(t0)
	default:
	}
	a.waiting.Remove(e)
	a.mu.Unlock()
	return out, time.Since(t0)
}

// release frees the caller's slot, handing it to the oldest waiter if any.
func (a *admission) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if front := a.waiting.Front(); front != nil {
		a.waiting.Remove(front)
		close(front.Value.(chan struct{})) // running stays: the slot changes hands
		return
	}
	a.running--
}

// counts is the queries running and waiting now.
func (a *admission) counts() (running, waiting int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running, a.waiting.Len()
}
