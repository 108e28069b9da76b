package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ServeLeasePrefix is the folder of the serving replicas' leases.
const ServeLeasePrefix = "serve/leases/"

// ServeLeaseKey is where replica keeps its lease.
func ServeLeaseKey(replica string) string {
	return ServeLeasePrefix + url.PathEscape(replica) + ".json"
}

// ServeLease is what one serving replica may still read of the speed
// layer: per view, the lowest K_p of every batch run it answers from or
// may answer from (the current run, runs that queries in flight still
// hold, a newly published run it is about to switch to). The batch job
// deletes a view's speed rows only below the lowest K_p of every live
// lease (docs/architecture.md, "Deleting absorbed speed rows").
//
// A lease is live while the replica renews it: the deleter treats it as
// dead once it has watched Seq stay the same for TTLMs of its own clock
// (no clock comparison across machines), or once RenewedAt is more than
// ServeLeaseForget × TTL in the past by its wall clock (a replica dead for
// that long; its lease is then deleted). The replica stops answering when
// it could not renew for TTL/2, and a query's speed half is bounded well
// within the other half, so nothing reads by a lease the deleter has
// written off.
type ServeLease struct {
	Replica   string    `json:"replica"`
	RenewedAt time.Time `json:"renewed_at"`
	// Seq grows with every renewal.
	Seq   int64 `json:"seq"`
	TTLMs int64 `json:"ttl_ms"`
	// Views holds an entry for every view the replica answers or is
	// about to answer; a view without one is not protected.
	Views map[string]ServeLeaseView `json:"views"`
}

// ServeLeaseView is one view's part of a lease.
type ServeLeaseView struct {
	// Runs names the runs counted (for people; "" is "no run published").
	Runs []string `json:"runs"`
	// AbsorbedChunks is K_p per partition: the replica may read speed rows
	// of chunks >= it. A partition not listed is 0 (every chunk).
	AbsorbedChunks map[int32]int64 `json:"absorbed_chunks"`
}

// ServeLeaseForget is how many TTLs after its last renewal (by the
// deleter's wall clock) a lease is forgotten outright: a bound on how long
// a replica that died without removing its lease can hold speed rows back,
// far beyond any sane clock skew.
const ServeLeaseForget = 10

// TTL is the lease's time to live.
func (l *ServeLease) TTL() time.Duration { return time.Duration(l.TTLMs) * time.Millisecond }

// DecodeServeLease parses and checks a lease.
func DecodeServeLease(data []byte) (*ServeLease, error) {
	var l ServeLease
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("serve lease: %w", err)
	}
	switch {
	case strings.TrimSpace(l.Replica) == "":
		return nil, errors.New("serve lease: no replica")
	case l.TTLMs <= 0:
		return nil, fmt.Errorf("serve lease of %s: ttl_ms must be positive, got %d", l.Replica, l.TTLMs)
	case l.RenewedAt.IsZero():
		return nil, fmt.Errorf("serve lease of %s: no renewed_at", l.Replica)
	}
	for v, lv := range l.Views {
		for p, k := range lv.AbsorbedChunks {
			if p < 0 || k < 0 {
				return nil, fmt.Errorf("serve lease of %s: view %s: partition %d, chunk %d must not be negative", l.Replica, v, p, k)
			}
		}
	}
	return &l, nil
}
