package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/tests/testserver"
)

// Helpers of the users, sessions and consistency tests. Their names start with "acct" so that they
// cannot collide with the helpers of the package's other test files.

const acctPassword = "correct horse battery"

// acctEmail returns an email no other test uses (tests share the package's database).
func acctEmail(t testing.TB) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("%s-%s@example.com", strings.Trim(name, "-"), uuid.NewString()[:8])
}

// acctUser is a registered user.
type acctUser struct {
	ID       string
	Email    string
	Password string
	Name     string
}

// acctRegister registers a user (with a unique email) through c.
func acctRegister(t testing.TB, c *testserver.Client, name string) acctUser {
	t.Helper()
	email := acctEmail(t)
	u := c.Register(email, acctPassword, name)
	id, _ := u["id"].(string)
	if id == "" {
		t.Fatalf("register %s: no id in %v", email, u)
	}
	return acctUser{ID: id, Email: email, Password: acctPassword, Name: name}
}

// acctSignUp registers a user and returns a client logged in as that user.
func acctSignUp(t testing.TB, srv *testserver.Server, name string) (*testserver.Client, acctUser) {
	t.Helper()
	c := srv.Client(t)
	u := acctRegister(t, c, name)
	c.LogIn(u.Email, u.Password)
	return c, u
}

// acctWantProblem fails unless r is an application/problem+json answer with status and slug, and
// returns the problem.
func acctWantProblem(t testing.TB, r testserver.Response, status int, slug string) testserver.Problem {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%s %s: Content-Type %q, want application/problem+json; body %s", r.Request.Method, r.Request.URL.Path, ct, r.Body)
	}
	var p testserver.Problem
	r.JSON(t, &p)
	if want := "https://taki.dev/problems/" + slug; slug != "" && p.Type != want {
		t.Fatalf("%s %s: problem type %q, want %q; body %s", r.Request.Method, r.Request.URL.Path, p.Type, want, r.Body)
	}
	if p.Status != status {
		t.Fatalf("%s %s: problem status %d, want %d", r.Request.Method, r.Request.URL.Path, p.Status, status)
	}
	return p
}

// acctWantFields fails unless r is a 422 validation problem with exactly one errors entry per field
// in fields.
func acctWantFields(t testing.TB, r testserver.Response, fields ...string) {
	t.Helper()
	p := acctWantProblem(t, r, http.StatusUnprocessableEntity, "validation")
	got := make([]string, 0, len(p.Errors))
	for _, e := range p.Errors {
		if e.Message == "" {
			t.Errorf("errors entry for %q has no message: %s", e.Field, r.Body)
		}
		got = append(got, e.Field)
	}
	sort.Strings(got)
	want := slices.Clone(fields)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s %s: error fields %q, want %q; body %s", r.Request.Method, r.Request.URL.Path, got, want, r.Body)
	}
}

// acctWantStatus fails unless r has status.
func acctWantStatus(t testing.TB, r testserver.Response, status int) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.Body)
	}
}

