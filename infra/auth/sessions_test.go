package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/commands"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

// sessionEnv is a real gin engine with the Manager's middleware and a route per Manager method, served
// in-process, on a real database.
type sessionEnv struct {
	t     *testing.T
	pool  *pgxpool.Pool
	clock *testClock
	m     *Manager
	h     http.Handler
}

func newSessionEnv(t *testing.T, cfg SessionConfig) *sessionEnv {
	t.Helper()
	pool := pgtest.NewPool(t, dbURL)
	clock := newTestClock()
	cfg.Now = clock.Now
	m, err := NewManager(pool, cfg)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return &sessionEnv{t: t, pool: pool, clock: clock, m: m, h: sessionRoutes(m)}
}

func sessionRoutes(m *Manager) *gin.Engine {
	r := gin.New()
	r.Use(m.Middleware())
	r.GET("/public", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	r.POST("/login", func(c *gin.Context) {
		credentialsAt, _ := strconv.ParseInt(c.DefaultQuery("credentials_at", "0"), 10, 64)
		s, err := m.Start(c, uuid.MustParse(c.Query("user")), c.DefaultQuery("role", "member"), credentialsAt)
		if commands.IsKind(err, commands.KindUnauthenticated) {
			c.Status(http.StatusUnauthorized)
			return
		}
		if err != nil {
			c.String(http.StatusInternalServerError, err.Error())
			return
		}
		c.JSON(http.StatusOK, s)
	})
	r.GET("/me", func(c *gin.Context) {
		s, ok := m.Current(c)
		if !ok {
			c.Status(http.StatusUnauthorized)
			return
		}
		c.JSON(http.StatusOK, s)
	})
	r.POST("/unsafe", func(c *gin.Context) {
		s, ok := m.Current(c)
		if !ok {
			c.Status(http.StatusUnauthorized)
			return
		}
		if !m.CheckCSRF(s, c.GetHeader("X-CSRF-Token")) {
			c.Status(http.StatusForbidden)
			return
		}
		c.Status(http.StatusNoContent)
	})
	r.POST("/rotate", func(c *gin.Context) {
		s, err := m.Rotate(c)
		if commands.IsKind(err, commands.KindUnauthenticated) {
			c.Status(http.StatusUnauthorized)
			return
		}
		if err != nil {
			c.String(http.StatusInternalServerError, err.Error())
			return
		}
		c.JSON(http.StatusOK, s)
	})
	r.POST("/logout", func(c *gin.Context) {
		if err := m.Destroy(c); err != nil {
			c.String(http.StatusInternalServerError, err.Error())
			return
		}
		c.Status(http.StatusNoContent)
	})
	r.GET("/sessions", func(c *gin.Context) {
		s, ok := m.Current(c)
		if !ok {
			c.Status(http.StatusUnauthorized)
			return
		}
		items, err := m.List(c, s.UserID, s.PublicID)
		if err != nil {
			c.String(http.StatusInternalServerError, err.Error())
			return
		}
		c.JSON(http.StatusOK, gin.H{"items": items})
	})
	r.DELETE("/sessions/:id", func(c *gin.Context) {
		s, ok := m.Current(c)
		if !ok {
			c.Status(http.StatusUnauthorized)
			return
		}
		id, err := uuid.Parse(c.Param("id"))
		if err != nil {
			c.Status(http.StatusNotFound)
			return
		}
		err = m.Revoke(c, s.UserID, id)
		switch {
		case commands.IsKind(err, commands.KindNotFound):
			c.Status(http.StatusNotFound)
		case err != nil:
			c.String(http.StatusInternalServerError, err.Error())
		default:
			c.Status(http.StatusNoContent)
		}
	})
	return r
}

// browser keeps one cookie, like a browser would for our one cookie name.
type browser struct {
	env    *sessionEnv
	cookie *http.Cookie
	ua     string
	ip     string
}

func (e *sessionEnv) browser() *browser {
	return &browser{env: e, ua: "test-agent/1.0", ip: "198.51.100.7"}
}

func (b *browser) do(method, path string, header http.Header) *httptest.ResponseRecorder {
	b.env.t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.RemoteAddr = net.JoinHostPort(b.ip, "40000")
	req.Header.Set("User-Agent", b.ua)
	for k, v := range header {
		req.Header[k] = v
	}
	if b.cookie != nil {
		req.AddCookie(&http.Cookie{Name: b.cookie.Name, Value: b.cookie.Value})
	}
	rec := httptest.NewRecorder()
	b.env.h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		b.env.t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body.String())
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name != CookieName {
			continue
		}
		if c.MaxAge < 0 {
			b.cookie = nil
		} else {
			b.cookie = c
		}
	}
	return rec
}

