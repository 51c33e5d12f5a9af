package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/infra/logging"
)

// ids answers with the ids RequestID put in the request context.
func idsEngine() *gin.Engine {
	e := gin.New()
	e.Use(RequestID())
	e.GET("/x", func(c *gin.Context) {
		ctx := c.Request.Context()
		c.JSON(http.StatusOK, gin.H{"request": logging.RequestID(ctx), "correlation": logging.CorrelationID(ctx)})
	})
	return e
}

func getIDs(t *testing.T, headers map[string]string) (header string, ctxIDs map[string]string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	w := serve(idsEngine(), req)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	ctxIDs = map[string]string{}
	if err := json.Unmarshal(w.Body.Bytes(), &ctxIDs); err != nil {
		t.Fatal(err)
	}
	return w.Header().Get("X-Request-Id"), ctxIDs
}

func TestRequestIDGenerated(t *testing.T) {
	t.Parallel()
	header, ids := getIDs(t, nil)
	id, err := uuid.Parse(header)
	if err != nil || id.Version() != 7 {
		t.Fatalf("X-Request-Id %q is not a UUIDv7 (%v)", header, err)
	}
	if ids["request"] != header || ids["correlation"] != header {
		t.Errorf("context ids %v, want both %q", ids, header)
	}
	other, _ := getIDs(t, nil)
	if other == header {
		t.Error("two requests got the same id")
	}
}

func TestRequestIDEchoesClient(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"a", "client-42", strings.Repeat("x", 128), "!~{}[]<>"} {
		header, ids := getIDs(t, map[string]string{"X-Request-Id": id})
		if header != id || ids["request"] != id || ids["correlation"] != id {
			t.Errorf("client id %q: header %q, context %v", id, header, ids)
		}
	}
}

func TestRequestIDReplacesBadClientIDs(t *testing.T) {
	t.Parallel()
	for _, id := range []string{strings.Repeat("x", 129), "has space", "tab\there", "ünïcode", "nul\x00", "new\nline", "del\x7f"} {
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.Header["X-Request-Id"] = []string{id} // raw, past Header.Set's cleaning
		w := serve(idsEngine(), req)
		got := w.Header().Get("X-Request-Id")
		if _, err := uuid.Parse(got); err != nil {
			t.Errorf("client id %q: got %q, want a generated UUID", id, got)
		}
	}
}

