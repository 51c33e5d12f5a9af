package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"taki/commands"
)

// readinessTimeout bounds each check, so one hung dependency makes /readyz answer 503 in time for the
// load balancer's probe instead of never.
const readinessTimeout = 2 * time.Second

// ReadinessCheck is one condition for serving traffic, such as "the database answers". Check must
// return promptly once ctx is done.
type ReadinessCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// CheckResult is the outcome of one readiness check in a 503 answer of /readyz.
type CheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // "ok" or "failed"
	Error  string `json:"error,omitempty"`
}

// readinessProblem is the 503 body of /readyz: a problem that also says which checks failed and why.
type readinessProblem struct {
	Problem
	Checks []CheckResult `json:"checks"`
}

// Healthz answers 200 {"status":"ok"} while the process can serve HTTP at all; it checks nothing else,
// so that a database outage never gets the process restarted.
func Healthz() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, gin.H{"status": "ok"})
	}
}

// Readyz answers 200 {"status":"ready"} when every check passes, else a 503 problem listing each check
// with its outcome. The checks run concurrently, each with its own 2 s timeout.
func Readyz(checks ...ReadinessCheck) gin.HandlerFunc {
	return readyz(readinessTimeout, checks)
}

func readyz(timeout time.Duration, checks []ReadinessCheck) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		results := runChecks(c.Request.Context(), timeout, checks)
		failed := 0
		for _, r := range results {
			if r.Status != "ok" {
				failed++
			}
		}
		if failed == 0 {
			c.JSON(http.StatusOK, gin.H{"status": "ready"})
			return
		}
		p := readinessProblem{
			Problem: NewProblem(http.StatusServiceUnavailable, string(commands.KindUnavailable),
				fmt.Sprintf("%d of %d readiness checks failed", failed, len(results))),
			Checks: results,
		}
		body, err := json.Marshal(p)
		if err != nil {
			WriteError(c, err)
			return
		}
		c.Data(http.StatusServiceUnavailable, problemContentType, body)
	}
}

// runChecks returns one result per check, in the order given.
func runChecks(ctx context.Context, timeout time.Duration, checks []ReadinessCheck) []CheckResult {
	results := make([]CheckResult, len(checks))
	done := make(chan struct{}, len(checks))
	for i, chk := range checks {
		go func() {
			results[i] = runCheck(ctx, timeout, chk)
			done <- struct{}{}
		}()
	}
	for range checks {
		<-done
	}
	return results
}

// runCheck waits for the check or its timeout, whichever comes first: a check that ignores its
// context must not hold the probe. Such a check finishes later on its own, into a buffered channel.
func runCheck(parent context.Context, timeout time.Duration, chk ReadinessCheck) CheckResult {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		defer func() {
			// This goroutine is beyond Recovery's reach; a panicking check must fail, not crash us.
			if v := recover(); v != nil {
				errc <- fmt.Errorf("check panicked: %v", v)
			}
		}()
		errc <- chk.Check(ctx)
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Whichever way a timeout arrived, say so plainly: "context deadline exceeded" alone reads like a bug.
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %s: %w", timeout, err)
	}
	if err != nil {
		return CheckResult{Name: chk.Name, Status: "failed", Error: err.Error()}
	}
	return CheckResult{Name: chk.Name, Status: "ok"}
}
