package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gin-gonic/gin"
)

func healthEngine(checks ...ReadinessCheck) *gin.Engine {
	e := gin.New()
	e.GET("/healthz", Healthz())
	e.GET("/readyz", Readyz(checks...))
	return e
}

func passing(name string) ReadinessCheck {
	return ReadinessCheck{Name: name, Check: func(context.Context) error { return nil }}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	w := serve(healthEngine(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok"}` {
		t.Errorf("got %d %s", w.Code, w.Body)
	}
}

func TestReadyzReady(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]*gin.Engine{
		"no checks":  healthEngine(),
		"all passed": healthEngine(passing("db"), passing("subscribers")),
	} {
		w := serve(e, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ready"}` {
			t.Errorf("%s: got %d %s", name, w.Code, w.Body)
		}
	}
}

type readyzBody struct {
	Problem
	Checks []CheckResult `json:"checks"`
}

func getReadyz(t *testing.T, e *gin.Engine) readyzBody {
	t.Helper()
	w := serve(e, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if w.Code != 503 || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %q %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	var body readyzBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Status != 503 || body.Type != "https://taki.dev/problems/unavailable" {
		t.Errorf("problem %+v", body.Problem)
	}
	return body
}

func TestReadyzListsFailures(t *testing.T) {
	t.Parallel()
	body := getReadyz(t, healthEngine(
		ReadinessCheck{Name: "database", Check: func(context.Context) error { return errors.New("connection refused") }},
		ReadinessCheck{Name: "migrations", Check: func(context.Context) error { return nil }},
		ReadinessCheck{Name: "broken", Check: func(context.Context) error { panic("nil map") }},
		ReadinessCheck{Name: "missing func"},
	))
	want := []CheckResult{
		{Name: "database", Status: "failed", Error: "connection refused"},
		{Name: "migrations", Status: "ok"},
		{Name: "broken", Status: "failed", Error: "check panicked: nil map"},
		{Name: "missing func", Status: "failed"},
	}
	if len(body.Checks) != len(want) {
		t.Fatalf("checks %+v", body.Checks)
	}
	for i, w := range want {
		got := body.Checks[i]
		if got.Name != w.Name || got.Status != w.Status || (w.Error != "" && got.Error != w.Error) {
			t.Errorf("check %d = %+v, want %+v", i, got, w)
		}
	}
	if body.Detail != "3 of 4 readiness checks failed" {
		t.Errorf("detail %q", body.Detail)
	}
}

// Each check waits until every other one has started: run one after another, they would all time out.
func TestReadyzRunsChecksConcurrently(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n = 3
		started := make(chan struct{}, n)
		all := make(chan struct{})
		check := ReadinessCheck{Name: "c", Check: func(ctx context.Context) error {
			started <- struct{}{}
			select {
			case <-all:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
		go func() {
			for range n {
				<-started
			}
			close(all)
		}()
		start := time.Now()
		w := serve(healthEngine(check, check, check), httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if w.Code != 200 {
			t.Errorf("got %d %s", w.Code, w.Body)
		}
		if elapsed := time.Since(start); elapsed != 0 {
			t.Errorf("took %s of bubble time: the checks waited on each other", elapsed)
		}
	})
}

// The timeout runs on synctest's fake clock: the 2 s pass without the test waiting for them.
func TestReadyzTimesOutHungChecks(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release) // lets the check that ignores its context end, so the bubble can close
		e := healthEngine(
			ReadinessCheck{Name: "honours ctx", Check: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			}},
			ReadinessCheck{Name: "ignores ctx", Check: func(context.Context) error {
				<-release
				return nil
			}},
			passing("fast"),
		)
		start := time.Now()
		body := getReadyz(t, e)
		if elapsed := time.Since(start); elapsed != readinessTimeout {
			t.Errorf("answered after %s, want %s", elapsed, readinessTimeout)
		}
		for i, name := range []string{"honours ctx", "ignores ctx"} {
			c := body.Checks[i]
			if c.Name != name || c.Status != "failed" || !strings.Contains(c.Error, "no answer within 2s") {
				t.Errorf("check %d: %+v", i, c)
			}
		}
		if body.Checks[2].Status != "ok" {
			t.Errorf("fast check: %+v", body.Checks[2])
		}
	})
}
