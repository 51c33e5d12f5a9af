package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"taki/commands"
	"taki/infra/logging"
)

// errorEngine answers GET /x with WriteError(err), logging through logger, and records whether a
// handler after it ran.
func errorEngine(err error, nextRan *bool) (*gin.Engine, *logBuffer) {
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(RequestID(), AccessLog(logger))
	e.GET("/x", func(c *gin.Context) { WriteError(c, err) }, func(c *gin.Context) {
		*nextRan = true
		c.String(http.StatusOK, "should not be reached")
	})
	return e, logs
}

func TestWriteErrorMapsEveryKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind       commands.Kind
		status     int
		retryAfter time.Duration
		wantRetry  string
	}{
		{commands.KindValidation, 422, 0, ""},
		{commands.KindUnauthenticated, 401, 0, ""},
		{commands.KindForbidden, 403, 0, ""},
		{commands.KindNotFound, 404, 0, ""},
		{commands.KindConflict, 409, 0, ""},
		{commands.KindEmailTaken, 409, 0, ""},
		{commands.KindCSRF, 403, 0, ""},
		{commands.KindRateLimited, 429, 90 * time.Second, "90"},
		{commands.KindRateLimited, 429, 1500 * time.Millisecond, "2"},
		{commands.KindRateLimited, 429, time.Millisecond, "1"},
		{commands.KindRateLimited, 429, 0, "1"}, // the contract promises the header
		{commands.KindIdempotencyKeyReused, 422, 0, ""},
		{commands.KindProviderUnavailable, 503, 30 * time.Second, "30"},
		{commands.KindProviderUnavailable, 503, 0, "1"},
		{commands.KindUnavailable, 503, 0, ""},
		{commands.KindUnavailable, 503, 5 * time.Second, "5"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.kind, tt.retryAfter), func(t *testing.T) {
			t.Parallel()
			var nextRan bool
			e, _ := errorEngine(&commands.Error{Kind: tt.kind, Detail: "some detail", RetryAfter: tt.retryAfter}, &nextRan)
			w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
			p := wantProblem(t, w, tt.status, string(tt.kind))
			if p.Detail != "some detail" {
				t.Errorf("detail = %q", p.Detail)
			}
			if got := w.Header().Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			if nextRan {
				t.Error("the handler after WriteError ran: the chain was not aborted")
			}
		})
	}
}

func TestWriteErrorValidationListsFields(t *testing.T) {
	t.Parallel()
	var nextRan bool
	fields := []commands.FieldError{{Field: "email", Message: "is not an email address"}, {Field: "password", Message: "is too short"}}
	e, _ := errorEngine(fmt.Errorf("register: %w", commands.Invalid(fields)), &nextRan)
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
	p := wantProblem(t, w, 422, "validation")
	if len(p.Errors) != 2 || p.Errors[0] != fields[0] || p.Errors[1] != fields[1] {
		t.Errorf("errors = %+v, want %+v", p.Errors, fields)
	}
	if !strings.Contains(w.Body.String(), `"errors":[{"field":"email","message":"is not an email address"}`) {
		t.Errorf("errors not in the contract's shape: %s", w.Body)
	}
}

func TestWriteErrorOmitsErrorsOutsideValidation(t *testing.T) {
	t.Parallel()
	var nextRan bool
	e, _ := errorEngine(&commands.Error{Kind: commands.KindConflict, Detail: "d",
		Fields: []commands.FieldError{{Field: "f", Message: "m"}}}, &nextRan)
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
	wantProblem(t, w, 409, "conflict")
	if strings.Contains(w.Body.String(), `"errors"`) {
		t.Errorf("errors member on a non-validation problem: %s", w.Body)
	}
}

