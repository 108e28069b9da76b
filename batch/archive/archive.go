// Package archive is the archiver: it copies every message of every
// stream's Kafka topic into the master dataset, immutable raw Parquet
// objects in S3 named raw/<stream>/partition=<p>/<first>-<last>.parquet,
// exactly once.
//
// Exactly once, without a coordinator:
//
//   - Progress lives in the bucket. A partition's next offset to archive is
//     the last offset of its last object + 1, read back from the listing
//     whenever the partition is claimed. Kafka offsets are committed after
//     each upload, but only as a hint for lag tools.
//   - An object accounts for a contiguous offset range [first, last]:
//     every message Kafka holds in that range is in it (offsets without a
//     message, such as transaction markers, are simply absent). Objects of
//     a partition are contiguous: right before each upload the archiver
//     re-lists the partition and uploads only when its object starts
//     exactly where the bucket ends; otherwise another member got there
//     first, the object is discarded and the partition claimed again.
//   - An upload is atomic (whole object or nothing), so a crash at any
//     moment leaves the bucket at an object boundary; the restarted member
//     resumes there, re-reading from Kafka what it had not uploaded.
//   - If a zombie member races the check (see Segment), readers still see
//     every offset once: Plan resolves overlaps.
//
// Invalid messages are archived too, with null typed columns and the
// original bytes in _raw: the master dataset is the immutable record of
// what Kafka holds, and the batch layer re-validates. The archiver does not
// send anything to the dead-letter topic; the speed layer does that.
package archive

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/ops"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// Deps are what an Archiver reads from and writes to. Schema and Store
// are required.
type Deps struct {
	// Schema holds the streams it archives and the connections.
	Schema *schemas.Config
	Store  objstore.Bucket
	// Registry receives the tandem_archive_* metrics (nil: none).
	Registry prometheus.Registerer
	Log      *slog.Logger
}

// Archiver is the archiver component (ops.Component, ops.ReadyChecker).
type Archiver struct {
	cfg    *schemas.Config
	store  objstore.Bucket
	conf   Config
	log    *slog.Logger
	m      *metrics
	topics map[string]*streamState // by topic

	failingSince atomic.Int64 // unix nanos of the first failed upload in a row, 0 when fine
	lastErr      atomic.Value // string
}

type streamState struct {
	stream *schemas.Stream
	dec    *schemas.Decoder

	mu      sync.Mutex
	lastKey map[int32]string // last object key known per partition, to list only what is newer

	pubMu    sync.Mutex      // serializes progress publishing of the stream
	progress map[int32]int64 // next offset per partition, as this member knows it
}

