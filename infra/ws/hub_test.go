package ws

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"taki/commands"
	"taki/infra/auth"
	"taki/infra/http/problem"
	"taki/infra/logging"
	"taki/infra/logging/logtest"
)

func TestTokenGetsHello(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id, tok := e.token()
	// Any Origin, or none, is fine with a token: it is not an ambient credential.
	for _, origin := range []string{"", testOrigin, "https://evil.test"} {
		var header []string
		if origin != "" {
			header = []string{"Origin", origin}
		}
		conn, resp, err := e.dial("token="+url.QueryEscape(tok), header...)
		if err != nil {
			t.Fatalf("origin %q: %v (%s)", origin, err, status(resp))
		}
		wantHello(t, conn, id)
	}
}

func TestCookieFromAllowedOriginGetsHello(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id, cookie := e.cookie()
	// Origins compare as browsers serialize them: case and a trailing slash do not matter.
	for _, origin := range []string{testOrigin, "HTTP://App.Test", testOrigin + "/"} {
		conn, resp, err := e.dial("", "Cookie", auth.CookieName+"="+cookie, "Origin", origin)
		if err != nil {
			t.Fatalf("origin %q: %v (%s)", origin, err, status(resp))
		}
		wantHello(t, conn, id)
	}
}

func TestRefusedHandshakes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, cookie := e.cookie()
	_, tok := e.token()
	expired, err := auth.NewWSTokens([]byte(testSecret), func() time.Time { return time.Now().Add(-time.Hour) }, 0)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := expired.Issue(uuid.New(), uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.NewWSTokens([]byte(strings.Repeat("x", 40)), time.Now, 0)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := other.Issue(uuid.New(), uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	withCookie := "Cookie"
	sess := auth.CookieName + "=" + cookie
	cases := []struct {
		name   string
		query  string
		header []string
		status int
		slug   string
	}{
		{"cookie from another origin", "", []string{withCookie, sess, "Origin", "https://evil.test"}, 403, "forbidden"},
		{"cookie from a prefix of an allowed origin", "", []string{withCookie, sess, "Origin", "http://app.test.evil.test"}, 403, "forbidden"},
		{"cookie from the null origin", "", []string{withCookie, sess, "Origin", "null"}, 403, "forbidden"},
		{"cookie with two origins", "", []string{withCookie, sess, "Origin", testOrigin, "Origin", "https://evil.test"}, 403, "forbidden"},
		{"cookie without origin", "", []string{withCookie, sess}, 403, "forbidden"},
		{"nothing", "", nil, 401, "unauthenticated"},
		{"nothing from an allowed origin", "", []string{"Origin", testOrigin}, 401, "unauthenticated"},
		{"nothing from another origin", "", []string{"Origin", "https://evil.test"}, 403, "forbidden"},
		{"unknown cookie", "", []string{withCookie, auth.CookieName + "=nope", "Origin", testOrigin}, 401, "unauthenticated"},
		{"empty token", "token=", nil, 401, "unauthenticated"},
		{"garbage token", "token=abc.def.ghi", nil, 401, "unauthenticated"},
		{"expired token", "token=" + old, nil, 401, "unauthenticated"},
		{"token signed with another key", "token=" + forged, nil, 401, "unauthenticated"},
		{"two tokens", "token=" + tok + "&token=" + tok, nil, 401, "unauthenticated"},
		// A bad token is not rescued by a good cookie: the client asked to be known by the token.
		{"bad token with a good cookie", "token=x", []string{withCookie, sess, "Origin", testOrigin}, 401, "unauthenticated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, resp, err := e.dial(tc.query, tc.header...)
			if conn != nil {
				t.Fatal("handshake succeeded")
			}
			wantRefused(t, resp, err, tc.status, tc.slug)
		})
	}
	if n := e.hub.Sockets(); n != 0 {
		t.Fatalf("%d sockets after refused handshakes", n)
	}
}

// A plain GET (no Upgrade) with good credentials gets a problem, not gorilla's text answer.
func TestNotAWebSocketRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, tok := e.token()
	resp, err := http.Get(e.srv.URL + "/ws?token=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, resp, errors.New("not upgraded"), http.StatusBadRequest, problem.SlugBadRequest)
}

