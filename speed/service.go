package speed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/schemas"
)

// Deps are what the speed layer reads from and writes to. All but Log are
// required.
type Deps struct {
	// Schema holds the streams and views it folds and the chunk size.
	Schema      *schemas.Config
	Sink        Sink
	DeadLetters DeadLetters
	Registry    prometheus.Registerer
	Log         *slog.Logger
}

// maxInsertRows keeps every insert below ClickHouse's max_insert_block_size
// (1,048,576), so one insert is one block and lands atomically.
const maxInsertRows = 1 << 19

// catchUpMessages is how far behind (kafka.BatchFetcher.Lag) a partition must have
// been for catching up to trigger a flush before flush_interval ends; such
// early flushes are at least a quarter interval apart.
const catchUpMessages = 1000

// timeEvery: one message in timeEvery is timed for the processing
// histogram. Reading the clock twice and observing a histogram for every
// message cost about a tenth of the partition loop; a sample keeps the
// distribution (and its mean, which the status page reports).
const timeEvery = 32

// maxPendingEvents bounds the ingest timestamps kept between flushes for the
// ingest-to-visible histogram.
const maxPendingEvents = 1 << 20

// Service is the speed layer: a consumer-group member over every stream
// topic that has views. It implements ops.Component and ops.ReadyChecker.
type Service struct {
	cfg     *schemas.Config
	conf    Config
	opts    Deps
	log     *slog.Logger
	m       *metrics
	streams map[string]*streamInfo // by topic
	topics  []string

	runCtx  context.Context
	running atomic.Bool

	mu      sync.Mutex
	resumes map[partKey]resume
	stalls  map[partKey]stall
}

type streamInfo struct {
	stream *schemas.Stream
	views  []*schemas.View
	dec    *schemas.Decoder
}

type partKey struct {
	topic     string
	partition int32
}

type stall struct {
	since time.Time
	err   error
}

var (
	_ ops.Component    = (*Service)(nil)
	_ ops.ReadyChecker = (*Service)(nil)
)

// Schema is the configuration the service folds (with every version of
// a changed view, when it is a Versioned one).
func (s *Service) Schema() *schemas.Config { return s.cfg }

