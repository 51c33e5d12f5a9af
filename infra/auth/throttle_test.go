package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/infra/postgres/pgtest"
)

func newTestThrottle(t *testing.T) (*Throttle, *testClock) {
	t.Helper()
	clock := newTestClock()
	th, err := NewThrottle(pgtest.NewPool(t, dbURL), ThrottleConfig{Now: clock.Now})
	if err != nil {
		t.Fatalf("NewThrottle: %v", err)
	}
	return th, clock
}

// uniqueEmail keeps tests apart in the shared database.
func uniqueEmail() string { return uuid.NewString() + "@example.com" }

// failOnce is one failed login as the HTTP layer will run it.
func failOnce(t *testing.T, th *Throttle, email string) {
	t.Helper()
	ctx := context.Background()
	if err := th.Check(ctx, email); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := th.Fail(ctx, email); err != nil {
		t.Fatalf("Fail: %v", err)
	}
}

// rateLimited returns the RetryAfter of a rate-limited error, failing the test for anything else.
func rateLimited(t *testing.T, err error) time.Duration {
	t.Helper()
	e, ok := commands.AsError(err)
	if !ok || e.Kind != commands.KindRateLimited {
		t.Fatalf("got %v, want a rate-limited *commands.Error", err)
	}
	return e.RetryAfter
}

func (th *Throttle) rows(t *testing.T, email string) (all, settled int) {
	t.Helper()
	err := th.pool.QueryRow(context.Background(),
		`SELECT count(*), count(*) FILTER (WHERE settled) FROM login_failures WHERE email_hash = $1`,
		emailKey(email)).Scan(&all, &settled)
	if err != nil {
		t.Fatalf("count login failures: %v", err)
	}
	return all, settled
}

func TestThrottleRefusesAfterMaxFailuresUntilTheOldestLeaves(t *testing.T) {
	th, clock := newTestThrottle(t)
	ctx := context.Background()
	email := uniqueEmail()
	start := clock.Now()
	for i := range 5 {
		if i > 0 {
			clock.Advance(time.Minute)
		}
		failOnce(t, th, email)
	}
	// Failures at 0..4 min: the first leaves the 15-minute window at 15 min, 11 minutes from now.
	if got := rateLimited(t, th.Check(ctx, email)); got != 11*time.Minute {
		t.Fatalf("RetryAfter %s, want 11m", got)
	}
	clock.Advance(10*time.Minute + 59*time.Second + 500*time.Millisecond)
	if got := rateLimited(t, th.Check(ctx, email)); got != time.Second {
		t.Fatalf("RetryAfter %s half a second before, want it rounded up to 1s", got)
	}
	clock.Advance(500 * time.Millisecond)
	if clock.Now() != start.Add(15*time.Minute) {
		t.Fatal("test arithmetic")
	}
	// The window slides: one slot is free, and taking it fills the window again until 16 min.
	if err := th.Check(ctx, email); err != nil {
		t.Fatalf("Check after the oldest failure left the window: %v", err)
	}
	if err := th.Fail(ctx, email); err != nil {
		t.Fatalf("Fail: %v", err)
	}
	if got := rateLimited(t, th.Check(ctx, email)); got != time.Minute {
		t.Fatalf("RetryAfter %s, want 1m", got)
	}
	// Refused checks are not attempts: they neither count nor extend the lockout.
	if all, _ := th.rows(t, email); all != 5 {
		t.Fatalf("%d rows, want 5 (the expired one pruned, refusals not counted)", all)
	}
}

func TestThrottleNormalisesEmails(t *testing.T) {
	th, _ := newTestThrottle(t)
	base := uuid.NewString() + "@example.com"
	spellings := []string{base, "  " + base, strings.ToUpper(base), base + "\n", strings.ToUpper(base) + " "}
	for _, s := range spellings {
		failOnce(t, th, s)
	}
	rateLimited(t, th.Check(context.Background(), base))
	if err := th.Check(context.Background(), uniqueEmail()); err != nil {
		t.Fatalf("another email is throttled: %v", err)
	}
}