func TestPingPong(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, conn := e.dialToken()
	write(t, conn, `{"type":"ping"}`)
	if f := read(t, conn); f.Type != TypePong {
		t.Fatalf("got %+v, want pong", f)
	}
	// Extra fields are a newer client's business, not an error.
	write(t, conn, `{"type":"ping","sent_at":"2026-01-01T00:00:00Z","x":{"y":[1,2]}}`)
	if f := read(t, conn); f.Type != TypePong {
		t.Fatalf("got %+v, want pong", f)
	}
}

func TestBadFramesGetErrorFramesAndTheSocketStaysOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, conn := e.dialToken()
	cases := []struct {
		frame  string
		status int
		slug   string
		msgID  string
	}{
		{`not json`, 400, "bad-request", ""},
		{`[1,2]`, 400, "bad-request", ""},
		{`{"type":"ping"} {"type":"ping"}`, 400, "bad-request", ""},
		{`{"type":"ping","type":"message.send"}`, 400, "bad-request", ""},
		{`{"type":"ping","TYPE":"x"}`, 400, "bad-request", ""},
		{`{}`, 422, "validation", ""},
		{`{"type":7,"client_msg_id":"m1"}`, 422, "validation", "m1"},
		{`{"type":"Ping"}`, 422, "validation", ""},
		{`{"type":"no.such.type","client_msg_id":"m2"}`, 422, "validation", "m2"},
	}
	for _, tc := range cases {
		write(t, conn, tc.frame)
		f := read(t, conn)
		if f.Type != TypeError || f.Problem == nil {
			t.Fatalf("%s: got %+v, want an error frame", tc.frame, f)
		}
		if f.Problem.Status != tc.status || f.Problem.Type != problem.TypeBase+tc.slug || f.Problem.Title == "" {
			t.Errorf("%s: problem %+v, want %d %s", tc.frame, *f.Problem, tc.status, tc.slug)
		}
		if f.ClientMsgID != tc.msgID {
			t.Errorf("%s: client_msg_id %q, want %q", tc.frame, f.ClientMsgID, tc.msgID)
		}
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if f := read(t, conn); f.Type != TypeError || f.Problem.Status != 400 {
		t.Fatalf("binary frame: got %+v, want a 400 error frame", f)
	}
	write(t, conn, `{"type":"ping"}`)
	if f := read(t, conn); f.Type != TypePong {
		t.Fatalf("after the bad frames got %+v, want pong", f)
	}
}

func TestHandlersGetTheirFramesAndTheirErrorsAnswer(t *testing.T) {
	t.Parallel()
	type echo struct {
		Text string `json:"text"`
	}
	e := newEnv(t, func(c *Config) {
		c.Handlers = map[string]FrameHandler{
			"test.echo": func(ctx context.Context, c *Client, f ClientFrame) error {
				var in echo
				if err := f.DecodeFields(&in); err != nil {
					return err
				}
				return c.SendFrame(ServerFrame{Type: "test.echoed", ClientMsgID: f.ClientMsgID,
					Data: map[string]string{"text": in.Text, "user_id": c.UserID().String()}})
			},
			"test.missing": func(context.Context, *Client, ClientFrame) error { return commands.NotFound("chat") },
			"test.broken":  func(context.Context, *Client, ClientFrame) error { return errors.New("SQLSTATE 42P01 secret") },
			"test.panic":   func(context.Context, *Client, ClientFrame) error { panic("boom") },
		}
	})
	id, conn := e.dialToken()

	write(t, conn, `{"type":"test.echo","client_msg_id":"c1","text":"hi"}`)
	f := read(t, conn)
	var d map[string]string
	if f.Type != "test.echoed" || f.ClientMsgID != "c1" || json.Unmarshal(f.Data, &d) != nil ||
		d["text"] != "hi" || d["user_id"] != id.String() {
		t.Fatalf("echo: got %+v %s", f, f.Data)
	}
	write(t, conn, `{"type":"test.echo","text":5}`)
	if f := read(t, conn); f.Type != TypeError || f.Problem.Status != 400 {
		t.Fatalf("bad field: got %+v", f)
	}
	write(t, conn, `{"type":"test.missing","client_msg_id":"c2"}`)
	if f := read(t, conn); f.Type != TypeError || f.ClientMsgID != "c2" || f.Problem.Status != 404 ||
		f.Problem.Type != problem.TypeBase+"not-found" {
		t.Fatalf("not found: got %+v", f)
	}
	for _, typ := range []string{"test.broken", "test.panic"} {
		write(t, conn, `{"type":"`+typ+`","client_msg_id":"c3"}`)
		f := read(t, conn)
		if f.Type != TypeError || f.ClientMsgID != "c3" || f.Problem.Status != 500 ||
			f.Problem.Detail != problem.InternalDetail {
			t.Fatalf("%s: got %+v", typ, f)
		}
	}
	write(t, conn, `{"type":"ping"}`)
	if f := read(t, conn); f.Type != TypePong {
		t.Fatalf("after a panic got %+v, want pong: the socket must survive", f)
	}
}

func TestFrameSizeLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, conn := e.dialToken()
	// Exactly 64 KiB is allowed.
	prefix := `{"type":"ping","pad":"`
	pad := strings.Repeat("a", MaxFrameBytes-len(prefix)-2)
	exact := prefix + pad + `"}`
	if len(exact) != MaxFrameBytes {
		t.Fatalf("built %d bytes", len(exact))
	}
	write(t, conn, exact)
	if f := read(t, conn); f.Type != TypePong {
		t.Fatalf("64 KiB frame: got %+v, want pong", f)
	}
	write(t, conn, prefix+pad+strings.Repeat("a", 1024)+`"}`)
	wantClose(t, conn, websocket.CloseMessageTooBig)
	e.waitSockets(0)
}

func TestSendToUsersReachesEverySocketOfThoseUsersOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice, tok := e.token()
	a1 := e.dialAs(alice, tok)
	a2 := e.dialAs(alice, tok)
	bob, bobConn := e.dialToken()
	e.waitSockets(3)

	if n := e.hub.SendToUsers([]uuid.UUID{alice, alice, uuid.New()}, []byte(`{"type":"test.one"}`)); n != 2 {
		t.Fatalf("queued on %d sockets, want 2", n)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		if f := read(t, c); f.Type != "test.one" {
			t.Fatalf("alice got %+v, want test.one once", f)
		}
	}
	// Frames reach a socket in the order they were sent: had bob got test.one, it would come first.
	e.hub.SendToUsers([]uuid.UUID{bob}, []byte(`{"type":"test.two"}`))
	if f := read(t, bobConn); f.Type != "test.two" {
		t.Fatalf("bob got %+v, want test.two and nothing before it", f)
	}
	// And a user listed twice gets it once: alice's next frame is test.three, not a second test.one.
	e.hub.SendToUsers([]uuid.UUID{alice}, []byte(`{"type":"test.three"}`))
	for _, c := range []*websocket.Conn{a1, a2} {
		if f := read(t, c); f.Type != "test.three" {
			t.Fatalf("alice got %+v, want test.three", f)
		}
	}
	// Large member lists take the map path of the duplicate check.
	many := []uuid.UUID{bob}
	for range 20 {
		many = append(many, uuid.New(), bob)
	}
	if n := e.hub.SendToUsers(many, []byte(`{"type":"test.four"}`)); n != 1 {
		t.Fatalf("queued on %d sockets, want 1", n)
	}
	if f := read(t, bobConn); f.Type != "test.four" {
		t.Fatalf("bob got %+v, want test.four", f)
	}
	if got := value(t, e.hub.metrics.sockets); got != 3 {
		t.Fatalf("taki_ws_sockets %v, want 3", got)
	}
}

func TestIndexEmptiesWhenSocketsClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice, tok := e.token()
	conns := []*websocket.Conn{e.dialAs(alice, tok), e.dialAs(alice, tok)}
	_, bob := e.dialToken()
	conns = append(conns, bob)
	e.waitSockets(3)
	for i, c := range conns {
		// A polite close for some, a dropped connection for the others.
		if i%2 == 0 {
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
				time.Now().Add(ioWait))
		} else {
			c.Close()
		}
	}
	e.waitSockets(0)
	e.hub.mu.RLock()
	users := len(e.hub.users)
	e.hub.mu.RUnlock()
	if users != 0 {
		t.Fatalf("index holds %d users after every socket closed", users)
	}
	if got := value(t, e.hub.metrics.sockets); got != 0 {
		t.Fatalf("taki_ws_sockets %v, want 0", got)
	}
	if n := e.hub.SendToUsers([]uuid.UUID{alice}, []byte(`{"type":"x"}`)); n != 0 {
		t.Fatalf("queued on %d sockets of a user with none", n)
	}
}

