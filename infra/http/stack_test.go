package httpapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// stackEngine wires the package as doc.go tells routes.go to.
func stackEngine(t *testing.T) (*gin.Engine, *prometheus.Registry, *logBuffer) {
	t.Helper()
	logger, logs := newTestLogger()
	reg := prometheus.NewRegistry()
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.ContextWithFallback = true
	if err := e.SetTrustedProxies(nil); err != nil {
		t.Fatal(err)
	}
	e.Use(RequestID(), AccessLog(logger), NewMetrics(reg).Middleware(), Recovery(logger), BodyLimit())
	e.NoRoute(NoRoute())
	e.NoMethod(NoMethod())
	e.GET("/healthz", Healthz())
	e.GET("/metrics", MetricsHandler(reg))
	e.GET("/openapi.json", ServeSpec())
	e.GET("/panic", func(c *gin.Context) { panic("boom") })
	e.POST("/api/v1/users", func(c *gin.Context) {
		var body struct {
			Email string `json:"email"`
		}
		if DecodeJSON(c, &body) {
			c.JSON(http.StatusCreated, body)
		}
	})
	return e, reg, logs
}

func TestStack(t *testing.T) {
	t.Parallel()
	e, reg, logs := stackEngine(t)
	tests := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/openapi.json", "", 200},
		{"GET", "/nowhere?token=SECRET", "", 404},
		{"PUT", "/healthz", "", 405},
		{"GET", "/panic", "", 500},
		{"POST", "/api/v1/users", `{"email":"a@b.c"}`, 201},
		{"POST", "/api/v1/users", `{"email":"a@b.c","role":"admin"}`, 400},
		{"POST", "/api/v1/users", strings.Repeat(" ", maxBodyBytes+1), 413},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, bytes.NewBufferString(tt.body))
		if tt.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("X-Forwarded-For", "203.0.113.9") // must not be believed
		w := serve(e, req)
		if w.Code != tt.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tt.method, tt.path, w.Code, tt.status, w.Body)
		}
		if w.Header().Get("X-Request-Id") == "" {
			t.Errorf("%s %s: no X-Request-Id", tt.method, tt.path)
		}
		if w.Code >= 400 {
			decodeProblem(t, w)
		}
	}

	var accessLines int
	for _, l := range logs.Lines(t) {
		if l["msg"] != "http request" {
			continue
		}
		accessLines++
		if l["request_id"] == nil || l["client_ip"] == "203.0.113.9" {
			t.Errorf("access line %v", l)
		}
	}
	if accessLines != len(tests) {
		t.Errorf("%d access lines for %d requests", accessLines, len(tests))
	}
	if strings.Contains(logs.String(), "SECRET") {
		t.Error("a query string reached the log")
	}

	counts := series(t, reg, "http_requests_total")
	for _, k := range []string{
		"method=GET,route=/panic,status=500",
		"method=GET,route=unmatched,status=404",
		"method=PUT,route=unmatched,status=405",
		"method=POST,route=/api/v1/users,status=413",
	} {
		if counts[k] != 1 {
			t.Errorf("http_requests_total{%s} = %v, want 1 (all: %v)", k, counts[k], counts)
		}
	}
}
