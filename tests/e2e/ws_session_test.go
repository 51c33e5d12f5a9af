package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/commands"
	"taki/infra/bus"
	"taki/infra/config"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/infra/ws"
	"taki/queries"
	"taki/tests/testserver"
)

// A socket lives no longer than the session that opened it (the cookie's, or the one that asked for
// the token): logout, revocation, a password or role change and expiry close it with 1008, on every
// instance. A password change re-issues the current session under a new id; the sockets of the old id
// close too, and the client reconnects with its new cookie (or a new token).

const wssPassword = "correct horse battery"

// wssDevice is one logged-in client (one session) of a user, with its two sockets.
type wssDevice struct {
	rtUser
	email  string
	cookie *websocket.Conn // opened with the session cookie, from an allowed Origin
	token  *websocket.Conn // opened with a token from POST /ws-tokens
}

// wssSignUp registers a user and logs it in on a first device, without sockets.
func wssSignUp(t *testing.T, srv *testserver.Server, name string) *wssDevice {
	t.Helper()
	c := srv.Client(t)
	email := name + "-" + uuid.NewString()[:8] + "@example.com"
	u := c.Register(email, wssPassword, name)
	c.LogIn(email, wssPassword)
	id, err := uuid.Parse(u["id"].(string))
	if err != nil {
		t.Fatalf("user id %v: %v", u["id"], err)
	}
	return &wssDevice{rtUser: rtUser{id: id, client: c}, email: email}
}

// another logs the user in on another device (another session).
func (d *wssDevice) another(t *testing.T, srv *testserver.Server) *wssDevice {
	t.Helper()
	c := srv.Client(t)
	c.LogIn(d.email, wssPassword)
	return &wssDevice{rtUser: rtUser{id: d.id, client: c}, email: d.email}
}

// dial opens the device's cookie socket and token socket on srv (which may be another instance than
// the one the device logged in on: cookies do not tell ports apart, and sessions live in the database).
func (d *wssDevice) dial(t *testing.T, srv *testserver.Server) *wssDevice {
	t.Helper()
	d.cookie = wssDialCookie(t, srv, d.rtUser)
	conn, resp, err := rtDial(t, srv, "token="+url.QueryEscape(rtToken(t, d.rtUser)), nil)
	if err != nil {
		t.Fatalf("dial with token: %v (%v)", err, resp)
	}
	rtWantHello(t, conn, d.id)
	d.token = conn
	return d
}

func wssDialCookie(t *testing.T, srv *testserver.Server, u rtUser) *websocket.Conn {
	t.Helper()
	conn, resp, err := rtDial(t, srv, "", u.client.HTTP.Jar, "Origin", rtOrigin)
	if err != nil {
		t.Fatalf("dial with cookie: %v (%v)", err, resp)
	}
	rtWantHello(t, conn, u.id)
	return conn
}

func (d *wssDevice) sockets() []*websocket.Conn { return []*websocket.Conn{d.cookie, d.token} }

// wssWantEnded waits for each socket's close frame and checks it is 1008, the session's end.
func wssWantEnded(t *testing.T, what string, conns ...*websocket.Conn) {
	t.Helper()
	for i, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(rtWait))
		for {
			_, _, err := conn.ReadMessage()
			if err == nil {
				continue // a frame sent before the close
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text == "" {
				t.Fatalf("%s: socket %d: %v, want close 1008 with a reason", what, i, err)
			}
			break
		}
	}
}

// wssWantOpen checks that each socket still answers a ping.
func wssWantOpen(t *testing.T, what string, conns ...*websocket.Conn) {
	t.Helper()
	for i, conn := range conns {
		rtWrite(t, conn, `{"type":"ping"}`)
		conn.SetReadDeadline(time.Now().Add(rtWait))
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s: socket %d should be open: %v", what, i, err)
			}
			if string(b) == `{"type":"pong"}` {
				break
			}
		}
	}
}