// A client that stops reading while frames keep coming is closed once with 1013, after the frames
// already queued, and never silently loses one in between; other sockets are unaffected.
func TestSlowConsumerIsClosedOnce(t *testing.T) {
	t.Parallel()
	const buffer = 8
	e := newEnv(t, func(c *Config) { c.SendBuffer = buffer })
	slow, conn := e.dialToken()
	_, other := e.dialToken()

	// Seven of these are more than the kernel buffers of both ends hold. The client reads nothing:
	// the kernel's socket buffers fill, the writer blocks, then the queue fills. Every send before
	// the close is queued; the first that finds no room closes.
	frame := []byte(`{"type":"test.big","data":"` + strings.Repeat("x", 4<<20) + `"}`)
	sent := 0
	for i := 0; i < 10000 && value(t, e.hub.metrics.slowCloses) == 0; i++ {
		if e.hub.SendToUsers([]uuid.UUID{slow}, frame) == 1 {
			sent++
		}
	}
	if got := value(t, e.hub.metrics.slowCloses); got != 1 {
		t.Fatalf("taki_ws_slow_closes_total %v, want 1", got)
	}
	// Further frames are refused at once (counted while the socket is still indexed), and do not
	// close it again.
	for range 5 {
		if n := e.hub.SendToUsers([]uuid.UUID{slow}, frame); n != 0 {
			t.Fatal("a frame was queued on a socket being closed")
		}
	}
	if got := value(t, e.hub.metrics.slowCloses); got != 1 {
		t.Fatalf("taki_ws_slow_closes_total %v after more sends, want 1", got)
	}
	if got := value(t, e.hub.metrics.dropped); got < 1 || got > 6 {
		t.Fatalf("taki_ws_dropped_total %v, want 1 to 6", got)
	}
	// The client, reading again, gets every frame that was queued and then 1013.
	t.Logf("%d frames of %d KiB queued before the close", sent, len(frame)>>10)
	if got := wantClose(t, conn, CloseSlowConsumer); got != sent {
		t.Fatalf("received %d frames before the close, %d were queued", got, sent)
	}
	e.waitSockets(1)
	// The server is fine, and so is the other socket.
	write(t, other, `{"type":"ping"}`)
	if f := read(t, other); f.Type != TypePong {
		t.Fatalf("other socket got %+v", f)
	}
	_, again := e.dialToken()
	write(t, again, `{"type":"ping"}`)
	if f := read(t, again); f.Type != TypePong {
		t.Fatalf("new socket got %+v", f)
	}
}

// A client that never reads again cannot even be sent its close frame: the blocked write gives up
// after WriteWait and the socket is torn down, freeing its slot in the index.
func TestStalledSocketIsCutOffAfterWriteWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.SendBuffer = 4
		c.WriteWait = 200 * time.Millisecond
	})
	stalled, _ := e.dialToken()
	// Bigger than the kernel buffers of both ends together, so the first write blocks.
	frame := []byte(`{"type":"test.big","data":"` + strings.Repeat("x", 16<<20) + `"}`)
	for i := 0; i < 10000 && value(t, e.hub.metrics.slowCloses) == 0; i++ {
		e.hub.SendToUsers([]uuid.UUID{stalled}, frame)
	}
	if got := value(t, e.hub.metrics.slowCloses); got != 1 {
		t.Fatalf("taki_ws_slow_closes_total %v, want 1", got)
	}
	e.waitSockets(0)
}