func (b *browser) login(user uuid.UUID) Session {
	b.env.t.Helper()
	rec := b.do(http.MethodPost, "/login?user="+user.String(), nil)
	if rec.Code != http.StatusOK {
		b.env.t.Fatalf("login: %d %s", rec.Code, rec.Body.String())
	}
	var s Session
	if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
		b.env.t.Fatalf("login body: %v", err)
	}
	return s
}

// me returns the session the server sees for the browser's cookie, if any.
func (b *browser) me() (Session, bool) {
	b.env.t.Helper()
	rec := b.do(http.MethodGet, "/me", nil)
	switch rec.Code {
	case http.StatusOK:
		var s Session
		if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
			b.env.t.Fatalf("me body: %v", err)
		}
		return s, true
	case http.StatusUnauthorized:
		return Session{}, false
	}
	b.env.t.Fatalf("me: %d", rec.Code)
	return Session{}, false
}

// withCookie returns a browser presenting value, e.g. a stolen or planted cookie.
func (e *sessionEnv) withCookie(value string) *browser {
	b := e.browser()
	b.cookie = &http.Cookie{Name: CookieName, Value: value}
	return b
}

func (e *sessionEnv) rowsForPublicID(id uuid.UUID) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE public_id = $1`, id).Scan(&n); err != nil {
		e.t.Fatalf("count sessions: %v", err)
	}
	return n
}

func hashOf(t *testing.T, cookieValue string) []byte {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(cookieValue)
	if err != nil {
		t.Fatalf("cookie value is not base64url: %v", err)
	}
	sum := sha256.Sum256(raw)
	return sum[:]
}

func (e *sessionEnv) rowsForCookie(value string) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE token_hash = $1`, hashOf(e.t, value)).Scan(&n); err != nil {
		e.t.Fatalf("count sessions: %v", err)
	}
	return n
}

func TestSessionCookieFlags(t *testing.T) {
	for _, secure := range []bool{false, true} {
		env := newSessionEnv(t, SessionConfig{CookieSecure: secure})
		rec := env.browser().do(http.MethodPost, "/login?user="+uuid.NewString(), nil)
		headers := rec.Header().Values("Set-Cookie")
		if len(headers) != 1 {
			t.Fatalf("Set-Cookie headers %q, want one", headers)
		}
		h := headers[0]
		name, rest, _ := strings.Cut(h, "=")
		value, attrs, _ := strings.Cut(rest, ";")
		if name != "taki_session" {
			t.Errorf("cookie name %q", name)
		}
		if raw, err := base64.RawURLEncoding.Strict().DecodeString(value); err != nil || len(raw) != 32 {
			t.Errorf("cookie value %d chars: want 32 random bytes in base64url (%v)", len(value), err)
		}
		for _, want := range []string{"Path=/", "HttpOnly", "SameSite=Lax"} {
			if !strings.Contains(attrs, want) {
				t.Errorf("secure=%v: %q lacks %s", secure, h, want)
			}
		}
		// No Domain: the cookie goes back to this host only, not to sibling subdomains. No expiry:
		// the server ends sessions, and a closed browser forgets the cookie.
		for _, unwanted := range []string{"Domain", "Max-Age", "Expires"} {
			if strings.Contains(attrs, unwanted) {
				t.Errorf("secure=%v: %q has %s", secure, h, unwanted)
			}
		}
		if got := strings.Contains(attrs, "Secure"); got != secure {
			t.Errorf("secure=%v: Secure attribute present = %v in %q", secure, got, h)
		}
	}
}