func TestThrottleSucceedClears(t *testing.T) {
	th, _ := newTestThrottle(t)
	ctx := context.Background()
	email := uniqueEmail()
	for range 4 {
		failOnce(t, th, email)
	}
	if err := th.Check(ctx, email); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := th.Succeed(ctx, email); err != nil {
		t.Fatalf("Succeed: %v", err)
	}
	if all, _ := th.rows(t, email); all != 0 {
		t.Fatalf("%d rows after success", all)
	}
	for range 5 {
		failOnce(t, th, email)
	}
	rateLimited(t, th.Check(ctx, email))
}

func TestThrottleCountsEachFailureOnce(t *testing.T) {
	th, _ := newTestThrottle(t)
	ctx := context.Background()
	email := uniqueEmail()
	failOnce(t, th, email)
	failOnce(t, th, email)
	if all, settled := th.rows(t, email); all != 2 || settled != 2 {
		t.Fatalf("Check+Fail twice: %d rows, %d settled; want 2, 2", all, settled)
	}
	// A failure reported without a Check (some caller that skipped it) still counts, once.
	for range 2 {
		if err := th.Fail(ctx, email); err != nil {
			t.Fatalf("Fail: %v", err)
		}
	}
	// An attempt whose outcome is never reported counts as a failure.
	if err := th.Check(ctx, email); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if all, settled := th.rows(t, email); all != 5 || settled != 4 {
		t.Fatalf("%d rows, %d settled; want 5, 4", all, settled)
	}
	rateLimited(t, th.Check(ctx, email))
}

func TestThrottleConcurrentAttempts(t *testing.T) {
	th, _ := newTestThrottle(t)
	ctx := context.Background()
	email := uniqueEmail()
	const attempts = 20
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
		refused  int
		start    = make(chan struct{})
	)
	for range attempts {
		wg.Go(func() {
			<-start
			err := th.Check(ctx, email)
			if err == nil {
				// The password check would run here; it fails.
				if err := th.Fail(ctx, email); err != nil {
					t.Errorf("Fail: %v", err)
				}
				mu.Lock()
				admitted++
				mu.Unlock()
				return
			}
			if e, ok := commands.AsError(err); !ok || e.Kind != commands.KindRateLimited || e.RetryAfter <= 0 {
				t.Errorf("Check: %v", err)
				return
			}
			mu.Lock()
			refused++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if admitted != 5 || refused != attempts-5 {
		t.Fatalf("%d admitted, %d refused; want 5 and %d", admitted, refused, attempts-5)
	}
	if all, settled := th.rows(t, email); all != 5 || settled != 5 {
		t.Fatalf("%d rows, %d settled; want 5, 5", all, settled)
	}
}

func TestThrottlePrunesOldRows(t *testing.T) {
	th, clock := newTestThrottle(t)
	quiet, busy := uniqueEmail(), uniqueEmail()
	failOnce(t, th, quiet)
	failOnce(t, th, busy)
	clock.Advance(16 * time.Minute)
	// The next check of any email, past pruneInterval, drops every row older than the window.
	failOnce(t, th, busy)
	if all, _ := th.rows(t, quiet); all != 0 {
		t.Fatalf("%d old rows of an email nobody tried again", all)
	}
	if all, _ := th.rows(t, busy); all != 1 {
		t.Fatalf("%d rows of the busy email, want only the fresh one", all)
	}
}

func TestThrottleConfig(t *testing.T) {
	if _, err := NewThrottle(nil, ThrottleConfig{}); err == nil {
		t.Error("accepted a nil pool")
	}
	pool := pgtest.NewPool(t, dbURL)
	for name, cfg := range map[string]ThrottleConfig{
		"negative max":    {MaxFailures: -1},
		"sub-second span": {Window: time.Millisecond},
	} {
		if _, err := NewThrottle(pool, cfg); err == nil {
			t.Errorf("%s: accepted %+v", name, cfg)
		}
	}
	clock := newTestClock()
	th, err := NewThrottle(pool, ThrottleConfig{MaxFailures: 2, Window: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatalf("NewThrottle: %v", err)
	}
	email := uniqueEmail()
	failOnce(t, th, email)
	failOnce(t, th, email)
	if got := rateLimited(t, th.Check(context.Background(), email)); got != time.Minute {
		t.Fatalf("RetryAfter %s, want 1m", got)
	}
	clock.Advance(time.Minute)
	if err := th.Check(context.Background(), email); err != nil {
		t.Fatalf("Check after the configured window: %v", err)
	}
}
