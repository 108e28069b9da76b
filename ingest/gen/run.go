package gen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandem-analytics/tandem/ingest"
)

// Sink delivers batches of events. accepted[i] says whether events[i] was
// taken; an error means the batch as a whole failed and nothing is promised.
type Sink interface {
	Send(ctx context.Context, events []Event) (accepted []bool, err error)
}

// Report is what Run sent and what was accepted.
type Report struct {
	Sent       int64 // events handed to the sink (retries not counted again)
	Accepted   int64
	Rejected   int64
	Duplicates int64 // of the sent events
	Late       int64
	OutOfOrder int64
	Invalid    int64 // generated invalid
	Batches    int64
	Retries    int64 // batch retries after 429/503
	Elapsed    time.Duration
}

// EventsPerSecond is Sent over Elapsed.
func (r Report) EventsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

func (r Report) String() string {
	return fmt.Sprintf("sent %d, accepted %d, rejected %d (duplicates %d, late %d, out-of-order %d, invalid %d) in %d batches, %d retries, %.2fs, %.0f events/s",
		r.Sent, r.Accepted, r.Rejected, r.Duplicates, r.Late, r.OutOfOrder, r.Invalid, r.Batches, r.Retries, r.Elapsed.Seconds(), r.EventsPerSecond())
}

// TruthLine is one line of the truth file.
type TruthLine struct {
	Event json.RawMessage `json:"event"`
	Dup   bool            `json:"dup,omitempty"`
	Late  bool            `json:"late,omitempty"`
	OOO   bool            `json:"ooo,omitempty"`
}

// RunOptions are what Run needs besides the generator.
type RunOptions struct {
	Sink Sink
	// Truth, when set, receives one TruthLine per accepted valid event, in
	// the order the sink answered.
	Truth io.Writer
	// Progress, when set, is called after every batch with the report so far.
	Progress func(Report)
}

// ErrStopped is returned by Run when ctx ended before the planned events.
var ErrStopped = errors.New("gen: stopped before all events were sent")

// Run generates and sends events until Events or Duration is reached or ctx
// ends, at Rate, Batch events per Sink call with Concurrency batches in
// flight. When neither Events nor Duration is set it runs until ctx ends.
// The report is valid even with an error.
func (g *Generator) Run(ctx context.Context, ro RunOptions) (Report, error) {
	if ro.Sink == nil {
		return Report{}, errors.New("gen: no sink")
	}
	o := g.o
	batch := o.Batch
	if o.Rate > 0 {
		// At least ten sends a second, so a low rate is not a burst every few seconds.
		batch = min(batch, max(1, int(o.Rate/10)))
	}
	var (
		mu      sync.Mutex
		rep     Report
		firstEr error
		truth   *bufio.Writer
	)
	if ro.Truth != nil {
		truth = bufio.NewWriterSize(ro.Truth, 1<<20)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	batches := make(chan []Event, o.Concurrency)
	var wg sync.WaitGroup
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for evs := range batches {
				acc, retries, err := sendWithRetry(ctx, ro.Sink, evs)
				mu.Lock()
				rep.Retries += retries
				rep.Batches++
				if err != nil {
					if firstEr == nil {
						firstEr = err
					}
					mu.Unlock()
					cancel()
					continue
				}
				for i, ev := range evs {
					if acc[i] {
						rep.Accepted++
						if truth != nil && ev.Invalid == "" {
							writeTruth(truth, ev)
						}
					} else {
						rep.Rejected++
					}
				}
				if ro.Progress != nil {
					r := rep
					r.Elapsed = time.Since(start)
					ro.Progress(r)
				}
				mu.Unlock()
			}
		}()
	}

	var deadline time.Time
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	var sent int64
produce:
	for o.Events == 0 || sent < o.Events {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		n := int64(batch)
		if o.Events > 0 {
			n = min(n, o.Events-sent)
		}
		if o.Rate > 0 {
			// Pace by the schedule, not by sleeps, so slow sends catch up.
			due := start.Add(time.Duration(float64(sent) / o.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					break produce
				case <-time.After(d):
				}
			}
		}
		evs := make([]Event, n)
		for i := range evs {
			evs[i] = g.Next()
		}
		select {
		case <-ctx.Done():
			break produce
		case batches <- evs:
		}
		sent += n
		mu.Lock()
		rep.Sent += n
		for _, ev := range evs {
			switch {
			case ev.Dup:
				rep.Duplicates++
			case ev.Invalid != "":
				rep.Invalid++
			case ev.Late:
				rep.Late++
			case ev.OutOfOrder:
				rep.OutOfOrder++
			}
		}
		mu.Unlock()
	}
	close(batches)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if truth != nil {
		if err := truth.Flush(); err != nil && firstEr == nil {
			firstEr = fmt.Errorf("gen: writing the truth file: %w", err)
		}
	}
	if firstEr != nil {
		return rep, firstEr
	}
	if ctx.Err() != nil && o.Events > 0 && sent < o.Events {
		return rep, ErrStopped
	}
	return rep, nil
}

