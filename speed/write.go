package speed

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
)

// A partition's output goes out in writes. A write is a snapshot of what
// the partition holds: the dead letters and raw events gathered since the
// last snapshot, and per view the pending rows of finished chunks and the
// changed rows of the open chunk, encoded (Sink.Encode) at the snapshot, so
// folding may go on changing the open chunk's aggregates while the write
// is in flight. A partition has at most one write in flight, and takes the
// next snapshot only when it has succeeded: the writes of a partition land
// in the order of their snapshots, each after all before it, which is the
// order a partition that waited for each write would produce, so (I) of
// docs/speed.md holds whenever a write ends.

// writeJob is one write of a partition. Each step forgets its output once
// written, so a retry (after an error, or by the final flush after the
// claim ended mid-write) continues where it stopped, with the same
// content.
type writeJob struct {
	dlq        []kafka.DeadLetter
	dlqReasons []schemas.Reason // metric label of each dead letter
	raw        []RawEvent
	views      []Encoded // per view of the stream; nil when it has nothing to write
	ingestMs   []int64   // message timestamps of the events the write makes visible
	newest     time.Time // newest event time folded so far
	next       int64     // first offset after the snapshot: the commit hint
	start      time.Time // when the snapshot was taken

	err  error         // once done is closed: nil when written, else why not (the context ended)
	done chan struct{} // closed when the write has ended
}

// snapshot takes what p holds for a write (nil when there is nothing to
// write) and forgets it in p. lag (records not yet fetched, -1 when not
// known) updates the lag gauge. spareMs, when not nil, is an empty slice
// p collects the next timestamps in.
func (s *Service) snapshot(info *streamInfo, p *partState, c *kafka.Claim, lag int64, spareMs []int64) (*writeJob, error) {
	if lag >= 0 {
		s.m.lag.WithLabelValues(c.Topic, strconv.Itoa(int(c.Partition))).Set(float64(lag))
	}
	if !p.pendingOutput() {
		// Before catching up, changed counts rebuilt rows, which are
		// written already; reset it so size flushes do not spin.
		p.changed = 0
		return nil, nil
	}
	job := &writeJob{dlq: p.dlq, dlqReasons: p.dlqReasons, raw: p.raw, ingestMs: p.ingestMs, newest: p.newest,
		next: p.lastRead + 1, start: time.Now(), views: make([]Encoded, len(p.views)), done: make(chan struct{})}
	for i, vs := range p.views {
		if len(vs.dirty) == 0 && len(vs.pending) == 0 {
			continue
		}
		enc, err := s.opts.Sink.Encode(vs.view, p.rows(i))
		if err != nil {
			for _, e := range job.views {
				if e != nil {
					s.opts.Sink.Release(e)
				}
			}
			return nil, fmt.Errorf("speed: encoding the rows of view %s, partition %d: %w", vs.view.Name, c.Partition, err)
		}
		job.views[i] = enc
	}
	// Only now that every view's rows are encoded does p forget them.
	for i := range p.views {
		p.written(i)
	}
	p.dlq, p.dlqReasons, p.raw, p.ingestMs = nil, nil, nil, spareMs
	p.changed = 0
	return job, nil
}

// write writes job, retrying with backoff until it succeeds or ctx ends
// (then it returns the error and job keeps what is not yet written).
// While it retries, the partition folds no further than its next snapshot,
// which waits for this write: a slow or absent ClickHouse stops
// consumption (the claim's fetcher stops one response ahead) instead of
// growing memory.
func (s *Service) write(ctx context.Context, info *streamInfo, c *kafka.Claim, job *writeJob) error {
	k := partKey{c.Topic, c.Partition}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, info, job)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return err
		}
		s.setStalled(k, err)
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("cannot write output; holding the partition's state and retrying", "topic", c.Topic,
				"partition", c.Partition, "attempt", attempt, "err", err, "retry_in", backoff)
		}
		if !ops.Sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, s.conf.MaxBackoff)
	}
	s.clearStalled(k)
	done := time.Now()
	s.m.flush.Observe(done.Sub(job.start).Seconds())
	nowMs := done.UnixMilli()
	for _, ms := range job.ingestMs {
		s.m.ingestVisible.Observe(float64(nowMs-ms) / 1000)
	}
	s.m.wroteNewest(info.stream.Name, job.newest)
	// A hint for lag tools only; where reading resumes comes from the sink.
	if err := c.Commit(job.next); err != nil && ctx.Err() == nil {
		s.log.Debug("committing the offset hint failed", "topic", c.Topic, "partition", c.Partition, "err", err)
	}
	return nil
}