// New returns an archiver for every stream of cfg, writing to store.
func New(conf Config, deps Deps) (*Archiver, error) {
	if deps.Schema == nil || deps.Store == nil {
		return nil, errors.New("archive: Deps need the Schema and a Store")
	}
	cfg, store, opts := deps.Schema, deps.Store, conf
	if len(cfg.Streams) == 0 {
		return nil, errors.New("archive: the configuration declares no streams")
	}
	if opts.TmpDir == "" {
		opts.TmpDir = filepath.Join(os.TempDir(), "tandem-archive")
	}
	if opts.MaxFileBytes <= 0 || opts.MaxFileAge <= 0 {
		// A zero Config is valid: a file rolled at every batch never is.
		def := DefaultConfig()
		opts.MaxFileBytes, opts.MaxFileAge = cmp.Or(max(opts.MaxFileBytes, 0), def.MaxFileBytes), cmp.Or(max(opts.MaxFileAge, 0), def.MaxFileAge)
	}
	if opts.RowGroupBytes <= 0 {
		opts.RowGroupBytes = 8 << 20
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 10 * time.Second
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 30 * time.Second
	}
	if opts.RetryPause <= 0 {
		opts.RetryPause = time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if err := os.MkdirAll(opts.TmpDir, 0o700); err != nil {
		return nil, fmt.Errorf("archive: temp dir: %w", err)
	}
	a := &Archiver{cfg: cfg, store: store, conf: opts, log: deps.Log.With("component", "archive"),
		m: newMetrics(deps.Registry), topics: map[string]*streamState{}}
	for _, s := range cfg.Streams {
		a.topics[s.Topic] = &streamState{stream: s, dec: schemas.NewDecoder(s, cfg.MaxFutureSkew.D()),
			lastKey: map[int32]string{}, progress: map[int32]int64{}}
	}
	return a, nil
}

// GroupID is the consumer group of the archivers of a deployment.
func GroupID(cfg *schemas.Config) string { return cfg.Kafka.GroupPrefix + "-archive" }

// Run archives until ctx is cancelled, then uploads what it holds (within
// Config.FlushTimeout) and returns nil.
func (a *Archiver) Run(ctx context.Context) error {
	sec, err := kafka.NewSecurity(a.cfg.Kafka)
	if err != nil {
		return err
	}
	a.removeStale()
	topics := make([]string, 0, len(a.topics))
	for t := range a.topics {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	a.log.Info("archiving", "topics", topics, "group", GroupID(a.cfg), "bucket", a.store.Name(),
		"max_file_bytes", a.conf.MaxFileBytes, "max_file_age", a.conf.MaxFileAge.D())
	return kafka.RunGroup(ctx, kafka.GroupConfig{
		Brokers:        a.cfg.Kafka.Brokers,
		GroupID:        GroupID(a.cfg),
		Topics:         topics,
		StartOffset:    a.startOffset,
		SessionTimeout: a.conf.SessionTimeout,
		Security:       sec,
		Log:            a.log,
	}, a.handle)
}

// Ready reports an archiver whose uploads have been failing for a while:
// it is stalled (nothing is lost, lag grows) until S3 is back.
func (a *Archiver) Ready() error {
	since := a.failingSince.Load()
	if since == 0 {
		return nil
	}
	if d := time.Since(time.Unix(0, since)); d > 5*time.Second {
		msg, _ := a.lastErr.Load().(string)
		return fmt.Errorf("archive: S3 uploads failing for %s: %s", d.Round(time.Second), msg)
	}
	return nil
}

// removeStale deletes files left in the temp dir by a killed archiver.
// Files are named after the process that wrote them; one whose process is
// this one or still alive is kept.
func (a *Archiver) removeStale() {
	files, _ := filepath.Glob(filepath.Join(a.conf.TmpDir, "*.parquet.tmp"))
	for _, f := range files {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(f), "archive-%d-", &pid); err == nil && pid != os.Getpid() && !alive(pid) {
			os.Remove(f)
		}
	}
}

// startOffset is where a claimed partition resumes: right after its last
// archived object, read from the bucket.
func (a *Archiver) startOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	st := a.topics[topic]
	if st == nil {
		return 0, fmt.Errorf("archive: topic %s belongs to no stream", topic)
	}
	for {
		objs, err := objstore.List(ctx, a.store, schemas.RawPrefix(st.stream.Name, partition))
		if err == nil {
			keys := make([]string, len(objs))
			for i, o := range objs {
				keys[i] = o.Key
			}
			_, next := Plan(keys)
			st.mu.Lock()
			if len(keys) > 0 {
				st.lastKey[partition] = keys[len(keys)-1]
			} else {
				delete(st.lastKey, partition)
			}
			st.mu.Unlock()
			if next < 0 {
				return kafka.FirstOffset, nil
			}
			a.m.next.WithLabelValues(st.stream.Name, strconv.Itoa(int(partition))).Set(float64(next))
			return next, nil
		}
		// Listing fails while S3 is down: wait here rather than bouncing
		// the whole group through a rejoin.
		a.uploadFailed(err)
		a.log.Warn("cannot list archived objects; retrying", "stream", st.stream.Name, "partition", partition, "err", err)
		if !ops.Sleep(ctx, a.conf.RetryPause) {
			return 0, ctx.Err()
		}
	}
}

// openFile is the raw object being built for one partition.
type openFile struct {
	path   string
	f      *os.File
	buf    *bufio.Writer
	w      *parquet.RawWriter
	first  int64 // first offset the object accounts for
	opened time.Time
}

// errLost means another member archived the range this member was about to
// upload: the partition is claimed again from the bucket's end.
var errLost = errors.New("archive: another member archived this range first; re-claiming the partition")

