package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/infra/config"
	"taki/infra/postgres/pgtest"
	"taki/tests/testserver"
)

// Read-your-writes (API.md): these tests never wait for a projection but through the token.

func TestConsistencyTokenOnEveryCommand(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	seen := map[string]string{}
	want := func(what string, r testserver.Response, status int) {
		t.Helper()
		acctWantStatus(t, r, status)
		tok := r.Header.Get("X-Consistency-Token")
		if tok == "" {
			t.Errorf("%s answered %d without X-Consistency-Token", what, status)
			return
		}
		if prev, ok := seen[tok]; ok {
			t.Errorf("%s answered the token %q of %s", what, tok, prev)
		}
		seen[tok] = what
	}
	email := acctEmail(t)
	want("POST /users", c.Do(http.MethodPost, "/api/v1/users", map[string]string{"email": email, "password": acctPassword, "display_name": "Tokened"}), http.StatusCreated)
	r := c.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": acctPassword})
	want("POST /sessions", r, http.StatusOK)
	var s acctSessionJSON
	r.JSON(t, &s)
	c.CSRF = s.CSRFToken
	want("PATCH /users/me", c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Tokened Again"}), http.StatusOK)
	r = c.Do(http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": acctPassword, "new_password": "another fine password"})
	want("PUT /users/me/password", r, http.StatusNoContent)
	c.CSRF = r.Header.Get("X-CSRF-Token")

}

// A command that appends nothing (a PATCH /users/me that changes nothing) must still answer a token
// covering the state its answer shows: a client keeps the last token it got, and its next read must
// not miss its own earlier writes.
func TestConsistencyNoOpCommandTokenCoversEarlierWrites(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, _ := acctSignUp(t, srv, "No Op")
	for i := range 20 {
		name := fmt.Sprintf("No Op %02d", i)
		acctWantStatus(t, c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": name}), http.StatusOK)
		// The same name again: nothing changes, and the answer shows the profile with name.
		r := c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": name})
		acctWantStatus(t, r, http.StatusOK)
		var p acctUserJSON
		r.JSON(t, &p)
		if p.DisplayName != name {
			t.Fatalf("no-op PATCH answered %s, want display_name %q", r.Body, name)
		}
		// The client sends back the last token it got, as the contract asks.
		g := c.Do(http.MethodGet, "/api/v1/users/me", nil)
		if g.StatusCode != http.StatusOK {
			t.Fatalf("iteration %d: GET /users/me with the no-op PATCH's token %q: %d %s, want 200 with display_name %q",
				i, r.Header.Get("X-Consistency-Token"), g.StatusCode, g.Body, name)
		}
		var m acctUserJSON
		g.JSON(t, &m)
		if m.DisplayName != name {
			t.Fatalf("iteration %d: GET /users/me with the no-op PATCH's token %q shows display_name %q, want %q (stale %q)",
				i, r.Header.Get("X-Consistency-Token"), m.DisplayName, name, g.Header.Get("X-Consistency-Stale"))
		}
	}
}

func TestConsistencyReadYourWrites(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	// A second instance on the same database: the token is good on every instance.
	srv2 := testserver.Start(t, dbURL)
	writer, w := acctSignUp(t, srv, "Writer")
	observer, _ := acctSignUp(t, srv, "Observer")
	observer2, _ := acctSignUp(t, srv2, "Observer Two")

	t.Run("registration", func(t *testing.T) {
		reg := srv.Client(t)
		for i := range 10 {
			u := acctRegister(t, reg, fmt.Sprintf("Fresh %d", i))
			for _, o := range []*testserver.Client{observer, observer2} {
				o.Token = reg.Token
				r := o.Do(http.MethodGet, "/api/v1/users/"+u.ID, nil)
				acctWantStatus(t, r, http.StatusOK)
				if r.Header.Get("X-Consistency-Stale") != "" {
					t.Fatalf("GET /users/{id} with the registration's token answered stale")
				}
			}
		}
	})

	t.Run("rename", func(t *testing.T) {
		base := "Rw" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
		for i := range 12 {
			name := fmt.Sprintf("%s %02d", base, i)
			r := writer.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": name})
			acctWantStatus(t, r, http.StatusOK)
			tok := r.Header.Get("X-Consistency-Token")
			if tok == "" {
				t.Fatal("PATCH /users/me without X-Consistency-Token")
			}

			acctWantProfile(t, writer, name, nil)
			for n, o := range []*testserver.Client{observer, observer2} {
				o.Token = tok
				g := o.Do(http.MethodGet, "/api/v1/users/"+w.ID, nil)
				acctWantStatus(t, g, http.StatusOK)
				var p acctPublicUser
				g.JSON(t, &p)
				if p.DisplayName != name || g.Header.Get("X-Consistency-Stale") != "" {
					t.Fatalf("observer %d: GET /users/{id} with the PATCH's token = %s (stale %q), want %q", n, g.Body, g.Header.Get("X-Consistency-Stale"), name)
				}
				page := o.Do(http.MethodGet, "/api/v1/users?q="+url.QueryEscape(name), nil)
				acctWantStatus(t, page, http.StatusOK)
				var pg acctPage
				page.JSON(t, &pg)
				if len(pg.Items) != 1 || pg.Items[0].ID != w.ID || pg.Items[0].DisplayName != name {
					t.Fatalf("observer %d: GET /users?q=%s with the PATCH's token = %s", n, name, page.Body)
				}
				// The previous name is no longer found.
				if i > 0 {
					old := o.Do(http.MethodGet, "/api/v1/users?q="+url.QueryEscape(fmt.Sprintf("%s %02d", base, i-1)), nil)
					acctWantStatus(t, old, http.StatusOK)
					var op acctPage
					old.JSON(t, &op)
					if len(op.Items) != 0 {
						t.Fatalf("observer %d: the old name still matches: %s", n, old.Body)
					}
				}
			}
		}
	})

	t.Run("avatar", func(t *testing.T) {
		r := writer.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"avatar_url": "https://cdn.example.com/w.png"})
		acctWantStatus(t, r, http.StatusOK)
		observer.Token = writer.Token
		var p acctPublicUser
		g := observer.Do(http.MethodGet, "/api/v1/users/"+w.ID, nil)
		acctWantStatus(t, g, http.StatusOK)
		g.JSON(t, &p)
		if p.AvatarURL == nil || *p.AvatarURL != "https://cdn.example.com/w.png" {
			t.Fatalf("GET /users/{id} = %s, want the new avatar", g.Body)
		}
		acctWantStatus(t, writer.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"avatar_url": ""}), http.StatusOK)
		observer.Token = writer.Token
		g = observer.Do(http.MethodGet, "/api/v1/users/"+w.ID, nil)
		acctWantStatus(t, g, http.StatusOK)
		p = acctPublicUser{}
		g.JSON(t, &p)
		if p.AvatarURL != nil {
			t.Fatalf("GET /users/{id} = %s, want avatar_url null", g.Body)
		}
	})
}

