package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/events"
	"taki/infra/logging"
	. "taki/infra/postgres"
)

// processRecorder is a process manager's Handle that records what it was handed, and can hold one
// event until released.
type processRecorder struct {
	mu      sync.Mutex
	handled map[uuid.UUID]int
	changed chan struct{}
	hold    uuid.UUID
	release chan struct{}
}

func newProcessRecorder() *processRecorder {
	return &processRecorder{handled: map[uuid.UUID]int{}, changed: make(chan struct{}, 1), release: make(chan struct{})}
}

func (r *processRecorder) handle(ctx context.Context, e events.Envelope) error {
	if e.ID == r.hold {
		select {
		case <-r.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.handled[e.ID]++
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

func (r *processRecorder) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(tailWait)
	for {
		r.mu.Lock()
		got := len(r.handled)
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("handled %d events, want %d", got, n)
		}
	}
}

// runProcess runs a runner handing r the log's logins; tune, if given, changes it before it runs.
func runProcess(t *testing.T, e *tailEnv, r *processRecorder, tune ...func(*ProcessConfig, *ProcessRunner)) (*ProcessRunner, func()) {
	t.Helper()
	cfg := ProcessConfig{
		Name: "test", Types: []string{events.UserLoggedIn{}.EventType()}, Handle: r.handle, Logger: logging.Discard(),
		PollInterval: 50 * time.Millisecond,
	}
	for _, f := range tune {
		f(&cfg, nil)
	}
	runner, err := NewProcessRunner(e.pool, e.store, e.notifier, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tune {
		f(nil, runner)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { runner.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return runner, sync.OnceFunc(stop)
}

// appendFirstLogin appends user's first event and returns it as the log holds it.
func appendFirstLogin(t *testing.T, e *tailEnv, user uuid.UUID) events.Envelope {
	t.Helper()
	appendLogins(t, e.store, user, 0, 1)
	stream, err := e.store.Load(context.Background(), user, 0)
	if err != nil {
		t.Fatal(err)
	}
	return stream.Events[0]
}

// A slow event does not hold up the others, but the checkpoint never passes it until it is handled;
// a restart hands over exactly what was not checkpointed, and one runner leads at a time.
func TestProcessRunnerHandlesConcurrentlyAndCheckpointsInOrder(t *testing.T) {
	e := newTailEnv(t)
	ctx := context.Background()
	user := uuid.New()
	first := appendFirstLogin(t, e, user)
	slow := first
	last := appendLogins(t, e.store, user, 1, 9)

	r := newProcessRecorder()
	r.hold = slow.ID
	runner, stop := runProcess(t, e, r)
	r.waitFor(t, 9) // all but the slow one
	if cp, err := runner.Checkpoint(ctx); err != nil || slow.Position.Less(cp) {
		t.Fatalf("checkpoint %v (%v) passed the unhandled event at %v", cp, err, slow.Position)
	}
	// A second runner stands by while the first leads.
	standby := newProcessRecorder()
	_, stopStandby := runProcess(t, e, standby)
	close(r.release)
	r.waitFor(t, 10)
	deadline := time.After(tailWait)
	for {
		cp, err := runner.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cp == last {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("checkpoint %v never reached %v", cp, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
	standby.mu.Lock()
	if len(standby.handled) != 0 {
		t.Errorf("the standby runner handled %d events while the other led", len(standby.handled))
	}
	standby.mu.Unlock()

	// The leader stops: the standby takes over from the checkpoint and handles only what comes next.
	stop()
	appendLogins(t, e.store, user, 10, 1)
	standby.waitFor(t, 1)
	standby.mu.Lock()
	if len(standby.handled) != 1 {
		t.Errorf("the new leader handled %d events, want only the one after the checkpoint", len(standby.handled))
	}
	standby.mu.Unlock()
	stopStandby()
}

// Lead runs on the leader only, for as long as it leads, and the runner gives up leading only once
// Lead has returned; the next leader runs its own.
func TestProcessRunnerLeadRunsWhileLeading(t *testing.T) {
	e := newTailEnv(t)
	leads := make(chan context.Context, 2)
	returned := make(chan struct{}, 2)
	start := func() func() {
		runner, err := NewProcessRunner(e.pool, e.store, e.notifier, ProcessConfig{
			Name: "lead-test", Types: []string{events.UserLoggedIn{}.EventType()},
			Handle: func(context.Context, events.Envelope) error { return nil },
			Lead: func(ctx context.Context) {
				leads <- ctx
				<-ctx.Done()
				returned <- struct{}{}
			},
			Logger: logging.Discard(), PollInterval: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { runner.Run(ctx); close(done) }()
		stop := sync.OnceFunc(func() { cancel(); <-done })
		t.Cleanup(stop)
		return stop
	}
	waitLead := func() context.Context {
		t.Helper()
		select {
		case ctx := <-leads:
			return ctx
		case <-time.After(tailWait):
			t.Fatal("no runner began to lead")
			return nil
		}
	}
	stopFirst := start()
	first := waitLead()
	start() // stands by
	if len(leads) != 0 {
		t.Fatal("two runners lead at once")
	}
	stopFirst()
	if first.Err() == nil {
		t.Error("Lead's context outlived leading")
	}
	select {
	case <-returned:
	default:
		t.Error("the runner stopped before Lead returned")
	}
	if second := waitLead(); second.Err() != nil {
		t.Error("the new leader's Lead context has ended")
	}
}

// Behind an unfinished event the runner holds a bounded number of others and reads no further until
// it finishes: a long provider outage cannot make it buffer the log.
func TestProcessRunnerStopsReadingBehindAnUnfinishedEvent(t *testing.T) {
	e := newTailEnv(t)
	user := uuid.New()
	first := appendFirstLogin(t, e, user)
	appendLogins(t, e.store, user, 1, 9)

	r := newProcessRecorder()
	r.hold = first.ID
	full := make(chan struct{}, 1)
	runProcess(t, e, r, func(cfg *ProcessConfig, p *ProcessRunner) {
		if cfg != nil {
			cfg.BatchSize = 1 // the bound is checked before each read
			return
		}
		SetMaxWaiting(p, 3, func() {
			select {
			case full <- struct{}{}:
			default:
			}
		})
	})
	waitFull := func() {
		t.Helper()
		select {
		case <-full:
		case <-time.After(tailWait):
			t.Fatal("the runner never held back")
		}
	}
	waitFull()
	// The two dispatched with the held event finish; the runner, held back, reads nothing more.
	r.waitFor(t, 2)
	<-full // drop a signal from before
	waitFull()
	r.mu.Lock()
	held := len(r.handled)
	r.mu.Unlock()
	if held != 2 {
		t.Fatalf("%d events handled while the first is held, want the 2 dispatched with it", held)
	}
	close(r.release)
	r.waitFor(t, 10)
}

// An event committed while an older transaction of the cluster runs is invisible to the runner when its
// append wakes it; the older transaction's end wakes nobody. The runner handles the event once it is
// visible all the same, without waiting for its poll.
//
// Not parallel: the open transaction holds back what every log reader of the cluster sees.
func TestProcessRunnerHandlesLateVisibleEventsWithoutAWakeUp(t *testing.T) {
	e := newTailEnv(t)
	r := newProcessRecorder()
	var (
		mu    sync.Mutex
		armed bool
	)
	missed := make(chan struct{})
	runProcess(t, e, r, func(cfg *ProcessConfig, runner *ProcessRunner) {
		if cfg != nil {
			cfg.PollInterval = time.Hour
		}
		if runner != nil {
			OnEmptyRead(runner, func() {
				mu.Lock()
				defer mu.Unlock()
				if armed {
					armed = false
					close(missed)
				}
			})
		}
	})
	older := olderWriter(t, e)
	mu.Lock()
	armed = true
	mu.Unlock()
	appendFirstLogin(t, e, uuid.Must(uuid.NewV7()))
	// The runner has read the log since the append and seen nothing.
	select {
	case <-missed:
	case <-time.After(tailWait):
		t.Fatal("the runner never read the log while the older transaction ran")
	}
	if err := older.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 1)
}
