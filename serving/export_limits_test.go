package serving

import "time"

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