func TestStartIssuesFreshIDAndDestroysTheOld(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})

	t.Run("planted cookie", func(t *testing.T) {
		// An attacker plants a well-formed id in the victim's browser before the victim logs in.
		planted := randomToken()
		victim := env.withCookie(planted)
		s := victim.login(uuid.New())
		if victim.cookie == nil || victim.cookie.Value == planted {
			t.Fatal("login kept the planted session id")
		}
		if _, ok := env.withCookie(planted).me(); ok {
			t.Fatal("the planted id authenticates after the victim's login")
		}
		if got, ok := victim.me(); !ok || got.PublicID != s.PublicID {
			t.Fatalf("the victim's new cookie does not authenticate: %+v %v", got, ok)
		}
	})

	t.Run("authenticated cookie", func(t *testing.T) {
		b := env.browser()
		first := b.login(uuid.New())
		oldCookie := b.cookie.Value
		secondUser := uuid.New()
		second := b.login(secondUser)
		if b.cookie.Value == oldCookie {
			t.Fatal("second login kept the session id")
		}
		if second.PublicID == first.PublicID || second.CSRFToken == first.CSRFToken {
			t.Fatal("second login kept the public id or the CSRF token")
		}
		if _, ok := env.withCookie(oldCookie).me(); ok {
			t.Fatal("the pre-login cookie still authenticates")
		}
		if n := env.rowsForPublicID(first.PublicID); n != 0 {
			t.Fatalf("the old session still has %d rows", n)
		}
		if got, ok := b.me(); !ok || got.UserID != secondUser || got.PublicID != second.PublicID {
			t.Fatalf("me = %+v, %v; want the second user's session", got, ok)
		}
	})
}

func TestDatabaseNeverHoldsTheRawID(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	s := b.login(uuid.New())
	value := b.cookie.Value
	raw, _ := base64.RawURLEncoding.DecodeString(value)
	var row string
	var hash []byte
	if err := env.pool.QueryRow(context.Background(),
		`SELECT s::text, token_hash FROM sessions s WHERE public_id = $1`, s.PublicID).Scan(&row, &hash); err != nil {
		t.Fatalf("read row: %v", err)
	}
	for _, form := range []string{value, hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw)} {
		if strings.Contains(row, form) {
			t.Fatalf("the sessions row holds the raw id: %s", row)
		}
	}
	if want := hashOf(t, value); string(hash) != string(want) {
		t.Fatal("token_hash is not the SHA-256 of the id")
	}
	if !strings.Contains(row, s.CSRFToken) {
		t.Fatal("the CSRF token is not stored, yet GET /sessions/current must return it")
	}
}

func TestIdleExpiry(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	s := b.login(uuid.New())
	if want := env.clock.Now().Add(30 * time.Minute); !s.ExpiresAt.Equal(want) {
		t.Fatalf("ExpiresAt %s, want %s", s.ExpiresAt, want)
	}
	// Use slides the idle expiry: 29 + 29 minutes is longer than the idle timeout.
	for range 2 {
		env.clock.Advance(29 * time.Minute)
		got, ok := b.me()
		if !ok {
			t.Fatal("an active session expired")
		}
		if want := env.clock.Now().Add(30 * time.Minute); !got.ExpiresAt.Equal(want) {
			t.Fatalf("ExpiresAt %s, want %s", got.ExpiresAt, want)
		}
	}
	env.clock.Advance(30 * time.Minute)
	if _, ok := b.me(); ok {
		t.Fatal("a session idle for 30 minutes still authenticates")
	}
	if n := env.rowsForPublicID(s.PublicID); n != 0 {
		t.Fatal("the expired session was not deleted")
	}
}

func TestAbsoluteExpiry(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	s := b.login(uuid.New())
	absolute := s.CreatedAt.Add(8 * time.Hour)
	for env.clock.Now().Add(25 * time.Minute).Before(absolute) {
		env.clock.Advance(25 * time.Minute)
		got, ok := b.me()
		if !ok {
			t.Fatalf("an active session expired %s after login", env.clock.Now().Sub(s.CreatedAt))
		}
		want := env.clock.Now().Add(30 * time.Minute)
		if want.After(absolute) {
			want = absolute
		}
		if !got.ExpiresAt.Equal(want) {
			t.Fatalf("%s after login: ExpiresAt %s, want %s", env.clock.Now().Sub(s.CreatedAt), got.ExpiresAt, want)
		}
	}
	env.clock.Advance(absolute.Sub(env.clock.Now()))
	if _, ok := b.me(); ok {
		t.Fatal("a session 8 hours old still authenticates")
	}
	if n := env.rowsForPublicID(s.PublicID); n != 0 {
		t.Fatal("the expired session was not deleted")
	}
}