// acctKeys returns the sorted keys of the JSON object in body.
func acctKeys(t testing.TB, body []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("not a JSON object: %s: %v", body, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// acctWantKeys fails unless body is a JSON object with exactly keys.
func acctWantKeys(t testing.TB, what string, body []byte, keys ...string) {
	t.Helper()
	want := slices.Clone(keys)
	sort.Strings(want)
	if got := acctKeys(t, body); !slices.Equal(got, want) {
		t.Fatalf("%s has keys %q, want exactly %q: %s", what, got, want, body)
	}
}

// acctWantUUID fails unless s is a UUID.
func acctWantUUID(t testing.TB, what, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil || len(s) != 36 {
		t.Fatalf("%s = %q, want a UUID string", what, s)
	}
	return id
}

// acctWantTime fails unless s is an RFC 3339 UTC time and returns it.
func acctWantTime(t testing.TB, what, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !strings.HasSuffix(s, "Z") {
		t.Fatalf("%s = %q, want an RFC 3339 UTC time", what, s)
	}
	return tm
}

// acctUserJSON is the user object of API.md.
type acctUserJSON struct {
	ID          string  `json:"id"`
	Email       string  `json:"email"`
	DisplayName string  `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
	Role        string  `json:"role"`
	CreatedAt   string  `json:"created_at"`
	LoginCount  *int    `json:"login_count"`
}

// acctPublicUser is a user as others see it.
type acctPublicUser struct {
	ID          string  `json:"id"`
	DisplayName string  `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// acctPage is a page of GET /users.
type acctPage struct {
	Items      []acctPublicUser `json:"items"`
	NextCursor *string          `json:"next_cursor"`
}

// acctRaw sends one request without the testserver client, for goroutines (which must not call
// t.Fatal) and for bodies the client cannot send. It returns the status and body.
func acctRaw(hc *http.Client, method, u string, body io.Reader, header http.Header) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// --- POST /users ---

func TestUsersRegisterAnswersTheUserObject(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	local := strings.TrimSuffix(acctEmail(t), "@example.com")
	mixed := "Mixed." + local + "@Example.COM"
	before := time.Now().Add(-time.Second)
	r := c.Do(http.MethodPost, "/api/v1/users", map[string]string{"email": mixed, "password": acctPassword, "display_name": "Ada Lovelace"})
	after := time.Now().Add(time.Second)
	acctWantStatus(t, r, http.StatusCreated)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	acctWantKeys(t, "POST /users answer", r.Body, "id", "email", "display_name", "avatar_url", "role", "created_at")
	var u acctUserJSON
	r.JSON(t, &u)
	acctWantUUID(t, "id", u.ID)
	if want := strings.ToLower(mixed); u.Email != want {
		t.Errorf("email = %q, want it lower-cased: %q", u.Email, want)
	}
	if u.DisplayName != "Ada Lovelace" || u.AvatarURL != nil || u.Role != "member" {
		t.Errorf("user = %+v, want display_name Ada Lovelace, avatar_url null, role member", u)
	}
	if created := acctWantTime(t, "created_at", u.CreatedAt); created.Before(before) || created.After(after) {
		t.Errorf("created_at = %s, want between %s and %s", created, before, after)
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}

	// The stored account is the one answered: the lower-cased address logs in and shows the same user.
	c.LogIn(strings.ToLower(mixed), acctPassword)
	me := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, me, http.StatusOK)
	var m acctUserJSON
	me.JSON(t, &m)
	if m.ID != u.ID || m.Email != u.Email || m.CreatedAt != u.CreatedAt {
		t.Errorf("GET /users/me = %+v, registration answered %+v", m, u)
	}
}

func TestUsersRegisterEmailTaken(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	first := acctRegister(t, c, "First Owner")

	for _, email := range []string{first.Email, strings.ToUpper(first.Email)} {
		r := c.Do(http.MethodPost, "/api/v1/users", map[string]string{"email": email, "password": "another password", "display_name": "Usurper"})
		acctWantProblem(t, r, http.StatusConflict, "email-taken")
	}

	// The refused registrations changed nothing: the first account keeps its password and name.
	c.LogIn(first.Email, first.Password)
	me := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, me, http.StatusOK)
	var m acctUserJSON
	me.JSON(t, &m)
	if m.ID != first.ID || m.DisplayName != "First Owner" {
		t.Errorf("after refused registrations GET /users/me = %+v, want the first account unchanged", m)
	}
	r := srv.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": first.Email, "password": "another password"})
	acctWantProblem(t, r, http.StatusUnauthorized, "unauthenticated")
}

func TestUsersRegisterValidation(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	const okPassword, okName = "eight ch", "Valid Name"

	cases := []struct {
		name                    string
		email, password, dpName string
		fields                  []string
	}{
		{"email without at", "not-an-email", okPassword, okName, []string{"email"}},
		{"email without domain", "someone@", okPassword, okName, []string{"email"}},
		{"email without local part", "@example.com", okPassword, okName, []string{"email"}},
		{"email with space", "some one@example.com", okPassword, okName, []string{"email"}},
		{"email with display name", "Some One <someone@example.com>", okPassword, okName, []string{"email"}},
		{"email empty", "", okPassword, okName, []string{"email"}},
		{"email over 254 chars", strings.Repeat("a", 250) + "@example.com", okPassword, okName, []string{"email"}},
		{"password 7 chars", "", "seven c", okName, []string{"password"}},
		{"password 7 multi-byte chars (14 bytes)", "", "ключ123", okName, []string{"password"}},
		{"password 129 chars", "", strings.Repeat("p", 129), okName, []string{"password"}},
		{"password 129 multi-byte chars", "", strings.Repeat("é", 129), okName, []string{"password"}},
		{"password empty", "", "", okName, []string{"password"}},
		{"display_name empty", "", okPassword, "", []string{"display_name"}},
		{"display_name blank", "", okPassword, "   ", []string{"display_name"}},
		{"display_name 65 chars", "", okPassword, strings.Repeat("n", 65), []string{"display_name"}},
		{"display_name 65 multi-byte chars", "", okPassword, strings.Repeat("ñ", 65), []string{"display_name"}},
		{"everything bad", "nope", "short", "", []string{"email", "password", "display_name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			email := tc.email
			if !slices.Contains(tc.fields, "email") {
				email = acctEmail(t)
			}
			r := c.Do(http.MethodPost, "/api/v1/users", map[string]string{"email": email, "password": tc.password, "display_name": tc.dpName})
			acctWantFields(t, r, tc.fields...)
			if r.Header.Get("X-Consistency-Token") != "" {
				t.Errorf("a refused command carries X-Consistency-Token %q", r.Header.Get("X-Consistency-Token"))
			}
			if !slices.Contains(tc.fields, "email") {
				// Bad input changed nothing: the address is still free.
				c.Register(email, okPassword, okName)
			}
		})
	}

	t.Run("missing fields", func(t *testing.T) {
		r := c.Do(http.MethodPost, "/api/v1/users", map[string]string{})
		acctWantFields(t, r, "email", "password", "display_name")
	})

	// The limits are counted in characters: these are valid.
	valid := []struct{ name, password, dpName string }{
		{"password 8 chars", "eight ch", okName},
		{"password 8 multi-byte chars", "пароль12", okName},
		{"password 8 emoji", strings.Repeat("🔑", 8), okName},
		{"password 128 chars", strings.Repeat("p", 128), okName},
		{"password 128 multi-byte chars", strings.Repeat("é", 128), okName},
		{"display_name 1 char", okPassword, "x"},
		{"display_name 64 chars", okPassword, strings.Repeat("n", 64)},
		{"display_name 64 multi-byte chars", okPassword, strings.Repeat("ñ", 64)},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			email := acctEmail(t)
			u := c.Register(email, tc.password, tc.dpName)
			if u["display_name"] != tc.dpName {
				t.Errorf("display_name = %v, want %q", u["display_name"], tc.dpName)
			}
			// The password was stored as sent: it logs in.
			srv.Client(t).LogIn(email, tc.password)
		})
	}
}