func TestPingsKeepSocketsAliveAndSilentPeersAreDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.PingPeriod = 50 * time.Millisecond
		c.PongWait = 500 * time.Millisecond
	})
	live, conn := e.dialToken()
	pinged := make(chan struct{}, 1)
	conn.SetPingHandler(func(data string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(ioWait))
	})
	// Reading answers pings; the socket outlives pong waits: 15 pings take 750 ms.
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for range 15 {
		select {
		case <-pinged:
		case <-time.After(ioWait):
			t.Fatal("no ping")
		}
	}
	// A peer that never reads never answers a ping: it is dropped after PongWait, the other stays.
	e.dialToken()
	e.waitSockets(2)
	e.waitSockets(1)
	e.hub.mu.RLock()
	n := len(e.hub.users[live])
	e.hub.mu.RUnlock()
	if n != 1 {
		t.Fatal("the socket that answers pings was dropped")
	}
}

func TestCloseSaysGoingAwayAndRefusesNewSockets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, a := e.dialToken()
	_, b := e.dialToken()
	ctx, cancel := context.WithTimeout(context.Background(), ioWait)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- e.hub.Close(ctx) }()
	for _, c := range []*websocket.Conn{a, b} {
		wantClose(t, c, websocket.CloseGoingAway)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if n := e.hub.Sockets(); n != 0 {
		t.Fatalf("%d sockets after Close", n)
	}
	_, tok := e.token()
	conn, resp, err := e.dial("token=" + url.QueryEscape(tok))
	if conn != nil {
		t.Fatal("a socket opened after Close")
	}
	wantRefused(t, resp, err, http.StatusServiceUnavailable, "unavailable")
	if err := e.hub.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// melody would keep the upgraded request, token and all, for the socket's life: the hub lets it go
// once the socket is registered.
func TestTokenIsNotKeptWithTheSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id, tok := e.token()
	conn, resp, err := e.dial("since=12.3&token=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, status(resp))
	}
	wantHello(t, conn, id)
	e.hub.mu.RLock()
	defer e.hub.mu.RUnlock()
	if len(e.hub.users[id]) != 1 {
		t.Fatalf("%d sockets of the user, want 1", len(e.hub.users[id]))
	}
	for s, c := range e.hub.users[id] {
		if s.Request != nil {
			t.Fatalf("the socket keeps its handshake request %q", s.Request.RequestURI)
		}
		if c.since == nil || c.since.String() != "12.3" {
			t.Fatalf("the socket lost ?since=: %v", c.since)
		}
	}
}

func TestTokensStayOutOfLogs(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	logger := logging.New(logs, "json", slog.LevelDebug)
	e := newEnv(t, func(c *Config) { c.Logger = logger })
	_, tok := e.token()
	conn, _, err := e.dial("token=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatal(err)
	}
	write(t, conn, `{"type":"nope"}`)
	read(t, conn)
	read(t, conn)
	_, _, _ = e.dial("token=" + url.QueryEscape(tok) + "x")
	conn.Close()
	e.waitSockets(0)
	if strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), strings.Split(tok, ".")[2]) {
		t.Fatalf("a token reached the logs:\n%s", logs.String())
	}
}