// The shortest idle timeout the configuration accepts (TAKI_SESSION_IDLE=1m) works: a session used
// every 40 s lives on, one left alone for a minute ends.
func TestShortestIdleTimeout(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{IdleTimeout: time.Minute})
	b := env.browser()
	b.login(uuid.New())
	for range 3 {
		env.clock.Advance(40 * time.Second)
		if _, ok := b.me(); !ok {
			t.Fatal("a session used every 40 s ended with a 1 min idle timeout")
		}
	}
	env.clock.Advance(time.Minute)
	if _, ok := b.me(); ok {
		t.Fatal("alive a minute after its last use")
	}
}

func TestConfiguredTimeouts(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{IdleTimeout: 5 * time.Minute, AbsoluteTimeout: 12 * time.Minute})
	b := env.browser()
	b.login(uuid.New())
	env.clock.Advance(4 * time.Minute)
	if _, ok := b.me(); !ok {
		t.Fatal("expired before the configured idle timeout")
	}
	env.clock.Advance(5 * time.Minute)
	if _, ok := b.me(); ok {
		t.Fatal("alive after the configured idle timeout")
	}
	b.login(uuid.New())
	for range 3 {
		env.clock.Advance(4 * time.Minute)
		b.me()
	}
	if _, ok := b.me(); ok {
		t.Fatal("alive at the configured absolute timeout")
	}
}

func TestLastSeenWrittenAtMostOncePerInterval(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	s := b.login(uuid.New())
	lastSeen := func() time.Time {
		var ts time.Time
		if err := env.pool.QueryRow(context.Background(),
			`SELECT last_seen_at FROM sessions WHERE public_id = $1`, s.PublicID).Scan(&ts); err != nil {
			t.Fatalf("read last_seen_at: %v", err)
		}
		return ts
	}
	start := env.clock.Now()
	env.clock.Advance(30 * time.Second)
	b.me()
	b.me()
	if got := lastSeen(); !got.Equal(start) {
		t.Fatalf("last_seen_at written within a minute: %s", got)
	}
	env.clock.Advance(31 * time.Second)
	got, _ := b.me()
	if ls := lastSeen(); !ls.Equal(env.clock.Now()) || !got.LastSeenAt.Equal(env.clock.Now()) {
		t.Fatalf("last_seen_at %s after a minute, want %s", ls, env.clock.Now())
	}
}

func TestLogoutDestroysServerSide(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	s := b.login(uuid.New())
	old := b.cookie.Value
	rec := b.do(http.MethodPost, "/logout", nil)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d", rec.Code)
	}
	h := rec.Header().Get("Set-Cookie")
	if !strings.HasPrefix(h, "taki_session=;") || !strings.Contains(h, "Max-Age=0") || !strings.Contains(h, "HttpOnly") {
		t.Fatalf("logout Set-Cookie %q does not clear the cookie", h)
	}
	if b.cookie != nil {
		t.Fatal("the browser kept the cookie")
	}
	if n := env.rowsForPublicID(s.PublicID); n != 0 {
		t.Fatal("the session row survived logout")
	}
	if _, ok := env.withCookie(old).me(); ok {
		t.Fatal("a replayed cookie authenticates after logout")
	}
	// Logging out without a session still clears the cookie.
	rec = env.withCookie(old).do(http.MethodPost, "/logout", nil)
	if rec.Code != http.StatusNoContent || !strings.Contains(rec.Header().Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout without a session: %d %q", rec.Code, rec.Header().Get("Set-Cookie"))
	}
}