func TestRequestIDCorrelation(t *testing.T) {
	t.Parallel()
	header, ids := getIDs(t, map[string]string{"X-Request-Id": "req-1", "X-Correlation-Id": "flow-9"})
	if header != "req-1" || ids["request"] != "req-1" || ids["correlation"] != "flow-9" {
		t.Errorf("header %q, context %v", header, ids)
	}
	_, ids = getIDs(t, map[string]string{"X-Request-Id": "req-2", "X-Correlation-Id": "bad id"})
	if ids["correlation"] != "req-2" {
		t.Errorf("invalid correlation id kept: %v", ids)
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(RequestID(), AccessLog(logger))
	e.GET("/users/:id", func(c *gin.Context) {
		// What authentication does further down the chain.
		c.Request = c.Request.WithContext(logging.WithUserID(c.Request.Context(), "user-7"))
		c.String(http.StatusOK, "hello")
	})
	req := httptest.NewRequest(http.MethodGet, "/users/abc?token=SECRET-TOKEN&q=x", nil)
	req.Header.Set("X-Request-Id", "req-log")
	req.Header.Set("Cookie", "taki_session=SECRET-COOKIE")
	req.Header.Set("Authorization", "Bearer SECRET-AUTH")
	req.Header.Set("X-CSRF-Token", "SECRET-CSRF")
	req.RemoteAddr = "192.0.2.10:5555"
	serve(e, req)

	line := findLine(t, logs, "http request")
	want := map[string]any{
		"level": "INFO", "method": "GET", "route": "/users/:id", "path": "/users/abc",
		"status": float64(200), "bytes": float64(5), "client_ip": "192.0.2.10",
		"request_id": "req-log", "correlation_id": "req-log", "user_id": "user-7",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["duration"]; !ok {
		t.Error("no duration")
	}
	if out := logs.String(); strings.Contains(out, "SECRET") || strings.Contains(out, "token=") {
		t.Errorf("the log holds a query string, header or cookie: %s", out)
	}
}

func TestAccessLogLevelAndUnmatched(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(AccessLog(logger))
	e.NoRoute(NoRoute())
	e.GET("/boom", func(c *gin.Context) { c.Status(http.StatusInternalServerError) })
	serve(e, httptest.NewRequest(http.MethodGet, "/boom", nil))
	serve(e, httptest.NewRequest(http.MethodGet, "/nothing/here", nil))
	lines := logs.Lines(t)
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %d", len(lines))
	}
	if lines[0]["level"] != "ERROR" || lines[0]["route"] != "/boom" {
		t.Errorf("5xx line: %v", lines[0])
	}
	if lines[1]["level"] != "INFO" || lines[1]["route"] != "unmatched" || lines[1]["status"] != float64(404) {
		t.Errorf("404 line: %v", lines[1])
	}
}

func TestRecovery(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(RequestID(), AccessLog(logger), Recovery(logger))
	e.GET("/panic", func(c *gin.Context) { panic("database password is hunter2") })
	req := httptest.NewRequest(http.MethodGet, "/panic", nil)
	req.Header.Set("X-Request-Id", "req-panic")
	w := serve(e, req)

	p := wantProblem(t, w, 500, "internal")
	if strings.Contains(w.Body.String(), "hunter2") || strings.Contains(w.Body.String(), "goroutine") || p.Detail != internalDetail {
		t.Errorf("panic details reached the client: %s", w.Body)
	}
	if w.Header().Get("X-Request-Id") != "req-panic" {
		t.Error("the 500 lost its request id")
	}
	line := findLine(t, logs, "panic in handler")
	if line["panic"] != "database password is hunter2" || line["request_id"] != "req-panic" || line["route"] != "/panic" {
		t.Errorf("panic log line: %v", line)
	}
	if stack, _ := line["stack"].(string); !strings.Contains(stack, "middleware_test.go") {
		t.Errorf("no stack naming the panicking handler: %q", stack)
	}
	if access := findLine(t, logs, "http request"); access["status"] != float64(500) {
		t.Errorf("access log saw status %v, want 500", access["status"])
	}
}

func TestRecoveryAfterWrite(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(Recovery(logger))
	e.GET("/panic", func(c *gin.Context) {
		c.String(http.StatusOK, "half")
		panic("late")
	})
	w := serve(e, httptest.NewRequest(http.MethodGet, "/panic", nil))
	if w.Code != 200 || w.Body.String() != "half" {
		t.Errorf("got %d %q", w.Code, w.Body)
	}
	findLine(t, logs, "panic in handler")
}

func TestRecoveryLetsAbortHandlerThrough(t *testing.T) {
	t.Parallel()
	logger, _ := newTestLogger()
	e := gin.New()
	e.Use(Recovery(logger))
	e.GET("/abort", func(c *gin.Context) { panic(http.ErrAbortHandler) })
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	serve(e, httptest.NewRequest(http.MethodGet, "/abort", nil))
	t.Error("ErrAbortHandler was swallowed")
}

// Recovery is what makes a later WriteError log through the configured logger even without AccessLog.
func TestRecoveryProvidesLoggerToWriteError(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(Recovery(logger))
	e.GET("/x", func(c *gin.Context) { WriteError(c, errTest("disk on fire")) })
	wantProblem(t, serve(e, httptest.NewRequest(http.MethodGet, "/x", nil)), 500, "internal")
	if line := findLine(t, logs, "internal error"); line["error"] != "disk on fire" {
		t.Errorf("line %v", line)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

func TestNoRouteAndNoMethod(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.Use(RequestID())
	e.NoRoute(NoRoute())
	e.NoMethod(NoMethod())
	e.GET("/things/:id", func(c *gin.Context) { c.Status(http.StatusOK) })
	e.DELETE("/things/:id", func(c *gin.Context) { c.Status(http.StatusOK) })

	w := serve(e, httptest.NewRequest(http.MethodGet, "/nope", nil))
	wantProblem(t, w, 404, "not-found")
	if w.Header().Get("X-Request-Id") == "" {
		t.Error("404 without X-Request-Id")
	}

	w = serve(e, httptest.NewRequest(http.MethodPost, "/things/1", nil))
	p := wantProblem(t, w, 405, "method-not-allowed")
	if allow := w.Header().Get("Allow"); allow != "GET, DELETE" && allow != "DELETE, GET" {
		t.Errorf("Allow = %q", allow)
	}
	if !strings.Contains(p.Detail, "POST") {
		t.Errorf("detail %q", p.Detail)
	}
}

// Without HandleMethodNotAllowed, gin never calls NoMethod: the documented requirement.
func TestNoMethodNeedsHandleMethodNotAllowed(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.NoRoute(NoRoute())
	e.NoMethod(NoMethod())
	e.GET("/things", func(c *gin.Context) { c.Status(http.StatusOK) })
	wantProblem(t, serve(e, httptest.NewRequest(http.MethodPost, "/things", nil)), 404, "not-found")
}
