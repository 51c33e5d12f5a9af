package ws

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/infra/auth"
)

// set changes the fake's behaviour under its lock (the hub calls it from its goroutines).
func (s *testSessions) set(f func(*testSessions)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// callsSince returns the LiveSessions calls after the first n.
func (s *testSessions) callsSince(n int) [][]uuid.UUID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls[n:])
}

// dialCookie opens a socket with the cookie of session sid of user and reads its hello.
func (e *env) dialCookie(user, sid uuid.UUID) *websocket.Conn {
	e.t.Helper()
	conn, resp, err := e.dial("", "Cookie", auth.CookieName+"="+e.cookieOf(sid), "Origin", testOrigin)
	if err != nil {
		e.t.Fatalf("dial with cookie: %v (%s)", err, status(resp))
	}
	wantHello(e.t, conn, user)
	return conn
}

// dialToken opens a socket with a token of session sid of user and reads its hello.
func (e *env) dialTokenOf(user, sid uuid.UUID) *websocket.Conn {
	e.t.Helper()
	return e.dialAs(user, e.tokenOf(user, sid))
}

// wantSessionEnded waits for the server's close frame and checks it says the session ended.
func wantSessionEnded(t *testing.T, conn *websocket.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(ioWait))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != sessionEndedReason {
			t.Fatalf("read: %v, want close 1008 %q", err, sessionEndedReason)
		}
		return
	}
}

// wantOpen checks that a socket still answers.
func wantOpen(t *testing.T, conn *websocket.Conn) {
	t.Helper()
	write(t, conn, `{"type":"ping"}`)
	if f := read(t, conn); f.Type != TypePong {
		t.Fatalf("got %+v, want pong", f)
	}
}

func sameIDs(a, b []uuid.UUID) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	cmp := func(x, y uuid.UUID) int { return slices.Compare(x[:], y[:]) }
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// When a user's sessions change, the sockets of the sessions that ended close with 1008; the user's
// other sessions' sockets and other users' sockets stay. One query checks all the user's sockets.
func TestSessionEndClosesItsSocketsOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice, bob := uuid.New(), uuid.New()
	a1, a2, b1 := e.sessions.start(alice), e.sessions.start(alice), e.sessions.start(bob)
	a1Cookie, a1Token := e.dialCookie(alice, a1), e.dialTokenOf(alice, a1)
	a2Token := e.dialTokenOf(alice, a2)
	a2Again := e.dialTokenOf(alice, a2)
	bobs := e.dialCookie(bob, b1)
	e.waitSockets(5)
	before := e.sessions.callCount()

	e.sessions.end(a1)
	e.hub.SessionsChanged(alice)
	wantSessionEnded(t, a1Cookie)
	wantSessionEnded(t, a1Token)
	for _, conn := range []*websocket.Conn{a2Token, a2Again, bobs} {
		wantOpen(t, conn)
	}
	calls := e.sessions.callsSince(before)
	if len(calls) != 1 || !sameIDs(calls[0], []uuid.UUID{a1, a2}) {
		t.Fatalf("LiveSessions calls %v, want one with alice's two sessions %s, %s", calls, a1, a2)
	}
	if n := value(t, e.hub.metrics.sessionCloses); n != 2 {
		t.Fatalf("taki_ws_session_closes_total %v, want 2", n)
	}
	e.waitSockets(3)

	// All of alice's sessions end (a password or role change elsewhere): every socket of hers goes.
	e.sessions.end(a2)
	e.hub.SessionsChanged(alice)
	wantSessionEnded(t, a2Token)
	wantSessionEnded(t, a2Again)
	wantOpen(t, bobs)
}

// A user without sockets here costs no query: most invalidations concern other instances' users.
func TestSessionsChangedOfAUserWithoutSocketsCostsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice := uuid.New()
	sid := e.sessions.start(alice)
	conn := e.dialTokenOf(alice, sid)
	e.waitSockets(1)
	before := e.sessions.callCount()
	for range 100 {
		e.hub.SessionsChanged(uuid.New())
	}
	e.sessions.end(sid)
	e.hub.SessionsChanged(alice)
	wantSessionEnded(t, conn)
	if calls := e.sessions.callsSince(before); len(calls) != 1 || !sameIDs(calls[0], []uuid.UUID{sid}) {
		t.Fatalf("LiveSessions calls %v, want only alice's", calls)
	}
}

// SessionsChanged is called from the invalidation listener: a slow check must not hold it up.
func TestSessionsChangedDoesNotWaitForTheQuery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice := uuid.New()
	sid := e.sessions.start(alice)
	conn := e.dialTokenOf(alice, sid)
	e.waitSockets(1)
	hold, held := make(chan struct{}), make(chan struct{}, 10)
	e.sessions.set(func(s *testSessions) { s.hold, s.held = hold, held })
	e.sessions.end(sid)
	e.hub.SessionsChanged(alice)
	select {
	case <-held:
	case <-time.After(ioWait):
		t.Fatal("the check never ran")
	}
	// The check is stuck in its query; invalidations keep being taken at once.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			e.hub.SessionsChanged(alice)
			e.hub.SessionsChanged(uuid.New())
			e.hub.SessionsChanged(uuid.Nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(ioWait):
		t.Fatal("SessionsChanged blocked behind a slow check")
	}
	e.sessions.set(func(s *testSessions) { s.hold, s.held = nil, nil })
	close(hold)
	wantSessionEnded(t, conn)
}