func TestListAndRevoke(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	user, other := uuid.New(), uuid.New()
	a, bb, c := env.browser(), env.browser(), env.browser()
	a.ua, a.ip = strings.Repeat("é", 300), "2001:db8::1"
	sa := a.login(user)
	env.clock.Advance(time.Second)
	sb := bb.login(user)
	sc := c.login(other)

	rec := a.do(http.MethodGet, "/sessions", nil)
	var list struct {
		Items []SessionInfo `json:"items"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatalf("list body: %v", err)
	}
	if len(list.Items) != 2 || list.Items[0].ID != sb.PublicID || list.Items[1].ID != sa.PublicID {
		t.Fatalf("list %+v; want b then a", list.Items)
	}
	first, second := list.Items[0], list.Items[1]
	if first.Current || !second.Current {
		t.Fatalf("current flags %v %v; want only a's", first.Current, second.Current)
	}
	if first.UserAgent != "test-agent/1.0" || first.IP != "198.51.100.7" {
		t.Fatalf("b's item %+v", first)
	}
	if second.UserAgent != strings.Repeat("é", 256) || second.IP != "2001:db8::1" {
		t.Fatalf("a's user agent (%d chars) or ip %q", len([]rune(second.UserAgent)), second.IP)
	}
	if !second.CreatedAt.Equal(sa.CreatedAt) || !second.LastSeenAt.Equal(sa.LastSeenAt) {
		t.Fatalf("a's times %+v, want %+v", second, sa)
	}
	if strings.Contains(rec.Body.String(), a.cookie.Value) || strings.Contains(rec.Body.String(), bb.cookie.Value) {
		t.Fatal("the listing shows a cookie value")
	}

	if rec := a.do(http.MethodDelete, "/sessions/"+sb.PublicID.String(), nil); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke own session: %d", rec.Code)
	}
	if _, ok := bb.me(); ok {
		t.Fatal("a revoked session still authenticates")
	}
	// Another user's session and an unknown one answer alike, and nothing happens to them.
	for _, id := range []uuid.UUID{sc.PublicID, uuid.New(), sb.PublicID} {
		if rec := a.do(http.MethodDelete, "/sessions/"+id.String(), nil); rec.Code != http.StatusNotFound {
			t.Fatalf("revoke %s: %d, want 404", id, rec.Code)
		}
	}
	if _, ok := c.me(); !ok {
		t.Fatal("another user's session was revoked")
	}
	err := env.m.Revoke(context.Background(), user, sc.PublicID)
	var cerr *commands.Error
	if !errors.As(err, &cerr) || cerr.Kind != commands.KindNotFound || cerr.Detail != "session not found" {
		t.Fatalf("Revoke(not the user's) = %v, want commands.NotFound(\"session\")", err)
	}
}

func TestListSkipsExpiredSessions(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	user := uuid.New()
	stale, fresh := env.browser(), env.browser()
	stale.login(user)
	env.clock.Advance(20 * time.Minute)
	sf := fresh.login(user)
	env.clock.Advance(15 * time.Minute)
	items, err := env.m.List(context.Background(), user, sf.PublicID)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(items) != 1 || items[0].ID != sf.PublicID || !items[0].Current {
		t.Fatalf("List = %+v, want only the live session", items)
	}
	if items, err := env.m.List(context.Background(), uuid.New(), uuid.Nil); err != nil || items == nil || len(items) != 0 {
		t.Fatalf("List(no sessions) = %#v, %v; want an empty, non-nil list", items, err)
	}
}

func TestRotate(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	user := uuid.New()
	old := b.login(user)
	oldCookie := b.cookie.Value
	var oldAbsolute time.Time
	if err := env.pool.QueryRow(context.Background(),
		`SELECT absolute_expires_at FROM sessions WHERE public_id = $1`, old.PublicID).Scan(&oldAbsolute); err != nil {
		t.Fatalf("read old session: %v", err)
	}
	env.clock.Advance(10 * time.Minute)
	rec := b.do(http.MethodPost, "/rotate", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("rotate: %d", rec.Code)
	}
	var rotated Session
	if err := json.Unmarshal(rec.Body.Bytes(), &rotated); err != nil {
		t.Fatalf("rotate body: %v", err)
	}
	if b.cookie.Value == oldCookie || rotated.CSRFToken == old.CSRFToken || rotated.PublicID == old.PublicID {
		t.Fatal("rotate kept the id, the public id or the CSRF token")
	}
	if rotated.UserID != user || rotated.Role != old.Role || !rotated.CreatedAt.Equal(old.CreatedAt) {
		t.Fatalf("rotated %+v, old %+v", rotated, old)
	}
	var absolute time.Time
	if err := env.pool.QueryRow(context.Background(),
		`SELECT absolute_expires_at FROM sessions WHERE public_id = $1`, rotated.PublicID).Scan(&absolute); err != nil {
		t.Fatalf("read rotated session: %v", err)
	}
	if !absolute.Equal(oldAbsolute) {
		t.Fatalf("rotate moved the absolute expiry from %s to %s", oldAbsolute, absolute)
	}
	if _, ok := env.withCookie(oldCookie).me(); ok {
		t.Fatal("the pre-rotation cookie still authenticates")
	}
	if env.rowsForCookie(oldCookie) != 0 {
		t.Fatal("the pre-rotation row survived")
	}
	if got, ok := b.me(); !ok || got.PublicID != rotated.PublicID {
		t.Fatal("the rotated cookie does not authenticate")
	}
	if rec := env.browser().do(http.MethodPost, "/rotate", nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("rotate without a session: %d, want 401", rec.Code)
	}
}

func TestRevokeAllForUser(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	user, other := uuid.New(), uuid.New()
	bs := []*browser{env.browser(), env.browser(), env.browser()}
	var ss []Session
	for _, b := range bs {
		ss = append(ss, b.login(user))
	}
	o := env.browser()
	o.login(other)

	n, err := env.m.RevokeAllForUser(context.Background(), user, &ss[0].PublicID)
	if err != nil || n != 2 {
		t.Fatalf("RevokeAllForUser(except one) = %d, %v; want 2", n, err)
	}
	if _, ok := bs[0].me(); !ok {
		t.Fatal("the excepted session was revoked")
	}
	for _, b := range bs[1:] {
		if _, ok := b.me(); ok {
			t.Fatal("a revoked session still authenticates")
		}
	}
	n, err = env.m.RevokeAllForUser(context.Background(), user, nil)
	if err != nil || n != 1 {
		t.Fatalf("RevokeAllForUser(all) = %d, %v; want 1", n, err)
	}
	if _, ok := bs[0].me(); ok {
		t.Fatal("the last session survived revoking all")
	}
	if _, ok := o.me(); !ok {
		t.Fatal("another user's session was revoked")
	}
}

func TestCheckCSRF(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b, other := env.browser(), env.browser()
	s := b.login(uuid.New())
	otherS := other.login(uuid.New())
	if raw, err := base64.RawURLEncoding.DecodeString(s.CSRFToken); err != nil || len(raw) != 32 {
		t.Fatalf("CSRF token %q: want 32 random bytes in base64url", s.CSRFToken)
	}
	for name, c := range map[string]struct {
		token string
		want  int
	}{
		"right token":            {s.CSRFToken, http.StatusNoContent},
		"no token":               {"", http.StatusForbidden},
		"another session's":      {otherS.CSRFToken, http.StatusForbidden},
		"prefix":                 {s.CSRFToken[:20], http.StatusForbidden},
		"right token plus a bit": {s.CSRFToken + "x", http.StatusForbidden},
	} {
		h := http.Header{}
		if c.token != "" {
			h.Set("X-CSRF-Token", c.token)
		}
		if rec := b.do(http.MethodPost, "/unsafe", h); rec.Code != c.want {
			t.Errorf("%s: %d, want %d", name, rec.Code, c.want)
		}
	}
	if got, _ := b.me(); got.CSRFToken != s.CSRFToken {
		t.Fatal("the CSRF token changed between requests of one session")
	}
	if env.m.CheckCSRF(Session{}, "") {
		t.Fatal("an empty token matches a session without one")
	}
}

func TestMalformedCookiesAreAnonymous(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	b := env.browser()
	b.login(uuid.New())
	good := b.cookie.Value
	// The last character carries 2 unused bits; a lenient decoder would accept this second spelling.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", good[len(good)-1])
	alias := good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])
	for name, v := range map[string]string{
		"short":       "abc",
		"not base64":  strings.Repeat("!", 43),
		"padded":      good + "=",
		"long":        strings.Repeat("A", 4000),
		"std base64":  strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+",
		"alias":       alias,
		"public id":   uuid.NewString(),
		"unknown id":  randomToken(),
		"sql-ish":     "' OR 1=1 --",
		"empty value": "",
	} {
		if _, ok := env.withCookie(v).me(); ok {
			t.Errorf("%s: cookie %q authenticates", name, v)
		}
	}
	if _, ok := env.withCookie(good).me(); !ok {
		t.Fatal("the real cookie stopped working")
	}
}

func TestDatabaseFailureIsNotAnonymous(t *testing.T) {
	pool, err := postgres.Connect(context.Background(), dbURL, 1)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	m, err := NewManager(pool, SessionConfig{})
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	pool.Close()
	env := &sessionEnv{t: t, m: m, h: sessionRoutes(m)}
	// Without a cookie no query runs, so the public route still works.
	if rec := env.browser().do(http.MethodGet, "/public", nil); rec.Code != http.StatusNoContent {
		t.Fatalf("public route without a cookie: %d", rec.Code)
	}
	req := httptest.NewRequest(http.MethodGet, "/me", nil)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: randomToken()})
	rec := httptest.NewRecorder()
	env.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("session load on a dead database: %d, want 503", rec.Code)
	}
}

func TestExpiredSessionsArePruned(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	gone := env.browser().login(uuid.New())
	env.clock.Advance(9 * time.Hour)
	// Another user's login, later than pruneInterval, clears sessions whose cookie never came back.
	env.browser().login(uuid.New())
	if env.rowsForPublicID(gone.PublicID) != 0 {
		t.Fatal("an expired session of another user was not pruned")
	}
	left := env.browser().login(uuid.New())
	env.clock.Advance(time.Hour)
	n, err := env.m.PruneExpired(context.Background())
	if err != nil || n < 1 {
		t.Fatalf("PruneExpired = %d, %v; want at least 1", n, err)
	}
	if env.rowsForPublicID(left.PublicID) != 0 {
		t.Fatal("PruneExpired left an expired session")
	}
}

func TestNewManagerRefusesBadInput(t *testing.T) {
	if _, err := NewManager(nil, SessionConfig{}); err == nil {
		t.Error("accepted a nil pool")
	}
	pool := pgtest.NewPool(t, dbURL)
	for name, cfg := range map[string]SessionConfig{
		"absolute shorter than idle": {IdleTimeout: time.Hour, AbsoluteTimeout: time.Minute * 30},
		"touch not below idle":       {IdleTimeout: time.Minute * 5, TouchInterval: time.Minute * 5},
		"negative idle":              {IdleTimeout: -time.Minute},
	} {
		if _, err := NewManager(pool, cfg); err == nil {
			t.Errorf("%s: accepted %+v", name, cfg)
		}
	}
	m, err := NewManager(pool, SessionConfig{})
	if err != nil {
		t.Fatalf("NewManager(defaults): %v", err)
	}
	if m.cfg.IdleTimeout != 30*time.Minute || m.cfg.AbsoluteTimeout != 8*time.Hour || m.cfg.TouchInterval != time.Minute {
		t.Fatalf("defaults %+v", m.cfg)
	}
}

func TestWithoutMiddleware(t *testing.T) {
	pool := pgtest.NewPool(t, dbURL)
	m, err := NewManager(pool, SessionConfig{})
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest(http.MethodPost, "/", nil)
	if _, ok := m.Current(c); ok {
		t.Error("Current without the middleware reports a session")
	}
	if _, err := m.Start(c, uuid.New(), "member", 0); err == nil {
		t.Error("Start without the middleware succeeded")
	}
	if err := m.Destroy(c); err == nil {
		t.Error("Destroy without the middleware succeeded")
	}
}

func TestCleanUserAgent(t *testing.T) {
	for in, want := range map[string]string{
		"curl/8.0":                      "curl/8.0",
		"a\x00b":                        "ab",
		"bad \xff\xfe utf8":             "bad \uFFFD utf8",
		strings.Repeat("ü", 257):        strings.Repeat("ü", 256),
		strings.Repeat("a", 256):        strings.Repeat("a", 256),
		strings.Repeat("a", 255) + "日本": strings.Repeat("a", 255) + "日",
	} {
		if got := cleanUserAgent(in); got != want {
			t.Errorf("cleanUserAgent(%q) = %q, want %q", in, got, want)
		}
	}
}

// appendUserEvent writes one event of user's stream into the log, as the event store would.
func appendUserEvent(t *testing.T, pool *pgxpool.Pool, user uuid.UUID, version int64, eventType string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version,
			event_type, schema_version, occurred_at, payload, metadata)
		VALUES (pg_current_xact_id(), $1, $2, 'user', $3, $4, 1, now(), '{}', '{}')`, uuid.Must(uuid.NewV7()), user, version, eventType); err != nil {
		t.Fatal(err)
	}
}

