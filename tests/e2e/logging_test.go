package e2e

import (
	"net/http"
	"strings"
	"testing"

	"taki/tests/testserver"
)

// logxLines decodes every JSON log line.
func logxLines(t *testing.T, logs *opsLogBuffer) []map[string]any { return logs.Lines(t) }

// logxRequest is one request of the scenario and what its log lines must say.
type logxRequest struct {
	what      string
	requestID string // the X-Request-Id the server answered
	authed    bool   // authenticated by the session cookie: its lines name the user
}

func TestLogsNameRequestAndUserButNoSecrets(t *testing.T) {
	t.Parallel()
	logs := &opsLogBuffer{}
	srv := testserver.Start(t, dbURL, testserver.WithLogs(logs))
	c := srv.Client(t)

	const (
		password      = "Log-Secret-Passw0rd-1"
		newPassword   = "Log-Secret-Passw0rd-2"
		wrongPassword = "Log-Wrong-Passw0rd-3"
		shortPassword = "Qz9#Lk7"
	)
	email := opsEmail("logging")
	var secrets []string // every secret value the client saw or sent
	var reqs []logxRequest
	do := func(what string, authed bool, method, path string, body any, headers ...string) testserver.Response {
		t.Helper()
		r := c.Do(method, path, body, headers...)
		id := r.Header.Get("X-Request-Id")
		if id == "" {
			t.Fatalf("%s: no X-Request-Id", what)
		}
		for _, ck := range r.Cookies() {
			if ck.Name == "taki_session" && ck.Value != "" {
				secrets = append(secrets, ck.Value)
			}
		}
		if tok := r.Header.Get("X-CSRF-Token"); tok != "" {
			secrets = append(secrets, tok)
		}
		reqs = append(reqs, logxRequest{what: what, requestID: id, authed: authed})
		return r
	}
	wantStatus := func(r testserver.Response, status int) {
		t.Helper()
		if r.StatusCode != status {
			t.Fatalf("%s %s: %d %s, want %d", r.Request.Method, r.Request.URL.Path, r.StatusCode, r.Body, status)
		}
	}
	secrets = append(secrets, password, newPassword, wrongPassword, shortPassword)

	// Registration, with the client's own request id.
	r := do("register", false, http.MethodPost, "/api/v1/users",
		map[string]string{"email": email, "password": password, "display_name": "Logger"}, "X-Request-Id", "logging-register-1")
	wantStatus(r, http.StatusCreated)
	if reqs[0].requestID != "logging-register-1" {
		t.Fatalf("the client's request id was not echoed: %q", reqs[0].requestID)
	}
	var user struct {
		ID string `json:"id"`
	}
	r.JSON(t, &user)

	wantStatus(do("register with a short password", false, http.MethodPost, "/api/v1/users",
		map[string]string{"email": opsEmail("short"), "password": shortPassword, "display_name": "Short"}), http.StatusUnprocessableEntity)
	wantStatus(do("wrong password", false, http.MethodPost, "/api/v1/sessions",
		map[string]string{"email": email, "password": wrongPassword}), http.StatusUnauthorized)

	r = do("log in", false, http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": password})
	wantStatus(r, http.StatusOK)
	var session struct {
		CSRF string `json:"csrf_token"`
	}
	r.JSON(t, &session)
	c.CSRF = session.CSRF
	secrets = append(secrets, session.CSRF)

	wantStatus(do("me", true, http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
	wantStatus(do("patch me", true, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Logger Renamed"}), http.StatusOK)
	r = do("current session", true, http.MethodGet, "/api/v1/sessions/current", nil)
	wantStatus(r, http.StatusOK)
	var current struct {
		CSRF string `json:"csrf_token"`
	}
	r.JSON(t, &current)
	secrets = append(secrets, current.CSRF)

	r = do("ws token", true, http.MethodPost, "/api/v1/ws-tokens", nil)
	wantStatus(r, http.StatusCreated)
	var ws struct {
		Token string `json:"token"`
	}
	r.JSON(t, &ws)
	parts := strings.Split(ws.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("ws token %q is not a JWT", ws.Token)
	}
	secrets = append(secrets, ws.Token, parts[2])
	// The token travels in a query string: it must not reach the logs from there either.
	do("ws with token", false, http.MethodGet, "/ws?token="+ws.Token, nil)
	wantStatus(do("me with a token in the query", true, http.MethodGet, "/api/v1/users/me?token="+ws.Token, nil), http.StatusOK)

	r = do("change password", true, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": password, "new_password": newPassword})
	wantStatus(r, http.StatusNoContent)
	c.CSRF = r.Header.Get("X-CSRF-Token")
	wantStatus(do("me after the password change", true, http.MethodGet, "/api/v1/users/me", nil), http.StatusOK)
	wantStatus(do("log out", true, http.MethodDelete, "/api/v1/sessions/current", nil), http.StatusNoContent)

	// Sanity: the secrets were really collected (cookies at login and at rotation, three CSRF tokens).
	if len(secrets) < 4+2+3+2 {
		t.Fatalf("collected only %d secrets", len(secrets))
	}

	// Every request has an access log line carrying its request id, and the user id when authenticated.
	lines := logxLines(t, logs)
	for _, req := range reqs {
		var access map[string]any
		byRequest := 0
		for _, l := range lines {
			if l["request_id"] != req.requestID {
				continue
			}
			byRequest++
			if l["msg"] == "http request" {
				access = l
			}
			if req.authed && l["user_id"] != user.ID {
				t.Errorf("%s: line %v lacks user_id %s", req.what, l, user.ID)
			}
		}
		if access == nil {
			t.Errorf("%s: no access log line with request_id %s (%d lines with it)", req.what, req.requestID, byRequest)
			continue
		}
		if req.authed && access["user_id"] != user.ID {
			t.Errorf("%s: access log line %v has user_id %v, want %s", req.what, access, access["user_id"], user.ID)
		}
		if !req.authed && access["user_id"] != nil {
			t.Errorf("%s: anonymous request logged with user_id %v", req.what, access["user_id"])
		}
	}
	// The commands and queries the bus ran are logged under the request too.
	var patch logxRequest
	for _, req := range reqs {
		if req.what == "patch me" {
			patch = req
		}
	}
	dispatched := 0
	for _, l := range lines {
		if l["msg"] == "dispatched" && l["name"] == "commands.UpdateProfile" {
			dispatched++
			if l["request_id"] != patch.requestID || l["user_id"] != user.ID {
				t.Errorf("UpdateProfile dispatch line %v: want request_id %s and user_id %s", l, patch.requestID, user.ID)
			}
		}
	}
	if dispatched != 1 {
		t.Errorf("%d dispatch lines for UpdateProfile, want 1", dispatched)
	}

	text := logs.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("the logs contain the secret %q", s)
		}
	}
	if strings.Contains(text, "$argon2id$") {
		t.Error("the logs contain a password hash")
	}
	if strings.Contains(text, "token=") {
		t.Error("the logs contain a query string with a token")
	}
	if t.Failed() {
		t.Logf("logs:\n%s", text)
	}
}