// writeOnce writes dead letters, raw events, then every view's rows; each
// step forgets its output once written, so a retry continues where the
// failure was. Dead letters and raw events go first: a stored version o
// then implies everything up to o was written.
func (s *Service) writeOnce(ctx context.Context, info *streamInfo, job *writeJob) error {
	if len(job.dlq) > 0 {
		if err := s.opts.DeadLetters.Send(ctx, job.dlq...); err != nil {
			s.m.dlqErrors.Inc()
			return fmt.Errorf("writing %d dead letters of %s: %w", len(job.dlq), info.stream.Name, err)
		}
		for _, reason := range job.dlqReasons {
			s.m.dlq.WithLabelValues(info.stream.Name, reason.String()).Inc()
		}
		job.dlq, job.dlqReasons = nil, nil
	}
	if len(job.raw) > 0 {
		t0 := time.Now()
		if err := s.opts.Sink.InsertRaw(ctx, info.stream, job.raw); err != nil {
			s.m.insertErrors.WithLabelValues("raw").Inc()
			return err
		}
		s.m.insert.WithLabelValues("raw").Observe(time.Since(t0).Seconds())
		s.m.rawInserted.WithLabelValues(info.stream.Name).Add(float64(len(job.raw)))
		job.raw = nil
	}
	for i, enc := range job.views {
		if enc == nil {
			continue
		}
		t0 := time.Now()
		if err := s.opts.Sink.Upsert(ctx, enc); err != nil {
			s.m.insertErrors.WithLabelValues("speed").Inc()
			return err
		}
		s.m.insert.WithLabelValues("speed").Observe(time.Since(t0).Seconds())
		s.m.rowsUpserted.WithLabelValues(info.views[i].Name).Add(float64(enc.Len()))
		s.opts.Sink.Release(enc)
		job.views[i] = nil
	}
	return nil
}

// finalFlush writes what the partition holds after the claim ended: first
// the write that was in flight, if the claim's end cut it short, then a
// last snapshot. It uses a context of its own: the long timeout on
// shutdown, a short one on a rebalance (the member must rejoin; the
// partition's next owner rebuilds from durable progress anyway, and a late
// write here carries the same content for the same version as the new
// owner's).
func (s *Service) finalFlush(ctx context.Context, info *streamInfo, p *partState, c *kafka.Claim, lag int64, inflight *writeJob) error {
	timeout := s.conf.ShutdownFlushTimeout
	if s.runCtx == nil || s.runCtx.Err() == nil {
		timeout /= 5
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	giveUp := func(err error) error {
		s.log.Warn("could not flush before giving up the partition; its next owner rebuilds from durable progress",
			"topic", c.Topic, "partition", c.Partition, "err", err)
		return nil
	}
	if inflight != nil {
		<-inflight.done // ends soon: the claim's context has ended
		if inflight.err != nil {
			if err := s.write(fctx, info, c, inflight); err != nil {
				return giveUp(err)
			}
		}
	}
	job, err := s.snapshot(info, p, c, lag, nil)
	if err != nil || job == nil {
		if err != nil {
			return giveUp(err)
		}
		return nil
	}
	if err := s.write(fctx, info, c, job); err != nil {
		return giveUp(err)
	}
	return nil
}
