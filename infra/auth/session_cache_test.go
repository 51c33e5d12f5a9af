package auth

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

// runCache starts e's invalidation listener and waits until the cache is on.
func runCache(t *testing.T, e *sessionEnv) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.m.Run(ctx, dbURL); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.m.store.cache.mu.Lock()
		on := e.m.store.cache.enabled
		e.m.store.cache.mu.Unlock()
		if on {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("session cache never enabled")
		}
		time.Sleep(time.Millisecond) // polling the listener's state, bounded above
	}
}

func TestSessionCacheAnswersFromMemoryForAtMostItsMaxAge(t *testing.T) {
	e := newSessionEnv(t, SessionConfig{})
	runCache(t, e)
	b := e.browser()
	s := b.login(uuid.Must(uuid.NewV7()))
	if _, ok := b.me(); !ok {
		t.Fatal("fresh session not live")
	}
	// Deleting the row behind the manager's back (no invalidation) proves the answer came from memory...
	if _, err := e.pool.Exec(context.Background(), `DELETE FROM sessions WHERE public_id = $1`, s.PublicID); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.me(); !ok {
		t.Fatal("cached session not served from memory")
	}
	// ...and a cached entry is trusted for cacheMaxAge at most.
	e.clock.Advance(cacheMaxAge)
	if _, ok := b.me(); ok {
		t.Fatal("a cached session outlived cacheMaxAge without its row")
	}
}

func TestSessionRevocationReachesEveryInstanceCache(t *testing.T) {
	a := newSessionEnv(t, SessionConfig{})
	other := newSessionEnv(t, SessionConfig{})
	runCache(t, a)
	runCache(t, other)
	user := uuid.Must(uuid.NewV7())

	// Revoked on the same instance: gone at once.
	b1 := a.browser()
	s1 := b1.login(user)
	if _, ok := b1.me(); !ok {
		t.Fatal("session not live")
	}
	if err := a.m.Revoke(context.Background(), user, s1.PublicID); err != nil {
		t.Fatal(err)
	}
	if _, ok := b1.me(); ok {
		t.Fatal("a revoked session was served from this instance's cache")
	}

	// Revoked on another instance: this one's cached copy goes as soon as the NOTIFY arrives; the
	// clock does not move, so nothing else can end it.
	b2 := a.browser()
	b2.login(user)
	if _, ok := b2.me(); !ok {
		t.Fatal("session not live")
	}
	if _, err := other.m.RevokeAllForUser(context.Background(), user, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := b2.me(); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a session revoked by another instance stayed live in this one's cache")
		}
		time.Sleep(time.Millisecond) // waiting for the notification, bounded above
	}
}

// A row read before a revocation must not be cached after it: the loader's generation is stale.
func TestSessionCacheRefusesRowsReadBeforeAnInvalidation(t *testing.T) {
	c := newSessionCache()
	c.setEnabled(true)
	now := time.Now()
	user := uuid.Must(uuid.NewV7())
	rec := &record{s: Session{UserID: user, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}, absoluteExpiresAt: now.Add(time.Hour)}
	hash := []byte("h1")

	gen := c.generation()
	c.dropUser(user) // the revocation lands between the loader's read and its put
	c.put(hash, rec, now, gen)
	if _, ok := c.get(hash, now, time.Minute); ok {
		t.Fatal("a row read before the revocation was cached after it")
	}

	gen = c.generation()
	c.put(hash, rec, now, gen)
	if _, ok := c.get(hash, now, time.Minute); !ok {
		t.Fatal("a row read after the last invalidation was not cached")
	}
}

func TestSessionCacheIsBounded(t *testing.T) {
	c := newSessionCache()
	c.max = 3
	c.setEnabled(true)
	now := time.Now()
	for i := range 5 {
		rec := &record{s: Session{UserID: uuid.Must(uuid.NewV7()), LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}, absoluteExpiresAt: now.Add(time.Hour)}
		c.put([]byte{byte(i)}, rec, now, c.generation())
	}
	if n := len(c.byHash); n != 3 {
		t.Fatalf("cache holds %d entries, want its bound 3", n)
	}
	// Once entries are stale, a put sweeps them and makes room.
	later := now.Add(cacheMaxAge)
	rec := &record{s: Session{UserID: uuid.Must(uuid.NewV7()), LastSeenAt: later, ExpiresAt: later.Add(time.Hour)}, absoluteExpiresAt: later.Add(time.Hour)}
	c.put([]byte("fresh"), rec, later, c.generation())
	if _, ok := c.get([]byte("fresh"), later, time.Minute); !ok || len(c.byHash) != 1 {
		t.Fatalf("stale entries were not swept: %d entries", len(c.byHash))
	}
}