func TestConsistencyMalformedToken(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c, u := acctSignUp(t, srv, "Malformed")
	paths := []string{"/api/v1/users/me", "/api/v1/users/" + u.ID, "/api/v1/users?q=Mal", "/api/v1/sessions/current"}
	for _, tok := range []string{"garbage", "1", "1.", ".1", "-1.0", "1.-1", "1.2.3", "a.b", "18446744073709551616.0", "0x10.0"} {
		for _, p := range paths {
			r := c.Do(http.MethodGet, p, nil, "X-Consistency-Token", tok)
			if r.StatusCode != http.StatusBadRequest {
				t.Errorf("GET %s with X-Consistency-Token %q: %d %s, want 400", p, tok, r.StatusCode, r.Body)
				continue
			}
			acctWantProblem(t, r, http.StatusBadRequest, "")
		}
	}
}

func TestConsistencyStaleAfterWait(t *testing.T) {
	t.Parallel()
	const wait = 200 * time.Millisecond
	// The user is made on a server with the default wait, which reads it back through the token, so
	// the read model has it before the impatient server (same database) is asked.
	home := testserver.Start(t, dbURL)
	h, u := acctSignUp(t, home, "Impatient")
	r := h.Do(http.MethodGet, "/api/v1/users/me", nil)
	acctWantStatus(t, r, http.StatusOK)
	if r.Header.Get("X-Consistency-Stale") != "" {
		t.Fatal("GET /users/me with the login's token answered stale after the default wait")
	}
	fresh := h.Token
	srv := testserver.Start(t, dbURL, testserver.WithConfig(func(c *config.Config) { c.ConsistencyWait = wait }))
	c := acctClientWithCookie(t, srv, acctCookie(t, home, h))

	// A token beyond the end of the log cannot be waited for: the answer comes at once, with the data
	// there is, marked stale.
	const future = "9223372036854775807.0"
	for _, p := range []string{"/api/v1/users/me", "/api/v1/users/" + u.ID, "/api/v1/users?q=Impatient"} {
		start := time.Now()
		r := c.Do(http.MethodGet, p, nil, "X-Consistency-Token", future)
		elapsed := time.Since(start)
		acctWantStatus(t, r, http.StatusOK)
		if got := r.Header.Get("X-Consistency-Stale"); got != "true" {
			t.Errorf("GET %s with a future token: X-Consistency-Stale %q, want true", p, got)
		}
		if !strings.Contains(string(r.Body), u.ID) {
			t.Errorf("GET %s with a future token answered %s, want the data there is", p, r.Body)
		}
		if elapsed >= wait {
			t.Errorf("GET %s with a token beyond the log waited %s, want an answer before the %s wait", p, elapsed, wait)
		}
	}

	// A token already applied is not stale.
	r = c.Do(http.MethodGet, "/api/v1/users/me", nil, "X-Consistency-Token", fresh)
	acctWantStatus(t, r, http.StatusOK)
	if r.Header.Get("X-Consistency-Stale") != "" {
		t.Errorf("GET with an applied token answered X-Consistency-Stale %q", r.Header.Get("X-Consistency-Stale"))
	}
	// No token, no wait, never stale.
	r = c.Do(http.MethodGet, "/api/v1/users/me", nil, "X-Consistency-Token", "")
	acctWantStatus(t, r, http.StatusOK)
	if r.Header.Get("X-Consistency-Stale") != "" {
		t.Errorf("GET without a token answered X-Consistency-Stale %q", r.Header.Get("X-Consistency-Stale"))
	}
}

