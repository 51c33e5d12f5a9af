package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"taki/infra/config"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/tests/testserver"
)

// acctClock is a clock tests move by hand; a server reads it through Options.Now. Servers on a moved
// clock get a database of their own: they prune expired sessions and old login failures table-wide
// by their own clock, which would end the sessions of tests sharing the package's database.
type acctClock struct{ ns atomic.Int64 }

func newAcctClock() *acctClock {
	c := &acctClock{}
	c.ns.Store(time.Now().UTC().Truncate(time.Second).UnixNano())
	return c
}

func (c *acctClock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

func (c *acctClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// acctStartWithClock starts a server on a database of its own whose clock is clk.
func acctStartWithClock(t *testing.T, clk *acctClock) *testserver.Server {
	t.Helper()
	return testserver.Start(t, pgtest.NewDatabase(t), testserver.WithOptions(func(o *server.Options) { o.Now = clk.Now }))
}

// acctSessionJSON is the answer of POST /sessions and GET /sessions/current.
type acctSessionJSON struct {
	User      acctUserJSON `json:"user"`
	CSRFToken string       `json:"csrf_token"`
	ExpiresAt string       `json:"expires_at"`
}

// acctSessionInfo is an item of GET /sessions.
type acctSessionInfo struct {
	ID         string `json:"id"`
	CreatedAt  string `json:"created_at"`
	LastSeenAt string `json:"last_seen_at"`
	UserAgent  string `json:"user_agent"`
	IP         string `json:"ip"`
	Current    bool   `json:"current"`
}

// acctLogIn logs c in (headers as for Client.Do), keeps the CSRF token and returns the answer.
func acctLogIn(t testing.TB, c *testserver.Client, email, password string, headers ...string) (acctSessionJSON, testserver.Response) {
	t.Helper()
	r := c.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": password}, headers...)
	acctWantStatus(t, r, http.StatusOK)
	var s acctSessionJSON
	r.JSON(t, &s)
	c.CSRF = s.CSRFToken
	return s, r
}

// acctCookie returns the session cookie c holds for srv ("" if none).
func acctCookie(t testing.TB, srv *testserver.Server, c *testserver.Client) string {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range c.HTTP.Jar.Cookies(u) {
		if k.Name == "taki_session" {
			return k.Value
		}
	}
	return ""
}

// acctClientWithCookie returns a new client of srv holding the session cookie value.
func acctClientWithCookie(t testing.TB, srv *testserver.Server, value string) *testserver.Client {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	c.HTTP.Jar.SetCookies(u, []*http.Cookie{{Name: "taki_session", Value: value, Path: "/"}})
	return c
}

// acctRandomCookie returns a well-formed session cookie value that names no session.
func acctRandomCookie() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// acctSessions returns GET /sessions of c.
func acctSessions(t testing.TB, c *testserver.Client) []acctSessionInfo {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/sessions", nil)
	acctWantStatus(t, r, http.StatusOK)
	acctWantKeys(t, "GET /sessions", r.Body, "items")
	var l struct {
		Items []acctSessionInfo `json:"items"`
	}
	r.JSON(t, &l)
	return l.Items
}

// acctCurrentSessionID returns the public id of c's session, from GET /sessions.
func acctCurrentSessionID(t testing.TB, c *testserver.Client) string {
	t.Helper()
	id := ""
	for _, s := range acctSessions(t, c) {
		if s.Current {
			if id != "" {
				t.Fatal("two sessions marked current")
			}
			id = s.ID
		}
	}
	if id == "" {
		t.Fatal("no session marked current")
	}
	return id
}

// acctSessionCookie returns the taki_session Set-Cookie of r, or nil.
func acctSessionCookie(r testserver.Response) *http.Cookie {
	for _, k := range r.Cookies() {
		if k.Name == "taki_session" {
			return k
		}
	}
	return nil
}

// acctWantUserObject fails unless r's "user" is exactly API.md's user object.
func acctWantUserObject(t testing.TB, what string, r testserver.Response) {
	t.Helper()
	var raw struct {
		User json.RawMessage `json:"user"`
	}
	r.JSON(t, &raw)
	acctWantKeys(t, what, raw.User, "id", "email", "display_name", "avatar_url", "role", "created_at")
}

// acctWantLoggedOut fails unless c's session no longer authenticates.
func acctWantLoggedOut(t testing.TB, c *testserver.Client) {
	t.Helper()
	acctWantProblem(t, c.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusUnauthorized, "unauthenticated")
}

// acctWantLoggedIn fails unless c's session authenticates as user id.
func acctWantLoggedIn(t testing.TB, c *testserver.Client, id string) {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, r, http.StatusOK)
	var m acctUserJSON
	r.JSON(t, &m)
	if m.ID != id {
		t.Fatalf("GET /users/me is user %s, want %s", m.ID, id)
	}
}

// --- POST /sessions ---

func TestSessionsLogIn(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	u := acctRegister(t, c, "Log Inner")

	before := time.Now().Add(-time.Second)
	r := c.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": u.Password})
	after := time.Now().Add(time.Second)
	acctWantStatus(t, r, http.StatusOK)
	acctWantKeys(t, "POST /sessions answer", r.Body, "user", "csrf_token", "expires_at")
	var s acctSessionJSON
	r.JSON(t, &s)
	if r.Header.Get("X-Consistency-Token") == "" {
		t.Error("POST /sessions answer has no X-Consistency-Token")
	}
	acctWantUserObject(t, "POST /sessions user", r)
	if s.User.ID != u.ID || s.User.Email != u.Email || s.User.DisplayName != u.Name || s.User.Role != "member" || s.User.AvatarURL != nil {
		t.Errorf("user = %+v, want %+v", s.User, u)
	}
	if len(s.CSRFToken) < 22 {
		t.Errorf("csrf_token %q is too short to be unguessable", s.CSRFToken)
	}
	exp := acctWantTime(t, "expires_at", s.ExpiresAt)
	if exp.Before(before.Add(30*time.Minute)) || exp.After(after.Add(30*time.Minute)) {
		t.Errorf("expires_at = %s, want 30 min (idle timeout) after login", exp)
	}

	// The cookie: HttpOnly, SameSite=Lax, Path=/, no Domain, not Secure unless configured.
	k := acctSessionCookie(r)
	if k == nil {
		t.Fatalf("no taki_session cookie set: %q", r.Header.Values("Set-Cookie"))
	}
	if !k.HttpOnly || k.SameSite != http.SameSiteLaxMode || k.Path != "/" || k.Domain != "" || k.Secure {
		t.Errorf("cookie %q: want HttpOnly, SameSite=Lax, Path=/, no Domain, no Secure", k.Raw)
	}
	if strings.Contains(strings.ToLower(k.Raw), "domain=") {
		t.Errorf("cookie %q has a Domain", k.Raw)
	}
	if len(k.Value) < 22 || strings.Contains(k.Value, u.ID) || strings.Contains(k.Value, s.CSRFToken) {
		t.Errorf("cookie value %q: want a random id of at least 128 bits, not user data", k.Value)
	}
	if got := acctCookie(t, srv, c); got != k.Value {
		t.Fatalf("jar holds %q, login set %q", got, k.Value)
	}

	// GET /sessions/current answers the same session.
	cur := c.Do(http.MethodGet, "/api/v1/sessions/current", nil)
	acctWantStatus(t, cur, http.StatusOK)
	acctWantKeys(t, "GET /sessions/current", cur.Body, "user", "csrf_token", "expires_at")
	acctWantUserObject(t, "GET /sessions/current user", cur)
	var cs acctSessionJSON
	cur.JSON(t, &cs)
	if cs.CSRFToken != s.CSRFToken || cs.User.ID != u.ID || cs.User.Email != u.Email || cs.User.CreatedAt != s.User.CreatedAt {
		t.Errorf("GET /sessions/current = %s, login answered %s", cur.Body, r.Body)
	}
	acctWantTime(t, "expires_at", cs.ExpiresAt)

	// A second login gets another cookie and CSRF token.
	s2, r2 := acctLogIn(t, srv.Client(t), u.Email, u.Password)
	if k2 := acctSessionCookie(r2); k2 == nil || k2.Value == k.Value || s2.CSRFToken == s.CSRFToken {
		t.Error("two logins got the same cookie or CSRF token")
	}

	t.Run("Secure when configured", func(t *testing.T) {
		sec := testserver.Start(t, dbURL, testserver.WithConfig(func(c *config.Config) { c.CookieSecure = true }))
		r := sec.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": u.Password})
		acctWantStatus(t, r, http.StatusOK)
		k := acctSessionCookie(r)
		if k == nil || !k.Secure || !k.HttpOnly || k.SameSite != http.SameSiteLaxMode || k.Path != "/" || k.Domain != "" {
			t.Fatalf("cookie with TAKI_COOKIE_SECURE=true: %q", r.Header.Values("Set-Cookie"))
		}
	})
}

func TestSessionsLogInFailuresLookAlike(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	u := acctRegister(t, srv.Client(t), "Careful")

	var bodies []string
	for _, creds := range []map[string]string{
		{"email": u.Email, "password": "wrong password"},
		{"email": acctEmail(t), "password": "wrong password"},
		{"email": acctEmail(t), "password": u.Password},
		{"email": "not an email", "password": "wrong password"},
		{"email": u.Email, "password": ""},
	} {
		c := srv.Client(t)
		r := c.Do(http.MethodPost, "/api/v1/sessions", creds)
		acctWantProblem(t, r, http.StatusUnauthorized, "unauthenticated")
		if k := acctSessionCookie(r); k != nil && k.MaxAge >= 0 {
			t.Errorf("failed login %v set a session cookie %q", creds, k.Raw)
		}
		if acctCookie(t, srv, c) != "" {
			t.Errorf("failed login %v left a session cookie", creds)
		}
		bodies = append(bodies, string(r.Body))
	}
	for i, b := range bodies[1:] {
		if b != bodies[0] {
			t.Errorf("failure %d answered %s, failure 0 answered %s: they must not differ", i+1, b, bodies[0])
		}
	}

	c := srv.Client(t)
	acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": u.Password, "remember": "yes"}), http.StatusBadRequest, "")
	acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/sessions", fmt.Sprintf("email=%s&password=%s", u.Email, u.Password), "Content-Type", "application/x-www-form-urlencoded"), http.StatusUnsupportedMediaType, "")
	if acctCookie(t, srv, c) != "" {
		t.Error("a refused login request set a session cookie")
	}
}

func TestSessionsLogInThrottle(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	u := acctRegister(t, srv.Client(t), "Throttled")
	bystander := acctRegister(t, srv.Client(t), "Bystander")
	attempt := func(email, password string) testserver.Response {
		return srv.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": password})
	}

	// Four failures do not throttle; a success forgives them.
	for range 4 {
		acctWantProblem(t, attempt(u.Email, "wrong password"), http.StatusUnauthorized, "unauthenticated")
	}
	acctWantStatus(t, attempt(u.Email, u.Password), http.StatusOK)

	// Five failures (the email in any case) throttle the sixth attempt, even with the right password.
	for i := range 5 {
		email := u.Email
		if i%2 == 1 {
			email = strings.ToUpper(u.Email)
		}
		acctWantProblem(t, attempt(email, "wrong password"), http.StatusUnauthorized, "unauthenticated")
	}
	for range 2 {
		r := attempt(u.Email, u.Password)
		acctWantProblem(t, r, http.StatusTooManyRequests, "rate-limited")
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 15*60 {
			t.Fatalf("Retry-After = %q, want seconds from 1 to 900", r.Header.Get("Retry-After"))
		}
		if acctSessionCookie(r) != nil {
			t.Fatalf("a throttled login set a cookie: %q", r.Header.Values("Set-Cookie"))
		}
	}
	acctWantProblem(t, attempt(strings.ToUpper(u.Email), u.Password), http.StatusTooManyRequests, "rate-limited")

	// Other emails are not throttled.
	acctWantStatus(t, attempt(bystander.Email, bystander.Password), http.StatusOK)

	// An email without an account is throttled alike, so the answers reveal nothing.
	ghost := acctEmail(t)
	for range 5 {
		acctWantProblem(t, attempt(ghost, "wrong password"), http.StatusUnauthorized, "unauthenticated")
	}
	r := attempt(ghost, "wrong password")
	acctWantProblem(t, r, http.StatusTooManyRequests, "rate-limited")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

func TestSessionsLogInThrottleWindow(t *testing.T) {
	t.Parallel()
	clk := newAcctClock()
	srv := acctStartWithClock(t, clk)
	u := acctRegister(t, srv.Client(t), "Windowed")
	attempt := func(password string) testserver.Response {
		return srv.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": password})
	}

	for range 4 {
		acctWantProblem(t, attempt("wrong password"), http.StatusUnauthorized, "unauthenticated")
	}
	clk.Advance(10 * time.Minute)
	acctWantProblem(t, attempt("wrong password"), http.StatusUnauthorized, "unauthenticated")

	// Five failures within 15 minutes: throttled until the four oldest leave the window, 5 min on.
	r := attempt(u.Password)
	acctWantProblem(t, r, http.StatusTooManyRequests, "rate-limited")
	if got := r.Header.Get("Retry-After"); got != "300" {
		t.Errorf("Retry-After = %q, want 300 (the oldest failures leave the 15 min window in 5 min)", got)
	}
	clk.Advance(5*time.Minute - time.Second)
	r = attempt(u.Password)
	acctWantProblem(t, r, http.StatusTooManyRequests, "rate-limited")
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	clk.Advance(time.Second)
	acctWantStatus(t, attempt(u.Password), http.StatusOK)
}

func TestSessionsLoginCount(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	u := acctRegister(t, c, "Counted")
	d := srv.Client(t)
	for i := 1; i <= 4; i++ {
		who := c
		if i == 3 {
			who = d
		}
		acctLogIn(t, who, u.Email, u.Password)
		if who == d {
			c.Token = d.Token
		}
		r := c.Do(http.MethodGet, "/api/v1/users/me", nil)
		acctWantStatus(t, r, http.StatusOK)
		if r.Header.Get("X-Consistency-Stale") != "" {
			t.Fatal("GET /users/me with the login's consistency token answered stale")
		}
		var m acctUserJSON
		r.JSON(t, &m)
		if m.LoginCount == nil || *m.LoginCount != i {
			t.Fatalf("after %d logins login_count = %v: %s", i, m.LoginCount, r.Body)
		}
	}
	// Failed logins do not count.
	acctWantProblem(t, d.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": "wrong password"}), http.StatusUnauthorized, "unauthenticated")
	acctWantProfileCount(t, c, 4)
}

func acctWantProfileCount(t testing.TB, c *testserver.Client, n int) {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, r, http.StatusOK)
	var m acctUserJSON
	r.JSON(t, &m)
	if m.LoginCount == nil || *m.LoginCount != n {
		t.Fatalf("login_count = %v, want %d: %s", m.LoginCount, n, r.Body)
	}
}

// --- fixation ---

func TestSessionsFixation(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	victim := acctRegister(t, srv.Client(t), "Victim")
	attacker, attackerUser := acctSignUp(t, srv, "Attacker")

	t.Run("planted unknown cookie", func(t *testing.T) {
		planted := acctRandomCookie()
		c := acctClientWithCookie(t, srv, planted)
		_, r := acctLogIn(t, c, victim.Email, victim.Password)
		k := acctSessionCookie(r)
		if k == nil || k.Value == planted || acctCookie(t, srv, c) == planted {
			t.Fatalf("login kept the planted cookie: %q", r.Header.Values("Set-Cookie"))
		}
		acctWantLoggedIn(t, c, victim.ID)
		acctWantLoggedOut(t, acctClientWithCookie(t, srv, planted))
	})

	t.Run("planted live session", func(t *testing.T) {
		// The attacker's own session cookie is planted in the victim's browser before the victim logs in.
		planted := acctCookie(t, srv, attacker)
		acctWantLoggedIn(t, attacker, attackerUser.ID)
		c := acctClientWithCookie(t, srv, planted)
		_, r := acctLogIn(t, c, victim.Email, victim.Password)
		if k := acctSessionCookie(r); k == nil || k.Value == planted {
			t.Fatalf("login did not issue a new cookie: %q", r.Header.Values("Set-Cookie"))
		}
		acctWantLoggedIn(t, c, victim.ID)
		// The planted id authenticates nobody any more, least of all the victim.
		acctWantLoggedOut(t, attacker)
		acctWantLoggedOut(t, acctClientWithCookie(t, srv, planted))
	})

	t.Run("logging in again", func(t *testing.T) {
		c := srv.Client(t)
		first, _ := acctLogIn(t, c, victim.Email, victim.Password)
		oldCookie, oldID := acctCookie(t, srv, c), acctCurrentSessionID(t, c)
		second, r := acctLogIn(t, c, victim.Email, victim.Password)
		newCookie := acctCookie(t, srv, c)
		if k := acctSessionCookie(r); k == nil || newCookie == oldCookie {
			t.Fatal("logging in again kept the session cookie")
		}
		if second.CSRFToken == first.CSRFToken {
			t.Error("logging in again kept the CSRF token")
		}
		newID := acctCurrentSessionID(t, c)
		if newID == oldID {
			t.Error("logging in again kept the session's public id")
		}
		for _, s := range acctSessions(t, c) {
			if s.ID == oldID {
				t.Error("the previous session is still listed")
			}
		}
		acctWantLoggedOut(t, acctClientWithCookie(t, srv, oldCookie))
		// The previous session's CSRF token does not work with the new session.
		r = c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Stale CSRF"}, "X-CSRF-Token", first.CSRFToken)
		acctWantProblem(t, r, http.StatusForbidden, "csrf")
		acctWantLoggedIn(t, c, victim.ID)
	})
}

// --- current session, logout, listing, revocation ---

func TestSessionsLogOut(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, u := acctSignUp(t, srv, "Leaver")
	other := srv.Client(t)
	acctLogIn(t, other, u.Email, u.Password)
	cookie := acctCookie(t, srv, c)

	r := c.Do(http.MethodDelete, "/api/v1/sessions/current", nil)
	acctWantStatus(t, r, http.StatusNoContent)
	k := acctSessionCookie(r)
	if k == nil || k.Value != "" || k.MaxAge >= 0 || k.Path != "/" {
		t.Fatalf("logout must clear the cookie (empty, Max-Age<=0, Path=/): %q", r.Header.Values("Set-Cookie"))
	}
	if acctCookie(t, srv, c) != "" {
		t.Fatal("the client still holds a session cookie after logout")
	}
	acctWantProblem(t, c.Do(http.MethodGet, "/api/v1/sessions/current", nil), http.StatusUnauthorized, "unauthenticated")
	// Gone server-side: replaying the cookie value does not authenticate.
	replay := acctClientWithCookie(t, srv, cookie)
	acctWantProblem(t, replay.Do(http.MethodGet, "/api/v1/sessions/current", nil), http.StatusUnauthorized, "unauthenticated")
	acctWantProblem(t, replay.Do(http.MethodDelete, "/api/v1/sessions/current", nil), http.StatusUnauthorized, "unauthenticated")
	// The user's other session is untouched.
	acctWantLoggedIn(t, other, u.ID)
	if l := acctSessions(t, other); len(l) != 1 || !l[0].Current {
		t.Errorf("sessions after logout = %+v, want only the other one", l)
	}
}

func TestSessionsListAndRevoke(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	reg := srv.Client(t)
	u := acctRegister(t, reg, "Many Devices")
	stranger, _ := acctSignUp(t, srv, "Stranger")

	clients := map[string]*testserver.Client{}
	for _, ua := range []string{"device-a/1.0", "device-b/2.0", "device-c/3.0"} {
		c := srv.Client(t)
		acctLogIn(t, c, u.Email, u.Password, "User-Agent", ua)
		clients[ua] = c
	}
	a, b, c := clients["device-a/1.0"], clients["device-b/2.0"], clients["device-c/3.0"]
	cookies := map[string]bool{acctCookie(t, srv, a): true, acctCookie(t, srv, b): true, acctCookie(t, srv, c): true, acctCookie(t, srv, stranger): true}

	r := a.Do(http.MethodGet, "/api/v1/sessions", nil)
	acctWantStatus(t, r, http.StatusOK)
	var raw struct {
		Items []map[string]any `json:"items"`
	}
	r.JSON(t, &raw)
	if len(raw.Items) != 3 {
		t.Fatalf("GET /sessions listed %d sessions, want the user's 3: %s", len(raw.Items), r.Body)
	}
	for _, it := range raw.Items {
		if len(it) != 6 {
			t.Errorf("session item %v: want exactly id, created_at, last_seen_at, user_agent, ip, current", it)
		}
	}
	byUA := map[string]acctSessionInfo{}
	current := 0
	for _, s := range acctSessions(t, a) {
		acctWantUUID(t, "session id", s.ID)
		if cookies[s.ID] {
			t.Errorf("session id %q is a cookie value", s.ID)
		}
		acctWantTime(t, "created_at", s.CreatedAt)
		acctWantTime(t, "last_seen_at", s.LastSeenAt)
		if s.IP != "127.0.0.1" {
			t.Errorf("ip = %q, want 127.0.0.1", s.IP)
		}
		if s.Current {
			current++
		}
		byUA[s.UserAgent] = s
	}
	if current != 1 || !byUA["device-a/1.0"].Current {
		t.Fatalf("sessions %+v: want exactly device-a current", byUA)
	}
	if len(byUA) != 3 || byUA["device-b/2.0"].ID == "" || byUA["device-c/3.0"].ID == "" {
		t.Fatalf("sessions by user agent %+v, want device-a, device-b and device-c", byUA)
	}
	// Each client sees itself as current.
	if id := acctCurrentSessionID(t, b); id != byUA["device-b/2.0"].ID {
		t.Errorf("b's current session %s, want %s", id, byUA["device-b/2.0"].ID)
	}
	// The stranger sees only its own session.
	if l := acctSessions(t, stranger); len(l) != 1 || !l[0].Current {
		t.Errorf("stranger's sessions = %+v", l)
	}

	// a revokes b: b is out at once, a and c are not.
	bID := byUA["device-b/2.0"].ID
	r = a.Do(http.MethodDelete, "/api/v1/sessions/"+bID, nil)
	acctWantStatus(t, r, http.StatusNoContent)
	acctWantLoggedOut(t, b)
	acctWantProblem(t, b.Do(http.MethodGet, "/api/v1/sessions/current", nil), http.StatusUnauthorized, "unauthenticated")
	acctWantLoggedIn(t, a, u.ID)
	acctWantLoggedIn(t, c, u.ID)
	for _, s := range acctSessions(t, a) {
		if s.ID == bID {
			t.Error("the revoked session is still listed")
		}
	}
	acctWantProblem(t, a.Do(http.MethodDelete, "/api/v1/sessions/"+bID, nil), http.StatusNotFound, "not-found")

	// Another user's session id is not found, and survives the attempt.
	strangerID := acctCurrentSessionID(t, stranger)
	acctWantProblem(t, a.Do(http.MethodDelete, "/api/v1/sessions/"+strangerID, nil), http.StatusNotFound, "not-found")
	acctWantStatus(t, stranger.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
	for _, id := range []string{uuid.NewString(), "not-a-uuid", acctCookie(t, srv, c)} {
		acctWantProblem(t, a.Do(http.MethodDelete, "/api/v1/sessions/"+id, nil), http.StatusNotFound, "not-found")
	}
	acctWantLoggedIn(t, c, u.ID)

	// Revoking one's own current session by id logs it out.
	cID := acctCurrentSessionID(t, c)
	acctWantStatus(t, c.Do(http.MethodDelete, "/api/v1/sessions/"+cID, nil), http.StatusNoContent)
	acctWantLoggedOut(t, c)
	if l := acctSessions(t, a); len(l) != 1 || !l[0].Current {
		t.Errorf("sessions left = %+v, want only a", l)
	}
}

// --- CSRF ---

func TestSessionsCSRF(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	a, u := acctSignUp(t, srv, "Guarded")
	b := srv.Client(t)
	acctLogIn(t, b, u.Email, u.Password)
	bID := acctCurrentSessionID(t, b)
	aCSRF := a.CSRF

	unsafe := []struct {
		method, path string
		body         any
	}{
		{http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Hijacked"}},
		{http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": u.Password, "new_password": "attacker's password"}},
		{http.MethodDelete, "/api/v1/sessions/current", nil},
		{http.MethodDelete, "/api/v1/sessions/" + bID, nil},
		{http.MethodPost, "/api/v1/ws-tokens", nil},
	}
	tokens := map[string]string{
		"missing":                 "",
		"wrong":                   "not-the-token",
		"another session's token": b.CSRF,
		"token with a suffix":     aCSRF + "x",
		"token cut short":         aCSRF[:len(aCSRF)-1],
		"the cookie value":        acctCookie(t, srv, a),
	}
	for _, req := range unsafe {
		for name, tok := range tokens {
			r := a.Do(req.method, req.path, req.body, "X-CSRF-Token", tok)
			if r.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s with %s CSRF token: %d %s, want 403 csrf", req.method, req.path, name, r.StatusCode, r.Body)
				continue
			}
			acctWantProblem(t, r, http.StatusForbidden, "csrf")
			if r.Header.Get("X-Consistency-Token") != "" || acctSessionCookie(r) != nil {
				t.Errorf("%s %s refused for CSRF yet answered a consistency token or a cookie", req.method, req.path)
			}
		}
	}

	// Nothing changed: both sessions live, the name and password are the old ones, no cookie moved.
	acctWantLoggedIn(t, a, u.ID)
	acctWantLoggedIn(t, b, u.ID)
	acctWantProfile(t, a, u.Name, nil)
	if l := acctSessions(t, a); len(l) != 2 {
		t.Fatalf("sessions after refused requests = %+v, want both", l)
	}
	acctLogIn(t, srv.Client(t), u.Email, u.Password)
	acctWantProblem(t, srv.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": "attacker's password"}), http.StatusUnauthorized, "unauthenticated")

	// With the right token the same requests pass.
	acctWantStatus(t, a.Do(http.MethodPost, "/api/v1/ws-tokens", nil), http.StatusCreated)
	acctWantStatus(t, a.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Renamed"}), http.StatusOK)
	acctWantStatus(t, a.Do(http.MethodDelete, "/api/v1/sessions/"+bID, nil), http.StatusNoContent)
	acctWantLoggedOut(t, b)

	// POST /users and POST /sessions need no CSRF token, also with a session cookie.
	for _, tok := range []string{"", "not-the-token"} {
		r := a.Do(http.MethodPost, "/api/v1/users", map[string]string{"email": acctEmail(t), "password": acctPassword, "display_name": "Exempt"}, "X-CSRF-Token", tok)
		acctWantStatus(t, r, http.StatusCreated)
		r = a.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": u.Password}, "X-CSRF-Token", tok)
		acctWantStatus(t, r, http.StatusOK)
		var s acctSessionJSON
		r.JSON(t, &s)
		a.CSRF = s.CSRFToken
		acctWantLoggedIn(t, a, u.ID)
	}

	// Without a session, an unsafe request is unauthenticated whatever its CSRF header.
	anon := srv.Client(t)
	acctWantProblem(t, anon.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "X"}), http.StatusUnauthorized, "unauthenticated")
	acctWantProblem(t, anon.Do(http.MethodPost, "/api/v1/ws-tokens", nil, "X-CSRF-Token", aCSRF), http.StatusUnauthorized, "unauthenticated")
}

// --- unauthenticated ---

func TestSessionsUnauthenticated(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	// A session that existed and was logged out.
	gone, _ := acctSignUp(t, srv, "Gone")
	goneCookie := acctCookie(t, srv, gone)
	acctWantStatus(t, gone.Do(http.MethodDelete, "/api/v1/sessions/current", nil), http.StatusNoContent)

	routes := []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/api/v1/sessions/current", nil},
		{http.MethodDelete, "/api/v1/sessions/current", nil},
		{http.MethodGet, "/api/v1/sessions", nil},
		{http.MethodDelete, "/api/v1/sessions/" + uuid.NewString(), nil},
		{http.MethodGet, "/api/v1/users/me", nil},
		{http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "X"}},
		{http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": "whatever1", "new_password": "whatever2"}},
		{http.MethodGet, "/api/v1/users", nil},
		{http.MethodGet, "/api/v1/users?q=a", nil},
		{http.MethodGet, "/api/v1/users/" + uuid.NewString(), nil},
		{http.MethodPost, "/api/v1/ws-tokens", nil},
		{http.MethodGet, "/api/v1/admin/projections", nil},
		{http.MethodPost, "/api/v1/admin/projections/users/replay", nil},
		{http.MethodGet, "/api/v1/admin/events", nil},
	}
	clients := map[string]*testserver.Client{
		"no cookie":        srv.Client(t),
		"malformed cookie": acctClientWithCookie(t, srv, "garbage"),
		"unknown cookie":   acctClientWithCookie(t, srv, acctRandomCookie()),
		"logged-out cookie": func() *testserver.Client {
			c := acctClientWithCookie(t, srv, goneCookie)
			c.CSRF = gone.CSRF
			return c
		}(),
	}
	for name, c := range clients {
		for _, rt := range routes {
			r := c.Do(rt.method, rt.path, rt.body)
			if r.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d %s, want 401 unauthenticated", rt.method, rt.path, name, r.StatusCode, r.Body)
				continue
			}
			acctWantProblem(t, r, http.StatusUnauthorized, "unauthenticated")
		}
	}
}

// --- expiry ---

func TestSessionsIdleExpiry(t *testing.T) {
	t.Parallel()
	clk := newAcctClock()
	srv := acctStartWithClock(t, clk)
	t0 := clk.Now()
	reg := srv.Client(t)
	u := acctRegister(t, reg, "Idler")
	used, idle := srv.Client(t), srv.Client(t)
	s, _ := acctLogIn(t, used, u.Email, u.Password)
	acctLogIn(t, idle, u.Email, u.Password)
	if exp := acctWantTime(t, "expires_at", s.ExpiresAt); !exp.Equal(t0.Add(30 * time.Minute)) {
		t.Errorf("expires_at = %s, want login + 30 min = %s", exp, t0.Add(30*time.Minute))
	}

	// Just before 30 min: alive, and using it pushes the idle expiry back.
	clk.Advance(30*time.Minute - time.Second)
	acctWantLoggedIn(t, used, u.ID)
	cur := used.Do(http.MethodGet, "/api/v1/sessions/current", nil)
	acctWantStatus(t, cur, http.StatusOK)
	var cs acctSessionJSON
	cur.JSON(t, &cs)
	if exp := acctWantTime(t, "expires_at", cs.ExpiresAt); !exp.Equal(clk.Now().Add(30 * time.Minute)) {
		t.Errorf("expires_at after use = %s, want last use + 30 min = %s", exp, clk.Now().Add(30*time.Minute))
	}

	// 30 min without use: the idle session is dead, the used one is not.
	clk.Advance(time.Second)
	acctWantLoggedOut(t, idle)
	acctWantProblem(t, idle.Do(http.MethodGet, "/api/v1/sessions/current", nil), http.StatusUnauthorized, "unauthenticated")
	if l := acctSessions(t, used); len(l) != 1 || !l[0].Current {
		t.Errorf("sessions = %+v, want only the used one", l)
	}

	// 30 min after its last use the used one dies too.
	clk.Advance(30*time.Minute - time.Second)
	acctWantLoggedOut(t, used)

	// Logging in again works.
	acctLogIn(t, used, u.Email, u.Password)
	acctWantLoggedIn(t, used, u.ID)
}

func TestSessionsAbsoluteExpiry(t *testing.T) {
	t.Parallel()
	clk := newAcctClock()
	srv := acctStartWithClock(t, clk)
	t0 := clk.Now()
	c := srv.Client(t)
	u := acctRegister(t, c, "Busy Bee")
	acctLogIn(t, c, u.Email, u.Password)

	// Used every 20 minutes (never idle 30), the session lives until 8 h after login...
	expiresAt := func() time.Time {
		r := c.Do(http.MethodGet, "/api/v1/sessions/current", nil)
		acctWantStatus(t, r, http.StatusOK)
		var s acctSessionJSON
		r.JSON(t, &s)
		return acctWantTime(t, "expires_at", s.ExpiresAt)
	}
	for elapsed := 20 * time.Minute; elapsed <= 7*time.Hour+40*time.Minute; elapsed += 20 * time.Minute {
		clk.Advance(20 * time.Minute)
		acctWantLoggedIn(t, c, u.ID)
		want := clk.Now().Add(30 * time.Minute)
		if abs := t0.Add(8 * time.Hour); want.After(abs) {
			want = abs
		}
		if got := expiresAt(); !got.Equal(want) {
			t.Fatalf("at login + %s expires_at = %s, want %s", elapsed, got, want)
		}
	}
	clk.Advance(19 * time.Minute) // login + 7h59m
	acctWantLoggedIn(t, c, u.ID)
	// ...and not a moment longer.
	clk.Advance(time.Minute)
	acctWantLoggedOut(t, c)

	acctLogIn(t, c, u.Email, u.Password)
	acctWantLoggedIn(t, c, u.ID)
}

// --- POST /ws-tokens ---

func TestSessionsWSToken(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, u := acctSignUp(t, srv, "Socket User")

	before := time.Now().Truncate(time.Second)
	r := c.Do(http.MethodPost, "/api/v1/ws-tokens", nil)
	after := time.Now()
	acctWantStatus(t, r, http.StatusCreated)
	acctWantKeys(t, "POST /ws-tokens answer", r.Body, "token", "expires_at")
	var w struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expires_at"`
	}
	r.JSON(t, &w)

	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(w.Token, &claims, func(*jwt.Token) (any, error) { return []byte(testserver.Secret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithAudience("taki-ws"), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token %q does not verify as an HS256 JWT for taki-ws: %v", w.Token, err)
	}
	if tok.Header["alg"] != "HS256" {
		t.Errorf("alg = %v, want HS256", tok.Header["alg"])
	}
	if claims.Subject != u.ID {
		t.Errorf("sub = %q, want the user id %s", claims.Subject, u.ID)
	}
	exp := claims.ExpiresAt.Time
	if exp.After(after.Add(5*time.Minute)) || !exp.After(before) {
		t.Errorf("exp = %s, want after now and at most 5 min ahead (now %s)", exp, after)
	}
	if got := acctWantTime(t, "expires_at", w.ExpiresAt); !got.Equal(exp) {
		t.Errorf("expires_at = %s, token exp = %s", got, exp)
	}
	// The signature is real: another key refuses it.
	if _, err := jwt.ParseWithClaims(w.Token, &jwt.RegisteredClaims{}, func(*jwt.Token) (any, error) { return []byte("another secret of at least 32 bytes!!"), nil },
		jwt.WithValidMethods([]string{"HS256"})); err == nil {
		t.Error("the token verifies with another key")
	}
	// A second token is another token.
	r2 := c.Do(http.MethodPost, "/api/v1/ws-tokens", nil)
	acctWantStatus(t, r2, http.StatusCreated)
	var w2 struct {
		Token string `json:"token"`
	}
	r2.JSON(t, &w2)
	if w2.Token == w.Token {
		t.Error("two POST /ws-tokens answered the same token")
	}
}