func writeTruth(w *bufio.Writer, ev Event) {
	w.WriteString(`{"event":`)
	w.Write(ev.Raw)
	if ev.Dup {
		w.WriteString(`,"dup":true`)
	}
	if ev.Late {
		w.WriteString(`,"late":true`)
	}
	if ev.OutOfOrder {
		w.WriteString(`,"ooo":true`)
	}
	w.WriteString("}\n")
}

// RetryableError is returned by a Sink for an answer that asks to retry
// (429, 503); After is the server's Retry-After.
type RetryableError struct {
	Status int
	After  time.Duration
	Msg    string
}

func (e *RetryableError) Error() string {
	return fmt.Sprintf("gateway answered %d (retry after %s): %s", e.Status, e.After, e.Msg)
}

// maxRetries bounds retries of one batch: a gateway that keeps refusing for
// this long is down, not busy.
const maxRetries = 30

func sendWithRetry(ctx context.Context, s Sink, evs []Event) ([]bool, int64, error) {
	var retries int64
	for {
		acc, err := s.Send(ctx, evs)
		var re *RetryableError
		if err == nil || !errors.As(err, &re) || retries >= maxRetries {
			return acc, retries, err
		}
		retries++
		wait := re.After
		if wait <= 0 || wait > 10*time.Second {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return nil, retries, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// HTTPSink posts NDJSON batches to the gateway.
type HTTPSink struct {
	// URL is the gateway's base URL, e.g. http://127.0.0.1:8080.
	URL    string
	Stream string
	Token  string // bearer token; empty sends none
	Client *http.Client
}

// Send posts the batch and maps the answer to accepted flags. Events listed
// in the answer's errors are rejected; when the answer lists fewer errors
// than it rejected (the list is capped), unlisted events past the last
// listed index are taken as rejected exactly when they were generated
// invalid, and the total must then match the answer's count.
func (h *HTTPSink) Send(ctx context.Context, evs []Event) ([]bool, error) {
	var body bytes.Buffer
	for _, ev := range evs {
		body.Write(ev.Raw)
		body.WriteByte('\n')
	}
	url := strings.TrimRight(h.URL, "/") + "/v1/streams/" + h.Stream + "/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body.Bytes()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if h.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.Token)
	}
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gen: posting to %s: %w", url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("gen: reading the answer of %s: %w", url, err)
	}
	var ans ingest.Response
	jerr := json.Unmarshal(raw, &ans)
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		after, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		return nil, &RetryableError{Status: res.StatusCode, After: time.Duration(after) * time.Second, Msg: ans.Error}
	default:
		return nil, fmt.Errorf("gen: %s answered %d: %s", url, res.StatusCode, strings.TrimSpace(string(raw)))
	}
	if jerr != nil {
		return nil, fmt.Errorf("gen: %s answered 200 with a body that is not the gateway's: %v", url, jerr)
	}
	acc := make([]bool, len(evs))
	for i := range acc {
		acc[i] = true
	}
	last := -1
	for _, e := range ans.Errors {
		if e.Index < 0 || e.Index >= len(evs) {
			return nil, fmt.Errorf("gen: %s reported an error for event %d of a batch of %d", url, e.Index, len(evs))
		}
		acc[e.Index] = false
		last = e.Index
	}
	if ans.Rejected > len(ans.Errors) {
		for i := last + 1; i < len(evs); i++ {
			acc[i] = evs[i].Invalid == ""
		}
	}
	n := 0
	for _, a := range acc {
		if a {
			n++
		}
	}
	if n != ans.Accepted || len(evs)-n != ans.Rejected {
		return nil, fmt.Errorf("gen: %s accepted %d and rejected %d of %d events, but the listed errors imply %d accepted", url, ans.Accepted, ans.Rejected, len(evs), n)
	}
	return acc, nil
}

// LogSink writes events straight to the stream's log (Kafka) in the
// gateway's record format: key = id, value = the event bytes, timestamp =
// send time, the stream and schema headers. Nothing validates them, so
// invalid events are written too, for consumers to dead-letter; every event
// written counts as accepted (the truth file still lists only valid ones).
type LogSink struct {
	Log     ingest.Log
	Topic   string
	Headers map[string]string // ingest.HeaderStream and ingest.HeaderSchema
	// Now is the record timestamp clock; nil is time.Now.
	Now func() time.Time
}

// Send appends the batch.
func (l *LogSink) Send(ctx context.Context, evs []Event) ([]bool, error) {
	keys := make([][]byte, len(evs))
	values := make([][]byte, len(evs))
	for i, ev := range evs {
		if ev.ID != "" {
			keys[i] = []byte(ev.ID)
		}
		values[i] = ev.Raw
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	ts := now().UTC().Truncate(time.Millisecond)
	if err := l.Log.Append(ctx, l.Topic, ts, l.Headers, keys, values); err != nil {
		return nil, fmt.Errorf("gen: writing to %s: %w", l.Topic, err)
	}
	acc := make([]bool, len(evs))
	for i := range acc {
		acc[i] = true
	}
	return acc, nil
}
