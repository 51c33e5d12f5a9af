package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
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
	// Payment reads the provider's payment as it is now (a read: no key, nothing taken).
	Payment(ctx context.Context, providerPaymentID string) (ProviderDecision, error)
}

// PaymentProcessConfig tunes how the process manager settles what the provider left pending.
type PaymentProcessConfig struct {
	// SettleAfter is how long a payment or refund may stay pending at the provider (its webhook not
	// arrived) before the process manager asks the provider itself; default 10s. The asks go on, the
	// wait doubling up to MaxSettleWait, while it stays pending or the provider is unavailable.
	SettleAfter time.Duration
	// MaxSettleWait caps the wait between two asks; default 1 min.
	MaxSettleWait time.Duration
	// SettleConcurrency bounds the asks in flight; default 8.
	SettleConcurrency int
	// Unsettled lists the payments with work the provider has not finished (a payment pending at the
	// provider, a refund requested and not decided), read from the log when this instance begins to
	// lead, so that a restart forgets none. Nil: only what this instance saw pending is settled.
	Unsettled func(ctx context.Context) ([]uuid.UUID, error)
}

func (c *PaymentProcessConfig) setDefaults() {
	if c.SettleAfter <= 0 {
		c.SettleAfter = 10 * time.Second
	}
	if c.MaxSettleWait <= 0 {
		c.MaxSettleWait = time.Minute
	}
	c.MaxSettleWait = max(c.MaxSettleWait, c.SettleAfter)
	if c.SettleConcurrency <= 0 {
		c.SettleConcurrency = 8
	}
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
//
// What the provider leaves pending (a payment waiting for its webhook, a refund not completed) is
// settled in the background: after SettleAfter the provider is asked (GetPayment by its id; a refund
// again with its key), with a doubling wait while it stays pending or cannot be reached, until it is
// decided, and the decision is recorded as the webhook's would be (outcomes never move a payment
// back, so a webhook racing a read is harmless). Settlements run only on the leading instance, under
// its context; Lead resumes them from the log when an instance begins to lead.
type PaymentProcess struct {
	store    *Store
	gateway  PaymentGateway
	recorder OutcomeRecorder
	logger   *slog.Logger
	// Backoff of retried calls: first wait, doubled up to max.
	minBackoff, maxBackoff time.Duration
	cfg                    PaymentProcessConfig
	asks                   chan struct{} // SettleConcurrency slots

	// Settlements scheduled and not finished, by payment and refund (uuid.Nil for the payment
	// itself). They run under the leader's context; Lead waits for them when leading ends.
	mu       sync.Mutex
	settling map[settleKey]struct{}
	wg       sync.WaitGroup
}

type settleKey struct{ payment, refund uuid.UUID }

// NewPaymentProcess refuses nil dependencies.
func NewPaymentProcess(store *Store, gateway PaymentGateway, recorder OutcomeRecorder, logger *slog.Logger, cfg PaymentProcessConfig) (*PaymentProcess, error) {
	if store == nil || gateway == nil || recorder == nil || logger == nil {
		return nil, fmt.Errorf("new payment process: %w", errNilDependency)
	}
	cfg.setDefaults()
	return &PaymentProcess{store: store, gateway: gateway, recorder: recorder, logger: logger,
		minBackoff: 50 * time.Millisecond, maxBackoff: 5 * time.Second, cfg: cfg,
		asks: make(chan struct{}, cfg.SettleConcurrency), settling: map[settleKey]struct{}{}}, nil
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
		// A refusal of the outcome's command will be refused again: retrying it would hold the
		// runner's checkpoint, and every event behind it, for good. Other errors (the provider, the
		// database) may clear, and so may an unavailable answer (a payment holding events a newer
		// binary wrote) or a conflict (the bus's retries of concurrent appends ran out; the outcome
		// commands refuse nothing as a conflict): giving up on those would move the checkpoint past a
		// request never decided.
		if ce, refused := commands.AsError(err); refused && ce.Kind != commands.KindUnavailable && ce.Kind != commands.KindConflict {
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
	if st.exists() && st.Status == paymentPending {
		p.settlePaymentLater(ctx, st) // handled again after a restart: the provider decides it
		return nil
	}
	if st.exists() && st.Status != paymentRequested {
		return nil // decided
	}
	d, err := p.gateway.Charge(ctx, ev.PaymentID.String(), ev.AmountMinor, ev.Currency, ev.SourceID, ev.PaymentID.String(), ev.Description)
	if err != nil {
		return err
	}
	if err := p.recorder.RecordPaymentOutcome(ctx, commands.RecordPaymentOutcome{
		PaymentID: ev.PaymentID, Outcome: d.Outcome, ProviderPaymentID: d.ProviderID, FailureCode: d.FailureCode,
	}); err != nil {
		return err
	}
	if d.Outcome == commands.OutcomePending {
		// Its webhook should decide it; if none comes, the provider is asked.
		p.schedule(ctx, settleKey{payment: ev.PaymentID}, p.cfg.SettleAfter, func(ctx context.Context) (bool, error) {
			return p.settlePayment(ctx, ev.PaymentID)
		})
	}
	return nil
}

func (p *PaymentProcess) refund(ctx context.Context, ev events.RefundRequested) error {
	st, err := p.fresh(ctx, ev.PaymentID)
	if err != nil {
		return err
	}
	pending, err := p.askRefund(ctx, st, ev.RefundID)
	if err != nil || !pending {
		return err
	}
	// Its webhook should decide it; if none comes, the provider is asked again with the same key.
	p.settleRefundLater(ctx, st, ev.RefundID, p.cfg.SettleAfter)
	return nil
}

// askRefund asks the provider for refund id of st (with the refund's id as idempotency key, so the
// first ask takes it and later ones read it) and records its decision; pending tells that there is
// none yet. A refund that is not pending here is not asked.
func (p *PaymentProcess) askRefund(ctx context.Context, st payment, id uuid.UUID) (pending bool, err error) {
	r, ok := st.refund(id)
	if !ok || r.Status != queries.RefundPending {
		return false, nil
	}
	d, err := p.gateway.Refund(ctx, id.String(), st.ProviderPaymentID, r.AmountMinor, st.Currency)
	if err != nil {
		return false, err
	}
	if d.Outcome == commands.OutcomePending {
		return true, nil
	}
	return false, p.recorder.RecordRefundOutcome(ctx, commands.RecordRefundOutcome{
		PaymentID: st.ID, RefundID: id, Outcome: d.Outcome, ProviderRefundID: d.ProviderID, FailureCode: d.FailureCode,
	})
}

// settlePayment asks the provider about a payment pending there and records its decision; done
// tells that nothing is left to ask (decided, here or there).
func (p *PaymentProcess) settlePayment(ctx context.Context, id uuid.UUID) (done bool, err error) {
	st, err := p.fresh(ctx, id)
	if err != nil {
		return false, err
	}
	if st.Status != paymentPending || st.ProviderPaymentID == "" {
		return true, nil // decided; or still requested, which Handle drives
	}
	d, err := p.gateway.Payment(ctx, st.ProviderPaymentID)
	if err != nil {
		return false, err
	}
	if d.Outcome == commands.OutcomePending {
		return false, nil
	}
	if d.ProviderID == "" {
		d.ProviderID = st.ProviderPaymentID
	}
	// As the webhook would: a payment decided meanwhile ignores it.
	err = p.recorder.RecordPaymentOutcome(ctx, commands.RecordPaymentOutcome{
		PaymentID: id, Outcome: d.Outcome, ProviderPaymentID: d.ProviderID, FailureCode: d.FailureCode,
	})
	return err == nil, err
}

func (p *PaymentProcess) settleRefund(ctx context.Context, paymentID, refundID uuid.UUID) (done bool, err error) {
	st, err := p.fresh(ctx, paymentID)
	if err != nil {
		return false, err
	}
	pending, err := p.askRefund(ctx, st, refundID)
	return err == nil && !pending, err
}

// settlePaymentLater schedules asking the provider about pending payment st once SettleAfter has
// passed since it became pending.
func (p *PaymentProcess) settlePaymentLater(ctx context.Context, st payment) {
	id := st.ID
	p.schedule(ctx, settleKey{payment: id}, p.sinceUpdate(st), func(ctx context.Context) (bool, error) {
		return p.settlePayment(ctx, id)
	})
}

func (p *PaymentProcess) settleRefundLater(ctx context.Context, st payment, refundID uuid.UUID, after time.Duration) {
	id := st.ID
	p.schedule(ctx, settleKey{payment: id, refund: refundID}, after, func(ctx context.Context) (bool, error) {
		return p.settleRefund(ctx, id, refundID)
	})
}

// sinceUpdate is what is left of SettleAfter since st last changed.
func (p *PaymentProcess) sinceUpdate(st payment) time.Duration {
	if st.UpdatedAt.IsZero() {
		return p.cfg.SettleAfter
	}
	return max(0, time.Until(st.UpdatedAt.Add(p.cfg.SettleAfter)))
}

// schedule runs settle after first, then again with a doubling wait (or the provider's Retry-After)
// while it is not done, until ctx ends. One settlement runs per key; ctx is the leader's.
func (p *PaymentProcess) schedule(ctx context.Context, key settleKey, first time.Duration, settle func(context.Context) (bool, error)) {
	p.mu.Lock()
	if _, ok := p.settling[key]; ok || ctx.Err() != nil {
		p.mu.Unlock()
		return
	}
	p.settling[key] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.settling, key)
			p.mu.Unlock()
		}()
		wait, next := first, p.cfg.SettleAfter
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			select {
			case p.asks <- struct{}{}:
			case <-ctx.Done():
				return
			}
			done, err := settle(ctx)
			<-p.asks
			if done || ctx.Err() != nil {
				return
			}
			wait, next = next, min(next*2, p.cfg.MaxSettleWait)
			var again *ProviderRetryError
			if errors.As(err, &again) && again.After > wait {
				wait = again.After
			}
			attrs := []any{slog.String("payment_id", key.payment.String()), slog.Duration("in", wait)}
			if key.refund != uuid.Nil {
				attrs = append(attrs, slog.String("refund_id", key.refund.String()))
			}
			if err != nil {
				p.logger.Warn("payments process: cannot settle with the provider yet", append(attrs, slog.String("error", err.Error()))...)
			} else {
				p.logger.Debug("payments process: still pending at the provider", attrs...)
			}
		}
	}()
}