// A login whose password check came before a password or role change gets no session: the change
// revoked every session before this one could exist.
func TestStartRefusesASessionForCredentialsChangedSince(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	user := uuid.Must(uuid.NewV7())
	appendUserEvent(t, env.pool, user, 1, "user.registered")
	appendUserEvent(t, env.pool, user, 2, "user.logged_in")
	appendUserEvent(t, env.pool, user, 3, "user.password_changed")
	login := func(at int64) int {
		return env.browser().do(http.MethodPost, fmt.Sprintf("/login?user=%s&credentials_at=%d", user, at), nil).Code
	}
	if code := login(2); code != http.StatusUnauthorized {
		t.Fatalf("login checked at version 2, password changed at 3: %d, want 401", code)
	}
	var rows int
	if err := env.pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE user_id = $1`, user).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d sessions (%v), want none", rows, err)
	}
	if code := login(3); code != http.StatusOK {
		t.Fatalf("login checked after the change: %d, want 200", code)
	}
	appendUserEvent(t, env.pool, user, 4, "user.logged_in")
	appendUserEvent(t, env.pool, user, 5, "user.role_changed")
	if code := login(4); code != http.StatusUnauthorized {
		t.Fatalf("login checked at version 4, role changed at 5: %d, want 401", code)
	}
}

// The race the lock closes: a revocation holds the user's credentials lock while the change it
// revokes for is recorded; a session start that waited for the lock then sees the change and starts
// nothing, although it checked its snapshot-free condition only after the change committed.
func TestStartWaitsForARevocationAndSeesItsChange(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	ctx := context.Background()
	user := uuid.Must(uuid.NewV7())
	appendUserEvent(t, env.pool, user, 1, "user.registered")
	appendUserEvent(t, env.pool, user, 2, "user.logged_in")
	revoking, err := env.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer revoking.Rollback(ctx)
	if _, err := revoking.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, credentialsLockKey(user)); err != nil {
		t.Fatal(err)
	}
	code := make(chan int, 1)
	go func() {
		req := httptest.NewRequest(http.MethodPost, fmt.Sprintf("/login?user=%s&credentials_at=2", user), nil)
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, req)
		code <- rec.Code
	}()
	// Wait until the start waits for the lock.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		key := credentialsLockKey(user)
		if err := env.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND classid = (($1::bigint >> 32) & 4294967295)::oid AND objid = ($1::bigint & 4294967295)::oid`, key).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session start never waited for the revocation's lock")
		}
	}
	appendUserEvent(t, env.pool, user, 3, "user.password_changed")
	if err := revoking.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if c := <-code; c != http.StatusUnauthorized {
		t.Fatalf("login that waited for the revocation: %d, want 401", c)
	}
}

