package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/infra/config"
	"taki/tests/testserver"
)

// The real-time tests (API.md, "Real time: GET /ws") run through the real router, session middleware,
// token issuer and problem writer.

const (
	rtOrigin = "http://app.test"
	// rtWait bounds every wait on a socket: outcomes are awaited, never slept for.
	rtWait = 15 * time.Second
)

func rtStart(t *testing.T) *testserver.Server {
	return testserver.Start(t, dbURL, testserver.WithConfig(func(c *config.Config) {
		c.AllowedOrigins = []string{rtOrigin}
	}))
}

type rtUser struct {
	id     uuid.UUID
	client *testserver.Client
}

// rtSignUp registers and logs in a new user.
func rtSignUp(t *testing.T, srv *testserver.Server, name string) rtUser {
	t.Helper()
	c := srv.Client(t)
	email := name + "-" + uuid.NewString()[:8] + "@example.com"
	u := c.Register(email, "correct horse battery", name)
	c.LogIn(email, "correct horse battery")
	id, err := uuid.Parse(u["id"].(string))
	if err != nil {
		t.Fatalf("user id %v: %v", u["id"], err)
	}
	return rtUser{id: id, client: c}
}

// rtToken gets a WebSocket token for the user.
func rtToken(t *testing.T, u rtUser) string {
	t.Helper()
	r := u.client.Do(http.MethodPost, "/api/v1/ws-tokens", nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("ws-tokens: %d %s", r.StatusCode, r.Body)
	}
	var body struct {
		Token string `json:"token"`
	}
	r.JSON(t, &body)
	return body.Token
}

func rtURL(srv *testserver.Server, query string) string {
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// rtDial opens a socket; jar (may be nil) supplies cookies, header pairs are name, value. The socket is
// closed when tb ends.
func rtDial(tb testing.TB, srv *testserver.Server, query string, jar http.CookieJar, header ...string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	d := websocket.Dialer{HandshakeTimeout: rtWait, Jar: jar}
	conn, resp, err := d.Dial(rtURL(srv, query), h)
	if conn != nil {
		tb.Cleanup(func() { conn.Close() })
	}
	return conn, resp, err
}

// rtDialToken opens a socket with a fresh token of u and checks its hello.
func rtDialToken(t *testing.T, srv *testserver.Server, u rtUser) *websocket.Conn {
	t.Helper()
	conn, resp, err := rtDial(t, srv, "token="+url.QueryEscape(rtToken(t, u)), nil)
	if err != nil {
		t.Fatalf("dial with token: %v (%v)", err, resp)
	}
	rtWantHello(t, conn, u.id)
	return conn
}

type rtFrame struct {
	Type    string          `json:"type"`
	Data    json.RawMessage `json:"data"`
	Problem *struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	} `json:"problem"`
}

func rtRead(t *testing.T, conn *websocket.Conn) rtFrame {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(rtWait))
	_, b, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f rtFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f
}