// handle archives one claimed partition until the claim ends: it starts
// the fetch-and-decode pipeline, writes each decoded batch in offset order
// (write), uploads the open file when it is full or old enough (roll), and
// on the way out uploads what it holds (stop).
func (a *Archiver) handle(ctx context.Context, c *kafka.Claim) (err error) {
	st := a.topics[c.Topic]
	part := strconv.Itoa(int(c.Partition))
	p := &partitionArchive{
		a: a, c: c, st: st,
		log:      a.log.With("stream", st.stream.Name, "partition", c.Partition),
		maxAge:   a.conf.MaxFileAge.D(),
		maxBytes: a.conf.MaxFileBytes,
		lag:      a.m.lag.WithLabelValues(st.stream.Name, part),
		records:  a.m.records.WithLabelValues(st.stream.Name),
		invalid:  a.m.invalid.WithLabelValues(st.stream.Name),
		// FirstOffset until the first message when nothing is archived yet.
		next: c.Start,
	}
	p.log.Info("claimed partition", "start", c.Start)
	// Deferred first, so it runs last: the pipeline is stopped (and waited
	// for) before the open file is uploaded.
	defer func() { p.stop(ctx, err) }()

	order, free, stopPipeline := startPipeline(ctx, c, st)
	defer stopPipeline()
	defer p.due.stop()
	for {
		var b *decoded
		select {
		case b = <-order:
		case <-p.due.c:
			if err := p.roll(ctx); err != nil {
				return a.rollFailed(ctx, err)
			}
			continue
		case <-ctx.Done():
			return nil
		}
		if b == nil { // the feeder stopped: the claim ended
			return nil
		}
		select {
		case <-b.ready:
		case <-ctx.Done():
			return nil
		}
		if b.err != nil {
			if kafka.IsEnded(ctx, b.err) {
				return nil
			}
			return fmt.Errorf("archive: fetching %s/%d: %w", c.Topic, c.Partition, b.err)
		}
		if err := p.write(ctx, b); err != nil {
			var rf rollErr
			if errors.As(err, &rf) {
				return a.rollFailed(ctx, rf.error)
			}
			return err
		}
		p.lag.Set(float64(max(b.lag, 0)))
		b.release(free)
		// A file is due by age at the latest after the batch that makes it
		// so (due fires only between batches).
		if p.f != nil && time.Since(p.f.opened) >= p.maxAge {
			if err := p.roll(ctx); err != nil {
				return a.rollFailed(ctx, err)
			}
		}
	}
}

// partitionArchive is the state of one claimed partition: where the next
// object must start and the file being built.
type partitionArchive struct {
	a   *Archiver
	c   *kafka.Claim
	st  *streamState
	log *slog.Logger

	maxAge   time.Duration
	maxBytes int64
	lag      prometheus.Gauge
	records  prometheus.Counter
	invalid  prometheus.Counter

	next int64     // where the next object must start; FirstOffset before the first message when nothing is archived
	f    *openFile // nil between files
	// due fires when the open file reaches max_file_age, so an idle
	// partition still uploads on time.
	due fileTimer
}

// rollErr is an upload failure inside write, which the handler turns into
// its result with rollFailed (other errors of write are returned as they
// are).
type rollErr struct{ error }

// write appends the batch's records not yet archived to the open file
// (opening one when none is), rolling whenever the file is full.
func (p *partitionArchive) write(ctx context.Context, b *decoded) (err error) {
	for i, n := 0, b.rows.Len(); i < n; {
		if p.next >= 0 && b.rows.Offset(i) < p.next {
			i++ // already archived
			continue
		}
		if p.f == nil {
			first := p.next
			if first < 0 {
				first = b.rows.Offset(i)
			}
			if p.f, err = p.a.open(p.st, p.c.Partition, first); err != nil {
				return err
			}
			p.due.start(p.f.opened.Add(p.maxAge))
		}
		// Up to the record that fills the file (or the writer's next
		// encoding step).
		w, err := p.f.w.WriteBatch(b.rows, i, p.maxBytes)
		if err != nil {
			return fmt.Errorf("archive: %s/%d offset %d: %w", p.c.Topic, p.c.Partition, b.rows.Offset(i), err)
		}
		for _, ok := range b.valid[i : i+w] {
			if !ok {
				p.invalid.Inc()
			}
		}
		p.records.Add(float64(w))
		i += w
		if p.f.w.Size() >= p.maxBytes {
			if err := p.roll(ctx); err != nil {
				return rollErr{err}
			}
		}
	}
	return nil
}

// roll uploads the open file; the next object starts after it.
func (p *partitionArchive) roll(ctx context.Context) error {
	if err := p.a.roll(ctx, p.c, p.st, p.f, p.log); err != nil {
		return err
	}
	p.next, p.f = p.f.last()+1, nil
	p.due.stop()
	return nil
}

