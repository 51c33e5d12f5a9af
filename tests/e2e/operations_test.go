package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"taki/events"
	"taki/infra/config"
	httpapi "taki/infra/http"
	"taki/infra/logging"
	"taki/infra/logging/logtest"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/tests/testserver"
)

// opsNotYetBuilt lists the routes that the OpenAPI document (and API.md) describes but that no issue has
// built yet. When an issue adds one of them to the router, TestOpsOpenAPIMatchesRouter fails until the
// route is removed from here: the list only ever shrinks, and it is empty once the API is complete.
var opsNotYetBuilt = []string{}

// opsLeaks are fragments of internal details that must never reach a client in a problem body.
var opsLeaks = []string{"SQLSTATE", "pgx", "pgconn", "postgres", "relation ", "user_profiles", "goroutine ", ".go:", "panic", "runtime."}

// opsProblem checks that r is an RFC 9457 problem with status and slug, carries X-Request-Id and
// holds no internal detail, and returns it.
func opsProblem(t *testing.T, r testserver.Response, status int, slug string) testserver.Problem {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%s %s: Content-Type %q, want application/problem+json", r.Request.Method, r.Request.URL.Path, ct)
	}
	var p testserver.Problem
	r.JSON(t, &p)
	if p.Type != "https://taki.dev/problems/"+slug || p.Status != status || p.Title == "" {
		t.Errorf("%s %s: problem %+v, want type slug %q, status %d and a title", r.Request.Method, r.Request.URL.Path, p, slug, status)
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: no X-Request-Id", r.Request.Method, r.Request.URL.Path)
	}
	for _, leak := range opsLeaks {
		if strings.Contains(string(r.Body), leak) {
			t.Errorf("%s %s: problem body leaks %q: %s", r.Request.Method, r.Request.URL.Path, leak, r.Body)
		}
	}
	return p
}

func opsEmail(prefix string) string { return prefix + "-" + uuid.NewString()[:8] + "@example.com" }

func TestOpsHealthz(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	r := srv.Client(t).Do(http.MethodGet, "/healthz", nil)
	if r.StatusCode != http.StatusOK || r.Header.Get("X-Request-Id") == "" {
		t.Fatalf("healthz: %d %s (request id %q)", r.StatusCode, r.Body, r.Header.Get("X-Request-Id"))
	}
	var body map[string]any
	r.JSON(t, &body)
	if len(body) != 1 || body["status"] != "ok" {
		t.Errorf("healthz body %s, want {\"status\":\"ok\"}", r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("healthz Content-Type %q", ct)
	}
}

func TestOpsReadyzWhenAllIsWell(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	r := srv.Client(t).Do(http.MethodGet, "/readyz", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %d %s", r.StatusCode, r.Body)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("readyz Cache-Control %q: a probe answer must not be cached", cc)
	}
}

// opsUnstarted wires a server on databaseURL without starting its projections and serves its router.
func opsUnstarted(t *testing.T, databaseURL string) (*server.Server, *httptest.Server) {
	t.Helper()
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"TAKI_DATABASE_URL": databaseURL, "TAKI_SECRET": testserver.Secret}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, logging.Discard(), server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Router)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return srv, hs
}

type opsReadiness struct {
	Type   string `json:"type"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Checks []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"checks"`
}

// opsNotReady asks /readyz, wants a 503 problem, and returns the checks by name.
func opsNotReady(t *testing.T, baseURL string) map[string]string {
	t.Helper()
	resp, err := http.Get(baseURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz: %d %s, want 503", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("readyz 503 Content-Type %q", ct)
	}
	var p opsReadiness
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("readyz body %s: %v", body, err)
	}
	if p.Status != http.StatusServiceUnavailable || !strings.HasPrefix(p.Type, "https://taki.dev/problems/") || p.Detail == "" {
		t.Errorf("readyz problem %+v", p)
	}
	out := map[string]string{}
	for _, c := range p.Checks {
		switch c.Status {
		case "ok":
			out[c.Name] = "ok"
		case "failed":
			if c.Error == "" {
				t.Errorf("check %s failed without saying why", c.Name)
			}
			out[c.Name] = "failed: " + c.Error
		default:
			t.Errorf("check %s has status %q", c.Name, c.Status)
		}
	}
	return out
}