func TestUsersRegisterRejectsMalformedRequests(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	email := acctEmail(t)
	good := fmt.Sprintf(`{"email":%q,"password":%q,"display_name":"Mallory"}`, email, acctPassword)

	t.Run("unknown field", func(t *testing.T) {
		body := fmt.Sprintf(`{"email":%q,"password":%q,"display_name":"Mallory","role":"admin"}`, email, acctPassword)
		acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/users", body), http.StatusBadRequest, "")
	})
	t.Run("not JSON", func(t *testing.T) {
		acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/users", `{"email":`), http.StatusBadRequest, "")
	})
	t.Run("two JSON values", func(t *testing.T) {
		acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/users", good+good), http.StatusBadRequest, "")
	})
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"} {
		t.Run("content type "+ct, func(t *testing.T) {
			acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/users", good, "Content-Type", ct), http.StatusUnsupportedMediaType, "")
		})
	}
	t.Run("no content type", func(t *testing.T) {
		code, h, b, err := acctRaw(srv.Client(t).HTTP, http.MethodPost, srv.URL+"/api/v1/users", strings.NewReader(good), nil)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusUnsupportedMediaType || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
			t.Fatalf("no Content-Type: %d %s %s, want 415 problem", code, h.Get("Content-Type"), b)
		}
	})
	big := fmt.Sprintf(`{"email":%q,"password":%q,"display_name":"%s"}`, email, acctPassword, strings.Repeat("a", 1<<20))
	t.Run("body over 1 MiB", func(t *testing.T) {
		acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/users", big), http.StatusRequestEntityTooLarge, "")
	})
	t.Run("chunked body over 1 MiB", func(t *testing.T) {
		// An io.Reader of unknown length is sent chunked, without Content-Length.
		body := io.MultiReader(strings.NewReader(big))
		code, h, b, err := acctRaw(srv.Client(t).HTTP, http.MethodPost, srv.URL+"/api/v1/users", body,
			http.Header{"Content-Type": {"application/json"}})
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusRequestEntityTooLarge || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
			t.Fatalf("chunked 1 MiB+ body: %d %s %s, want 413 problem", code, h.Get("Content-Type"), b)
		}
	})
	t.Run("body just under 1 MiB is read", func(t *testing.T) {
		name := strings.Repeat("a", 1<<20-200)
		body := fmt.Sprintf(`{"email":%q,"password":%q,"display_name":"%s"}`, email, acctPassword, name)
		if len(body) > 1<<20 {
			t.Fatalf("test body is %d bytes", len(body))
		}
		acctWantFields(t, c.Do(http.MethodPost, "/api/v1/users", body), "display_name")
	})

	// None of the refused requests registered the address.
	u := c.Register(email, acctPassword, "Mallory")
	if u["role"] != "member" {
		t.Errorf("role = %v, want member", u["role"])
	}
}

