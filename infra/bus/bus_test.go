package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"taki/commands"
	"taki/events"
	"taki/infra/bus"
	"taki/infra/config"
	"taki/infra/logging"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
)

// Messages of the tests. greet and lookup are valid unless their name is empty.

type greet struct{ Name string }

func (g greet) Validate() error {
	if g.Name == "" {
		return commands.Invalid([]commands.FieldError{{Field: "name", Message: "is required"}})
	}
	return nil
}

type lookup struct{ Name string }

func (l lookup) Validate() error {
	if l.Name == "" {
		return commands.Invalid([]commands.FieldError{{Field: "name", Message: "is required"}})
	}
	return nil
}

// lookupUsers is served by the users read model, so read-your-writes applies to it.
type lookupUsers struct{}

func (lookupUsers) ReadModel() string { return "users" }

type unregistered struct{}

// handlerFunc adapts a function to both handler interfaces.
type handlerFunc[M, R any] func(ctx context.Context, m M) (R, error)

func (f handlerFunc[M, R]) Handle(ctx context.Context, m M) (R, error) { return f(ctx, m) }

// trace records the order in which middleware and handlers ran.
type trace struct {
	mu    sync.Mutex
	steps []string
}

func (tr *trace) add(s string) {
	tr.mu.Lock()
	tr.steps = append(tr.steps, s)
	tr.mu.Unlock()
}

func (tr *trace) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.steps)
}

func (tr *trace) middleware(name string) bus.Middleware {
	return func(ctx context.Context, m bus.Message, next bus.Next) (any, error) {
		tr.add(name + ">" + m.Kind.String() + ":" + m.Name)
		out, err := next(ctx, m)
		tr.add("<" + name)
		return out, err
	}
}

func TestSendAndAskRouteThroughMiddlewareOutermostFirst(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	b := bus.New(tr.middleware("a"), tr.middleware("b"), tr.middleware("c"))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(_ context.Context, g greet) (string, error) {
		tr.add("command handler")
		return "hello " + g.Name, nil
	}))
	bus.RegisterQuery(b, handlerFunc[lookup, int](func(_ context.Context, l lookup) (int, error) {
		tr.add("query handler")
		return len(l.Name), nil
	}))

	got, pos, err := bus.Send[string](context.Background(), b, greet{Name: "ana"})
	if err != nil || got != "hello ana" {
		t.Fatalf("Send = %q, %v", got, err)
	}
	if !pos.IsZero() {
		t.Errorf("a command that appended nothing has token %s, want zero", pos)
	}
	want := []string{"a>command:bus_test.greet", "b>command:bus_test.greet", "c>command:bus_test.greet", "command handler", "<c", "<b", "<a"}
	if steps := tr.get(); !slices.Equal(steps, want) {
		t.Errorf("Send ran\n %v\nwant\n %v", steps, want)
	}

	tr.steps = nil
	n, err := bus.Ask[int](context.Background(), b, lookup{Name: "abcd"})
	if err != nil || n != 4 {
		t.Fatalf("Ask = %d, %v", n, err)
	}
	want = []string{"a>query:bus_test.lookup", "b>query:bus_test.lookup", "c>query:bus_test.lookup", "query handler", "<c", "<b", "<a"}
	if steps := tr.get(); !slices.Equal(steps, want) {
		t.Errorf("Ask ran\n %v\nwant\n %v", steps, want)
	}
}

func TestMiddlewareSeesTheMessage(t *testing.T) {
	t.Parallel()
	var seen bus.Message
	b := bus.New(func(ctx context.Context, m bus.Message, next bus.Next) (any, error) {
		seen = m
		return next(ctx, m)
	})
	bus.RegisterCommand(b, handlerFunc[greet, string](func(_ context.Context, g greet) (string, error) { return g.Name, nil }))
	if _, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if seen.Kind != bus.KindCommand || seen.Name != "bus_test.greet" || seen.Body != (greet{Name: "x"}) {
		t.Errorf("middleware saw %+v", seen)
	}
}

