// Package testserver runs a real Taki server for end-to-end tests: its own migrated PostgreSQL database,
// the real router on a loopback listener, projections running, and an HTTP client that keeps cookies.
package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"taki/infra/auth"
	"taki/infra/config"
	"taki/infra/logging"
	"taki/infra/server"
)

// Secret is the TAKI_SECRET of test servers.
const Secret = "taki-test-secret-0123456789-abcdefghijklmnop"

// Server is a running test server.
type Server struct {
	*server.Server
	URL string
}

// Option changes the configuration or options of a test server before it starts.
type Option func(*config.Config, *server.Options, *settings)

type settings struct {
	logs io.Writer
}

// WithLogs makes the server write JSON logs at debug level to w (tests read them for ids and secrets).
func WithLogs(w io.Writer) Option {
	return func(_ *config.Config, _ *server.Options, s *settings) { s.logs = w }
}

// WithConfig edits the server's configuration.
func WithConfig(f func(*config.Config)) Option {
	return func(c *config.Config, _ *server.Options, _ *settings) { f(c) }
}

// WithOptions edits the server's options (clock, password cost).
func WithOptions(f func(*server.Options)) Option {
	return func(_ *config.Config, o *server.Options, _ *settings) { f(o) }
}

// Start runs a server on databaseURL (a migrated database, e.g. from pgtest) until the test ends.
func Start(t testing.TB, databaseURL string, opts ...Option) *Server {
	t.Helper()
	env := map[string]string{
		"TAKI_DATABASE_URL": databaseURL,
		"TAKI_SECRET":       Secret,
		"TAKI_HTTP_ADDR":    "127.0.0.1:0",
		// Readers wait for their token as long as it takes to be applied, up to this bound. Any
		// transaction of the cluster holds back what every database's consumers may see (the xid8
		// rule that keeps them from skipping late commits), and test packages run side by side on
		// one cluster, some holding transactions open on purpose: a 2 s bound would make their
		// neighbours flaky. Tests of the bound itself set their own.
		"TAKI_CONSISTENCY_WAIT": "10s",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	o := server.Options{PasswordConfig: auth.PasswordConfig{MemoryKiB: 1024, Iterations: 1, Parallelism: 1}}
	var st settings
	for _, opt := range opts {
		opt(&cfg, &o, &st)
	}
	logger := logging.Discard()
	if st.logs != nil {
		logger = logging.New(st.logs, "json", slog.LevelDebug)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, logger, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	s := &Server{Server: srv, URL: "http://" + ln.Addr().String()}
	s.waitReady(t)
	return s
}

// waitReady needs no polling: the listener is bound before Serve starts, so the request waits in the
// accept queue until the projections have subscribed and HTTP is served.
func (s *Server) waitReady(t testing.TB) {
	t.Helper()
	resp, err := http.Get(s.URL + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("server not ready: %d %s", resp.StatusCode, body)
	}
}

// Client is an HTTP client with its own cookie jar and the CSRF token of its last login.
type Client struct {
	t    testing.TB
	base string
	HTTP *http.Client
	CSRF string
	// Token is the X-Consistency-Token of the last command answer; Do sends it on GETs.
	Token string
}

// Client returns a new client (no cookies) of s.
func (s *Server) Client(t testing.TB) *Client {
	jar, _ := cookiejar.New(nil)
	return &Client{t: t, base: s.URL, HTTP: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// Fork returns a client with c's cookies and CSRF token but its own consistency token, for another
// goroutine: a Client is not safe for concurrent use, its session is.
func (c *Client) Fork() *Client {
	cp := *c
	return &cp
}

// Response is a finished response with its body read.
type Response struct {
	*http.Response
	Body []byte
}

// JSON decodes the body into v, failing the test if it cannot.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Problem is an RFC 9457 body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// Slug returns the problem slug of a problem+json response ("" if it is not one).
func (r Response) Slug(t testing.TB) string {
	t.Helper()
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") {
		return ""
	}
	var p Problem
	r.JSON(t, &p)
	return strings.TrimPrefix(p.Type, "https://taki.dev/problems/")
}

// Do sends a request. body may be nil, a string (sent as is) or a value (sent as JSON). Unsafe
// methods carry the client's CSRF token; GETs carry its last consistency token.
func (c *Client) Do(method, path string, body any, headers ...string) Response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != http.MethodGet && c.CSRF != "" {
		req.Header.Set("X-CSRF-Token", c.CSRF)
	}
	if method == http.MethodGet && c.Token != "" {
		req.Header.Set("X-Consistency-Token", c.Token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if tok := resp.Header.Get("X-Consistency-Token"); tok != "" {
		c.Token = tok
	}
	return Response{Response: resp, Body: b}
}

// Register creates a user and fails the test unless it answers 201.
func (c *Client) Register(email, password, name string) map[string]any {
	c.t.Helper()
	r := c.Do(http.MethodPost, "/api/v1/users", map[string]string{"email": email, "password": password, "display_name": name})
	if r.StatusCode != http.StatusCreated {
		c.t.Fatalf("register %s: %d %s", email, r.StatusCode, r.Body)
	}
	var u map[string]any
	r.JSON(c.t, &u)
	return u
}

// LogIn starts a session and keeps its cookie and CSRF token; it fails the test unless it answers 200.
func (c *Client) LogIn(email, password string) {
	c.t.Helper()
	r := c.Do(http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": password})
	if r.StatusCode != http.StatusOK {
		c.t.Fatalf("log in %s: %d %s", email, r.StatusCode, r.Body)
	}
	var s struct {
		CSRF string `json:"csrf_token"`
	}
	r.JSON(c.t, &s)
	c.CSRF = s.CSRF
}
