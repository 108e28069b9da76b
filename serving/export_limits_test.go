package serving

import (
	"fmt"
	"time"
)

// SetSpeedTimeout replaces the speed half's time budget and returns a
// function restoring it; tests use it to reach the overload verdict
// without waiting 15 s.
func SetSpeedTimeout(d time.Duration) (restore func()) {
	old := speedTimeout
	speedTimeout = d
	return func() { speedTimeout = old }
}

// CachedRollups is how many closed-chunk rollups c's cache holds.
func (c *ClickHouseSpeed) CachedRollups() int {
	if c.cache == nil {
		return 0
	}
	c.cache.lru.mu.Lock()
	defer c.cache.lru.mu.Unlock()
	n := 0
	for k := range c.cache.lru.items {
		if len(k) > 2 && k[:2] == "r|" {
			n++
		}
	}
	return n
}

// CachedRollupBytes is the estimated memory of c's cached closed-chunk
// rollups.
func (c *ClickHouseSpeed) CachedRollupBytes() int64 {
	if c.cache == nil {
		return 0
	}
	c.cache.lru.mu.Lock()
	defer c.cache.lru.mu.Unlock()
	var n int64
	for k, e := range c.cache.lru.items {
		if len(k) > 2 && k[:2] == "r|" {
			n += e.Value.(*lruEntry).bytes
		}
	}
	return n
}

// SetRollupTree replaces the closed-chunk cache's tree shape (nodes of
// fanout^L chunks for L < levels), so that tests reach several levels with
// a few dozen chunks. Call it after CacheClosedChunks, before a query.
func (c *ClickHouseSpeed) SetRollupTree(fanout int64, levels int) {
	c.cache.fanout, c.cache.levels = fanout, levels
}

// CachedTreeNodes is how many cached rollups are of nodes above a single
// chunk (level ≥ 1).
func (c *ClickHouseSpeed) CachedTreeNodes() int {
	if c.cache == nil {
		return 0
	}
	c.cache.lru.mu.Lock()
	defer c.cache.lru.mu.Unlock()
	n := 0
	for k := range c.cache.lru.items {
		var p, level int
		if _, err := fmt.Sscanf(k, "r|%d|%d|", &p, &level); err == nil && level > 0 {
			n++
		}
	}
	return n
}