func TestEachTypeReachesItsOwnHandler(t *testing.T) {
	t.Parallel()
	b := bus.New()
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) { return "greet", nil }))
	bus.RegisterQuery(b, handlerFunc[lookup, string](func(context.Context, lookup) (string, error) { return "lookup", nil }))
	// The same type may be a command and a query: the tables are separate.
	bus.RegisterQuery(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) { return "greet query", nil }))

	if r, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"}); err != nil || r != "greet" {
		t.Errorf("Send greet = %q, %v", r, err)
	}
	if r, err := bus.Ask[string](context.Background(), b, lookup{Name: "x"}); err != nil || r != "lookup" {
		t.Errorf("Ask lookup = %q, %v", r, err)
	}
	if r, err := bus.Ask[string](context.Background(), b, greet{Name: "x"}); err != nil || r != "greet query" {
		t.Errorf("Ask greet = %q, %v", r, err)
	}
	// lookup is registered as a query only.
	if _, _, err := bus.Send[string](context.Background(), b, lookup{Name: "x"}); !errors.Is(err, bus.ErrNoHandler) {
		t.Errorf("Send of a query type: %v, want ErrNoHandler", err)
	}
}

func TestUnregisteredTypeIsErrNoHandler(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	b := bus.New(tr.middleware("mw"))
	_, pos, err := bus.Send[string](context.Background(), b, unregistered{})
	if !errors.Is(err, bus.ErrNoHandler) {
		t.Errorf("Send: %v, want ErrNoHandler", err)
	}
	if !pos.IsZero() {
		t.Errorf("Send token %s", pos)
	}
	if err == nil || !strings.Contains(err.Error(), "bus_test.unregistered") {
		t.Errorf("the error %v does not name the type", err)
	}
	if _, err := bus.Ask[string](context.Background(), b, unregistered{}); !errors.Is(err, bus.ErrNoHandler) {
		t.Errorf("Ask: %v, want ErrNoHandler", err)
	}
	if steps := tr.get(); len(steps) != 0 {
		t.Errorf("middleware ran for an unroutable message: %v", steps)
	}
}

func TestWrongResultTypeIsAnErrorNotAPanic(t *testing.T) {
	t.Parallel()
	b := bus.New()
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) { return "s", nil }))
	if _, _, err := bus.Send[int](context.Background(), b, greet{Name: "x"}); err == nil {
		t.Error("Send[int] of a command answering string succeeded")
	}
}

func mustPanic(t *testing.T, what, wantInMessage string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		v := recover()
		if v == nil {
			t.Errorf("%s did not panic", what)
			return
		}
		if msg := fmt.Sprint(v); !strings.Contains(msg, wantInMessage) {
			t.Errorf("%s panicked with %q, want it to mention %q", what, msg, wantInMessage)
		}
	}()
	f()
}

func TestSecondRegistrationPanics(t *testing.T) {
	t.Parallel()
	b := bus.New()
	first := handlerFunc[greet, string](func(context.Context, greet) (string, error) { return "first", nil })
	second := handlerFunc[greet, string](func(context.Context, greet) (string, error) { return "second", nil })
	bus.RegisterCommand(b, first)
	mustPanic(t, "a second command handler", "bus_test.greet", func() { bus.RegisterCommand(b, second) })
	// Also with another result type: the command type alone decides the route.
	mustPanic(t, "a second command handler of another result type", "bus_test.greet", func() {
		bus.RegisterCommand(b, handlerFunc[greet, int](func(context.Context, greet) (int, error) { return 0, nil }))
	})
	bus.RegisterQuery(b, handlerFunc[lookup, int](func(context.Context, lookup) (int, error) { return 1, nil }))
	mustPanic(t, "a second query handler", "bus_test.lookup", func() {
		bus.RegisterQuery(b, handlerFunc[lookup, int](func(context.Context, lookup) (int, error) { return 2, nil }))
	})
	// The first registrations still serve.
	if r, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"}); err != nil || r != "first" {
		t.Errorf("after the panic Send = %q, %v", r, err)
	}
	if r, err := bus.Ask[int](context.Background(), b, lookup{Name: "x"}); err != nil || r != 1 {
		t.Errorf("after the panic Ask = %d, %v", r, err)
	}
}

type greeter struct{}

func (*greeter) Handle(context.Context, greet) (string, error) { return "", nil }

