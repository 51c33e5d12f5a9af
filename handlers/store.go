package handlers

import (
	"container/list"
	"context"
	"errors"
	"sync"

	"github.com/google/uuid"

	"taki/events"
)

// Store loads aggregates from the log through a bounded cache of recent states, and appends their
// decisions. The cache is only a shortcut: the log stays the truth. An append decided on a stale state
// (another instance wrote meanwhile) fails with a conflict, which evicts the entry, and the bus retries
// the command on a fresh load. Cached states are values: evolve functions must not share mutable
// memory (maps, slices) between the state they get and the one they return.
type Store struct {
	log     events.Log
	max     int
	observe func(context.Context, events.Position)

	mu      sync.Mutex
	entries map[uuid.UUID]*list.Element
	lru     *list.List // front: most recently used
}

type cached struct {
	id      uuid.UUID
	version int64
	pos     events.Position
	state   any
}

// NewStore returns a store on log that caches up to size aggregate states (0 disables the cache).
// observe, if not nil, is told the log position of every aggregate state a command decides on, so a
// command that appends nothing still answers a consistency token covering what it read.
func NewStore(log events.Log, size int, observe func(context.Context, events.Position)) (*Store, error) {
	if log == nil {
		return nil, errors.New("new store: nil log")
	}
	if observe == nil {
		observe = func(context.Context, events.Position) {}
	}
	return &Store{log: log, max: size, observe: observe, entries: map[uuid.UUID]*list.Element{}, lru: list.New()}, nil
}

func (s *Store) get(id uuid.UUID) (cached, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.entries[id]
	if !ok {
		return cached{}, false
	}
	s.lru.MoveToFront(el)
	return el.Value.(cached), true
}

func (s *Store) put(id uuid.UUID, version int64, pos events.Position, state any) {
	if s.max <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.entries[id]; ok {
		// Never replace a newer state with an older one (two commands of one stream finishing out of order).
		if el.Value.(cached).version <= version {
			el.Value = cached{id: id, version: version, pos: pos, state: state}
		}
		s.lru.MoveToFront(el)
		return
	}
	s.entries[id] = s.lru.PushFront(cached{id: id, version: version, pos: pos, state: state})
	for s.lru.Len() > s.max {
		last := s.lru.Back()
		s.lru.Remove(last)
		delete(s.entries, last.Value.(cached).id)
	}
}

func (s *Store) evict(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.entries[id]; ok {
		s.lru.Remove(el)
		delete(s.entries, id)
	}
}

// load returns aggregate id's latest known state: cached, or read from the log.
func load[S any](ctx context.Context, s *Store, a aggregate[S], id uuid.UUID) (loaded[S], error) {
	if c, ok := s.get(id); ok {
		if st, ok := c.state.(S); ok {
			s.observe(ctx, c.pos)
			return loaded[S]{id: id, state: st, version: c.version, pos: c.pos}, nil
		}
	}
	l, err := a.load(ctx, s.log, id)
	if err != nil {
		return l, err
	}
	if l.version > 0 {
		s.put(id, l.version, l.pos, l.state)
		s.observe(ctx, l.pos)
	}
	return l, nil
}

// save appends evs after l and returns (and caches) the state they lead to.
func save[S any](ctx context.Context, s *Store, a aggregate[S], l loaded[S], claims []events.Claim, evs ...events.Event) (loaded[S], error) {
	next, err := a.append(ctx, s.log, l, claims, evs...)
	if err != nil {
		if errors.Is(err, events.ErrConflict) {
			s.evict(l.id)
		}
		return l, err
	}
	s.put(next.id, next.version, next.pos, next.state)
	return next, nil
}
