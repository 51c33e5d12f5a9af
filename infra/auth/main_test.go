package auth

import (
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"taki/infra/postgres/pgtest"
)

var dbURL string

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(pgtest.Run(m, &dbURL))
}

// testClock is a clock that moves only when told, so that expiry tests never sleep.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2031, 3, 4, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