func TestNilHandlerPanics(t *testing.T) {
	t.Parallel()
	b := bus.New()
	mustPanic(t, "a nil handler", "nil", func() { bus.RegisterCommand[greet, string](b, nil) })
	var typedNil *greeter
	mustPanic(t, "a typed nil handler", "nil", func() { bus.RegisterCommand[greet, string](b, typedNil) })
}

func TestValidationRejectsBeforeTheHandler(t *testing.T) {
	t.Parallel()
	calls := 0
	tr := &trace{}
	b := bus.New(tr.middleware("outer"), bus.Validation(), tr.middleware("inner"))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) { calls++; return "ok", nil }))
	bus.RegisterQuery(b, handlerFunc[lookup, string](func(context.Context, lookup) (string, error) { calls++; return "ok", nil }))

	_, _, err := bus.Send[string](context.Background(), b, greet{})
	ce, ok := commands.AsError(err)
	if !ok || ce.Kind != commands.KindValidation || len(ce.Fields) != 1 || ce.Fields[0].Field != "name" {
		t.Fatalf("Send of an invalid command: %v, want a validation error on name", err)
	}
	if _, err := bus.Ask[string](context.Background(), b, lookup{}); !commands.IsKind(err, commands.KindValidation) {
		t.Fatalf("Ask of an invalid query: %v, want a validation error", err)
	}
	if calls != 0 {
		t.Errorf("handlers ran %d times for invalid messages", calls)
	}
	// Nothing inside Validation ran either; the outer middleware saw the rejection.
	want := []string{"outer>command:bus_test.greet", "<outer", "outer>query:bus_test.lookup", "<outer"}
	if steps := tr.get(); !slices.Equal(steps, want) {
		t.Errorf("ran %v, want %v", steps, want)
	}

	if r, _, err := bus.Send[string](context.Background(), b, greet{Name: "ok"}); err != nil || r != "ok" || calls != 1 {
		t.Errorf("valid command: %q, %v, %d calls", r, err, calls)
	}
}

func TestRetryConflictsRetriesUpToNTimesThenConflict(t *testing.T) {
	t.Parallel()
	calls := 0
	b := bus.New(bus.RetryConflicts(3))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) {
		calls++
		return "", fmt.Errorf("append to stream: %w", events.ErrConflict)
	}))
	_, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"})
	if calls != 3 {
		t.Errorf("handler ran %d times, want 3", calls)
	}
	ce, ok := commands.AsError(err)
	if !ok || ce.Kind != commands.KindConflict {
		t.Fatalf("after the last attempt: %v (%T), want a conflict *commands.Error", err, err)
	}
	if errors.Is(err, events.ErrConflict) {
		t.Errorf("the raw store error leaks through: %v", err)
	}
}

func TestRetryConflictsSucceedsWithinN(t *testing.T) {
	t.Parallel()
	calls := 0
	b := bus.New(bus.RetryConflicts(3))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) {
		calls++
		if calls < 3 {
			return "", events.ErrConflict
		}
		return "done", nil
	}))
	r, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"})
	if err != nil || r != "done" || calls != 3 {
		t.Errorf("Send = %q, %v after %d calls; want done after 3", r, err, calls)
	}
}

func TestRetryConflictsPassesOtherErrorsAtOnce(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, fail := range []error{boom, commands.NotFound("thing"), commands.Invalid([]commands.FieldError{{Field: "f", Message: "m"}})} {
		calls := 0
		b := bus.New(bus.RetryConflicts(5))
		bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) {
			calls++
			return "", fail
		}))
		_, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"})
		if !errors.Is(err, fail) || calls != 1 {
			t.Errorf("%v: got %v after %d calls, want it unchanged after 1", fail, err, calls)
		}
	}
}

func TestRetryConflictsLeavesQueriesAlone(t *testing.T) {
	t.Parallel()
	calls := 0
	b := bus.New(bus.RetryConflicts(5))
	bus.RegisterQuery(b, handlerFunc[lookup, string](func(context.Context, lookup) (string, error) {
		calls++
		return "", events.ErrConflict
	}))
	if _, err := bus.Ask[string](context.Background(), b, lookup{Name: "x"}); !errors.Is(err, events.ErrConflict) || calls != 1 {
		t.Errorf("query: %v after %d calls, want the error after 1", err, calls)
	}
}

