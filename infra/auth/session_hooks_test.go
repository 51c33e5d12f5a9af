package auth

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

// hookRecorder collects the user ids an OnInvalidate hook is called with.
type hookRecorder chan uuid.UUID

func recordInvalidations(m *Manager) hookRecorder {
	r := make(hookRecorder, 100)
	m.OnInvalidate(func(id uuid.UUID) { r <- id })
	return r
}

// next waits for the next call (a NOTIFY travels asynchronously) and returns its user id.
func (r hookRecorder) next(t *testing.T) uuid.UUID {
	t.Helper()
	select {
	case id := <-r:
		return id
	case <-time.After(10 * time.Second):
		t.Fatal("OnInvalidate hook not called")
		return uuid.Nil
	}
}

// only checks that the hook was called (synchronously, so already) with exactly ids, in order.
func (r hookRecorder) only(t *testing.T, what string, ids ...uuid.UUID) {
	t.Helper()
	for _, want := range ids {
		select {
		case got := <-r:
			if got != want {
				t.Fatalf("%s: hook called for %s, want %s", what, got, want)
			}
		default:
			t.Fatalf("%s: hook not called for %s", what, want)
		}
	}
	select {
	case got := <-r:
		t.Fatalf("%s: hook called again, for %s", what, got)
	default:
	}
}

func TestLiveSessions(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	ctx := context.Background()
	user, other := uuid.New(), uuid.New()
	s1 := env.browser().login(user)
	s2 := env.browser().login(user)
	s3 := env.browser().login(other)
	unknown := uuid.New()

	live, err := env.m.LiveSessions(ctx, []uuid.UUID{s1.PublicID, s2.PublicID, s3.PublicID, unknown})
	if err != nil {
		t.Fatalf("LiveSessions: %v", err)
	}
	want := map[uuid.UUID]uuid.UUID{s1.PublicID: user, s2.PublicID: user, s3.PublicID: other}
	if len(live) != len(want) {
		t.Fatalf("LiveSessions = %v, want %v", live, want)
	}
	for id, u := range want {
		if live[id] != u {
			t.Fatalf("LiveSessions = %v, want %v", live, want)
		}
	}

	if err := env.m.Revoke(ctx, user, s1.PublicID); err != nil {
		t.Fatal(err)
	}
	live, err = env.m.LiveSessions(ctx, []uuid.UUID{s1.PublicID, s2.PublicID})
	if err != nil || len(live) != 1 || live[s2.PublicID] != user {
		t.Fatalf("after revoking s1: LiveSessions = %v, %v; want only s2", live, err)
	}

	// Expired sessions are not live, though their rows are still there (nothing deletes them yet).
	env.clock.Advance(30 * time.Minute)
	live, err = env.m.LiveSessions(ctx, []uuid.UUID{s2.PublicID, s3.PublicID})
	if err != nil || len(live) != 0 {
		t.Fatalf("after the idle timeout: LiveSessions = %v, %v; want none", live, err)
	}
	if env.rowsForPublicID(s2.PublicID) != 1 {
		t.Fatal("LiveSessions deleted an expired row")
	}

	if live, err := env.m.LiveSessions(ctx, nil); err != nil || live == nil || len(live) != 0 {
		t.Fatalf("LiveSessions(nil) = %#v, %v; want an empty map", live, err)
	}
}

func TestLiveSessionsHonoursTheAbsoluteTimeout(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{IdleTimeout: time.Hour, AbsoluteTimeout: 2 * time.Hour})
	b := env.browser()
	s := b.login(uuid.New())
	// Used every 50 minutes, the session never idles out, but ends two hours after login.
	for range 2 {
		env.clock.Advance(50 * time.Minute)
		if _, ok := b.me(); !ok {
			t.Fatal("session ended early")
		}
	}
	live, err := env.m.LiveSessions(context.Background(), []uuid.UUID{s.PublicID})
	if err != nil || len(live) != 1 {
		t.Fatalf("LiveSessions = %v, %v; want the session", live, err)
	}
	env.clock.Advance(20 * time.Minute)
	live, err = env.m.LiveSessions(context.Background(), []uuid.UUID{s.PublicID})
	if err != nil || len(live) != 0 {
		t.Fatalf("after the absolute timeout: LiveSessions = %v, %v; want none", live, err)
	}
}

// Every way a session is deleted on this instance calls the hooks with its user, once, before the
// call that deleted it returns.
func TestOnInvalidateHearsEveryLocalSessionEnd(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	hook := recordInvalidations(env.m)
	ctx := context.Background()
	user, other := uuid.New(), uuid.New()

	b := env.browser()
	b.login(user)
	hook.only(t, "login without a previous session")

	if rec := b.do(http.MethodPost, "/rotate", nil); rec.Code != http.StatusOK {
		t.Fatalf("rotate: %d", rec.Code)
	}
	hook.only(t, "rotate", user)

	if rec := b.do(http.MethodPost, "/logout", nil); rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d", rec.Code)
	}
	hook.only(t, "logout", user)

	s := b.login(user)
	if err := env.m.Revoke(ctx, user, s.PublicID); err != nil {
		t.Fatal(err)
	}
	hook.only(t, "revoke", user)
	if err := env.m.Revoke(ctx, user, s.PublicID); err == nil {
		t.Fatal("revoked a session twice")
	}
	hook.only(t, "revoke of a session that is gone")

	s = b.login(user)
	if _, err := env.m.RevokeAllForUser(ctx, user, &s.PublicID); err != nil {
		t.Fatal(err)
	}
	hook.only(t, "revoke all but one", user)
	if _, err := env.m.RevokeAllForUser(ctx, user, nil); err != nil {
		t.Fatal(err)
	}
	hook.only(t, "revoke all", user)

	// A login over another user's session (planted, or a shared browser) ends that user's session.
	b.login(other)
	b.login(user)
	hook.only(t, "login over another user's session", other)
}

// With Run, the hooks also hear the deletes of other instances, and hear uuid.Nil when the listener
// (re)connects: what was announced while it was down is lost.
func TestOnInvalidateHearsOtherInstances(t *testing.T) {
	a := newSessionEnv(t, SessionConfig{})
	other := newSessionEnv(t, SessionConfig{})
	hook := recordInvalidations(a.m)
	runCache(t, a)
	if got := hook.next(t); got != uuid.Nil {
		t.Fatalf("on connecting: hook called for %s, want uuid.Nil", got)
	}
	// Other tests share the database and its channel: only this test's users count.
	user := uuid.New()
	s := other.browser().login(user)
	if err := other.m.Revoke(context.Background(), user, s.PublicID); err != nil {
		t.Fatal(err)
	}
	for {
		if got := hook.next(t); got == user {
			break
		}
	}
}
