package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
)

// ProviderDecision is what the provider answered about a payment or a refund.
type ProviderDecision struct {
	Outcome     string // commands.OutcomePending, OutcomeCompleted or OutcomeFailed
	ProviderID  string // the provider's id of the payment or refund
	FailureCode string // why it failed
}

// ProviderRetryError is a provider call that may succeed when repeated later with the same
// idempotency key (no answer, 429, 5xx, open circuit). After, when positive, is how long to wait.
type ProviderRetryError struct {
	Err   error
	After time.Duration
}

func (e *ProviderRetryError) Error() string { return "provider call to retry: " + e.Err.Error() }
func (e *ProviderRetryError) Unwrap() error { return e.Err }

// PaymentGateway calls the payments provider. Every call carries an idempotency key, so repeating it
// never charges or refunds twice. Errors are *ProviderRetryError, the caller's cancellation, or a
// refusal that is final (its code, when known, is returned as a failed decision instead).
type PaymentGateway interface {
	Charge(ctx context.Context, key string, amountMinor int64, currency, sourceID, reference, note string) (ProviderDecision, error)
	Refund(ctx context.Context, key, providerPaymentID string, amountMinor int64, currency string) (ProviderDecision, error)
}

// OutcomeRecorder sends the outcome commands (through the bus, with its conflict retries).
type OutcomeRecorder interface {
	RecordPaymentOutcome(ctx context.Context, cmd commands.RecordPaymentOutcome) error
	RecordRefundOutcome(ctx context.Context, cmd commands.RecordRefundOutcome) error
}

// PaymentProcess is the payments process manager's decision logic: it drives one requested payment
// or refund to the provider's decision and records it. It never runs inside a database transaction.
// A repeated run (after a restart) is safe: a decided payment or refund is skipped, and the provider
// sees the same idempotency key (the payment's or the refund's id).
type PaymentProcess struct {
	store    *Store
	gateway  PaymentGateway
	recorder OutcomeRecorder
	logger   *slog.Logger
	// Backoff of retried calls: first wait, doubled up to max.
	minBackoff, maxBackoff time.Duration
}

// NewPaymentProcess refuses nil dependencies.
func NewPaymentProcess(store *Store, gateway PaymentGateway, recorder OutcomeRecorder, logger *slog.Logger) (*PaymentProcess, error) {
	if store == nil || gateway == nil || recorder == nil || logger == nil {
		return nil, fmt.Errorf("new payment process: %w", errNilDependency)
	}
	return &PaymentProcess{store: store, gateway: gateway, recorder: recorder, logger: logger,
		minBackoff: 50 * time.Millisecond, maxBackoff: 5 * time.Second}, nil
}

// PaymentProcessEvents are the event types the process manager acts on.
var PaymentProcessEvents = []string{events.PaymentRequested{}.EventType(), events.RefundRequested{}.EventType()}

// Handle drives the request e announces to a decision, retrying transient failures until ctx ends.
// Other events are ignored.
func (p *PaymentProcess) Handle(ctx context.Context, e events.Envelope) error {
	switch ev := e.Data.(type) {
	case events.PaymentRequested:
		return p.retry(ctx, func() error { return p.charge(ctx, ev) })
	case events.RefundRequested:
		return p.retry(ctx, func() error { return p.refund(ctx, ev) })
	}
	return nil
}

// retry runs f until it succeeds, fails for good, or ctx ends.
func (p *PaymentProcess) retry(ctx context.Context, f func() error) error {
	wait := p.minBackoff
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var again *ProviderRetryError
		d := wait
		if errors.As(err, &again) && again.After > d {
			d = again.After
		}
		p.logger.Warn("payments process: retrying", slog.String("error", err.Error()), slog.Duration("in", d))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		wait = min(wait*2, p.maxBackoff)
	}
}

func (p *PaymentProcess) fresh(ctx context.Context, id uuid.UUID) (payment, error) {
	p.store.evict(id)
	l, err := load(ctx, p.store, payments, id)
	return l.state, err
}

func (p *PaymentProcess) charge(ctx context.Context, ev events.PaymentRequested) error {
	st, err := p.fresh(ctx, ev.PaymentID)
	if err != nil {
		return err
	}
	if st.exists() && st.Status != paymentRequested {
		return nil // decided, or pending until the provider's webhook
	}
	d, err := p.gateway.Charge(ctx, ev.PaymentID.String(), ev.AmountMinor, ev.Currency, ev.SourceID, ev.PaymentID.String(), ev.Description)
	if err != nil {
		return err
	}
	return p.recorder.RecordPaymentOutcome(ctx, commands.RecordPaymentOutcome{
		PaymentID: ev.PaymentID, Outcome: d.Outcome, ProviderPaymentID: d.ProviderID, FailureCode: d.FailureCode,
	})
}

func (p *PaymentProcess) refund(ctx context.Context, ev events.RefundRequested) error {
	st, err := p.fresh(ctx, ev.PaymentID)
	if err != nil {
		return err
	}
	r, ok := st.refund(ev.RefundID)
	if !ok || r.Status != "pending" {
		return nil
	}
	d, err := p.gateway.Refund(ctx, ev.RefundID.String(), st.ProviderPaymentID, ev.AmountMinor, st.Currency)
	if err != nil {
		return err
	}
	if d.Outcome == commands.OutcomePending {
		// Asked again with the same key, the provider answers the refund as it is then.
		return &ProviderRetryError{Err: errors.New("refund " + ev.RefundID.String() + " is pending at the provider")}
	}
	return p.recorder.RecordRefundOutcome(ctx, commands.RecordRefundOutcome{
		PaymentID: ev.PaymentID, RefundID: ev.RefundID, Outcome: d.Outcome, ProviderRefundID: d.ProviderID, FailureCode: d.FailureCode,
	})
}