// stop runs when the claim ends. On shutdown or rebalance (err nil) it
// uploads what is held, so a clean stop leaves nothing to re-read; the
// contiguity check keeps this safe even if the partition already has a new
// owner. The temporary file goes either way.
func (p *partitionArchive) stop(ctx context.Context, err error) {
	f := p.f
	if f == nil {
		return
	}
	if err == nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.a.conf.FlushTimeout)
		defer cancel()
		if ferr := p.a.roll(fctx, p.c, p.st, f, p.log); ferr != nil {
			p.log.Warn("could not upload the open file before stopping; the next owner re-reads it from Kafka", "err", ferr)
		} else {
			p.log.Info("uploaded the open file before stopping")
		}
	}
	f.discard()
}

// startPipeline splits the claim's work so it uses every core: a feeder
// fetches whole responses and cuts them into batches, decodeWorkers
// goroutines validate, decode and convert batches to Parquet values, and
// the caller writes them to Parquet in offset order (order carries the
// batches in fetch order; each is written once its decoding is done) and
// hands each back to free. At most feedBatches batches exist, so the
// feeder runs at most that far ahead. stop ends the pipeline and waits for
// it.
func startPipeline(ctx context.Context, c *kafka.Claim, st *streamState) (order <-chan *decoded, free chan *decoded, stop func()) {
	orderCh := make(chan *decoded, feedBatches+1)
	jobs := make(chan *decoded, feedBatches)
	free = make(chan *decoded, feedBatches)
	for range feedBatches {
		free <- &decoded{rows: parquet.NewRawBatch(st.stream)}
	}
	fetcher := c.BatchFetcher()
	feedCtx, stopFeed := context.WithCancel(ctx)
	var feeding sync.WaitGroup
	feeding.Go(func() { feed(feedCtx, fetcher, orderCh, jobs, free) })
	for range decodeWorkers {
		feeding.Go(func() { decode(st.dec, c.Partition, jobs) })
	}
	return orderCh, free, func() {
		stopFeed()
		feeding.Wait()
		fetcher.Close()
	}
}

// feedBatches is how many batches exist per claim (being filled, decoded,
// waiting or written), feedBatchRecords the most records one holds, and
// decodeWorkers how many goroutines decode batches.
//
// They bound a claim's memory: the batches' values (~2.5 MiB), and the
// fetch responses their records' bytes live in — one per batch, the one
// being cut, and at most two under the records the writer holds unencoded
// (≤ 512) — each at most the fetch size (4 MiB), plus the open file's row
// group (Config.RowGroupBytes): ~50 MiB at worst with the defaults.
const (
	feedBatches      = 6
	feedBatchRecords = 2048
	decodeWorkers    = 2
)

// decoded is a batch of consecutive messages of a partition. Once ready is
// closed, rows holds them validated, decoded and converted to Parquet
// values, and valid[i] tells whether message i was a valid event. The
// messages' bytes are in the fetch response, which the fetcher never
// reuses, so they stay valid however long the writer references them
// (until it encodes them, a few hundred records later).
type decoded struct {
	msgs  []kafka.Record
	rows  *parquet.RawBatch
	valid []bool
	lag   int64         // messages of the partition not yet fetched, as of this batch's fetch
	err   error         // the fetch failed (then the batch holds nothing)
	ready chan struct{} // closed when rows and valid are filled
}

func (b *decoded) release(free chan<- *decoded) {
	clear(b.msgs) // drop references to the response
	b.msgs = b.msgs[:0]
	b.rows.Reset()
	b.valid = b.valid[:0]
	free <- b
}

// feed fetches the partition and cuts the responses into batches, which it
// sends to the decoders (jobs) and, in the same order, to the writer
// (order), until ctx ends or a fetch fails (sent to the writer as a batch
// with err). It closes both channels when it returns.
func feed(ctx context.Context, f *kafka.BatchFetcher, order, jobs chan<- *decoded, free chan *decoded) {
	defer close(order)
	defer close(jobs)
	var msgs []kafka.Record
	for {
		var err error
		msgs, err = f.Fetch(ctx, msgs[:0])
		if err != nil {
			b := &decoded{err: err, ready: make(chan struct{})}
			close(b.ready)
			order <- b // never blocks: order has room for every batch and this one
			return
		}
		lag := f.Lag()
		for i := 0; i < len(msgs); i += feedBatchRecords {
			var b *decoded
			select {
			case b = <-free:
			case <-ctx.Done():
				return
			}
			part := msgs[i:min(i+feedBatchRecords, len(msgs))]
			b.msgs = append(b.msgs, part...)
			b.lag = lag
			b.ready = make(chan struct{})
			// Neither send blocks: there are never more batches than room.
			jobs <- b
			order <- b
		}
		clear(msgs) // drop references to the response
	}
}

