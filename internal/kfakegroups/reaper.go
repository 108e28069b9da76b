// Package kfakegroups makes the embedded Kafka-protocol broker (kfake),
// which tandem dev and the tests run in process, expire consumer-group
// members the way Apache Kafka does.
package kfakegroups

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SessionReaper makes the in-process broker expire classic-group members
// that stopped talking to it, as Apache Kafka does, where kfake does not.
//
// kfake arms a member's session timer only when a reply reaches the member.
// A member killed while its first JoinGroup is parked in the coordinator
// (kill -9 during a rebalance) is still in the generation that join
// completes — the leader assigns it partitions — but when the coordinator's
// reply finds the connection closed, no timer is armed: the member never
// syncs or heartbeats, is never expired, and its partitions are never
// reassigned while the group stays stable. Apache Kafka schedules the
// heartbeat expiry of every member when a join completes, delivered or not.
//
// The reaper watches the group requests each member sends (JoinGroup,
// SyncGroup, Heartbeat, OffsetCommit, LeaveGroup), and sends LeaveGroup for
// a member of a stable group that has been silent for longer than the
// group's session timeout plus a grace period. A live member heartbeats
// several times per session timeout, so only members the broker should have
// expired already are removed; a member kfake does time out is gone before
// the grace period ends.
type SessionReaper struct {
	brokers []string
	cluster *kfake.Cluster
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	seen    map[string]map[string]time.Time // group → member → last request
	session map[string]time.Duration        // group → longest session timeout joined with
}

// reaperGrace is how long past its session timeout a silent member lives:
// long enough that kfake's own expiry, where it works, comes first.
const reaperGrace = time.Second

// StartSessionReaper watches the group requests c receives and removes
// members kfake forgets to expire (see SessionReaper); brokers are c's
// listener addresses. Close stops it.
func StartSessionReaper(c *kfake.Cluster, brokers []string) *SessionReaper {
	r := &SessionReaper{
		brokers: brokers, cluster: c,
		stop: make(chan struct{}), done: make(chan struct{}),
		seen: map[string]map[string]time.Time{}, session: map[string]time.Duration{},
	}
	// Control functions that return "not handled" observe the request and
	// let the broker handle it as usual; they stay installed.
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.observe(req)
			return nil, nil, false
		})
	}
	go r.run()
	return r
}

func (r *SessionReaper) observe(req kmsg.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	switch q := req.(type) {
	case *kmsg.JoinGroupRequest:
		if d := time.Duration(q.SessionTimeoutMillis) * time.Millisecond; d > r.session[q.Group] {
			r.session[q.Group] = d
		}
		r.touch(q.Group, q.MemberID, now)
	case *kmsg.SyncGroupRequest:
		r.touch(q.Group, q.MemberID, now)
	case *kmsg.HeartbeatRequest:
		r.touch(q.Group, q.MemberID, now)
	case *kmsg.OffsetCommitRequest:
		r.touch(q.Group, q.MemberID, now)
	case *kmsg.LeaveGroupRequest:
		r.touch(q.Group, q.MemberID, now)
		for _, m := range q.Members {
			r.touch(q.Group, m.MemberID, now)
		}
	}
}

func (r *SessionReaper) touch(group, member string, now time.Time) {
	if member == "" {
		return
	}
	if r.seen[group] == nil {
		r.seen[group] = map[string]time.Time{}
	}
	r.seen[group][member] = now
}

func (r *SessionReaper) run() {
	defer close(r.done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
			r.reap()
		}
	}
}

// reap removes the silent members of every stable classic group.
func (r *SessionReaper) reap() {
	r.mu.Lock()
	groups := make(map[string]time.Duration, len(r.session))
	for g, d := range r.session {
		groups[g] = d
	}
	r.mu.Unlock()
	now := time.Now()
	for group, session := range groups {
		info := r.cluster.GroupInfo(group)
		if info == nil {
			continue
		}
		var silent []string
		r.mu.Lock()
		seen := r.seen[group]
		if seen == nil {
			seen = map[string]time.Time{}
			r.seen[group] = seen
		}
		current := map[string]bool{}
		for _, m := range info.Members {
			current[m.MemberID] = true
			last, ok := seen[m.MemberID]
			if !ok {
				// Never seen by ID: its only request so far was its first
				// JoinGroup, which carries none. Count from now.
				seen[m.MemberID] = now
				continue
			}
			if info.State == "Stable" && now.Sub(last) > session+reaperGrace {
				silent = append(silent, m.MemberID)
			}
		}
		for m := range seen {
			if !current[m] {
				delete(seen, m)
			}
		}
		r.mu.Unlock()
		if len(silent) > 0 {
			r.leave(group, silent)
		}
	}
}

// leave sends LeaveGroup for the members to the group's coordinator, the
// way the coordinator's own session expiry would remove them.
func (r *SessionReaper) leave(group string, members []string) {
	node := r.cluster.CoordinatorFor(group)
	if node < 0 || int(node) >= len(r.brokers) {
		return
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Version = 3
	req.Group = group
	for _, id := range members {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		req.Members = append(req.Members, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = roundTrip(ctx, r.brokers[node], req) // the next tick retries
}

// Close stops the reaper and waits for it.
func (r *SessionReaper) Close() {
	close(r.stop)
	<-r.done
}

// roundTrip sends one request on a connection of its own and reads the
// reply's frame (its content is not needed).
func roundTrip(ctx context.Context, addr string, req kmsg.Request) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("tandem-session-reaper")).AppendRequest(nil, req, 1)); err != nil {
		return err
	}
	size := make([]byte, 4)
	if _, err := conn.Read(size); err != nil {
		return err
	}
	return nil
}
