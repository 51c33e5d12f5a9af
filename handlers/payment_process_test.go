package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// fakeGateway answers the process manager's provider calls from scripts; a read with no script
// left answers the last decision again.
type fakeGateway struct {
	mu      sync.Mutex
	charge  ProviderDecision
	reads   []fakeAnswer
	refunds []fakeAnswer
	calls   map[string]int
}

type fakeAnswer struct {
	d   ProviderDecision
	err error
}

func (g *fakeGateway) count(op string) {
	if g.calls == nil {
		g.calls = map[string]int{}
	}
	g.calls[op]++
}

func (g *fakeGateway) next(script *[]fakeAnswer) (ProviderDecision, error) {
	a := (*script)[0]
	if len(*script) > 1 {
		*script = (*script)[1:]
	}
	return a.d, a.err
}

func (g *fakeGateway) Charge(context.Context, string, int64, string, string, string, string) (ProviderDecision, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.count("charge")
	return g.charge, nil
}

func (g *fakeGateway) Refund(context.Context, string, string, int64, string) (ProviderDecision, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.count("refund")
	return g.next(&g.refunds)
}

func (g *fakeGateway) Payment(context.Context, string) (ProviderDecision, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.count("read")
	return g.next(&g.reads)
}

func (g *fakeGateway) n(op string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[op]
}

type noClaims struct{}

func (noClaims) ClaimOwner(context.Context, string, string) (uuid.UUID, bool, error) {
	return uuid.Nil, false, nil
}

type always struct{}

func (always) ProviderUnavailable() (time.Duration, bool) { return 0, false }

// directRecorder records outcomes through the outcome command handlers.
type directRecorder struct{ cmds *PaymentCommands }

func (r directRecorder) RecordPaymentOutcome(ctx context.Context, cmd commands.RecordPaymentOutcome) error {
	_, err := RecordPaymentOutcomeHandler{r.cmds}.Handle(ctx, cmd)
	return err
}

func (r directRecorder) RecordRefundOutcome(ctx context.Context, cmd commands.RecordRefundOutcome) error {
	_, err := RecordRefundOutcomeHandler{r.cmds}.Handle(ctx, cmd)
	return err
}

type processEnv struct {
	log     *memLog
	store   *Store
	gateway *fakeGateway
	process *PaymentProcess
}