func TestRetryConflictsStopsWhenTheCallerLeaves(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	b := bus.New(bus.RetryConflicts(100))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) {
		calls++
		cancel()
		return "", events.ErrConflict
	}))
	_, _, err := bus.Send[string](ctx, b, greet{Name: "x"})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("cancelled caller: %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

func TestRetryConflictsAtLeastOnce(t *testing.T) {
	t.Parallel()
	calls := 0
	b := bus.New(bus.RetryConflicts(0))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(context.Context, greet) (string, error) { calls++; return "ok", nil }))
	if r, _, err := bus.Send[string](context.Background(), b, greet{Name: "x"}); err != nil || r != "ok" || calls != 1 {
		t.Errorf("RetryConflicts(0): %q, %v, %d calls", r, err, calls)
	}
}

func TestMetricsCountOutcomes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := bus.New(bus.Metrics(reg), bus.Validation())
	bus.RegisterCommand(b, handlerFunc[greet, string](func(_ context.Context, g greet) (string, error) {
		if g.Name == "boom" {
			return "", errors.New("boom")
		}
		return "ok", nil
	}))
	for _, name := range []string{"a", "b", "", "boom"} {
		_, _, _ = bus.Send[string](context.Background(), b, greet{Name: name})
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "taki_bus_messages_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["kind"]+" "+labels["name"]+" "+labels["outcome"]] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"command bus_test.greet ok":       2,
		"command bus_test.greet rejected": 1,
		"command bus_test.greet error":    1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("taki_bus_messages_total = %v, want %v", got, want)
	}
}

// fakeWaiter is the one fake here: it stands for the projector's WaitFor.
type fakeWaiter struct {
	mu      sync.Mutex
	applied bool
	err     error
	calls   []string
}

func (w *fakeWaiter) WaitFor(_ context.Context, projection string, pos events.Position, timeout time.Duration) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, fmt.Sprintf("%s %s %s", projection, pos, timeout))
	return w.applied, w.err
}

func (w *fakeWaiter) got() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls)
}

func TestReadYourWritesMarksStaleWhenNotApplied(t *testing.T) {
	t.Parallel()
	token := events.Position{TxID: 42, Offset: 7}
	for _, applied := range []bool{false, true} {
		w := &fakeWaiter{applied: applied}
		b := bus.New(bus.ReadYourWrites(w, 1500*time.Millisecond))
		ran := false
		bus.RegisterQuery(b, handlerFunc[lookupUsers, string](func(context.Context, lookupUsers) (string, error) {
			ran = true
			return "answer", nil
		}))
		ctx, cons := bus.WithConsistency(context.Background(), token)
		r, err := bus.Ask[string](ctx, b, lookupUsers{})
		if err != nil || r != "answer" || !ran {
			t.Fatalf("applied=%v: Ask = %q, %v (handler ran: %v); the query must be answered either way", applied, r, err, ran)
		}
		if cons.Stale == applied {
			t.Errorf("applied=%v: Stale = %v", applied, cons.Stale)
		}
		if calls := w.got(); !slices.Equal(calls, []string{"users 42.7 1.5s"}) {
			t.Errorf("applied=%v: waiter calls %v, want one for users at 42.7 with the 1.5s timeout", applied, calls)
		}
	}
}

func TestReadYourWritesWaiterErrorFailsTheQuery(t *testing.T) {
	t.Parallel()
	w := &fakeWaiter{err: context.DeadlineExceeded}
	b := bus.New(bus.ReadYourWrites(w, time.Second))
	ran := false
	bus.RegisterQuery(b, handlerFunc[lookupUsers, string](func(context.Context, lookupUsers) (string, error) { ran = true; return "", nil }))
	ctx, _ := bus.WithConsistency(context.Background(), events.Position{TxID: 1, Offset: 1})
	if _, err := bus.Ask[string](ctx, b, lookupUsers{}); !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Errorf("Ask = %v, handler ran %v; want the waiter's error and no handler", err, ran)
	}
}