func TestOpsReadyzProjectionsNotRunning(t *testing.T) {
	t.Parallel()
	_, hs := opsUnstarted(t, dbURL)
	checks := opsNotReady(t, hs.URL)
	if checks["database"] != "ok" || checks["migrations"] != "ok" {
		t.Errorf("checks %v: database and migrations are fine", checks)
	}
	if p := checks["projections"]; !strings.HasPrefix(p, "failed: ") || !strings.Contains(p, "users") {
		t.Errorf("projections check %q, want a failure naming the users projection", p)
	}
}

func TestOpsReadyzMigrationMissing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	pool := pgtest.NewPool(t, db)
	m, err := postgres.NewMigrator(pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()

	srv, hs := opsUnstarted(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := srv.Start(ctx) // projections run: only the schema is wrong
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); wait() })

	checks := opsNotReady(t, hs.URL)
	if checks["database"] != "ok" || checks["projections"] != "ok" {
		t.Errorf("checks %v: database and projections are fine", checks)
	}
	if mc := checks["migrations"]; !strings.HasPrefix(mc, "failed: ") || !strings.Contains(mc, "migrat") {
		t.Errorf("migrations check %q, want a failure saying migrations are pending", mc)
	}
}

func TestOpsReadyzDatabaseGone(t *testing.T) {
	t.Parallel()
	srv, hs := opsUnstarted(t, pgtest.NewDatabase(t))
	srv.Pool.Close()
	checks := opsNotReady(t, hs.URL)
	if !strings.HasPrefix(checks["database"], "failed: ") {
		t.Errorf("database check %q with the pool closed", checks["database"])
	}
	// /healthz is about the process only: it stays 200 so the process is not restarted for a database outage.
	resp, err := http.Get(hs.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz %d while the database is gone", resp.StatusCode)
	}
}

// opsMetrics scrapes /metrics and parses it as Prometheus text.
func opsMetrics(t *testing.T, c *testserver.Client) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	r := c.Do(http.MethodGet, "/metrics", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %d %s", r.StatusCode, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("metrics Content-Type %q, want Prometheus text", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("metrics are not Prometheus text: %v\n%s", err, r.Body)
	}
	return families, string(r.Body)
}

// opsSample returns the value of the sample of family name whose labels include want, and whether it exists.
func opsSample(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
		return 0, true
	}
	return 0, false
}

func TestOpsMetrics(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	email := opsEmail("metrics")
	u := c.Register(email, "correct horse", "Metrics")
	c.LogIn(email, "correct horse")
	id := u["id"].(string)
	for range 2 {
		if r := c.Do(http.MethodGet, "/api/v1/users/"+id, nil); r.StatusCode != http.StatusOK {
			t.Fatalf("get user: %d %s", r.StatusCode, r.Body)
		}
	}
	stray := "/no-such-thing/" + uuid.NewString()
	c.Do(http.MethodGet, stray, nil)
	token, err := events.ParsePosition(c.Token)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Projector.WaitFor(context.Background(), "users", token, 10*time.Second); err != nil || !ok {
		t.Fatalf("projection did not apply %s: %v", token, err)
	}

	families, text := opsMetrics(t, c)
	// HTTP requests by route template, never by raw path.
	if n, ok := opsSample(families, "http_requests_total", map[string]string{"method": "GET", "route": "/api/v1/users/:id", "status": "200"}); !ok || n != 2 {
		t.Errorf("http_requests_total for GET /api/v1/users/:id 200 = %v (present %v), want 2", n, ok)
	}
	if n, ok := opsSample(families, "http_requests_total", map[string]string{"method": "POST", "route": "/api/v1/users", "status": "201"}); !ok || n < 1 {
		t.Errorf("http_requests_total for POST /api/v1/users 201 = %v (present %v)", n, ok)
	}
	if _, ok := opsSample(families, "http_requests_total", map[string]string{"route": "unmatched", "status": "404"}); !ok {
		t.Errorf("unmatched request not counted under route=\"unmatched\"")
	}
	if _, ok := opsSample(families, "http_request_duration_seconds", map[string]string{"method": "GET", "route": "/api/v1/users/:id"}); !ok {
		t.Errorf("no http_request_duration_seconds for GET /api/v1/users/:id")
	}
	if strings.Contains(text, id) || strings.Contains(text, stray) {
		t.Errorf("metrics name a raw path (user id %s or %s)", id, stray)
	}
	// Commands and queries through the bus.
	if n, ok := opsSample(families, "taki_bus_messages_total", map[string]string{"kind": "command", "name": "commands.RegisterUser", "outcome": "ok"}); !ok || n < 1 {
		t.Errorf("taki_bus_messages_total for RegisterUser ok = %v (present %v)", n, ok)
	}
	if n, ok := opsSample(families, "taki_bus_messages_total", map[string]string{"kind": "query", "name": "queries.GetUser", "outcome": "ok"}); !ok || n != 2 {
		t.Errorf("taki_bus_messages_total for GetUser ok = %v (present %v), want 2", n, ok)
	}
	// Register and log in appended at least two user events in this process.
	if n, ok := opsSample(families, "taki_events_appended_total", map[string]string{"stream_type": "user"}); !ok || n < 2 {
		t.Errorf("taki_events_appended_total{stream_type=\"user\"} = %v (present %v), want >= 2", n, ok)
	}
	if _, ok := opsSample(families, "taki_projection_lag_events", map[string]string{"projection": "users"}); !ok {
		t.Errorf("no taki_projection_lag_events{projection=\"users\"}")
	}
}