func rtWrite(t *testing.T, conn *websocket.Conn, s string) {
	t.Helper()
	conn.SetWriteDeadline(time.Now().Add(rtWait))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func rtWantHello(t *testing.T, conn *websocket.Conn, id uuid.UUID) {
	t.Helper()
	f := rtRead(t, conn)
	var d struct {
		UserID string `json:"user_id"`
	}
	if f.Type != "hello" || json.Unmarshal(f.Data, &d) != nil || d.UserID != id.String() {
		t.Fatalf("first frame %+v %s, want hello for %s", f, f.Data, id)
	}
}

// rtWantRefused checks a refused handshake's problem answer.
func rtWantRefused(t *testing.T, what string, resp *http.Response, err error, status int, slug string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: handshake succeeded, want %d", what, status)
	}
	if resp == nil {
		t.Fatalf("%s: no response: %v", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("%s: status %d, want %d", what, resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%s: Content-Type %q", what, ct)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s: no X-Request-Id", what)
	}
	var p testserver.Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if p.Type != "https://taki.dev/problems/"+slug || p.Status != status || p.Title == "" {
		t.Fatalf("%s: problem %+v, want %s", what, p, slug)
	}
}

func TestWSTokenAndCookie(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice := rtSignUp(t, srv, "alice")

	conn := rtDialToken(t, srv, alice)
	rtWrite(t, conn, `{"type":"ping"}`)
	if f := rtRead(t, conn); f.Type != "pong" {
		t.Fatalf("got %+v, want pong", f)
	}
	rtWrite(t, conn, `{"type":"no.such"}`)
	if f := rtRead(t, conn); f.Type != "error" || f.Problem == nil || f.Problem.Status != 422 {
		t.Fatalf("got %+v, want a 422 error frame", f)
	}

	// The session cookie, from a page of an allowed origin.
	cookieConn, resp, err := rtDial(t, srv, "", alice.client.HTTP.Jar, "Origin", rtOrigin)
	if err != nil {
		t.Fatalf("dial with cookie: %v (%v)", err, resp)
	}
	rtWantHello(t, cookieConn, alice.id)
}

func TestWSRefusals(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice := rtSignUp(t, srv, "alice")
	jar := alice.client.HTTP.Jar

	conn, resp, err := rtDial(t, srv, "", jar, "Origin", "https://evil.test")
	if conn != nil {
		t.Fatal("cookie from another origin: a socket opened")
	}
	rtWantRefused(t, "cookie from another origin", resp, err, http.StatusForbidden, "forbidden")

	conn, resp, err = rtDial(t, srv, "", jar)
	if conn != nil {
		t.Fatal("cookie without origin: a socket opened")
	}
	rtWantRefused(t, "cookie without origin", resp, err, http.StatusForbidden, "forbidden")

	conn, resp, err = rtDial(t, srv, "", nil, "Origin", rtOrigin)
	if conn != nil {
		t.Fatal("no credentials: a socket opened")
	}
	rtWantRefused(t, "no credentials", resp, err, http.StatusUnauthorized, "unauthenticated")

	tok := rtToken(t, alice)
	conn, resp, err = rtDial(t, srv, "token="+url.QueryEscape(tok+"x"), nil)
	if conn != nil {
		t.Fatal("bad token: a socket opened")
	}
	rtWantRefused(t, "bad token", resp, err, http.StatusUnauthorized, "unauthenticated")

	// After logging out, the cookie is no credential any more.
	if r := alice.client.Do(http.MethodDelete, "/api/v1/sessions/current", nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("log out: %d %s", r.StatusCode, r.Body)
	}
	conn, resp, err = rtDial(t, srv, "", jar, "Origin", rtOrigin)
	if conn != nil {
		t.Fatal("logged-out cookie: a socket opened")
	}
	rtWantRefused(t, "logged-out cookie", resp, err, http.StatusUnauthorized, "unauthenticated")

	// A good token on a request that is no WebSocket handshake.
	r := srv.Client(t).Do(http.MethodGet, "/ws?token="+url.QueryEscape(tok), nil)
	if r.StatusCode != http.StatusBadRequest || r.Slug(t) != "bad-request" {
		t.Fatalf("plain GET /ws: %d %s", r.StatusCode, r.Body)
	}
	if n := srv.Hub.Sockets(); n != 0 {
		t.Fatalf("%d sockets open after refusals", n)
	}
}

// Every socket of a user gets a frame sent to the user, and nobody else's does.
func TestWSDeliveryToEverySocketOfAUser(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice := rtSignUp(t, srv, "alice")
	bob := rtSignUp(t, srv, "bob")
	a1 := rtDialToken(t, srv, alice)
	a2, resp, err := rtDial(t, srv, "", alice.client.HTTP.Jar, "Origin", rtOrigin)
	if err != nil {
		t.Fatalf("dial with cookie: %v (%v)", err, resp)
	}
	rtWantHello(t, a2, alice.id)
	b1 := rtDialToken(t, srv, bob)

	if n := srv.Hub.SendToUsers([]uuid.UUID{alice.id}, []byte(`{"type":"test.for_alice"}`)); n != 2 {
		t.Fatalf("queued on %d sockets, want 2", n)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		if f := rtRead(t, c); f.Type != "test.for_alice" {
			t.Fatalf("alice got %+v", f)
		}
	}
	// Frames keep their order per socket: had bob got alice's frame, it would come before this one.
	srv.Hub.SendToUsers([]uuid.UUID{bob.id}, []byte(`{"type":"test.for_bob"}`))
	if f := rtRead(t, b1); f.Type != "test.for_bob" {
		t.Fatalf("bob got %+v, want only his frame", f)
	}

	// /metrics shows the sockets.
	r := alice.client.Do(http.MethodGet, "/metrics", nil)
	if !strings.Contains(string(r.Body), "\ntaki_ws_sockets 3\n") {
		t.Errorf("/metrics lacks taki_ws_sockets 3")
	}
	for _, name := range []string{"taki_ws_frames_sent_total", "taki_ws_slow_closes_total", "taki_ws_dropped_total"} {
		if !strings.Contains(string(r.Body), "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// A frame over 64 KiB closes the socket with 1009 through the real server too.
func TestWSOversizedFrame(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice := rtSignUp(t, srv, "alice")
	conn := rtDialToken(t, srv, alice)
	rtWrite(t, conn, `{"type":"ping","pad":"`+strings.Repeat("a", 65<<10)+`"}`)
	conn.SetReadDeadline(time.Now().Add(rtWait))
	_, _, err := conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("read after a 65 KiB frame: %v, want close 1009", err)
	}
}

// Shutting the server down closes its sockets with 1001 ("going away"), so clients reconnect.
func TestWSServerShutdownClosesSockets(t *testing.T) {
	t.Parallel()
	var conn *websocket.Conn
	t.Run("serve", func(st *testing.T) {
		srv := rtStart(st)
		alice := rtSignUp(st, srv, "alice")
		c, resp, err := rtDial(t, srv, "token="+url.QueryEscape(rtToken(st, alice)), nil)
		if err != nil {
			st.Fatalf("dial: %v (%v)", err, resp)
		}
		rtWantHello(st, c, alice.id)
		conn = c
	}) // the subtest's cleanup has shut the server down
	if conn == nil {
		t.FailNow()
	}
	conn.SetReadDeadline(time.Now().Add(rtWait))
	_, _, err := conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("read after shutdown: %v, want close 1001", err)
	}
}