// Lead runs while this instance leads the process manager (ctx is the one Handle gets): it schedules
// the settlement of every payment and refund the log shows pending at the provider, then, when
// leading ends, waits for the settlements to stop.
func (p *PaymentProcess) Lead(ctx context.Context) {
	defer func() {
		<-ctx.Done()
		// A barrier: schedule checks ctx under mu, so once this passes no settlement is added.
		p.mu.Lock()
		//lint:ignore SA2001 the empty critical section is the barrier
		p.mu.Unlock()
		p.wg.Wait()
	}()
	if p.cfg.Unsettled == nil {
		return
	}
	wait := p.minBackoff
	for {
		ids, err := p.cfg.Unsettled(ctx)
		if err == nil {
			for _, id := range ids {
				p.resume(ctx, id)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		p.logger.Warn("payments process: cannot list unsettled payments", slog.String("error", err.Error()), slog.Duration("in", wait))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, p.maxBackoff)
	}
}

// resume schedules what payment id still waits for at the provider.
func (p *PaymentProcess) resume(ctx context.Context, id uuid.UUID) {
	st, err := p.fresh(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			p.logger.Warn("payments process: cannot load an unsettled payment", slog.String("payment_id", id.String()), slog.String("error", err.Error()))
		}
		return
	}
	if st.Status == paymentPending && st.ProviderPaymentID != "" {
		p.settlePaymentLater(ctx, st)
	}
	for _, r := range st.Refunds {
		if r.Status == queries.RefundPending {
			// Perhaps never asked (the instance stopped first): asking takes it once, by its key.
			p.settleRefundLater(ctx, st, r.ID, 0)
		}
	}
}