// New returns the speed layer for cfg. It consumes every stream that has at
// least one view.
func New(conf Config, opts Deps) (*Service, error) {
	if opts.Schema == nil || opts.Sink == nil || opts.DeadLetters == nil || opts.Registry == nil {
		return nil, errors.New("speed: Deps need the Schema, a Sink, DeadLetters and a Registry")
	}
	cfg := opts.Schema
	if cfg.ChunkSize <= 0 {
		return nil, fmt.Errorf("speed: chunk_size must be positive; got %d", cfg.ChunkSize)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if conf.ShutdownFlushTimeout <= 0 {
		conf.ShutdownFlushTimeout = 15 * time.Second
	}
	if conf.MaxBackoff <= 0 {
		conf.MaxBackoff = 5 * time.Second
	}
	if conf.MaxFetchBytes <= 0 {
		conf.MaxFetchBytes = 1 << 20
	}
	s := &Service{
		cfg: cfg, conf: conf, opts: opts, log: opts.Log.With("component", "speed"),
		m:       newMetrics(opts.Registry, time.Now),
		streams: map[string]*streamInfo{},
		resumes: map[partKey]resume{},
		stalls:  map[partKey]stall{},
	}
	for _, st := range cfg.Streams {
		views := cfg.ViewsOf(st.Name)
		if len(views) == 0 {
			if st.RawEvents {
				s.log.Warn("stream has raw_events but no views; the speed layer consumes only streams with views, so its raw-events table stays empty", "stream", st.Name)
			}
			continue
		}
		s.streams[st.Topic] = &streamInfo{stream: st, views: views, dec: schemas.NewDecoder(st, cfg.MaxFutureSkew.D())}
		s.topics = append(s.topics, st.Topic)
	}
	sort.Strings(s.topics)
	return s, nil
}

// GroupID is the consumer group of the speed layer.
func GroupID(cfg *schemas.Config) string { return cfg.Kafka.GroupPrefix + "-speed" }

// Run consumes until ctx is cancelled; then every partition flushes what it
// holds (bounded by ShutdownFlushTimeout) and Run returns nil.
func (s *Service) Run(ctx context.Context) error {
	if len(s.topics) == 0 {
		s.log.Warn("no stream has a view: the speed layer has nothing to do")
		s.running.Store(true)
		<-ctx.Done()
		return nil
	}
	sec, err := kafka.NewSecurity(s.cfg.Kafka)
	if err != nil {
		return err
	}
	s.runCtx = ctx
	s.running.Store(true)
	defer s.running.Store(false)
	s.log.Info("speed layer starting", "group", GroupID(s.cfg), "topics", s.topics, "chunk_size", s.cfg.ChunkSize,
		"flush_interval", s.conf.FlushInterval.D(), "flush_rows", s.flushRows())
	return kafka.RunGroup(ctx, kafka.GroupConfig{
		Brokers:        s.cfg.Kafka.Brokers,
		GroupID:        GroupID(s.cfg),
		Topics:         s.topics,
		StartOffset:    s.startOffset,
		SessionTimeout: s.conf.SessionTimeout.D(),
		MaxBytes:       s.conf.MaxFetchBytes,
		Security:       sec,
		Log:            s.log,
	}, s.handle)
}

// Ready reports an error while the layer is not running or some partition
// cannot write its output.
func (s *Service) Ready() error {
	if !s.running.Load() {
		return errors.New("speed layer is not running")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stalls) == 0 {
		return nil
	}
	var parts []string
	var first stall
	for k, st := range s.stalls {
		parts = append(parts, fmt.Sprintf("%s/%d", k.topic, k.partition))
		if first.since.IsZero() || st.since.Before(first.since) {
			first = st
		}
	}
	sort.Strings(parts)
	return fmt.Errorf("speed layer stalled for %s: %d partition(s) (%s) cannot write their output and have stopped reading: %v",
		time.Since(first.since).Round(time.Second), len(parts), strings.Join(parts, ", "), first.err)
}

func (s *Service) flushRows() int {
	n := s.conf.FlushRows
	if n <= 0 || n > maxInsertRows {
		n = maxInsertRows
	}
	return n
}

func (s *Service) setStalled(k partKey, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stalls[k]
	if !ok {
		st.since = time.Now()
	}
	st.err = err
	s.stalls[k] = st
	s.updateStallGauges()
}

func (s *Service) clearStalled(k partKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.stalls[k]; ok {
		delete(s.stalls, k)
		s.updateStallGauges()
	}
}

func (s *Service) updateStallGauges() {
	s.m.stalledParts.Set(float64(len(s.stalls)))
	if len(s.stalls) > 0 {
		s.m.stalled.Set(1)
	} else {
		s.m.stalled.Set(0)
	}
}

// startOffset reads the partition's durable progress, retrying while the
// sink is unreachable (a failure here would end the whole generation).
func (s *Service) startOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	info := s.streams[topic]
	if info == nil {
		return 0, fmt.Errorf("speed: assigned topic %s, which no stream with views uses", topic)
	}
	k := partKey{topic, partition}
	backoff := 100 * time.Millisecond
	for {
		o, err := s.opts.Sink.Progress(ctx, info.stream, info.views, partition)
		if err == nil {
			s.clearStalled(k)
			r := planResume(o, s.cfg.ChunkSize)
			s.mu.Lock()
			s.resumes[k] = r
			s.mu.Unlock()
			s.log.Info("claimed partition", "topic", topic, "partition", partition, "durable_through", o,
				"start", r.start, "ids_only_below", r.idOnlyBelow)
			return r.start, nil
		}
		s.m.insertErrors.WithLabelValues("progress").Inc()
		if ctx.Err() != nil {
			return 0, err
		}
		s.setStalled(k, err)
		s.log.Warn("cannot read progress; retrying", "topic", topic, "partition", partition, "err", err, "retry_in", backoff)
		if !ops.Sleep(ctx, backoff) {
			return 0, ctx.Err()
		}
		backoff = min(2*backoff, s.conf.MaxBackoff)
	}
}

