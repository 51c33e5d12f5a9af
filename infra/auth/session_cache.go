package auth

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"taki/infra/postgres"
)

// sessionCache keeps recently loaded sessions in memory so that an authenticated request does not
// cost a database round trip. It is only a shortcut and only trusted while this process listens for
// invalidations: every delete of a session (logout, revoke, rotation, password or role change) drops the
// user's cached sessions here and, by NOTIFY, in every other instance. Entries also age out after
// maxAge, which bounds staleness should a notification ever be missed between two reconnects.
type sessionCache struct {
	mu      sync.Mutex
	enabled bool // while the invalidation listener is connected
	// gen grows at every invalidation. A loader notes it before reading a row and may cache the row
	// only if it has not changed meanwhile: a row read before a revocation must not be cached after it.
	gen    uint64
	max    int
	maxAge time.Duration
	byHash map[string]cacheEntry
	byUser map[uuid.UUID]map[string]struct{}
}

type cacheEntry struct {
	rec      record
	cachedAt time.Time
}

// sessionsChannel carries the ids of users whose sessions were deleted.
const sessionsChannel = "taki_sessions"

// cacheMaxAge bounds how long a cached session is trusted without reading its row again.
const cacheMaxAge = 10 * time.Second

// cacheMaxEntries bounds the cache's memory; past it, stale entries are swept and, if it is still
// full, new sessions are simply not cached.
const cacheMaxEntries = 100_000

// generation returns the invalidation counter a loader must pass to put.
func (c *sessionCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func newSessionCache() *sessionCache {
	return &sessionCache{maxAge: cacheMaxAge, max: cacheMaxEntries, byHash: map[string]cacheEntry{}, byUser: map[uuid.UUID]map[string]struct{}{}}
}

// get returns a copy of the cached session for hash, if it is fresh, live and needs no touch.
func (c *sessionCache) get(hash []byte, now time.Time, touchEvery time.Duration) (*record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.enabled {
		return nil, false
	}
	e, ok := c.byHash[string(hash)]
	if !ok {
		return nil, false
	}
	if now.Sub(e.cachedAt) >= c.maxAge || !now.Before(e.rec.s.ExpiresAt) || !now.Before(e.rec.absoluteExpiresAt) ||
		now.Sub(e.rec.s.LastSeenAt) >= touchEvery {
		c.dropLocked(string(hash), e.rec.s.UserID)
		return nil, false
	}
	rec := e.rec
	return &rec, true
}

func (c *sessionCache) put(hash []byte, rec *record, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.enabled || gen != c.gen {
		return
	}
	if len(c.byHash) >= c.max {
		for h, e := range c.byHash {
			if now.Sub(e.cachedAt) >= c.maxAge {
				c.dropLocked(h, e.rec.s.UserID)
			}
		}
		if len(c.byHash) >= c.max {
			return
		}
	}
	stored := record{s: rec.s, absoluteExpiresAt: rec.absoluteExpiresAt}
	c.byHash[string(hash)] = cacheEntry{rec: stored, cachedAt: now}
	set := c.byUser[rec.s.UserID]
	if set == nil {
		set = map[string]struct{}{}
		c.byUser[rec.s.UserID] = set
	}
	set[string(hash)] = struct{}{}
}

func (c *sessionCache) dropLocked(hash string, userID uuid.UUID) {
	delete(c.byHash, hash)
	if set := c.byUser[userID]; set != nil {
		delete(set, hash)
		if len(set) == 0 {
			delete(c.byUser, userID)
		}
	}
}

// dropUser forgets every cached session of userID.
func (c *sessionCache) dropUser(userID uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for h := range c.byUser[userID] {
		delete(c.byHash, h)
	}
	delete(c.byUser, userID)
}

// setEnabled turns the cache on or off; either way it starts empty, since nothing that happened while
// it was off was seen.
func (c *sessionCache) setEnabled(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.enabled = on
	c.byHash = map[string]cacheEntry{}
	c.byUser = map[uuid.UUID]map[string]struct{}{}
}

// invalidationHooks are the functions registered with Manager.OnInvalidate.
type invalidationHooks struct {
	mu  sync.Mutex
	fns []func(userID uuid.UUID)
}

func (h *invalidationHooks) add(fn func(userID uuid.UUID)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fns = append(h.fns, fn)
}

// call runs every hook, outside the lock (a hook may register another).
func (h *invalidationHooks) call(userID uuid.UUID) {
	h.mu.Lock()
	fns := h.fns
	h.mu.Unlock()
	for _, fn := range fns {
		fn(userID)
	}
}

// OnInvalidate registers fn to learn that userID's sessions changed: one or more of them were deleted
// (logout, revocation, rotation, password or role change, a login replacing a session). It is called
// after the delete committed, for deletes made by this instance and, while Run listens, for those
// announced by every instance (this one's included: a local delete may reach fn twice). userID is
// uuid.Nil when any user's sessions may have changed unseen: Run (re)connected its listener, and
// notifications sent while it was down are lost.
//
// Expiry calls nothing: a session that times out is not deleted at that moment. Callers that must
// notice it check the sessions' expiry themselves (LiveSessions).
//
// fn runs on the goroutine that deleted the session (a request's) or on the listener's: it must not
// block, or it delays the request or every later invalidation. Hand the work to a goroutine of your own.
func (m *Manager) OnInvalidate(fn func(userID uuid.UUID)) {
	if fn != nil {
		m.store.hooks.add(fn)
	}
}

// invalidate drops userID's cached sessions here and announces it to the other instances. It runs
// after the delete committed; a concurrent load that read the row before the delete sees the
// generation change and does not cache it.
func (st *pgStore) invalidate(ctx context.Context, userID uuid.UUID) {
	st.cache.dropUser(userID)
	st.hooks.call(userID)
	if _, err := st.pool.Exec(context.WithoutCancel(ctx), `SELECT pg_notify($1, $2)`, sessionsChannel, userID.String()); err != nil {
		// Other instances still stop trusting their copies within cacheMaxAge.
		st.cfg.Logger.WarnContext(ctx, "could not announce session revocation", slog.String("err", err.Error()))
	}
}

// Run keeps the session cache coherent across instances: it listens for invalidations on its own
// connection to databaseURL and enables the cache only while that connection is up. Without Run the
// cache stays off and every request reads its session row. It also passes every invalidation on to
// the OnInvalidate hooks.
func (m *Manager) Run(ctx context.Context, databaseURL string) {
	postgres.Listen(ctx, databaseURL, sessionsChannel, postgres.Listener{
		Connected: func() {
			m.store.cache.setEnabled(true)
			// Whatever was announced while the listener was down is lost.
			m.store.hooks.call(uuid.Nil)
		},
		Notified: func(payload string) {
			if id, err := uuid.Parse(payload); err == nil && id != uuid.Nil {
				m.store.cache.dropUser(id)
				m.store.hooks.call(id)
			}
		},
		Lost: func(error) { m.store.cache.setEnabled(false) },
	}, m.cfg.Logger)
	m.store.cache.setEnabled(false)
}
