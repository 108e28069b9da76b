package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
)

// LockKey is the object that makes batch runs mutually exclusive.
const LockKey = "batch/_lock.json"

// ErrLocked is returned (wrapped) by Run when another run holds the lock.
var ErrLocked = errors.New("another batch run holds the lock")

// lockRecord is the content of the lock object.
type lockRecord struct {
	Holder    string    `json:"holder"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	RenewedAt time.Time `json:"renewed_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// lock is a held batch lock. It renews itself every TTL/3 until Release;
// if a renewal finds the lock taken by someone else (it expired while this
// process stalled), Lost is closed and the run must not publish.
type lock struct {
	st     objstore.Bucket
	rec    lockRecord
	ttl    time.Duration
	log    *slog.Logger
	mu     sync.Mutex
	etag   string
	lost   chan struct{}
	lostMu sync.Once
	stop   chan struct{}
	done   chan struct{}
	// shared: the processes of one split run hold the lock together under
	// one holder (joinLock); a renewal that finds another process of the
	// run renewed it first is not a loss.
	shared bool
}

// acquireLock takes the lock or returns ErrLocked naming the holder. The
// object is created with If-None-Match: * and a stale one replaced with
// If-Match on its ETag, so two runs racing for it cannot both win on a store
// with conditional writes (MinIO, AWS S3). On stores without them the
// read-back check below still catches most races.
func acquireLock(ctx context.Context, st objstore.Bucket, holder string, ttl time.Duration, log *slog.Logger) (*lock, error) {
	return takeLock(ctx, st, holder, ttl, log, false)
}

func takeLock(ctx context.Context, st objstore.Bucket, holder string, ttl time.Duration, log *slog.Logger, shared bool) (*lock, error) {
	host, _ := os.Hostname()
	now := time.Now().UTC()
	l := &lock{st: st, ttl: ttl, log: log, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
		rec: lockRecord{Holder: holder, Host: host, PID: os.Getpid(), StartedAt: now}, shared: shared}
	for attempt := 0; attempt < 3; attempt++ {
		cur, etag, err := l.read(ctx)
		switch {
		case err != nil && !isNotFound(err):
			return nil, fmt.Errorf("reading the batch lock %s: %w", LockKey, err)
		case err == nil && time.Now().Before(cur.ExpiresAt):
			return nil, fmt.Errorf("%w: %s (host %s, pid %d) started at %s and holds it until %s; if that run is dead, wait for the expiry (batch.lock_ttl) or delete s3://%s/%s",
				ErrLocked, cur.Holder, cur.Host, cur.PID, cur.StartedAt.Format(time.RFC3339), cur.ExpiresAt.Format(time.RFC3339), st.Name(), LockKey)
		case err == nil:
			log.Warn("taking over an expired batch lock", "holder", cur.Holder, "started_at", cur.StartedAt, "expired_at", cur.ExpiresAt)
		}
		if err := l.write(ctx, etag); err != nil {
			if isPreconditionFailed(err) {
				continue // someone else wrote it between our read and write
			}
			return nil, fmt.Errorf("writing the batch lock %s: %w", LockKey, err)
		}
		// Read back: on a store that ignores conditional headers, the last
		// writer wins and the other sees a foreign holder here.
		back, _, err := l.read(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading back the batch lock: %w", err)
		}
		if back.Holder != holder {
			return nil, fmt.Errorf("%w: %s took it at the same moment", ErrLocked, back.Holder)
		}
		go l.renew()
		return l, nil
	}
	return nil, fmt.Errorf("%w: it changed hands repeatedly while this run tried to take it", ErrLocked)
}

func (l *lock) read(ctx context.Context) (lockRecord, string, error) {
	var rec lockRecord
	info, err := l.st.Stat(ctx, LockKey)
	if err != nil {
		return rec, "", err
	}
	data, err := objstore.GetBytes(ctx, l.st, LockKey)
	if err != nil {
		return rec, "", err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		// An unreadable lock is treated as expired rather than blocking
		// every future run.
		return lockRecord{Holder: "unreadable lock object"}, info.ETag, nil
	}
	return rec, info.ETag, nil
}

// write stores the record: created only if absent (etag ""), else replacing
// exactly the version with etag.
func (l *lock) write(ctx context.Context, etag string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().UTC()
	l.rec.RenewedAt = now
	l.rec.ExpiresAt = now.Add(l.ttl)
	data, _ := json.MarshalIndent(l.rec, "", "  ")
	cond := objstore.Precondition{IfNoneMatch: etag == "", IfMatch: etag}
	newTag, err := l.st.PutIf(ctx, LockKey, data, cond)
	if err != nil {
		return err
	}
	l.etag = newTag
	return nil
}

func isPreconditionFailed(err error) bool { return errors.Is(err, objstore.ErrPreconditionFailed) }

// renew extends the lock every ttl/3.
func (l *lock) renew() {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(l.ttl/3, 10*time.Second))
		l.mu.Lock()
		etag := l.etag
		l.mu.Unlock()
		err := l.write(ctx, etag)
		cancel()
		if err != nil {
			if isPreconditionFailed(err) && l.shared {
				ctx, cancel := context.WithTimeout(context.Background(), max(l.ttl/3, 10*time.Second))
				cur, etag, rerr := l.read(ctx)
				cancel()
				if rerr == nil && cur.Holder == l.rec.Holder {
					l.mu.Lock()
					l.etag = etag // another process of the run renewed it
					l.mu.Unlock()
					continue
				}
				if isNotFound(rerr) {
					// The run's publisher released it: the run is over.
					l.log.Info("the split run's lock was released by its publisher; this process stops renewing it")
					l.lostMu.Do(func() { close(l.lost) })
					return
				}
			}
			if isPreconditionFailed(err) {
				l.log.Error("the batch lock was taken by another run while this one held it; this run will not publish", "err", err)
				l.lostMu.Do(func() { close(l.lost) })
				return
			}
			// A transient failure: the lock still has 2/3 of its TTL.
			l.log.Warn("renewing the batch lock failed; retrying at the next tick", "err", err)
		}
	}
}