func TestUsersRegisterConcurrentSameEmail(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	for _, variant := range []string{"identical", "differing in case"} {
		t.Run(variant, func(t *testing.T) {
			email := acctEmail(t)
			const n = 8
			type result struct {
				code int
				body []byte
				err  error
			}
			results := make([]result, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				e := email
				if variant != "identical" && i%2 == 1 {
					e = strings.ToUpper(email)
				}
				body := fmt.Sprintf(`{"email":%q,"password":"password-%d","display_name":"Racer %d"}`, e, i, i)
				hc := srv.Client(t).HTTP
				wg.Go(func() {
					<-start
					code, _, b, err := acctRaw(hc, http.MethodPost, srv.URL+"/api/v1/users", strings.NewReader(body),
						http.Header{"Content-Type": {"application/json"}})
					results[i] = result{code, b, err}
				})
			}
			close(start)
			wg.Wait()

			winner := -1
			for i, r := range results {
				switch {
				case r.err != nil:
					t.Fatalf("registration %d: %v", i, r.err)
				case r.code == http.StatusCreated:
					if winner >= 0 {
						t.Fatalf("registrations %d and %d both answered 201", winner, i)
					}
					winner = i
				case r.code == http.StatusConflict:
					var p testserver.Problem
					if err := json.Unmarshal(r.body, &p); err != nil || p.Type != "https://taki.dev/problems/email-taken" {
						t.Errorf("registration %d: 409 %s, want email-taken", i, r.body)
					}
				default:
					t.Errorf("registration %d: %d %s, want 201 or 409 email-taken", i, r.code, r.body)
				}
			}
			if winner < 0 {
				t.Fatal("no registration answered 201")
			}
			// The one account is the winner's: its password logs in as its name; the losers' passwords do
			// not log in (four of them: five failures would throttle the email).
			c := srv.Client(t)
			acctLogIn(t, c, email, fmt.Sprintf("password-%d", winner))
			acctWantProfile(t, c, fmt.Sprintf("Racer %d", winner), nil)
			for i, tried := 0, 0; i < n && tried < 4; i++ {
				if i == winner {
					continue
				}
				tried++
				r := srv.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": fmt.Sprintf("password-%d", i)})
				acctWantProblem(t, r, http.StatusUnauthorized, "unauthenticated")
			}
		})
	}
}

// --- GET /users/me, PATCH /users/me ---

