package ws

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"taki/infra/auth"
	"taki/infra/http/problem"
	"taki/infra/logging"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

const (
	testOrigin = "http://app.test"
	testSecret = "ws-test-secret-0123456789-abcdefghijklmnop"
	// ioWait bounds every wait on the network; outcomes are awaited, never slept for.
	ioWait = 10 * time.Second
)

// testSessions stands in for auth.Manager: a cookie's value names a session, and a session is live
// until end. It records LiveSessions calls, and can fail or hold them.
type testSessions struct {
	mu      sync.Mutex
	cookies map[string]uuid.UUID // cookie value → session
	live    map[uuid.UUID]uuid.UUID
	// calls has the ids of every LiveSessions call, in order.
	calls [][]uuid.UUID
	// fail, when set, is LiveSessions' answer.
	fail error
	// hold, when set, makes LiveSessions wait until it is closed (or ctx ends); held gets a signal
	// when a call starts waiting.
	hold chan struct{}
	held chan struct{}
	// after, when set, runs once a LiveSessions call has its answer, before it returns, outside the
	// lock: what it does comes after the answer was read.
	after func(ids []uuid.UUID)
}

func newTestSessions() *testSessions {
	return &testSessions{cookies: map[string]uuid.UUID{}, live: map[uuid.UUID]uuid.UUID{}}
}

func (s *testSessions) Current(c *gin.Context) (auth.Session, bool) {
	v, err := c.Cookie(auth.CookieName)
	if err != nil {
		return auth.Session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sid, ok := s.cookies[v]
	if !ok {
		return auth.Session{}, false
	}
	user, ok := s.live[sid]
	return auth.Session{PublicID: sid, UserID: user}, ok
}

func (s *testSessions) LiveSessions(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]uuid.UUID, error) {
	s.mu.Lock()
	s.calls = append(s.calls, append([]uuid.UUID(nil), ids...))
	hold, held, fail, after := s.hold, s.held, s.fail, s.after
	s.mu.Unlock()
	if hold != nil {
		if held != nil {
			held <- struct{}{}
		}
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	s.mu.Lock()
	live := map[uuid.UUID]uuid.UUID{}
	for _, id := range ids {
		if user, ok := s.live[id]; ok {
			live[id] = user
		}
	}
	s.mu.Unlock()
	if after != nil {
		after(ids)
	}
	return live, nil
}

// start begins a live session of user and returns its public id.
func (s *testSessions) start(user uuid.UUID) uuid.UUID {
	sid := uuid.New()
	s.mu.Lock()
	s.live[sid] = user
	s.mu.Unlock()
	return sid
}

// end ends a session, without telling the hub.
func (s *testSessions) end(sid uuid.UUID) {
	s.mu.Lock()
	delete(s.live, sid)
	s.mu.Unlock()
}

// callCount returns how many LiveSessions calls there were.
func (s *testSessions) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// writeProblem stands in for infra/http's writers (which this package cannot import in its own
// tests): the same status and problem+json body.
func writeProblem(c *gin.Context, err error) {
	p, _ := ProblemFor(err)
	b, _ := json.Marshal(p)
	c.Abort()
	c.Data(p.Status, "application/problem+json", b)
}

func writeBadRequest(c *gin.Context, detail string) {
	writeProblem(c, &MalformedFrameError{Reason: detail})
}

type env struct {
	t        *testing.T
	hub      *Hub
	srv      *httptest.Server
	reg      *prometheus.Registry
	tokens   *auth.WSTokens
	sessions *testSessions
	// changed gets a signal after every change of the hub's index.
	changed chan struct{}
}

// newEnv runs a hub behind a gin router on an httptest server, as infra/http mounts it. edit changes
// the configuration; tweak, if given, changes the hub before it serves.
func newEnv(t *testing.T, edit func(*Config), tweak ...func(*Hub)) *env {
	t.Helper()
	tokens, err := auth.NewWSTokens([]byte(testSecret), time.Now, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, reg: prometheus.NewRegistry(), tokens: tokens, sessions: newTestSessions(),
		changed: make(chan struct{}, 1)}
	cfg := Config{
		AllowedOrigins: []string{testOrigin},
		Tokens:         tokens,
		Sessions:       e.sessions,
		Logger:         logging.Discard(),
		Registry:       e.reg,
		WriteError:     writeProblem,
		BadRequest:     writeBadRequest,
	}
	if edit != nil {
		edit(&cfg)
	}
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Set before the hub serves anything, so the hook needs no synchronization.
	h.testHookIndexChanged = func() {
		select {
		case e.changed <- struct{}{}:
		default:
		}
	}
	for _, f := range tweak {
		f(h)
	}
	e.hub = h
	r := gin.New()
	r.GET("/ws", h.Handle)
	e.srv = httptest.NewServer(r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioWait)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("close hub: %v", err)
		}
		e.srv.Close()
	})
	return e
}