// A login racing a revocation of the same user's sessions (a password or role change) never fails:
// before, the login deleted the user's rows (the session it replaces, expired ones) and only then took
// the credentials lock the revocation takes first, and PostgreSQL broke the cycle by failing one side.
func TestLoginRacingRevokeAllForUserNeverFails(t *testing.T) {
	env := newSessionEnv(t, SessionConfig{})
	ctx := context.Background()
	login := func(user uuid.UUID, cookie *http.Cookie) (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/login?credentials_at=1&user="+user.String(), nil)
		if cookie != nil {
			req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
		}
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for i := range 60 {
		user := uuid.New()
		var replaced *http.Cookie
		if i%2 == 0 {
			// A re-login, replacing the browser's session.
			b := env.browser()
			b.login(user)
			replaced = b.cookie
		} else if _, err := env.pool.Exec(ctx, `INSERT INTO sessions (token_hash, public_id, user_id, role, csrf_token,
				created_at, last_seen_at, idle_expires_at, absolute_expires_at)
			VALUES (sha256(gen_random_uuid()::text::bytea), gen_random_uuid(), $1, 'member', 'x',
				$2::timestamptz - interval '2 hours', $2::timestamptz - interval '2 hours', $2::timestamptz - interval '1 hour',
				$2::timestamptz - interval '1 hour')`, user, env.clock.Now()); err != nil {
			// A first login, pruning the user's expired session.
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var code int
		var body string
		var revokeErr error
		wg.Go(func() { code, body = login(user, replaced) })
		wg.Go(func() { _, revokeErr = env.m.RevokeAllForUser(ctx, user, nil) })
		wg.Wait()
		if code != http.StatusOK || revokeErr != nil {
			t.Fatalf("round %d: login answered %d %s; revocation: %v", i, code, body, revokeErr)
		}
	}
}