// handle works one claimed partition: fold every fetched response, write
// on interval or size, until the claim ends; then write what it holds.
//
// A goroutine of the claim fetches whole responses (kafka.BatchFetcher:
// records parsed in place, no copy or hand-off per record) while this one
// folds the previous response or writes; with two record buffers, at most
// two responses per partition are in memory, and while a write is retried
// (ClickHouse down) the fetcher stops after one response: backpressure.
func (s *Service) handle(ctx context.Context, c *kafka.Claim) error {
	info := s.streams[c.Topic]
	k := partKey{c.Topic, c.Partition}
	s.mu.Lock()
	res, ok := s.resumes[k]
	delete(s.resumes, k)
	s.mu.Unlock()
	if info == nil || !ok || res.start != c.Start {
		return fmt.Errorf("speed: claim of %s/%d at %d has no matching resume point", c.Topic, c.Partition, c.Start)
	}
	lagLabels := []string{c.Topic, strconv.Itoa(int(c.Partition))}
	defer s.m.lag.DeleteLabelValues(lagLabels...)
	defer s.clearStalled(k)

	r := s.newClaimRun(info, c, res)
	responses, free, stopFetching := startFetching(ctx, c)
	defer stopFetching()
	defer r.timer.Stop()
	defer func() {
		if r.inflight != nil {
			<-r.inflight.done // the claim's context has ended: it ends soon
		}
	}()
	for {
		due := false
		select {
		case <-ctx.Done():
			return r.finalFlush(ctx)
		case resp, ok := <-responses:
			if !ok || resp.err != nil {
				if ctx.Err() != nil {
					return r.finalFlush(ctx)
				}
				if resp.err == nil {
					resp.err = errors.New("the fetcher stopped")
				}
				return fmt.Errorf("speed: fetching %s/%d: %w", c.Topic, c.Partition, resp.err)
			}
			r.lag = resp.lag
			if ok, err := r.fold(ctx, resp.recs); !ok {
				if err != nil {
					return err
				}
				return r.finalFlush(ctx)
			}
			// How far behind the response's first record was: its
			// records plus what followed them.
			behind := resp.lag + resp.recs[len(resp.recs)-1].Offset - resp.recs[0].Offset
			clear(resp.recs) // drop references to the response
			free <- resp.recs[:0]
			due = r.caughtUp(resp.lag, behind)
		case <-r.timer.C:
			due = true
		}
		if due {
			if ok, err := r.flush(ctx); !ok {
				if err != nil {
					return err
				}
				return r.finalFlush(ctx)
			}
		}
	}
}

// claimRun is the state of one claimed partition between fetches: the
// partition's fold (p), the write under way, and the flush timing.
type claimRun struct {
	s    *Service
	info *streamInfo
	c    *kafka.Claim
	p    *partState
	res  resume

	consumed, folded, dups, replayed prometheus.Counter
	interval                         time.Duration
	flushRows                        int

	lag       int64 // of the last response, for the lag gauge
	timer     *time.Timer
	lastWrite time.Time // of the last snapshot
	// inflight is the write under way, nil when none; flush starts the
	// next once it has ended.
	inflight *writeJob
	spareMs  []int64 // the ingest timestamps of the last write, recycled
	// catchingUp: the partition has been at least catchUpMessages behind
	// and has not yet written since it caught up.
	catchingUp bool
	n          int // records processed, for sampling their timing
}

func (s *Service) newClaimRun(info *streamInfo, c *kafka.Claim, res resume) *claimRun {
	name := info.stream.Name
	r := &claimRun{s: s, info: info, c: c, res: res,
		p:         newPartState(info.stream, info.views, info.dec, c.Partition, s.cfg.ChunkSize, res),
		consumed:  s.m.consumed.WithLabelValues(name),
		folded:    s.m.folded.WithLabelValues(name),
		dups:      s.m.duplicates.WithLabelValues(name),
		replayed:  s.m.replayed.WithLabelValues(name),
		interval:  s.conf.FlushInterval.D(),
		flushRows: s.flushRows(),
		lag:       -1,
		lastWrite: time.Now(),
	}
	if r.interval <= 0 {
		r.interval = time.Second
	}
	r.timer = time.NewTimer(r.interval)
	return r
}

// startFetching runs the claim's fetcher in its own goroutine, two
// responses ahead at most: responses carries them, free takes back their
// record slices. stop ends it and waits.
func startFetching(ctx context.Context, c *kafka.Claim) (responses <-chan fetched, free chan<- []kafka.Record, stop func()) {
	fetcher := c.BatchFetcher()
	out := make(chan fetched)
	freeCh := make(chan []kafka.Record, 2)
	freeCh <- nil
	freeCh <- nil
	feedCtx, stopFeed := context.WithCancel(ctx)
	var feeding sync.WaitGroup
	feeding.Go(func() { fetchLoop(feedCtx, fetcher, out, freeCh) })
	return out, freeCh, func() {
		stopFeed()
		feeding.Wait()
		fetcher.Close()
	}
}