// token returns a fresh ?token= credential for a new user, of a new live session.
func (e *env) token() (uuid.UUID, string) {
	id := uuid.New()
	return id, e.tokenOf(id, e.sessions.start(id))
}

// tokenOf returns a ?token= credential for user, issued by session sid.
func (e *env) tokenOf(user, sid uuid.UUID) string {
	tok, _, err := e.tokens.Issue(user, sid)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// cookie returns a session cookie value for a new user, of a new live session.
func (e *env) cookie() (uuid.UUID, string) {
	id := uuid.New()
	return id, e.cookieOf(e.sessions.start(id))
}

// cookieOf returns a cookie value naming session sid.
func (e *env) cookieOf(sid uuid.UUID) string {
	v := "cookie-" + uuid.NewString()
	e.sessions.mu.Lock()
	e.sessions.cookies[v] = sid
	e.sessions.mu.Unlock()
	return v
}

func (e *env) url(query string) string {
	u := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// dial opens a socket; header pairs are name, value.
func (e *env) dial(query string, header ...string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	d := websocket.Dialer{HandshakeTimeout: ioWait}
	conn, resp, err := d.Dial(e.url(query), h)
	if conn != nil {
		e.t.Cleanup(func() { conn.Close() })
	}
	return conn, resp, err
}

// dialToken opens a socket for a new user with a token and reads its hello.
func (e *env) dialToken() (uuid.UUID, *websocket.Conn) {
	e.t.Helper()
	id, tok := e.token()
	return id, e.dialAs(id, tok)
}

// dialAs opens another socket for the user of tok and reads its hello.
func (e *env) dialAs(id uuid.UUID, tok string) *websocket.Conn {
	e.t.Helper()
	conn, resp, err := e.dial("token=" + url.QueryEscape(tok))
	if err != nil {
		e.t.Fatalf("dial: %v (%s)", err, status(resp))
	}
	wantHello(e.t, conn, id)
	return conn
}

// waitSockets waits until the hub has n sockets.
func (e *env) waitSockets(n int) {
	e.t.Helper()
	deadline := time.After(ioWait)
	for e.hub.Sockets() != n {
		select {
		case <-e.changed:
		case <-deadline:
			e.t.Fatalf("hub has %d sockets, want %d", e.hub.Sockets(), n)
		}
	}
}

func status(r *http.Response) string {
	if r == nil {
		return "no response"
	}
	return r.Status
}

// frame is a server frame as a client decodes it.
type frame struct {
	Type        string          `json:"type"`
	Position    string          `json:"position"`
	ChatID      string          `json:"chat_id"`
	ClientMsgID string          `json:"client_msg_id"`
	Data        json.RawMessage `json:"data"`
	Problem     *Problem        `json:"problem"`
}

func read(t *testing.T, conn *websocket.Conn) frame {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(ioWait))
	typ, b, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("got a message of type %d, want text", typ)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %q: %v", b, err)
	}
	return f
}

func write(t *testing.T, conn *websocket.Conn, s string) {
	t.Helper()
	conn.SetWriteDeadline(time.Now().Add(ioWait))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func wantHello(t *testing.T, conn *websocket.Conn, id uuid.UUID) {
	t.Helper()
	f := read(t, conn)
	var d struct {
		UserID uuid.UUID `json:"user_id"`
	}
	if f.Type != TypeHello || json.Unmarshal(f.Data, &d) != nil || d.UserID != id {
		t.Fatalf("first frame %+v (data %s), want hello for %s", f, f.Data, id)
	}
}

// wantClose reads (discarding data frames) until the server's close frame, and checks its code.
func wantClose(t *testing.T, conn *websocket.Conn, code int) (frames int) {
	t.Helper()
	for {
		conn.SetReadDeadline(time.Now().Add(ioWait))
		_, _, err := conn.ReadMessage()
		if err == nil {
			frames++
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v after %d frames, want close %d", err, frames, code)
		}
		if ce.Code != code {
			t.Fatalf("closed with %d %q, want %d", ce.Code, ce.Text, code)
		}
		return frames
	}
}

// wantRefused checks a refused handshake's problem.
func wantRefused(t *testing.T, resp *http.Response, err error, status int, slug string) {
	t.Helper()
	if err == nil {
		t.Fatalf("handshake succeeded, want %d", status)
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("Content-Type %q, want problem+json", ct)
	}
	var p Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Type != problem.TypeBase+slug || p.Status != status {
		t.Fatalf("problem %+v, want %s", p, slug)
	}
}

// recvWithin receives from c, failing the test if nothing comes within ioWait.
func recvWithin[T any](t testing.TB, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(ioWait):
		t.Fatalf("no %s within %s", what, ioWait)
		var zero T
		return zero
	}
}