func TestReadYourWritesWaitsOnlyWhenItApplies(t *testing.T) {
	t.Parallel()
	w := &fakeWaiter{}
	b := bus.New(bus.ReadYourWrites(w, time.Second))
	bus.RegisterQuery(b, handlerFunc[lookupUsers, string](func(context.Context, lookupUsers) (string, error) { return "rm", nil }))
	bus.RegisterQuery(b, handlerFunc[lookup, string](func(context.Context, lookup) (string, error) { return "plain", nil }))
	bus.RegisterCommand(b, handlerFunc[lookupUsers, string](func(context.Context, lookupUsers) (string, error) { return "cmd", nil }))

	withToken, cons := bus.WithConsistency(context.Background(), events.Position{TxID: 9, Offset: 1})
	zeroToken, zeroCons := bus.WithConsistency(context.Background(), events.Position{})
	if r, err := bus.Ask[string](context.Background(), b, lookupUsers{}); err != nil || r != "rm" {
		t.Errorf("no token: %q, %v", r, err)
	}
	if r, err := bus.Ask[string](zeroToken, b, lookupUsers{}); err != nil || r != "rm" {
		t.Errorf("zero token: %q, %v", r, err)
	}
	if r, err := bus.Ask[string](withToken, b, lookup{Name: "x"}); err != nil || r != "plain" {
		t.Errorf("query without a read model: %q, %v", r, err)
	}
	if r, _, err := bus.Send[string](withToken, b, lookupUsers{}); err != nil || r != "cmd" {
		t.Errorf("command: %q, %v", r, err)
	}
	if calls := w.got(); len(calls) != 0 {
		t.Errorf("waiter called %v; it must only wait for a query of a read model with a token", calls)
	}
	if cons.Stale || zeroCons.Stale {
		t.Error("marked stale without waiting")
	}
}

// The consistency token is recorded by RecordingLog around the real event store.

func newStore(t *testing.T) (*server.Server, string) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"TAKI_DATABASE_URL": dbURL, "TAKI_SECRET": strings.Repeat("s", 32)}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, logging.Discard(), server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, dbURL
}

func loggedIn(stream uuid.UUID, version int64) events.Append {
	return events.Append{
		StreamID: stream, StreamType: events.StreamUser, ExpectedVersion: version,
		Events: []events.Event{events.UserLoggedIn{UserID: stream, At: time.Now().UTC()}},
	}
}

func TestConsistencyTokenIsTheHighestRecordedPosition(t *testing.T) {
	t.Parallel()
	srv, _ := newStore(t)
	log := bus.RecordingLog{Log: srv.Store}
	b := bus.New(bus.RetryConflicts(3))
	var positions []events.Position
	bus.RegisterCommand(b, handlerFunc[greet, string](func(ctx context.Context, _ greet) (string, error) {
		positions = nil
		for range 2 {
			p, err := log.Append(ctx, loggedIn(uuid.New(), 0))
			if err != nil {
				return "", err
			}
			positions = append(positions, p)
		}
		return "ok", nil
	}))
	_, token, err := bus.Send[string](context.Background(), b, greet{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !positions[0].Less(positions[1]) || token != positions[1] {
		t.Errorf("token %s, appended at %v: want the later position", token, positions)
	}
	// Appends outside a Send record nothing and do not fail.
	if _, err := log.Append(context.Background(), loggedIn(uuid.New(), 0)); err != nil {
		t.Fatal(err)
	}
}

// TestConsistencyTokenKeepsTheHighestWhenRecordedOutOfOrder: two appends of one command commit in the
// opposite order of their log positions (a position is the writer's transaction id, taken when it first
// writes); the token must still be the highest, not the last recorded.
func TestConsistencyTokenKeepsTheHighestWhenRecordedOutOfOrder(t *testing.T) {
	t.Parallel()
	srv, _ := newStore(t)
	ctx := context.Background()
	log := bus.RecordingLog{Log: srv.Store}

	// A foreign transaction holds an uncommitted claim that append A will wait for.
	blocker, err := srv.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(ctx) }()
	if _, err := blocker.Exec(ctx, `INSERT INTO unique_claims (kind, value, stream_id) VALUES ('test', 'contended', $1)`, uuid.New()); err != nil {
		t.Fatal(err)
	}

	var first, second events.Position
	b := bus.New()
	bus.RegisterCommand(b, handlerFunc[greet, string](func(ctx context.Context, _ greet) (string, error) {
		type result struct {
			pos events.Position
			err error
		}
		aDone := make(chan result, 1)
		go func() {
			a := loggedIn(uuid.New(), 0)
			a.Claims = []events.Claim{{Kind: "test", Value: "contended"}}
			p, err := log.Append(ctx, a)
			aDone <- result{p, err}
		}()
		// A has its transaction id and waits on the claim's lock.
		if err := waitForLockWaiters(ctx, srv, 1); err != nil {
			return "", err
		}
		p, err := log.Append(ctx, loggedIn(uuid.New(), 0)) // B: a later transaction id, committed first
		if err != nil {
			return "", err
		}
		second = p
		if err := blocker.Rollback(ctx); err != nil {
			return "", err
		}
		r := <-aDone
		if r.err != nil {
			return "", r.err
		}
		first = r.pos
		return "ok", nil
	}))
	// Bounded, so that an append that queues behind the blocked one fails the test instead of hanging it.
	sendCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, token, err := bus.Send[string](sendCtx, b, greet{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !first.Less(second) {
		t.Fatalf("set-up failed: A at %s is not before B at %s", first, second)
	}
	if token != second {
		t.Errorf("token %s, want the highest position %s (A recorded last at %s)", token, second, first)
	}
}

// waitForLockWaiters waits until n backends of this database wait for a lock.
func waitForLockWaiters(ctx context.Context, srv *server.Server, n int) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		var waiting int
		err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			return err
		}
		if waiting >= n {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline:
			return errors.New("no append started waiting for the claim's lock")
		}
	}
}