// wssWantRefused checks that a handshake is refused with 401.
func wssWantRefused(t *testing.T, what string, conn *websocket.Conn, resp *http.Response, err error) {
	t.Helper()
	if conn != nil {
		t.Fatalf("%s: the socket opened", what)
	}
	rtWantRefused(t, what, resp, err, http.StatusUnauthorized, "unauthenticated")
}

func TestWSSessionLogoutClosesItsSockets(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	laptop := wssSignUp(t, srv, "alice").dial(t, srv)
	phone := laptop.another(t, srv).dial(t, srv)
	bob := wssSignUp(t, srv, "bob").dial(t, srv)
	// A token fetched before the logout, to be used after it.
	spare := rtToken(t, laptop.rtUser)

	if r := laptop.client.Do(http.MethodDelete, "/api/v1/sessions/current", nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.StatusCode, r.Body)
	}
	wssWantEnded(t, "the logged-out session's sockets", laptop.sockets()...)
	wssWantOpen(t, "the user's other session's sockets", phone.sockets()...)
	wssWantOpen(t, "another user's sockets", bob.sockets()...)

	// The token is still unexpired, but its session is gone: it opens nothing.
	conn, resp, err := rtDial(t, srv, "token="+url.QueryEscape(spare), nil)
	wssWantRefused(t, "a token of the logged-out session", conn, resp, err)
}

func TestWSSessionRevokeClosesThatSessionsSocketsOnly(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	laptop := wssSignUp(t, srv, "alice").dial(t, srv)
	phone := laptop.another(t, srv).dial(t, srv)
	bob := wssSignUp(t, srv, "bob").dial(t, srv)

	// From the phone, the user ends the laptop's session.
	id := acctCurrentSessionID(t, laptop.client)
	if r := phone.client.Do(http.MethodDelete, "/api/v1/sessions/"+id, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.StatusCode, r.Body)
	}
	wssWantEnded(t, "the revoked session's sockets", laptop.sockets()...)
	wssWantOpen(t, "the revoking session's sockets", phone.sockets()...)
	wssWantOpen(t, "another user's sockets", bob.sockets()...)
	conn, resp, err := rtDial(t, srv, "", laptop.client.HTTP.Jar, "Origin", rtOrigin)
	wssWantRefused(t, "the revoked session's cookie", conn, resp, err)
}