// Sessions that expire (or end unannounced) are found by the periodic check of every socket.
func TestPeriodicCheckClosesSocketsOfExpiredSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.SessionCheckInterval = 20 * time.Millisecond })
	alice, bob := uuid.New(), uuid.New()
	a, b := e.sessions.start(alice), e.sessions.start(bob)
	aliceCookie, aliceToken, bobs := e.dialCookie(alice, a), e.dialTokenOf(alice, a), e.dialTokenOf(bob, b)
	e.sessions.end(a) // nobody tells the hub
	wantSessionEnded(t, aliceCookie)
	wantSessionEnded(t, aliceToken)
	wantOpen(t, bobs)
}

// The check of every socket asks for at most checkBatch session ids per query, each id once.
func TestCheckOfEverySocketIsBatched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, func(h *Hub) { h.checkBatch = 2 })
	var sids []uuid.UUID
	var conns []*websocket.Conn
	for range 5 {
		user := uuid.New()
		sid := e.sessions.start(user)
		sids = append(sids, sid)
		// Two sockets per session: the session is asked about once.
		conns = append(conns, e.dialTokenOf(user, sid), e.dialTokenOf(user, sid))
	}
	e.waitSockets(10)
	before := e.sessions.callCount()
	e.sessions.end(sids[1])
	e.sessions.end(sids[3])
	e.hub.SessionsChanged(uuid.Nil) // as the invalidation listener does when it reconnects
	for i, conn := range conns {
		if s := i / 2; s == 1 || s == 3 {
			wantSessionEnded(t, conn)
		}
	}
	for i, conn := range conns {
		if s := i / 2; s != 1 && s != 3 {
			wantOpen(t, conn)
		}
	}
	calls := e.sessions.callsSince(before)
	var asked []uuid.UUID
	for _, c := range calls {
		if len(c) > 2 {
			t.Fatalf("a query asked for %d sessions, more than the batch of 2", len(c))
		}
		asked = append(asked, c...)
	}
	if len(calls) != 3 || !sameIDs(asked, sids) {
		t.Fatalf("LiveSessions calls %v, want 3 covering the 5 sessions once each", calls)
	}
}

// A failed check closes nothing (the next one will decide); a later one does the job.
func TestFailedCheckClosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice := uuid.New()
	sid := e.sessions.start(alice)
	conn := e.dialTokenOf(alice, sid)
	e.waitSockets(1)
	before := e.sessions.callCount()
	e.sessions.set(func(s *testSessions) { s.fail = errors.New("database down") })
	e.hub.SessionsChanged(alice)
	e.hub.checkSessions(context.Background(), nil, true)
	if n := len(e.sessions.callsSince(before)); n < 1 {
		t.Fatalf("%d checks, want at least one", n)
	}
	wantOpen(t, conn)
	e.sessions.set(func(s *testSessions) { s.fail = nil })
	e.sessions.end(sid)
	e.hub.SessionsChanged(alice)
	wantSessionEnded(t, conn)
}

func TestHandshakeRefusesEndedSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice, bob := uuid.New(), uuid.New()
	ended := e.sessions.start(alice)
	tok := e.tokenOf(alice, ended)
	e.sessions.end(ended)
	// A token outlives its session's logout by up to 5 minutes: it opens nothing after it.
	conn, resp, err := e.dial("token=" + url.QueryEscape(tok))
	if conn != nil {
		t.Fatal("a token of an ended session opened a socket")
	}
	wantRefused(t, resp, err, 401, "unauthenticated")

	// A token naming another user's session (which Issue never makes) is refused too.
	bobs := e.sessions.start(bob)
	conn, resp, err = e.dial("token=" + url.QueryEscape(e.tokenOf(alice, bobs)))
	if conn != nil {
		t.Fatal("a token naming another user's session opened a socket")
	}
	wantRefused(t, resp, err, 401, "unauthenticated")

	// When the sessions cannot be checked, the client is told to come back.
	live := e.sessions.start(alice)
	e.sessions.set(func(s *testSessions) { s.fail = errors.New("database down") })
	conn, resp, err = e.dial("token=" + url.QueryEscape(e.tokenOf(alice, live)))
	if conn != nil {
		t.Fatal("a socket opened while its session could not be checked")
	}
	wantRefused(t, resp, err, 503, "unavailable")
	if n := e.hub.Sockets(); n != 0 {
		t.Fatalf("%d sockets after refused handshakes", n)
	}
}

// A session that ends after the handshake checked it, before the socket is indexed, is not missed:
// its invalidation finds no socket to check, so the socket checks itself once indexed.
func TestSessionEndingDuringTheHandshakeClosesTheSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice := uuid.New()
	sid := e.sessions.start(alice)
	var once sync.Once
	e.sessions.set(func(s *testSessions) {
		s.after = func([]uuid.UUID) {
			once.Do(func() {
				// The handshake's check answered "live"; the session ends before the socket exists.
				e.sessions.end(sid)
				e.hub.SessionsChanged(alice)
			})
		}
	})
	conn := e.dialTokenOf(alice, sid)
	wantSessionEnded(t, conn)
}

// Close stops a check stuck in its query and closes the sockets with 1001, as always.
func TestCloseStopsTheSessionCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice := uuid.New()
	sid := e.sessions.start(alice)
	conn := e.dialTokenOf(alice, sid)
	e.waitSockets(1)
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	e.sessions.set(func(s *testSessions) { s.hold, s.held = hold, held })
	e.hub.SessionsChanged(alice)
	select {
	case <-held:
	case <-time.After(ioWait):
		t.Fatal("the check never ran")
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioWait)
	defer cancel()
	if err := e.hub.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantClose(t, conn, websocket.CloseGoingAway)
}