func TestConsistencyTokenResetsBetweenRetries(t *testing.T) {
	t.Parallel()
	srv, _ := newStore(t)
	ctx := context.Background()
	log := bus.RecordingLog{Log: srv.Store}

	taken := uuid.New()
	if _, err := srv.Store.Append(ctx, loggedIn(taken, 0)); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	var firstAttempt events.Position
	b := bus.New(bus.RetryConflicts(3))
	bus.RegisterCommand(b, handlerFunc[greet, string](func(ctx context.Context, g greet) (string, error) {
		attempts++
		if attempts > 1 {
			if g.Name == "append on retry" {
				return "", appendOne(ctx, log)
			}
			return "ok", nil // the retry appends nothing
		}
		p, err := log.Append(ctx, loggedIn(uuid.New(), 0))
		if err != nil {
			return "", err
		}
		firstAttempt = p
		_, err = log.Append(ctx, loggedIn(taken, 0)) // version 1 exists: the store reports a conflict
		if !errors.Is(err, events.ErrConflict) {
			return "", fmt.Errorf("set-up: want a conflict, got %v", err)
		}
		return "", err
	}))
	_, token, err := bus.Send[string](ctx, b, greet{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || firstAttempt.IsZero() {
		t.Fatalf("attempts %d, first attempt at %s", attempts, firstAttempt)
	}
	if !token.IsZero() {
		t.Errorf("token %s after a retry that appended nothing; the failed attempt's %s must not count", token, firstAttempt)
	}

	// A retry that appends gets its own position.
	attempts = 0
	_, token, err = bus.Send[string](ctx, b, greet{Name: "append on retry"})
	if err != nil {
		t.Fatal(err)
	}
	last, err := lastPosition(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	if token != last {
		t.Errorf("token %s, want the retry's append at %s", token, last)
	}
}

func appendOne(ctx context.Context, log events.Log) error {
	_, err := log.Append(ctx, loggedIn(uuid.New(), 0))
	return err
}

func lastPosition(ctx context.Context, srv *server.Server) (events.Position, error) {
	var p events.Position
	var tx string
	err := srv.Pool.QueryRow(ctx, `SELECT e.transaction_id::text, e."offset" FROM events e ORDER BY e.transaction_id DESC, e."offset" DESC LIMIT 1`).Scan(&tx, &p.Offset)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return p, err
	}
	_, err = fmt.Sscan(tx, &p.TxID)
	return p, err
}
