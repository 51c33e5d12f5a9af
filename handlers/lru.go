package handlers

import "container/list"

// lru is a map bounded to its most recently used entries. It is not safe for concurrent use: its
// owners (the Store, the Feed) hold their own locks around it.
type lru[K comparable, V any] struct {
	max     int
	entries map[K]*list.Element
	order   *list.List // of *lruEntry[K, V]; front: most recently used
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, entries: map[K]*list.Element{}, order: list.New()}
}

// get returns k's value and makes it the most recently used.
func (c *lru[K, V]) get(k K) (V, bool) {
	el, ok := c.entries[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[K, V]).val, true
}

// peek returns k's value without making it more recent.
func (c *lru[K, V]) peek(k K) (V, bool) {
	el, ok := c.entries[k]
	if !ok {
		var zero V
		return zero, false
	}
	return el.Value.(*lruEntry[K, V]).val, true
}

// put sets k's value, makes it the most recently used and drops the least recently used entries
// past max (a max of 0 or less keeps nothing).
func (c *lru[K, V]) put(k K, v V) {
	if el, ok := c.entries[k]; ok {
		el.Value.(*lruEntry[K, V]).val = v
		c.order.MoveToFront(el)
	} else {
		c.entries[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: v})
	}
	for c.order.Len() > max(c.max, 0) {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*lruEntry[K, V]).key)
	}
}

// remove drops k.
func (c *lru[K, V]) remove(k K) {
	if el, ok := c.entries[k]; ok {
		c.order.Remove(el)
		delete(c.entries, k)
	}
}