func TestUsersMeAndProfileUpdate(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, u := acctSignUp(t, srv, "Grace Hopper")

	me := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, me, http.StatusOK)
	acctWantKeys(t, "GET /users/me", me.Body, "id", "email", "display_name", "avatar_url", "role", "created_at", "login_count")
	var m acctUserJSON
	me.JSON(t, &m)
	if m.ID != u.ID || m.Email != u.Email || m.DisplayName != "Grace Hopper" || m.AvatarURL != nil || m.Role != "member" ||
		m.LoginCount == nil || *m.LoginCount != 1 {
		t.Fatalf("GET /users/me = %s", me.Body)
	}
	acctWantTime(t, "created_at", m.CreatedAt)

	patch := func(t *testing.T, body any) acctUserJSON {
		t.Helper()
		r := c.Do(http.MethodPatch, "/api/v1/users/me", body)
		acctWantStatus(t, r, http.StatusOK)
		if r.Header.Get("X-Consistency-Token") == "" {
			t.Error("PATCH /users/me answer has no X-Consistency-Token")
		}
		acctWantKeys(t, "PATCH /users/me answer", r.Body, "id", "email", "display_name", "avatar_url", "role", "created_at", "login_count")
		var p acctUserJSON
		r.JSON(t, &p)
		if p.ID != u.ID || p.Email != u.Email || p.Role != "member" || p.CreatedAt != m.CreatedAt {
			t.Fatalf("PATCH /users/me answered another user: %s", r.Body)
		}
		// The answer is the profile GET /users/me shows after the write.
		g := c.Do(http.MethodGet, "/api/v1/users/me", nil)
		acctWantStatus(t, g, http.StatusOK)
		if g.Header.Get("X-Consistency-Stale") != "" {
			t.Errorf("GET /users/me after PATCH is stale")
		}
		var q acctUserJSON
		g.JSON(t, &q)
		if q.DisplayName != p.DisplayName || !acctSamePtr(q.AvatarURL, p.AvatarURL) {
			t.Fatalf("GET /users/me = %s after PATCH answered %s", g.Body, r.Body)
		}
		return p
	}
	t.Run("display_name", func(t *testing.T) {
		p := patch(t, map[string]string{"display_name": "Amazing Grace"})
		if p.DisplayName != "Amazing Grace" || p.AvatarURL != nil {
			t.Fatalf("profile = %+v", p)
		}
	})
	t.Run("avatar_url", func(t *testing.T) {
		p := patch(t, map[string]string{"avatar_url": "https://cdn.example.com/grace.png"})
		if p.AvatarURL == nil || *p.AvatarURL != "https://cdn.example.com/grace.png" || p.DisplayName != "Amazing Grace" {
			t.Fatalf("profile = %+v", p)
		}
	})
	t.Run("both", func(t *testing.T) {
		p := patch(t, map[string]any{"display_name": "Grace B. Hopper", "avatar_url": "http://img.example.org/g.jpg"})
		if p.DisplayName != "Grace B. Hopper" || p.AvatarURL == nil || *p.AvatarURL != "http://img.example.org/g.jpg" {
			t.Fatalf("profile = %+v", p)
		}
	})
	t.Run("64 multi-byte chars", func(t *testing.T) {
		name := strings.Repeat("ü", 64)
		if p := patch(t, map[string]string{"display_name": name}); p.DisplayName != name {
			t.Fatalf("display_name = %q", p.DisplayName)
		}
		patch(t, map[string]string{"display_name": "Grace B. Hopper"})
	})
	t.Run("empty avatar_url clears it", func(t *testing.T) {
		p := patch(t, map[string]string{"avatar_url": ""})
		if p.AvatarURL != nil {
			t.Fatalf("avatar_url = %q, want null", *p.AvatarURL)
		}
		if p.DisplayName != "Grace B. Hopper" {
			t.Fatalf("display_name = %q, want it kept", p.DisplayName)
		}
		// Clearing also reaches what others see.
		other, _ := acctSignUp(t, srv, "Observer")
		other.Token = c.Token
		r := other.Do(http.MethodGet, "/api/v1/users/"+u.ID, nil)
		acctWantStatus(t, r, http.StatusOK)
		if !bytes.Contains(r.Body, []byte(`"avatar_url":null`)) {
			t.Fatalf("GET /users/{id} = %s, want avatar_url null", r.Body)
		}
	})

	bad := []struct {
		name   string
		body   any
		fields []string
	}{
		{"empty display_name", map[string]string{"display_name": ""}, []string{"display_name"}},
		{"blank display_name", map[string]string{"display_name": "  "}, []string{"display_name"}},
		{"65 chars display_name", map[string]string{"display_name": strings.Repeat("x", 65)}, []string{"display_name"}},
		{"avatar_url not a URL", map[string]string{"avatar_url": "not a url"}, []string{"avatar_url"}},
		{"avatar_url relative", map[string]string{"avatar_url": "/img/me.png"}, []string{"avatar_url"}},
		{"avatar_url javascript", map[string]string{"avatar_url": "javascript:alert(1)"}, []string{"avatar_url"}},
		{"avatar_url ftp", map[string]string{"avatar_url": "ftp://example.com/me.png"}, []string{"avatar_url"}},
		{"both bad", map[string]string{"display_name": "", "avatar_url": "nope"}, []string{"display_name", "avatar_url"}},
		{"one bad one good", map[string]string{"display_name": "Fine Name", "avatar_url": "nope"}, []string{"avatar_url"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			acctWantFields(t, c.Do(http.MethodPatch, "/api/v1/users/me", tc.body), tc.fields...)
			acctWantProfile(t, c, "Grace B. Hopper", nil)
		})
	}
	t.Run("no fields", func(t *testing.T) {
		for _, body := range []string{`{}`, `{"display_name":null}`, `{"display_name":null,"avatar_url":null}`} {
			r := c.Do(http.MethodPatch, "/api/v1/users/me", body)
			p := acctWantProblem(t, r, http.StatusUnprocessableEntity, "validation")
			if len(p.Errors) == 0 {
				t.Errorf("PATCH %s: 422 without errors entries: %s", body, r.Body)
			}
		}
		acctWantProfile(t, c, "Grace B. Hopper", nil)
	})
	t.Run("zero-byte body", func(t *testing.T) {
		// No JSON value at all is a request that cannot be read (400), not an invalid one.
		acctWantProblem(t, c.Do(http.MethodPatch, "/api/v1/users/me", ""), http.StatusBadRequest, "")
		acctWantProfile(t, c, "Grace B. Hopper", nil)
	})
	t.Run("unknown field", func(t *testing.T) {
		acctWantProblem(t, c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "X", "email": "x@example.com"}), http.StatusBadRequest, "")
		acctWantProblem(t, c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"role": "admin"}), http.StatusBadRequest, "")
		acctWantProfile(t, c, "Grace B. Hopper", nil)
	})
	t.Run("wrong content type", func(t *testing.T) {
		r := c.Do(http.MethodPatch, "/api/v1/users/me", `{"display_name":"Plain"}`, "Content-Type", "text/plain")
		acctWantProblem(t, r, http.StatusUnsupportedMediaType, "")
		acctWantProfile(t, c, "Grace B. Hopper", nil)
	})
}

func acctSamePtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// acctWantProfile fails unless c's own profile has name and avatar (nil: null).
func acctWantProfile(t testing.TB, c *testserver.Client, name string, avatar *string) {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, r, http.StatusOK)
	var m acctUserJSON
	r.JSON(t, &m)
	if m.DisplayName != name || !acctSamePtr(m.AvatarURL, avatar) {
		t.Fatalf("profile changed: %s, want display_name %q", r.Body, name)
	}
}