func TestNewHubRefusesBadConfig(t *testing.T) {
	t.Parallel()
	tokens, _ := auth.NewWSTokens([]byte(testSecret), time.Now, 0)
	good := func() Config {
		return Config{Tokens: tokens, Sessions: newTestSessions(), Logger: logging.Discard(),
			Registry: prometheus.NewRegistry(), WriteError: writeProblem, BadRequest: writeBadRequest}
	}
	noop := func(context.Context, *Client, ClientFrame) error { return nil }
	cases := map[string]func(*Config){
		"no tokens":        func(c *Config) { c.Tokens = nil },
		"no sessions":      func(c *Config) { c.Sessions = nil },
		"no logger":        func(c *Config) { c.Logger = nil },
		"no registry":      func(c *Config) { c.Registry = nil },
		"no error writer":  func(c *Config) { c.WriteError = nil },
		"no bad request":   func(c *Config) { c.BadRequest = nil },
		"bad origin":       func(c *Config) { c.AllowedOrigins = []string{"app.test"} },
		"origin with path": func(c *Config) { c.AllowedOrigins = []string{"https://app.test/x"} },
		"pong before ping": func(c *Config) { c.PingPeriod, c.PongWait = time.Second, time.Second },
		"tiny buffer":      func(c *Config) { c.SendBuffer = 1 },
		"nil handler":      func(c *Config) { c.Handlers = map[string]FrameHandler{"x": nil} },
		"bad frame type":   func(c *Config) { c.Handlers = map[string]FrameHandler{"X Y": noop} },
		"builtin type":     func(c *Config) { c.Handlers = map[string]FrameHandler{TypePing: noop} },
		"negative checks":  func(c *Config) { c.SessionCheckInterval = -time.Second },
	}
	for name, edit := range cases {
		cfg := good()
		edit(&cfg)
		if h, err := NewHub(cfg); err == nil {
			h.Close(context.Background())
			t.Errorf("%s: NewHub accepted it", name)
		}
	}
	h, err := NewHub(good())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects log lines written from the hub's goroutines.
type logBuffer = logtest.Buffer

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// A handshake that passed the closed check when Close begins is waited for, registered and then
// closed with 1001; one that comes after gets 503; Close returns once all are gone.
func TestCloseDuringHandshakes(t *testing.T) {
	t.Parallel()
	const inFlight = 5
	arrived := make(chan struct{}, inFlight)
	release := make(chan struct{})
	e := newEnv(t, nil, func(h *Hub) {
		// gorilla calls CheckOrigin inside the upgrade, after the closed check and before melody
		// registers the socket: holding handshakes there puts them exactly in the window Close
		// must wait for.
		check := h.m.Upgrader.CheckOrigin
		h.m.Upgrader.CheckOrigin = func(r *http.Request) bool {
			if r.URL.Query().Has("held") {
				arrived <- struct{}{}
				<-release
			}
			return check(r)
		}
	})
	type result struct {
		id   uuid.UUID
		conn *websocket.Conn
		err  error
	}
	results := make(chan result, inFlight)
	for range inFlight {
		id, tok := e.token()
		go func() {
			conn, resp, err := e.dial("held=1&token=" + url.QueryEscape(tok))
			if err != nil {
				err = errors.New(status(resp) + ": " + err.Error())
			}
			results <- result{id, conn, err}
		}()
	}
	for range inFlight {
		recvWithin(t, arrived, "frame in flight")
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioWait)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- e.hub.Close(ctx) }()
	// Close has begun once new handshakes are refused; it then waits for the ones held.
	for {
		_, tok := e.token()
		conn, resp, err := e.dial("token=" + url.QueryEscape(tok))
		if conn != nil {
			conn.Close() // opened before Close began
			continue
		}
		wantRefused(t, resp, err, http.StatusServiceUnavailable, "unavailable")
		break
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while handshakes were in flight", err)
	default:
	}
	close(release)
	for range inFlight {
		var r result
		select {
		case r = <-results:
		case <-time.After(ioWait):
			t.Fatal("a held handshake never finished")
		}
		if r.err != nil {
			t.Fatalf("held handshake: %v", r.err)
		}
		wantHello(t, r.conn, r.id)
		wantClose(t, r.conn, websocket.CloseGoingAway)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if s := e.hub.Sockets(); s != 0 {
		t.Fatalf("%d sockets after Close", s)
	}
}

// Sending while sockets come and go (run with -race) neither races nor leaves anything indexed, and
// every socket still gets its hello first.
func TestConcurrentSendsConnectsAndCloses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	users := make([]uuid.UUID, 5)
	tokens := make([]string, 5)
	for i := range users {
		users[i], tokens[i] = e.token()
	}
	stop := make(chan struct{})
	senders := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { senders <- struct{}{} }()
			// Paced, so that the senders load the hub without starving the sockets' goroutines.
			tick := time.NewTicker(100 * time.Microsecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					e.hub.SendToUsers(users, []byte(`{"type":"test.tick"}`))
				}
			}
		}()
	}
	for round := range 10 {
		var conns []*websocket.Conn
		for i, id := range users {
			conns = append(conns, e.dialAs(id, tokens[i]))
		}
		for i, c := range conns {
			if (i+round)%2 == 0 {
				c.Close()
			} else {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
					time.Now().Add(ioWait))
			}
		}
	}
	close(stop)
	for range 4 {
		recvWithin(t, senders, "end of a sender")
	}
	e.waitSockets(0)
	e.hub.mu.RLock()
	defer e.hub.mu.RUnlock()
	if len(e.hub.users) != 0 {
		t.Fatalf("index holds %d users", len(e.hub.users))
	}
}