// decode fills the batches it receives from jobs until jobs is closed.
func decode(dec *schemas.Decoder, partition int32, jobs <-chan *decoded) {
	// ev is reused for every message: DecodeInto fills it without
	// allocating, its strings sharing the message's bytes, and the batch
	// keeps only those bytes, never ev.
	var ev schemas.Event
	for b := range jobs {
		for _, m := range b.msgs {
			rec := parquet.RawRecord{Raw: m.Value, Partition: partition, Offset: m.Offset, KafkaTime: m.Time}
			ok := valid(dec, &ev, m.Value, m.Time)
			if ok {
				rec.Event = &ev
			}
			b.rows.Add(rec)
			b.valid = append(b.valid, ok)
		}
		close(b.ready)
	}
}

// valid decodes raw into ev and returns Decoder.Decode's verdict on it
// (with ingest time ingest); ev is meaningful only when it returns true.
//
// The future-skew check is made here instead of by DecodeInto, which
// skips it for a zero ingest time and otherwise makes it last, on the
// decoded time: the verdict is the same, but the archiver needs only the
// verdict, and the error DecodeInto builds for a future event (a sentence
// with two formatted times) costs more than decoding the event. A producer
// sending future events must not slow the archiver down.
// TestVerdictMatchesDecode keeps the two in step.
func valid(dec *schemas.Decoder, ev *schemas.Event, raw []byte, ingest time.Time) bool {
	if dec.DecodeInto(ev, raw, time.Time{}) != nil {
		return false
	}
	return dec.MaxFutureSkew <= 0 || ingest.IsZero() || !ev.Time.After(ingest.Add(dec.MaxFutureSkew))
}

// fileTimer fires when the open file is due; c is nil while no file is
// open.
type fileTimer struct {
	t *time.Timer
	c <-chan time.Time
}

func (d *fileTimer) start(at time.Time) {
	d.stop()
	d.t = time.NewTimer(time.Until(at))
	d.c = d.t.C
}

func (d *fileTimer) stop() {
	if d.t != nil {
		d.t.Stop()
	}
	d.t, d.c = nil, nil
}

// rollFailed turns a failed roll into the handler's result: nil when the
// claim is ending anyway, the error (a re-claim) otherwise.
func (a *Archiver) rollFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, errLost) {
		return nil
	}
	return err
}

func (f *openFile) last() int64 {
	_, last := f.w.Offsets()
	return last
}

func (f *openFile) discard() {
	if f.f != nil {
		f.f.Close()
		f.f = nil
	}
	os.Remove(f.path)
}

func (a *Archiver) open(st *streamState, partition int32, first int64) (*openFile, error) {
	tmp, err := os.CreateTemp(a.conf.TmpDir, fmt.Sprintf("archive-%d-%s-%d-*.parquet.tmp", os.Getpid(), st.stream.Name, partition))
	if err != nil {
		return nil, fmt.Errorf("archive: temp file: %w", err)
	}
	buf := bufio.NewWriterSize(tmp, 1<<20)
	return &openFile{
		path:   tmp.Name(),
		f:      tmp,
		buf:    buf,
		w:      parquet.NewRawWriter(buf, st.stream, parquet.RawWriterOptions{RowGroupBytes: a.conf.RowGroupBytes, Partition: partition, Decoder: st.dec}),
		first:  first,
		opened: time.Now(),
	}, nil
}