// TestOpsProjectionLagMetricCountsUnappliedEvents: the lag gauge is the number of events the projection
// has not applied; with projections stopped every appended event counts.
func TestOpsProjectionLagMetricCountsUnappliedEvents(t *testing.T) {
	t.Parallel()
	srv, hs := opsUnstarted(t, pgtest.NewDatabase(t))
	c := (&testserver.Server{Server: srv, URL: hs.URL}).Client(t)
	for i := range 3 {
		c.Register(opsEmail(fmt.Sprintf("lag%d", i)), "correct horse", "Lag")
	}
	families, _ := opsMetrics(t, c)
	if n, ok := opsSample(families, "taki_projection_lag_events", map[string]string{"projection": "users"}); !ok || n != 3 {
		t.Errorf("taki_projection_lag_events{projection=\"users\"} = %v (present %v), want 3", n, ok)
	}
}

func TestOpsOpenAPIMatchesRouter(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	r := srv.Client(t).Do(http.MethodGet, "/openapi.json", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("openapi.json: %d %s", r.StatusCode, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("openapi.json Content-Type %q", ct)
	}
	var served struct {
		OpenAPI string                                `json:"openapi"`
		Info    map[string]any                        `json:"info"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	r.JSON(t, &served)
	if served.OpenAPI != "3.1.0" || served.Info["title"] == nil || len(served.Paths) == 0 {
		t.Fatalf("not an OpenAPI 3.1 document: openapi %q, info %v, %d paths", served.OpenAPI, served.Info, len(served.Paths))
	}
	doc := &httpapi.Document{Paths: map[string]httpapi.PathItem{}}
	for path, ops := range served.Paths {
		item := httpapi.PathItem{}
		for method := range ops {
			item[method] = &httpapi.Operation{}
		}
		doc.Paths[path] = item
	}

	undocumented, unbuilt := httpapi.CompareRoutes(srv.Router.Routes(), doc)
	if len(undocumented) > 0 {
		t.Errorf("routes the router serves but the OpenAPI document lacks:\n  %s", strings.Join(undocumented, "\n  "))
	}
	want := slices.Sorted(slices.Values(opsNotYetBuilt))
	for _, r := range unbuilt {
		if !slices.Contains(want, r) {
			t.Errorf("documented route %s is neither served nor listed in opsNotYetBuilt", r)
		}
	}
	for _, r := range want {
		if !slices.Contains(unbuilt, r) {
			t.Errorf("%s is served now: remove it from opsNotYetBuilt", r)
		}
	}
	// The operations and admin routes of API.md are served today.
	for _, route := range []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json",
		"GET /api/v1/admin/projections", "POST /api/v1/admin/projections/:name/replay", "GET /api/v1/admin/events"} {
		if slices.Contains(unbuilt, route) {
			t.Errorf("%s is documented but not served", route)
		}
	}
}

func TestOpsProblems(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	register := "/api/v1/users"
	valid := `{"email":"` + opsEmail("problems") + `","password":"correct horse","display_name":"P"}`

	t.Run("404 unknown path", func(t *testing.T) {
		opsProblem(t, c.Do(http.MethodGet, "/api/v1/nothing-here", nil), http.StatusNotFound, "not-found")
		opsProblem(t, c.Do(http.MethodPost, "/nothing", "{}"), http.StatusNotFound, "not-found")
	})
	t.Run("405 with Allow", func(t *testing.T) {
		r := c.Do(http.MethodDelete, "/healthz", nil)
		opsProblem(t, r, http.StatusMethodNotAllowed, "method-not-allowed")
		if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") {
			t.Errorf("DELETE /healthz: Allow %q, want it to list GET", allow)
		}
		r = c.Do(http.MethodPut, register, valid)
		opsProblem(t, r, http.StatusMethodNotAllowed, "method-not-allowed")
		allow := r.Header.Get("Allow")
		if !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") || strings.Contains(allow, "PUT") {
			t.Errorf("PUT /api/v1/users: Allow %q, want GET and POST only", allow)
		}
	})
	t.Run("413 over 1 MiB", func(t *testing.T) {
		big := `{"email":"` + strings.Repeat("a", 1<<20) + `@example.com","password":"correct horse","display_name":"P"}`
		opsProblem(t, c.Do(http.MethodPost, register, big), http.StatusRequestEntityTooLarge, "payload-too-large")
		// Without a declared length (chunked), too.
		req, err := http.NewRequest(http.MethodPost, srv.URL+register, io.MultiReader(strings.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		opsProblem(t, testserver.Response{Response: resp, Body: body}, http.StatusRequestEntityTooLarge, "payload-too-large")
		// Exactly 1 MiB is allowed through to decoding (and is then merely invalid).
		prefix, suffix := `{"email":"x","password":"y","display_name":"`, `"}`
		exact := prefix + strings.Repeat("z", 1<<20-len(prefix)-len(suffix)) + suffix
		if r := c.Do(http.MethodPost, register, exact); r.StatusCode == http.StatusRequestEntityTooLarge {
			t.Errorf("a body of exactly 1 MiB got 413")
		}
	})
	t.Run("415 not JSON", func(t *testing.T) {
		opsProblem(t, c.Do(http.MethodPost, register, valid, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType, "unsupported-media-type")
		opsProblem(t, c.Do(http.MethodPost, register, "email=a", "Content-Type", "application/x-www-form-urlencoded"), http.StatusUnsupportedMediaType, "unsupported-media-type")
	})
	t.Run("400 malformed JSON", func(t *testing.T) {
		opsProblem(t, c.Do(http.MethodPost, register, `{"email": "a@b.c",`), http.StatusBadRequest, "bad-request")
		opsProblem(t, c.Do(http.MethodPost, register, `not json`), http.StatusBadRequest, "bad-request")
		opsProblem(t, c.Do(http.MethodPost, register, `{"email":"a@b.c"} {"again":1}`), http.StatusBadRequest, "bad-request")
		opsProblem(t, c.Do(http.MethodPost, register, `{"email":42,"password":"correct horse","display_name":"P"}`), http.StatusBadRequest, "bad-request")
	})
	t.Run("400 unknown field", func(t *testing.T) {
		body := strings.Replace(valid, `{`, `{"role":"admin",`, 1)
		p := opsProblem(t, c.Do(http.MethodPost, register, body), http.StatusBadRequest, "bad-request")
		if !strings.Contains(p.Detail, "role") {
			t.Errorf("detail %q does not name the unknown field", p.Detail)
		}
	})
	t.Run("422 validation lists fields", func(t *testing.T) {
		p := opsProblem(t, c.Do(http.MethodPost, register, `{"email":"nope","password":"short","display_name":""}`), http.StatusUnprocessableEntity, "validation")
		var fields []string
		for _, e := range p.Errors {
			fields = append(fields, e.Field)
		}
		slices.Sort(fields)
		if !slices.Equal(fields, []string{"display_name", "email", "password"}) {
			t.Errorf("errors %+v, want one per bad field", p.Errors)
		}
	})
	t.Run("401 and 403 csrf", func(t *testing.T) {
		opsProblem(t, c.Do(http.MethodGet, "/api/v1/users/me", nil), http.StatusUnauthorized, "unauthenticated")
		email := opsEmail("csrf")
		c2 := srv.Client(t)
		c2.Register(email, "correct horse", "C")
		c2.LogIn(email, "correct horse")
		opsProblem(t, c2.Do(http.MethodPatch, "/api/v1/users/me", `{"display_name":"X"}`, "X-CSRF-Token", ""), http.StatusForbidden, "csrf")
	})
}

func TestOpsRequestID(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	c := srv.Client(t)
	seen := map[string]bool{}
	for _, req := range []struct{ method, path, body string }{
		{http.MethodGet, "/healthz", ""},
		{http.MethodGet, "/readyz", ""},
		{http.MethodGet, "/metrics", ""},
		{http.MethodGet, "/openapi.json", ""},
		{http.MethodGet, "/missing", ""},
		{http.MethodDelete, "/healthz", ""},
		{http.MethodGet, "/api/v1/users/me", ""},
		{http.MethodPost, "/api/v1/users", "{"},
		{http.MethodPost, "/api/v1/users", `{"email":"` + opsEmail("rid") + `","password":"correct horse","display_name":"R"}`},
	} {
		var body any
		if req.body != "" {
			body = req.body
		}
		r := c.Do(req.method, req.path, body)
		id := r.Header.Get("X-Request-Id")
		if id == "" {
			t.Errorf("%s %s (%d): no X-Request-Id", req.method, req.path, r.StatusCode)
			continue
		}
		if seen[id] {
			t.Errorf("%s %s: X-Request-Id %s reused", req.method, req.path, id)
		}
		seen[id] = true

		mine := "client-" + uuid.NewString()
		r = c.Do(req.method, req.path, body, "X-Request-Id", mine)
		if got := r.Header.Get("X-Request-Id"); got != mine {
			t.Errorf("%s %s: X-Request-Id %q, want the client's %q echoed", req.method, req.path, got, mine)
		}
	}
	// An unusable client id (spaces, control characters, too long) is replaced, not echoed.
	for _, bad := range []string{"two words", strings.Repeat("x", 129)} {
		r := c.Do(http.MethodGet, "/healthz", nil, "X-Request-Id", bad)
		if got := r.Header.Get("X-Request-Id"); got == "" || got == bad {
			t.Errorf("client id %q: answered X-Request-Id %q, want a fresh one", bad, got)
		}
	}
}

// TestOpsInternalErrorsStayInternal breaks the users read model under a running server: the client
// gets a bare 500 problem, the log gets the details.
func TestOpsInternalErrorsStayInternal(t *testing.T) {
	t.Parallel()
	logs := &opsLogBuffer{}
	db := pgtest.NewDatabase(t)
	srv := testserver.Start(t, db, testserver.WithLogs(logs))
	c := srv.Client(t)
	email := opsEmail("internal")
	c.Register(email, "correct horse", "Internal")
	c.LogIn(email, "correct horse")
	token, err := events.ParsePosition(c.Token)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Projector.WaitFor(context.Background(), "users", token, 10*time.Second); err != nil || !ok {
		t.Fatalf("projection did not apply %s: %v", token, err)
	}
	if _, err := srv.Pool.Exec(context.Background(), `ALTER TABLE user_profiles RENAME TO user_profiles_broken`); err != nil {
		t.Fatal(err)
	}
	c.Token = ""
	for i, path := range []string{"/api/v1/users/me", "/api/v1/users?q=a"} {
		r := c.Do(http.MethodGet, path, nil, "X-Request-Id", fmt.Sprintf("req-internal-%d", i))
		p := opsProblem(t, r, http.StatusInternalServerError, "internal")
		if strings.Contains(p.Detail, "user_profiles") || strings.Contains(p.Title, "user_profiles") {
			t.Errorf("%s: problem %+v names the table", path, p)
		}
	}
	// The details are logged under the request id the client saw, so an operator can find them.
	for i := range 2 {
		id := fmt.Sprintf("req-internal-%d", i)
		found := false
		for line := range strings.SplitSeq(logs.String(), "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) != nil || l["request_id"] != id || l["level"] != "ERROR" {
				continue
			}
			if strings.Contains(line, "user_profiles") && l["msg"] != "http request" {
				found = true
			}
		}
		if !found {
			t.Errorf("no ERROR line with request_id %s holds the internal error's details:\n%s", id, logs.String())
		}
	}
}

// opsLogBuffer collects the JSON log lines a server writes from many goroutines.
type opsLogBuffer = logtest.Buffer