// A real token whose event the read model cannot apply yet (its consumer group is held, as by a slow
// batch) is waited for about the configured time, then answered with the data there is, marked stale.
func TestConsistencyWaitsThenAnswersStale(t *testing.T) {
	t.Parallel()
	const wait = 300 * time.Millisecond
	db := pgtest.NewDatabase(t)
	// As in TestConsistencyStaleAfterWait, the user is made on a server with the default wait: a
	// transaction of another test package can hold every log reader of the cluster back for longer
	// than this test's short wait.
	home := testserver.Start(t, db)
	h, _ := acctSignUp(t, home, "Patient")
	acctWantStatus(t, h.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
	srv := testserver.Start(t, db, testserver.WithConfig(func(c *config.Config) { c.ConsistencyWait = wait }))
	c := acctClientWithCookie(t, srv, acctCookie(t, home, h))
	c.CSRF = h.CSRF

	ctx := context.Background()
	tx, err := srv.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM events_offsets WHERE consumer_group = 'users' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	r := c.Do(http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Held Back"})
	acctWantStatus(t, r, http.StatusOK)
	start := time.Now()
	r = c.Do(http.MethodGet, "/api/v1/users/me", nil)
	elapsed := time.Since(start)
	acctWantStatus(t, r, http.StatusOK)
	if got := r.Header.Get("X-Consistency-Stale"); got != "true" {
		t.Fatalf("X-Consistency-Stale %q, want true while the projection is held", got)
	}
	if elapsed < wait {
		t.Fatalf("answered after %s, want after waiting about %s", elapsed, wait)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Released, the same token is applied and the write is read back (within the default wait, for
	// the reason above).
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = c.Do(http.MethodGet, "/api/v1/users/me", nil)
		acctWantStatus(t, r, http.StatusOK)
		if r.Header.Get("X-Consistency-Stale") == "" && strings.Contains(string(r.Body), "Held Back") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after release: stale %q, body %s", r.Header.Get("X-Consistency-Stale"), r.Body)
		}
	}
}