func newProcessEnv(t *testing.T, unsettled func(context.Context) ([]uuid.UUID, error)) processEnv {
	t.Helper()
	e := processEnv{log: newMemLog(), gateway: &fakeGateway{}}
	var err error
	if e.store, err = NewStore(e.log, 100, nil); err != nil {
		t.Fatal(err)
	}
	cmds, err := NewPaymentCommands(e.store, noClaims{}, always{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	e.process, err = NewPaymentProcess(e.store, e.gateway, directRecorder{cmds}, slog.New(slog.NewTextHandler(io.Discard, nil)),
		PaymentProcessConfig{SettleAfter: 5 * time.Millisecond, MaxSettleWait: 10 * time.Millisecond, Unsettled: unsettled})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e processEnv) append(t *testing.T, id uuid.UUID, evs ...events.Event) {
	t.Helper()
	e.log.mu.Lock()
	version := int64(len(e.log.streams[id]))
	e.log.mu.Unlock()
	if _, err := e.log.Append(context.Background(), events.Append{StreamID: id, StreamType: events.StreamPayment,
		ExpectedVersion: version, Events: evs}); err != nil {
		t.Fatal(err)
	}
}

func (e processEnv) state(t *testing.T, id uuid.UUID) payment {
	t.Helper()
	st, err := e.process.fresh(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// lead runs the process's Lead until the test ends, and stops it then.
func (e processEnv) lead(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.process.Lead(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done // Lead returns only once every settlement has stopped
		e.process.mu.Lock()
		defer e.process.mu.Unlock()
		if len(e.process.settling) != 0 {
			t.Errorf("settlements left: %v", e.process.settling)
		}
	})
	return ctx
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A payment the provider leaves pending is read at the provider until it is decided, also across
// the provider's outages.
func TestPaymentProcessSettlesAPendingPaymentByAsking(t *testing.T) {
	t.Parallel()
	e := newProcessEnv(t, nil)
	ctx := e.lead(t)
	id := uuid.New()
	req := payReq
	req.PaymentID = id
	e.append(t, id, req)
	e.gateway.charge = ProviderDecision{Outcome: commands.OutcomePending, ProviderID: "P"}
	e.gateway.reads = []fakeAnswer{
		{d: ProviderDecision{Outcome: commands.OutcomePending, ProviderID: "P"}},
		{err: &ProviderRetryError{Err: errors.New("breaker open")}},
		{d: ProviderDecision{Outcome: commands.OutcomeCompleted, ProviderID: "P"}},
	}
	if err := e.process.Handle(ctx, events.Envelope{Type: req.EventType(), Data: req}); err != nil {
		t.Fatal(err)
	}
	if st := e.state(t, id); st.Status != paymentPending {
		t.Fatalf("after the charge: %s", st.Status)
	}
	waitUntil(t, "completed", func() bool { return e.state(t, id).Status == paymentCompleted })
	if n := e.gateway.n("read"); n != 3 {
		t.Errorf("%d reads, want 3", n)
	}
	// Handled again (a restart before the checkpoint moved): nothing is charged again.
	if err := e.process.Handle(ctx, events.Envelope{Type: req.EventType(), Data: req}); err != nil {
		t.Fatal(err)
	}
	if n := e.gateway.n("charge"); n != 1 {
		t.Errorf("%d charges, want 1", n)
	}
}

// On becoming leader the process resumes what the log shows unsettled: a pending payment and a
// refund never decided.
func TestPaymentProcessResumesUnsettledPaymentsWhenItLeads(t *testing.T) {
	t.Parallel()
	pendingID, refundedID, refundID := uuid.New(), uuid.New(), uuid.New()
	e := newProcessEnv(t, func(context.Context) ([]uuid.UUID, error) { return []uuid.UUID{pendingID, refundedID}, nil })
	req := payReq
	req.PaymentID = pendingID
	e.append(t, pendingID, req, events.PaymentPending{PaymentID: pendingID, ProviderPaymentID: "P1", At: time.Now()})
	req.PaymentID = refundedID
	e.append(t, refundedID, req, events.PaymentCompleted{PaymentID: refundedID, ProviderPaymentID: "P2", At: time.Now()},
		events.RefundRequested{PaymentID: refundedID, RefundID: refundID, AmountMinor: 100, RequestedAt: time.Now()})
	e.gateway.reads = []fakeAnswer{{d: ProviderDecision{Outcome: commands.OutcomeFailed, ProviderID: "P1", FailureCode: "GENERIC_DECLINE"}}}
	e.gateway.refunds = []fakeAnswer{
		{d: ProviderDecision{Outcome: commands.OutcomePending, ProviderID: "R"}},
		{d: ProviderDecision{Outcome: commands.OutcomeCompleted, ProviderID: "R"}},
	}
	e.lead(t)
	waitUntil(t, "the pending payment decided", func() bool { return e.state(t, pendingID).Status == paymentFailed })
	waitUntil(t, "the refund decided", func() bool {
		r, _ := e.state(t, refundedID).refund(refundID)
		return r.Status == queries.RefundCompleted
	})
	if st := e.state(t, pendingID); st.FailureCode != "GENERIC_DECLINE" {
		t.Errorf("failure code %q", st.FailureCode)
	}
	if n := e.gateway.n("refund"); n != 2 {
		t.Errorf("%d refund asks, want 2", n)
	}
}

// unreadableAtFirst is a log whose first loads stop at an event this binary cannot read, as while a
// newer instance writes during a rolling deploy.
type unreadableAtFirst struct {
	*memLog
	left atomic.Int32
}

func (l *unreadableAtFirst) Load(ctx context.Context, id uuid.UUID, snapshotVersion int) (events.Stream, error) {
	if l.left.Add(-1) >= 0 {
		return events.Stream{}, fmt.Errorf("decode future.event: unknown event type: %w", events.ErrUndecodable)
	}
	return l.memLog.Load(ctx, id, snapshotVersion)
}

// A payment the process cannot load yet, its stream holding events a newer binary wrote, is retried
// until it can: given up on, its request would be left undecided behind the runner's checkpoint.
func TestPaymentProcessRetriesAPaymentItCannotReadYet(t *testing.T) {
	t.Parallel()
	log := &unreadableAtFirst{memLog: newMemLog()}
	process, gateway := processOver(t, log, nil)
	req := requestedOn(t, log)
	id := req.PaymentID
	log.left.Store(2)
	if err := process.Handle(context.Background(), events.Envelope{Type: req.EventType(), Data: req}); err != nil {
		t.Fatal(err)
	}
	if n := gateway.n("charge"); n != 1 {
		t.Fatalf("%d charges, want 1", n)
	}
	if st, err := process.fresh(context.Background(), id); err != nil || st.Status != paymentCompleted {
		t.Fatalf("payment %s, %v; want completed", st.Status, err)
	}
}

// conflictingAtFirst answers its first outcomes with the conflict the bus gives once its retries of
// concurrent appends run out.
type conflictingAtFirst struct {
	directRecorder
	left atomic.Int32
}

func (r *conflictingAtFirst) RecordPaymentOutcome(ctx context.Context, cmd commands.RecordPaymentOutcome) error {
	if r.left.Add(-1) >= 0 {
		return commands.Conflict("the resource changed concurrently too often; try again")
	}
	return r.directRecorder.RecordPaymentOutcome(ctx, cmd)
}

// An outcome whose recording keeps meeting concurrent appends is recorded once they let it through:
// given up on, the payment would stay requested behind the runner's checkpoint, the card charged.
func TestPaymentProcessRetriesAnOutcomeThatConflicted(t *testing.T) {
	t.Parallel()
	log := newMemLog()
	process, gateway := processOver(t, log, func(r directRecorder) OutcomeRecorder {
		c := &conflictingAtFirst{directRecorder: r}
		c.left.Store(2)
		return c
	})
	req := requestedOn(t, log)
	id := req.PaymentID
	if err := process.Handle(context.Background(), events.Envelope{Type: req.EventType(), Data: req}); err != nil {
		t.Fatal(err)
	}
	if st, err := process.fresh(context.Background(), id); err != nil || st.Status != paymentCompleted {
		t.Fatalf("payment %s, %v; want completed", st.Status, err)
	}
	// Each attempt asks the provider again, with the payment's one idempotency key: charged once.
	if n := gateway.n("charge"); n != 3 {
		t.Fatalf("%d charge calls, want one per attempt, 3", n)
	}
}

// processOver is a payment process over log, with a gateway that completes every charge; its outcomes
// go through wrap's recorder (nil: straight to the commands).
func processOver(t *testing.T, log events.Log, wrap func(directRecorder) OutcomeRecorder) (*PaymentProcess, *fakeGateway) {
	t.Helper()
	gateway := &fakeGateway{charge: ProviderDecision{Outcome: commands.OutcomeCompleted, ProviderID: "P"}}
	store, err := NewStore(log, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := NewPaymentCommands(store, noClaims{}, always{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var recorder OutcomeRecorder = directRecorder{cmds}
	if wrap != nil {
		recorder = wrap(directRecorder{cmds})
	}
	process, err := NewPaymentProcess(store, gateway, recorder, slog.New(slog.NewTextHandler(io.Discard, nil)), PaymentProcessConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return process, gateway
}

// requestedOn appends a new payment's payment.requested to log and returns it.
func requestedOn(t *testing.T, log events.Log) events.PaymentRequested {
	t.Helper()
	req := payReq
	req.PaymentID = uuid.New()
	if _, err := log.Append(context.Background(), events.Append{StreamID: req.PaymentID, StreamType: events.StreamPayment, Events: []events.Event{req}}); err != nil {
		t.Fatal(err)
	}
	return req
}
