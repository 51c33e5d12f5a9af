package handlers

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	"taki/commands"
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

	mu    sync.Mutex
	cache *lru[uuid.UUID, cached]
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
	return &Store{log: log, max: size, observe: observe, cache: newLRU[uuid.UUID, cached](size)}, nil
}

func (s *Store) get(id uuid.UUID) (cached, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache.get(id)
}

func (s *Store) put(id uuid.UUID, version int64, pos events.Position, state any) {
	if s.max <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Never replace a newer state with an older one (two commands of one stream finishing out of order).
	if c, ok := s.cache.peek(id); ok && c.version > version {
		s.cache.get(id)
		return
	}
	s.cache.put(id, cached{id: id, version: version, pos: pos, state: state})
}

func (s *Store) evict(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache.remove(id)
}

// Forget drops id's cached state if it is older than version: another instance appended to the
// stream (the log tail of each instance reports every event). A stale state would be caught by the
// next append's version check anyway; forgetting it spares that retry, and a refusal decided on it.
func (s *Store) Forget(id uuid.UUID, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cache.peek(id); ok && c.version < version {
		s.cache.remove(id)
	}
}

// cacheUse notes, for one command, whether it decided on a cached state, and whether it must not.
type cacheUse struct {
	used   atomic.Bool
	bypass bool
}

type cacheUseKey struct{}

// load returns aggregate id's latest known state: cached, or read from the log.
func load[S any](ctx context.Context, s *Store, a aggregate[S], id uuid.UUID) (loaded[S], error) {
	use, _ := ctx.Value(cacheUseKey{}).(*cacheUse)
	if c, ok := s.get(id); ok && (use == nil || !use.bypass) {
		if st, ok := c.state.(S); ok {
			if use != nil {
				use.used.Store(true)
			}
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

// CommandHandler is a command handler as the bus calls it.
type CommandHandler[C, R any] interface {
	Handle(ctx context.Context, cmd C) (R, error)
}

// RedecideFresh makes h decide a refused command again on states read from the log when the refusal
// was decided on a cached state. The cache is kept coherent by version checks on append, which a
// refusal never reaches: without this, an instance whose cache missed another instance's write
// (a member just added, a payment just completed) would keep refusing until its cache moved on.
// Only for handlers whose refusals have no side effects: the command runs twice.
func RedecideFresh[C, R any](h CommandHandler[C, R]) CommandHandler[C, R] {
	return redecide[C, R]{h}
}

type redecide[C, R any] struct{ h CommandHandler[C, R] }

func (d redecide[C, R]) Handle(ctx context.Context, cmd C) (R, error) {
	use := &cacheUse{}
	r, err := d.h.Handle(context.WithValue(ctx, cacheUseKey{}, use), cmd)
	if _, refused := commands.AsError(err); refused && use.used.Load() {
		return d.h.Handle(context.WithValue(ctx, cacheUseKey{}, &cacheUse{bypass: true}), cmd)
	}
	return r, err
}