// --- PUT /users/me/password ---

func TestUsersChangePassword(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	a, u := acctSignUp(t, srv, "Pat Changer")
	b := srv.Client(t)
	b.LogIn(u.Email, u.Password)
	c := srv.Client(t)
	c.LogIn(u.Email, u.Password)
	other, _ := acctSignUp(t, srv, "Bystander")

	oldCookie := acctCookie(t, srv, a)
	oldCSRF := a.CSRF
	oldID := acctCurrentSessionID(t, a)

	t.Run("wrong current password", func(t *testing.T) {
		r := a.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": "not my password", "new_password": "a brand new password"})
		acctWantFields(t, r, "current_password")
		acctWantStatus(t, b.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
		if got := acctCookie(t, srv, a); got != oldCookie {
			t.Fatal("a refused password change replaced the session cookie")
		}
		srv.Client(t).LogIn(u.Email, u.Password)
	})
	t.Run("new password too short", func(t *testing.T) {
		r := a.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": u.Password, "new_password": "short"})
		acctWantFields(t, r, "new_password")
		r = a.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": u.Password, "new_password": strings.Repeat("x", 129)})
		acctWantFields(t, r, "new_password")
		acctWantStatus(t, c.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
		srv.Client(t).LogIn(u.Email, u.Password)
	})
	t.Run("unknown field", func(t *testing.T) {
		r := a.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": u.Password, "new_password": "a brand new password", "confirm": "x"})
		acctWantProblem(t, r, http.StatusBadRequest, "")
		srv.Client(t).LogIn(u.Email, u.Password)
	})

	const newPassword = "a brand new password"
	r := a.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": u.Password, "new_password": newPassword})
	acctWantStatus(t, r, http.StatusNoContent)
	if len(r.Body) != 0 {
		t.Errorf("204 with a body: %s", r.Body)
	}
	if r.Header.Get("X-Consistency-Token") == "" {
		t.Error("PUT /users/me/password answer has no X-Consistency-Token")
	}
	newCSRF := r.Header.Get("X-CSRF-Token")
	if newCSRF == "" || newCSRF == oldCSRF {
		t.Fatalf("X-CSRF-Token after password change = %q (old %q), want a new token", newCSRF, oldCSRF)
	}
	newCookie := acctCookie(t, srv, a)
	if newCookie == "" || newCookie == oldCookie {
		t.Fatal("the session cookie was not re-issued by the password change")
	}

	// Every other session of the user is gone; another user's is not.
	acctWantProblem(t, b.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusUnauthorized, "unauthenticated")
	acctWantProblem(t, c.Do(http.MethodGet, "/api/v1/sessions/current", nil), http.StatusUnauthorized, "unauthenticated")
	acctWantStatus(t, other.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
	// The old cookie value no longer authenticates.
	acctWantProblem(t, acctClientWithCookie(t, srv, oldCookie).Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusUnauthorized, "unauthenticated")

	// This session continues under a new id, with the new CSRF token only.
	acctWantStatus(t, a.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
	if id := acctCurrentSessionID(t, a); id == oldID {
		t.Errorf("session public id %s unchanged by the password change", id)
	}
	r = a.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Old Token"})
	acctWantProblem(t, r, http.StatusForbidden, "csrf")
	a.CSRF = newCSRF
	r = a.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "New Token"})
	acctWantStatus(t, r, http.StatusOK)
	cur := a.Do(http.MethodGet, "/api/v1/sessions/current", nil)
	acctWantStatus(t, cur, http.StatusOK)
	var s struct {
		CSRF string `json:"csrf_token"`
	}
	cur.JSON(t, &s)
	if s.CSRF != newCSRF {
		t.Errorf("GET /sessions/current csrf_token = %q, want the re-issued %q", s.CSRF, newCSRF)
	}
	list := acctSessions(t, a)
	if len(list) != 1 || !list[0].Current {
		t.Errorf("sessions after password change = %+v, want only the current one", list)
	}

	// The old password stops working; the new one works.
	r = srv.Client(t).Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": u.Email, "password": u.Password})
	acctWantProblem(t, r, http.StatusUnauthorized, "unauthenticated")
	srv.Client(t).LogIn(u.Email, newPassword)
}

// --- GET /users/{id} ---

func TestUsersGetByID(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, _ := acctSignUp(t, srv, "Looker")
	other := srv.Client(t)
	o := acctRegister(t, other, "Looked At")
	c.Token = other.Token // read the registration

	r := c.Do(http.MethodGet, "/api/v1/users/"+o.ID, nil)
	acctWantStatus(t, r, http.StatusOK)
	acctWantKeys(t, "GET /users/{id}", r.Body, "id", "display_name", "avatar_url")
	var p acctPublicUser
	r.JSON(t, &p)
	if p.ID != o.ID || p.DisplayName != "Looked At" || p.AvatarURL != nil {
		t.Fatalf("GET /users/{id} = %s", r.Body)
	}
	if bytes.Contains(r.Body, []byte(o.Email)) {
		t.Fatalf("GET /users/{id} reveals the email: %s", r.Body)
	}

	for _, id := range []string{uuid.NewString(), uuid.Nil.String(), "not-a-uuid", "123", strings.ToUpper(uuid.NewString()), "me%20x"} {
		acctWantProblem(t, c.Do(http.MethodGet, "/api/v1/users/"+id, nil), http.StatusNotFound, "not-found")
	}
}

// --- GET /users?q= ---

// acctSearchAll pages through GET /users?q= with limit (0: none sent) and returns every item.
func acctSearchAll(t testing.TB, c *testserver.Client, q string, limit int) []acctPublicUser {
	t.Helper()
	var all []acctPublicUser
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		v := url.Values{"q": {q}}
		if limit > 0 {
			v.Set("limit", fmt.Sprint(limit))
		}
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		r := c.Do(http.MethodGet, "/api/v1/users?"+v.Encode(), nil)
		acctWantStatus(t, r, http.StatusOK)
		var p acctPage
		r.JSON(t, &p)
		if limit > 0 && len(p.Items) > limit {
			t.Fatalf("page of %d items, limit %d", len(p.Items), limit)
		}
		all = append(all, p.Items...)
		if p.NextCursor == nil {
			return all
		}
		if *p.NextCursor == "" || len(p.Items) == 0 {
			t.Fatalf("page %d: next_cursor %q with %d items", pages, *p.NextCursor, len(p.Items))
		}
		cursor = *p.NextCursor
	}
}

func TestUsersDirectorySearch(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, _ := acctSignUp(t, srv, "Searcher")
	reg := srv.Client(t)

	// 205 users whose names start with a prefix no other test uses, in mixed case, several with the
	// same name so that the id decides their order.
	prefix := "Zq" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + " "
	want := map[string]string{} // id -> name
	for i := range 205 {
		var name string
		switch {
		case i%10 == 0:
			name = prefix + "twin"
		case i%3 == 0:
			name = strings.ToUpper(prefix) + fmt.Sprintf("member %03d", i)
		case i%3 == 1:
			name = strings.ToLower(prefix) + fmt.Sprintf("Member %03d", i)
		default:
			name = prefix + fmt.Sprintf("mEmber %03d", 204-i)
		}
		u := acctRegister(t, reg, name)
		want[u.ID] = name
	}
	// Names that contain the prefix but do not start with it are not matches.
	acctRegister(t, reg, "x"+prefix+"not a match")
	acctRegister(t, reg, strings.TrimSpace(prefix)) // the prefix without its trailing space
	c.Token = reg.Token

	check := func(t *testing.T, got []acctPublicUser) {
		t.Helper()
		seen := map[string]bool{}
		for i, it := range got {
			if seen[it.ID] {
				t.Fatalf("user %s listed twice", it.ID)
			}
			seen[it.ID] = true
			name, ok := want[it.ID]
			if !ok {
				t.Fatalf("item %d %+v is not a match", i, it)
			}
			if it.DisplayName != name {
				t.Fatalf("item %s display_name %q, want %q", it.ID, it.DisplayName, name)
			}
			if i > 0 {
				prev := got[i-1]
				pk, k := strings.ToLower(prev.DisplayName), strings.ToLower(it.DisplayName)
				if pk > k || (pk == k && prev.ID >= it.ID) {
					t.Fatalf("items %d (%q %s) and %d (%q %s) are not ordered by name then id", i-1, prev.DisplayName, prev.ID, i, it.DisplayName, it.ID)
				}
			}
		}
		if len(seen) != len(want) {
			t.Fatalf("listed %d users, want %d", len(seen), len(want))
		}
	}

	for _, limit := range []int{1, 7, 37, 50, 200} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			check(t, acctSearchAll(t, c, prefix, limit))
		})
	}
	t.Run("case-insensitive", func(t *testing.T) {
		check(t, acctSearchAll(t, c, strings.ToUpper(prefix), 64))
		check(t, acctSearchAll(t, c, strings.ToLower(prefix), 0))
	})
	t.Run("item shape", func(t *testing.T) {
		r := c.Do(http.MethodGet, "/api/v1/users?limit=1&q="+url.QueryEscape(prefix), nil)
		acctWantStatus(t, r, http.StatusOK)
		acctWantKeys(t, "GET /users page", r.Body, "items", "next_cursor")
		var raw struct {
			Items []json.RawMessage `json:"items"`
		}
		r.JSON(t, &raw)
		if len(raw.Items) != 1 {
			t.Fatalf("limit=1 answered %d items", len(raw.Items))
		}
		acctWantKeys(t, "GET /users item", raw.Items[0], "id", "display_name", "avatar_url")
	})
	t.Run("default limit 50", func(t *testing.T) {
		r := c.Do(http.MethodGet, "/api/v1/users?q="+url.QueryEscape(prefix), nil)
		acctWantStatus(t, r, http.StatusOK)
		var p acctPage
		r.JSON(t, &p)
		if len(p.Items) != 50 || p.NextCursor == nil {
			t.Fatalf("without limit: %d items, next_cursor %v; want 50 and a cursor", len(p.Items), p.NextCursor)
		}
	})
	t.Run("max limit 200", func(t *testing.T) {
		r := c.Do(http.MethodGet, "/api/v1/users?limit=200&q="+url.QueryEscape(prefix), nil)
		acctWantStatus(t, r, http.StatusOK)
		var p acctPage
		r.JSON(t, &p)
		if len(p.Items) != 200 || p.NextCursor == nil {
			t.Fatalf("limit=200: %d items, next_cursor %v; want 200 and a cursor", len(p.Items), p.NextCursor)
		}
		r = c.Do(http.MethodGet, "/api/v1/users?limit=200&cursor="+url.QueryEscape(*p.NextCursor)+"&q="+url.QueryEscape(prefix), nil)
		acctWantStatus(t, r, http.StatusOK)
		var p2 acctPage
		r.JSON(t, &p2)
		if len(p2.Items) != 5 || p2.NextCursor != nil {
			t.Fatalf("second page: %d items, next_cursor %v; want the last 5 and null", len(p2.Items), p2.NextCursor)
		}
	})
	t.Run("bad limit", func(t *testing.T) {
		for _, l := range []string{"201", "0", "-1", "abc", "1.5", "99999999999999999999"} {
			acctWantFields(t, c.Do(http.MethodGet, "/api/v1/users?limit="+l+"&q="+url.QueryEscape(prefix), nil), "limit")
		}
	})
	t.Run("bad cursor", func(t *testing.T) {
		// The last one decodes, but its name PostgreSQL cannot take as text.
		nul := base64.RawURLEncoding.EncodeToString([]byte(`{"n":"a\u0000","i":"` + uuid.NewString() + `"}`))
		for _, cur := range []string{"!!!", "not-a-cursor", base64.RawURLEncoding.EncodeToString([]byte("not json")), strings.Repeat("A", 2000), nul} {
			acctWantFields(t, c.Do(http.MethodGet, "/api/v1/users?cursor="+url.QueryEscape(cur)+"&q="+url.QueryEscape(prefix), nil), "cursor")
		}
	})
	t.Run("q that is no text", func(t *testing.T) {
		for _, q := range []string{"%00", "a%00b", "%FF", "%C3"} {
			acctWantFields(t, c.Do(http.MethodGet, "/api/v1/users?q="+q, nil), "q")
		}
	})
	t.Run("no match", func(t *testing.T) {
		r := c.Do(http.MethodGet, "/api/v1/users?q="+url.QueryEscape(prefix+"nobody has this name"), nil)
		acctWantStatus(t, r, http.StatusOK)
		if !bytes.Equal(bytes.TrimSpace(r.Body), []byte(`{"items":[],"next_cursor":null}`)) {
			t.Fatalf("no match = %s, want an empty page", r.Body)
		}
	})
}