// roll finishes f and uploads it, retrying S3 failures until ctx ends.
// On success it commits the Kafka offset (a hint) and publishes progress.
func (a *Archiver) roll(ctx context.Context, c *kafka.Claim, st *streamState, f *openFile, log *slog.Logger) error {
	if err := f.w.Close(); err != nil {
		return err
	}
	if err := f.buf.Flush(); err != nil {
		return fmt.Errorf("archive: writing %s: %w", f.path, err)
	}
	size := f.w.Written()
	last := f.last()
	key := schemas.RawKey(st.stream.Name, c.Partition, f.first, last)
	pause := a.conf.RetryPause
	for {
		t0 := time.Now()
		err := a.upload(ctx, st, c.Partition, f, key, size)
		if err == nil {
			a.failingSince.Store(0)
			a.m.uploadSeconds.Observe(time.Since(t0).Seconds())
			break
		}
		if errors.Is(err, errLost) {
			a.m.lost.WithLabelValues(st.stream.Name).Inc()
			log.Warn("discarding a file another member already archived", "key", key)
			return err
		}
		if ctx.Err() != nil {
			// The claim ended mid-upload: not an S3 failure.
			return fmt.Errorf("archive: upload of %s interrupted: %w", key, err)
		}
		a.uploadFailed(err)
		log.Warn("upload failed; retrying (the archiver stalls until S3 is back)", "key", key, "pause", pause, "err", err)
		if !ops.Sleep(ctx, pause) {
			return fmt.Errorf("archive: upload of %s abandoned: %w", key, err)
		}
		pause = min(2*pause, 30*time.Second)
	}
	f.discard()
	name, part := st.stream.Name, strconv.Itoa(int(c.Partition))
	a.m.files.WithLabelValues(name).Inc()
	a.m.bytes.WithLabelValues(name).Add(float64(size))
	a.m.lastUpload.WithLabelValues(name).SetToCurrentTime()
	a.m.next.WithLabelValues(name, part).Set(float64(last + 1))
	log.Debug("archived", "key", key, "rows", f.w.Rows(), "bytes", size)
	if err := c.Commit(last + 1); err != nil {
		log.Debug("committing the offset hint failed", "err", err) // only lag tools read it
	}
	if err := a.publish(ctx, st, c.Partition, last+1); err != nil {
		log.Warn("publishing archive progress failed; the next upload retries", "err", err)
	}
	return nil
}

func (a *Archiver) uploadFailed(err error) {
	a.failingSince.CompareAndSwap(0, time.Now().UnixNano())
	a.lastErr.Store(err.Error())
	a.m.uploadErrors.Inc()
}

// upload checks that f continues the partition in the bucket and uploads it.
func (a *Archiver) upload(ctx context.Context, st *streamState, partition int32, f *openFile, key string, size int64) error {
	prefix := schemas.RawPrefix(st.stream.Name, partition)
	st.mu.Lock()
	after := st.lastKey[partition]
	st.mu.Unlock()
	objs, err := objstore.ListAfter(ctx, a.store, prefix, after)
	if err != nil {
		return err
	}
	end := int64(-1) // the bucket's next offset, -1 when the partition has no object
	if after != "" {
		_, _, _, last, _ := schemas.ParseRawKey(after)
		end = last + 1
	}
	for _, o := range objs {
		if _, _, _, last, ok := schemas.ParseRawKey(o.Key); ok && last+1 > end {
			end = last + 1
		}
	}
	// end < 0: the partition's first object, which starts at the oldest
	// message Kafka still holds.
	if end >= 0 && end != f.first {
		return errLost
	}
	if _, err := f.f.Seek(0, 0); err != nil {
		return err
	}
	if err := a.store.Put(ctx, key, f.f, size); err != nil {
		return err
	}
	st.mu.Lock()
	st.lastKey[partition] = key
	st.mu.Unlock()
	return nil
}

// publish records the partition's next offset in the stream's progress
// file. The file is shared by every member, so it is read, merged (each
// partition's offset only grows) and written back; a lost race only makes
// it lag until the next upload, never claim too much.
func (a *Archiver) publish(ctx context.Context, st *streamState, partition int32, next int64) error {
	st.pubMu.Lock()
	defer st.pubMu.Unlock()
	if next > st.progress[partition] {
		st.progress[partition] = next
	}
	p, err := ReadProgress(ctx, a.store, st.stream.Name)
	if err != nil {
		return err
	}
	for part, n := range st.progress {
		if n > p.Next[part] {
			p.Next[part] = n
		}
	}
	p.Stream, p.UpdatedAt = st.stream.Name, time.Now().UTC()
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return objstore.PutBytes(ctx, a.store, schemas.ArchiveProgressKey(st.stream.Name), data)
}

// alive reports whether a process with this id exists.
func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	return err == nil && p.Signal(syscall.Signal(0)) == nil
}
