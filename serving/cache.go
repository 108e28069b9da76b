package serving

import (
	"container/list"
	"strings"
	"sync"
)

// lru is a cache bounded by the estimated bytes of its values, evicting the
// least recently used entries first. Batch run files are immutable (a run's
// keys are never rewritten), so an entry never goes stale; entries of runs
// that are no longer current simply age out. It is safe for concurrent use.
type lru struct {
	mu       sync.Mutex
	capacity int64
	used     int64
	order    *list.List // front = most recently used
	items    map[string]*list.Element
	onEvict  func(bytes int64)
}

type lruEntry struct {
	key   string
	value any
	bytes int64
}

func newLRU(capacity int64) *lru {
	return &lru{capacity: capacity, order: list.New(), items: map[string]*list.Element{}}
}

// get returns the value cached under key.
func (c *lru) get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).value, true
}

// put caches value under key, evicting older entries to stay within the
// capacity. A value larger than the whole capacity is not cached.
func (c *lru) put(key string, value any, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes > c.capacity {
		return
	}
	if e, ok := c.items[key]; ok {
		c.used -= e.Value.(*lruEntry).bytes
		c.order.Remove(e)
		delete(c.items, key)
	}
	for c.used+bytes > c.capacity {
		last := c.order.Back()
		if last == nil {
			break
		}
		ent := last.Value.(*lruEntry)
		c.order.Remove(last)
		delete(c.items, ent.key)
		c.used -= ent.bytes
		if c.onEvict != nil {
			c.onEvict(ent.bytes)
		}
	}
	c.items[key] = c.order.PushFront(&lruEntry{key: key, value: value, bytes: bytes})
	c.used += bytes
}

// usage returns the bytes and entries held.
func (c *lru) usage() (bytes int64, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, len(c.items)
}

// removePrefix drops every entry whose key starts with prefix (the
// bucket cache's entries of a run no longer served).
func (c *lru) removePrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, e := range c.items {
		if strings.HasPrefix(key, prefix) {
			c.used -= e.Value.(*lruEntry).bytes
			c.order.Remove(e)
			delete(c.items, key)
		}
	}
}