func TestUsersDirectorySearchWildcardsAreLiteral(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, _ := acctSignUp(t, srv, "Wildcard Searcher")
	reg := srv.Client(t)
	p := "Wq" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	ids := map[string]string{}
	for _, name := range []string{p + "_under", p + "Xunder", p + "%percent", p + "Ypercent", p + `\back`, p + "Zback", p + "__double"} {
		ids[name] = acctRegister(t, reg, name).ID
	}
	c.Token = reg.Token

	cases := []struct {
		q    string
		want []string
	}{
		{p + "_", []string{p + "__double", p + "_under"}},
		{p + "__", []string{p + "__double"}},
		{p + "%", []string{p + "%percent"}},
		{p + "%percent", []string{p + "%percent"}},
		{p + `\`, []string{p + `\back`}},
		{p + "_u", []string{p + "_under"}},
		{p + "%p", []string{p + "%percent"}},
	}
	for _, tc := range cases {
		got := acctSearchAll(t, c, tc.q, 0)
		var names []string
		for _, it := range got {
			names = append(names, it.DisplayName)
			if ids[it.DisplayName] != it.ID {
				t.Errorf("q=%q: item %+v is not the registered user", tc.q, it)
			}
		}
		if !slices.Equal(names, tc.want) {
			t.Errorf("q=%q matched %q, want %q", tc.q, names, tc.want)
		}
	}
	if got := acctSearchAll(t, c, p, 0); len(got) != len(ids) {
		t.Errorf("q=%q matched %d users, want %d", p, len(got), len(ids))
	}
}