// check returns an error when the lock was lost.
func (l *lock) check() error {
	select {
	case <-l.lost:
		return fmt.Errorf("%w: this run's lock expired and another run took it; nothing more is published", ErrLocked)
	default:
		return nil
	}
}

// release deletes the lock if this run still holds it.
func (l *lock) release(ctx context.Context) {
	close(l.stop)
	<-l.done
	if l.check() != nil {
		return
	}
	cur, _, err := l.read(ctx)
	if err == nil && cur.Holder == l.rec.Holder {
		if err := l.st.Delete(ctx, LockKey); err != nil {
			l.log.Warn("releasing the batch lock failed; it expires by itself", "err", err)
		}
	}
}

// joinLock takes the lock for holder, or joins it when a live lock already
// names holder: the processes of a split run (its workers and its
// publisher, on any machine) hold it together, so no other run starts
// between its plan and its publish. Each renews it while it works; only
// the publisher releases it.
func joinLock(ctx context.Context, st objstore.Bucket, holder string, ttl time.Duration, log *slog.Logger) (*lock, error) {
	for attempt := 0; attempt < 3; attempt++ {
		l := &lock{st: st, ttl: ttl, log: log, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), shared: true}
		cur, etag, err := l.read(ctx)
		if err == nil && cur.Holder == holder && time.Now().Before(cur.ExpiresAt) {
			l.rec, l.etag = cur, etag
			if err := l.write(ctx, etag); err != nil {
				if isPreconditionFailed(err) {
					continue // renewed by another process of the run meanwhile
				}
				return nil, fmt.Errorf("renewing the batch lock %s: %w", LockKey, err)
			}
			go l.renew()
			return l, nil
		}
		if err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("reading the batch lock %s: %w", LockKey, err)
		}
		nl, err := takeLock(ctx, st, holder, ttl, log, true)
		if err != nil {
			if errors.Is(err, ErrLocked) && attempt < 2 {
				continue // perhaps another process of the run took it just now
			}
			return nil, err
		}
		return nl, nil
	}
	return nil, fmt.Errorf("%w: it changed hands repeatedly while this split run tried to join it", ErrLocked)
}

// leave stops renewing the lock without releasing it: a split worker done
// with its part leaves it to the run's other processes and its publisher.
func (l *lock) leave() {
	close(l.stop)
	<-l.done
}