// fold processes the records of one response, writing first whenever the
// pending rows or events reach their bound. It reports false when the
// claim ended first (the final flush takes over) or a write failed.
func (r *claimRun) fold(ctx context.Context, recs []kafka.Record) (bool, error) {
	// Counted per response: one counter update per record, on counters
	// every partition of the stream shares, cost more than the rest of the
	// bookkeeping.
	var nFolded, nDup, nReplayed int
	for i := range recs {
		if r.p.changed >= r.flushRows || len(r.p.ingestMs) >= maxPendingEvents {
			if ok, err := r.flush(ctx); !ok {
				return false, err
			}
		}
		m := &recs[i]
		var out outcome
		var verr error
		if r.n++; r.n%timeEvery == 0 {
			t0 := time.Now()
			out, verr = r.p.process(m)
			r.s.m.processing.Observe(time.Since(t0).Seconds())
		} else {
			out, verr = r.p.process(m)
		}
		if m.Offset <= r.res.durable {
			nReplayed++
		}
		switch out {
		case outFolded:
			nFolded++
		case outDuplicate:
			nDup++
		case outInvalid:
			if m.Offset > r.res.durable {
				r.s.log.Debug("invalid event goes to the dead-letter topic", "topic", r.c.Topic, "partition", r.c.Partition, "offset", m.Offset, "err", verr)
			}
		}
	}
	r.consumed.Add(float64(len(recs)))
	r.folded.Add(float64(nFolded))
	r.dups.Add(float64(nDup))
	r.replayed.Add(float64(nReplayed))
	return true, nil
}

// caughtUp reports whether a write is due now because the partition has
// just caught up with a backlog (this response ended at the newest record,
// lag 0, after starting catchUpMessages or more behind): it writes now, or
// a quarter interval after the last write (re-arming the timer), instead
// of at the end of the interval, so a drained backlog becomes visible at
// once. A steady trickle is never that far behind and keeps the interval;
// the quarter bounds the extra writes.
func (r *claimRun) caughtUp(lag, behind int64) bool {
	if behind >= catchUpMessages {
		r.catchingUp = true
	}
	if lag != 0 || !r.catchingUp {
		return false
	}
	r.catchingUp = false
	if wait := time.Until(r.lastWrite.Add(r.interval / 4)); wait > 0 {
		r.timer.Reset(wait)
		return false
	}
	return true
}

// flush waits for the write under way, then snapshots what changed and
// starts writing it. It reports false when the claim ended first or the
// previous write failed (then the final flush takes over, inflight
// included), with an error only when the snapshot failed.
func (r *claimRun) flush(ctx context.Context) (bool, error) {
	if r.inflight != nil {
		select {
		case <-r.inflight.done:
		case <-ctx.Done():
			return false, nil
		}
		if r.inflight.err != nil {
			return false, nil
		}
		r.spareMs, r.inflight = r.inflight.ingestMs[:0], nil
	}
	job, err := r.s.snapshot(r.info, r.p, r.c, r.lag, r.spareMs)
	if err != nil {
		return false, err
	}
	r.timer.Reset(r.interval)
	r.lastWrite = time.Now()
	if job != nil {
		r.spareMs, r.inflight = nil, job
		go func() {
			job.err = r.s.write(ctx, r.info, r.c, job)
			close(job.done)
		}()
	}
	return true, nil
}

// finalFlush writes what the claim holds as it ends (Service.finalFlush).
func (r *claimRun) finalFlush(ctx context.Context) error {
	return r.s.finalFlush(ctx, r.info, r.p, r.c, r.lag, r.inflight)
}

// fetched is one fetch response's records, handed from a claim's fetching
// goroutine to its handler.
type fetched struct {
	recs []kafka.Record
	lag  int64 // records of the partition after the last one, as of the response
	err  error // the fetch failed; recs is empty
}

// fetchLoop fetches the partition, each response into a record buffer
// taken from free, and hands the responses to out in order, until ctx ends
// or a fetch fails (handed over as an error). It closes out when it
// returns. The handler gives each buffer back to free once folded, so the
// buffers in free bound how far the fetcher runs ahead.
func fetchLoop(ctx context.Context, f *kafka.BatchFetcher, out chan<- fetched, free <-chan []kafka.Record) {
	defer close(out)
	for {
		var buf []kafka.Record
		select {
		case buf = <-free:
		case <-ctx.Done():
			return
		}
		recs, err := f.Fetch(ctx, buf)
		r := fetched{recs: recs, lag: f.Lag(), err: err}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.recs = nil
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}