func TestWriteErrorHidesInternalErrors(t *testing.T) {
	t.Parallel()
	secret := `pq: relation "users" does not exist at 10.0.0.5`
	tests := map[string]error{
		"plain":          errors.New(secret),
		"unknown kind":   &commands.Error{Kind: "brand-new-kind", Detail: secret},
		"deadline":       fmt.Errorf("%s: %w", secret, context.DeadlineExceeded),
		"canceled by us": fmt.Errorf("%s: %w", secret, context.Canceled), // the request itself is alive
	}
	for name, err := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var nextRan bool
			e, logs := errorEngine(err, &nextRan)
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			req.Header.Set("X-Request-Id", "req-"+strings.ReplaceAll(name, " ", "-"))
			w := serve(e, req)
			p := wantProblem(t, w, 500, "internal")
			if strings.Contains(w.Body.String(), "10.0.0.5") || p.Detail != internalDetail {
				t.Errorf("internal details reached the client: %s", w.Body)
			}
			line := findLine(t, logs, "internal error")
			if line["error"] != err.Error() || line["level"] != "ERROR" {
				t.Errorf("log line %v does not carry the error at ERROR", line)
			}
			if line["request_id"] != req.Header.Get("X-Request-Id") || line["route"] != "/x" {
				t.Errorf("log line %v lacks the request's context", line)
			}
			if nextRan {
				t.Error("chain not aborted")
			}
		})
	}
}

func TestWriteErrorNil(t *testing.T) {
	t.Parallel()
	var nextRan bool
	e, logs := errorEngine(nil, &nextRan)
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
	wantProblem(t, w, 500, "internal")
	findLine(t, logs, "internal error")
}

func TestWriteErrorMaxBytes(t *testing.T) {
	t.Parallel()
	var nextRan bool
	e, _ := errorEngine(fmt.Errorf("read: %w", &http.MaxBytesError{Limit: maxBodyBytes}), &nextRan)
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
	wantProblem(t, w, 413, "payload-too-large")
}

func TestWriteErrorClientGone(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(AccessLog(logger))
	e.GET("/x", func(c *gin.Context) {
		WriteError(c, fmt.Errorf("query: %w", c.Request.Context().Err()))
	})
	ctx, cancel := context.WithCancel(logging.WithRequestID(context.Background(), "gone-1"))
	cancel()
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(ctx))
	if w.Code != statusClientClosedRequest || w.Body.Len() != 0 {
		t.Errorf("got %d %q, want a bare %d", w.Code, w.Body, statusClientClosedRequest)
	}
	line := findLine(t, logs, "client went away")
	if line["level"] != "DEBUG" || line["request_id"] != "gone-1" {
		t.Errorf("log line %v, want DEBUG with the request id", line)
	}
	if strings.Contains(logs.String(), "internal error") {
		t.Error("a client that left was logged as an internal error")
	}
}

func TestWriteProblemAfterResponseStarted(t *testing.T) {
	t.Parallel()
	logger, logs := newTestLogger()
	e := gin.New()
	e.Use(AccessLog(logger))
	e.GET("/x", func(c *gin.Context) {
		c.String(http.StatusOK, "partial")
		WriteError(c, commands.NotFound("chat"))
	})
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
	if w.Code != 200 || w.Body.String() != "partial" {
		t.Errorf("got %d %q: the written response was changed", w.Code, w.Body)
	}
	findLine(t, logs, "problem after the response was written")
}

func TestWriteProblemReplacesContentType(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.GET("/x", func(c *gin.Context) {
		c.Header("Content-Type", "application/json")
		WriteError(c, commands.Forbidden("no"))
	})
	w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil))
	wantProblem(t, w, 403, "forbidden")
}

func TestProblemHelpers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler gin.HandlerFunc
		status  int
		slug    string
		header  string
		value   string
	}{
		{"bad request", func(c *gin.Context) { BadRequest(c, "bad") }, 400, "bad-request", "", ""},
		{"not found", func(c *gin.Context) { NotFound(c, "gone") }, 404, "not-found", "", ""},
		{"method not allowed", func(c *gin.Context) { MethodNotAllowed(c, "GET", "POST") }, 405, "method-not-allowed", "Allow", "GET, POST"},
		{"payload too large", PayloadTooLarge, 413, "payload-too-large", "Connection", "close"},
		{"unsupported media type", func(c *gin.Context) { UnsupportedMediaType(c, "json please") }, 415, "unsupported-media-type", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := gin.New()
			e.PUT("/x", tt.handler)
			w := serve(e, httptest.NewRequest(http.MethodPut, "/x", nil))
			p := wantProblem(t, w, tt.status, tt.slug)
			if p.Detail == "" {
				t.Error("no detail")
			}
			if tt.header != "" && w.Header().Get(tt.header) != tt.value {
				t.Errorf("%s = %q, want %q", tt.header, w.Header().Get(tt.header), tt.value)
			}
		})
	}
}