// A password change ends the user's other sessions, and re-issues the current one under a new id.
// Every socket of the user closes, the current device's too (they belonged to the old id); that
// device reconnects at once with its new cookie, or a token it asks for with it.
func TestWSSessionPasswordChangeClosesTheUsersSockets(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	laptop := wssSignUp(t, srv, "alice").dial(t, srv)
	phone := laptop.another(t, srv).dial(t, srv)
	bob := wssSignUp(t, srv, "bob").dial(t, srv)

	r := laptop.client.Do(http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": wssPassword, "new_password": "a brand new passphrase"})
	if r.StatusCode != http.StatusNoContent {
		t.Fatalf("change password: %d %s", r.StatusCode, r.Body)
	}
	laptop.client.CSRF = r.Header.Get("X-CSRF-Token")
	wssWantEnded(t, "the other session's sockets", phone.sockets()...)
	wssWantEnded(t, "the re-issued session's sockets", laptop.sockets()...)
	wssWantOpen(t, "another user's sockets", bob.sockets()...)

	// The re-issued session opens sockets again, the ended one does not.
	laptop.dial(t, srv)
	wssWantOpen(t, "the re-issued session's new sockets", laptop.sockets()...)
	conn, resp, err := rtDial(t, srv, "", phone.client.HTTP.Jar, "Origin", rtOrigin)
	wssWantRefused(t, "the ended session's cookie", conn, resp, err)
}

// A role change (taki users promote) ends every session of the user, and so every socket.
func TestWSSessionRoleChangeClosesTheUsersSockets(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	laptop := wssSignUp(t, srv, "alice").dial(t, srv)
	phone := laptop.another(t, srv).dial(t, srv)
	bob := wssSignUp(t, srv, "bob").dial(t, srv)
	if _, _, err := bus.Send[queries.User](context.Background(), srv.Bus, commands.PromoteUser{Email: laptop.email}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	wssWantEnded(t, "the promoted user's sockets", append(laptop.sockets(), phone.sockets()...)...)
	wssWantOpen(t, "another user's sockets", bob.sockets()...)
}

// Expiry deletes nothing and announces nothing: the hub's periodic check finds it. A socket's own
// traffic does not keep its session alive.
func TestWSSessionExpiryClosesItsSockets(t *testing.T) {
	t.Parallel()
	clk := newAcctClock()
	srv := testserver.Start(t, pgtest.NewDatabase(t),
		testserver.WithConfig(func(c *config.Config) { c.AllowedOrigins = []string{rtOrigin} }),
		testserver.WithOptions(func(o *server.Options) {
			o.Now = clk.Now
			o.WebSocket = func(c *ws.Config) { c.SessionCheckInterval = 20 * time.Millisecond }
		}))
	alice := wssSignUp(t, srv, "alice").dial(t, srv)
	clk.Advance(20 * time.Minute)
	bob := wssSignUp(t, srv, "bob").dial(t, srv)
	// Alice's sockets are busy; her session idles all the same.
	wssWantOpen(t, "alice's sockets before her idle timeout", alice.sockets()...)
	clk.Advance(10 * time.Minute)
	wssWantEnded(t, "the idle session's sockets", alice.sockets()...)
	wssWantOpen(t, "a live session's sockets", bob.sockets()...)
	clk.Advance(20 * time.Minute)
	wssWantEnded(t, "the other session's sockets, idle in turn", bob.sockets()...)
}

// Sessions ended through one instance close their sockets on another: the NOTIFY that keeps the
// session caches coherent reaches the other instance's hub. The second instance's periodic check is
// out of the way (an hour), so only the notification can close them.
func TestWSSessionEndsOnEveryInstance(t *testing.T) {
	t.Parallel()
	one := rtStart(t)
	two := testserver.Start(t, dbURL,
		testserver.WithConfig(func(c *config.Config) { c.AllowedOrigins = []string{rtOrigin} }),
		testserver.WithOptions(func(o *server.Options) {
			o.WebSocket = func(c *ws.Config) { c.SessionCheckInterval = time.Hour }
		}))
	laptop := wssSignUp(t, one, "alice").dial(t, two)
	phone := laptop.another(t, one).dial(t, two)
	tablet := laptop.another(t, one).dial(t, two)
	bob := wssSignUp(t, one, "bob").dial(t, two)
	onOne := wssDialCookie(t, one, phone.rtUser)

	// Logout through the first instance.
	if r := laptop.client.Do(http.MethodDelete, "/api/v1/sessions/current", nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.StatusCode, r.Body)
	}
	wssWantEnded(t, "the logged-out session's sockets on the other instance", laptop.sockets()...)
	wssWantOpen(t, "the user's other sessions' sockets", append(phone.sockets(), tablet.sockets()...)...)

	// Revocation through the first instance.
	id := acctCurrentSessionID(t, tablet.client)
	if r := phone.client.Do(http.MethodDelete, "/api/v1/sessions/"+id, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.StatusCode, r.Body)
	}
	wssWantEnded(t, "the revoked session's sockets on the other instance", tablet.sockets()...)
	wssWantOpen(t, "the revoking session's sockets", append(phone.sockets(), onOne)...)

	// A password change through the first instance: the phone's session is re-issued, its sockets on
	// both instances close.
	r := phone.client.Do(http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": wssPassword, "new_password": "a brand new passphrase"})
	if r.StatusCode != http.StatusNoContent {
		t.Fatalf("change password: %d %s", r.StatusCode, r.Body)
	}
	wssWantEnded(t, "the re-issued session's sockets", append(phone.sockets(), onOne)...)
	wssWantOpen(t, "another user's sockets", bob.sockets()...)
}
