package handlers

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// Payment aggregate statuses. A payment is requested until the provider answers, pending while the
// provider has not decided, then completed or failed for good. Refunds do not change it: the API's
// partially_refunded and refunded are derived from the completed refunds.
const (
	paymentRequested = "requested"
	paymentPending   = "pending"
	paymentCompleted = "completed"
	paymentFailed    = "failed"
)

// Unique-claim kinds of payments: a user's Idempotency-Key of a payment and of a refund, and a
// provider webhook's event id.
const (
	paymentIdempotencyClaim = "payment.idempotency"
	refundIdempotencyClaim  = "refund.idempotency"
	providerEventClaim      = "square.event"
)

// payment is the payment aggregate's state. Fields are exported only for snapshots.
type payment struct {
	ID                uuid.UUID `json:"id"`
	Owner             uuid.UUID `json:"owner"`
	AmountMinor       int64     `json:"amount_minor"`
	Currency          string    `json:"currency"`
	SourceID          string    `json:"source_id"`
	Description       string    `json:"description"`
	IdempotencyKey    string    `json:"idempotency_key"`
	RequestHash       string    `json:"request_hash"`
	Status            string    `json:"status"`
	ProviderPaymentID string    `json:"provider_payment_id"`
	FailureCode       string    `json:"failure_code"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	// Refunds is shared between successive states: evolve copies it before changing it.
	Refunds       []paymentRefund `json:"refunds"`
	RefundedMinor int64           `json:"refunded_minor"` // completed refunds
	ReservedMinor int64           `json:"reserved_minor"` // refunds requested and not yet decided
}

type paymentRefund struct {
	ID               uuid.UUID `json:"id"`
	AmountMinor      int64     `json:"amount_minor"`
	Status           string    `json:"status"` // queries.RefundPending, RefundCompleted, RefundFailed
	IdempotencyKey   string    `json:"idempotency_key"`
	RequestHash      string    `json:"request_hash"`
	ProviderRefundID string    `json:"provider_refund_id,omitempty"`
}

func (p payment) exists() bool { return p.ID != uuid.Nil }

// decided reports whether the provider's decision on the payment is recorded.
func (p payment) decided() bool { return p.Status == paymentCompleted || p.Status == paymentFailed }

// refundable is what a new refund may still take: the amount less completed and pending refunds.
func (p payment) refundable() int64 {
	if p.Status != paymentCompleted {
		return 0
	}
	return p.AmountMinor - p.RefundedMinor - p.ReservedMinor
}

func (p payment) refund(id uuid.UUID) (paymentRefund, bool) {
	for _, r := range p.Refunds {
		if r.ID == id {
			return r, true
		}
	}
	return paymentRefund{}, false
}

func (p payment) refundByKey(key string) (paymentRefund, bool) {
	for _, r := range p.Refunds {
		if r.IdempotencyKey == key {
			return r, true
		}
	}
	return paymentRefund{}, false
}

// payments folds payment streams for the command handlers and for the WebSocket feed alike.
// stateVersion 2: evolvePayment took over the read model's rules (no updated_at from an event that
// changes nothing, a provider id kept when an outcome carries none), so a snapshot folded by the
// earlier rules is folded again rather than trusted.
var payments = aggregate[payment]{
	streamType:    events.StreamPayment,
	evolve:        evolvePayment,
	snapshotEvery: 50,
	stateVersion:  2,
}

// evolvePayment owns the payment status rules: the command handlers decide on its state, the
// WebSocket feed pushes its view, and projections/payments.go applies the same rules in SQL (see
// TestPaymentsReadModelFollowsEvolvePayment). An outcome only moves an undecided payment; a refund's
// outcome counts once, and refunds only a completed payment; an event that changes nothing leaves
// updated_at alone.
func evolvePayment(p payment, e events.Envelope) payment {
	switch ev := e.Data.(type) {
	case events.PaymentRequested:
		if p.exists() {
			return p
		}
		at := paymentEventTime(ev.RequestedAt, e)
		p = payment{
			ID: ev.PaymentID, Owner: ev.UserID, AmountMinor: ev.AmountMinor, Currency: ev.Currency,
			SourceID: ev.SourceID, Description: ev.Description, IdempotencyKey: ev.IdempotencyKey,
			RequestHash: ev.RequestHash, Status: paymentRequested, CreatedAt: at, UpdatedAt: at,
		}
	case events.PaymentPending:
		p = p.outcome(paymentPending, ev.ProviderPaymentID, "", ev.At, e)
	case events.PaymentCompleted:
		p = p.outcome(paymentCompleted, ev.ProviderPaymentID, "", ev.At, e)
	case events.PaymentFailed:
		p = p.outcome(paymentFailed, ev.ProviderPaymentID, ev.FailureCode, ev.At, e)
	case events.RefundRequested:
		if _, seen := p.refund(ev.RefundID); seen || !p.exists() {
			return p
		}
		p.Refunds = append(slices.Clip(p.Refunds), paymentRefund{
			ID: ev.RefundID, AmountMinor: ev.AmountMinor, Status: queries.RefundPending,
			IdempotencyKey: ev.IdempotencyKey, RequestHash: ev.RequestHash,
		})
		p.ReservedMinor += ev.AmountMinor
		p = p.touched(ev.RequestedAt, e)
	case events.RefundCompleted:
		p = p.decideRefund(ev.RefundID, queries.RefundCompleted, ev.ProviderRefundID, ev.At, e)
	case events.RefundFailed:
		p = p.decideRefund(ev.RefundID, queries.RefundFailed, "", ev.At, e)
	}
	return p
}

// paymentEventTime is when a payment event happened, as the read model stores it (UTC, whole
// microseconds), so that the feed's payment.updated frames and the read model agree: the time the
// event carries, else its envelope's.
func paymentEventTime(t time.Time, e events.Envelope) time.Time {
	if t.IsZero() {
		t = e.OccurredAt
	}
	return t.UTC().Truncate(time.Microsecond)
}

// touched records that an event at t (or its envelope's time) changed the payment. A time known
// to neither leaves updated_at as it was rather than zero it.
func (p payment) touched(t time.Time, e events.Envelope) payment {
	if at := paymentEventTime(t, e); !at.IsZero() {
		p.UpdatedAt = at
	}
	return p
}

// outcome moves a requested or pending payment to status; a decided payment, or one never
// requested, ignores it. An outcome without the provider's id keeps the id known so far.
func (p payment) outcome(status, providerID, failureCode string, at time.Time, e events.Envelope) payment {
	if !p.exists() || p.decided() {
		return p
	}
	p.Status = status
	p.FailureCode = failureCode // none before a decision
	if providerID != "" {
		p.ProviderPaymentID = providerID
	}
	return p.touched(at, e)
}

// decideRefund moves a pending refund to status; a refund decided stays decided. Only a completed
// payment counts a completed refund: the write side never refunds another, and the read model
// refunds nothing of one either.
func (p payment) decideRefund(id uuid.UUID, status, providerID string, at time.Time, e events.Envelope) payment {
	i := slices.IndexFunc(p.Refunds, func(r paymentRefund) bool { return r.ID == id })
	if i < 0 || p.Refunds[i].Status != queries.RefundPending {
		return p
	}
	p.Refunds = slices.Clone(p.Refunds)
	r := p.Refunds[i]
	r.Status = status
	r.ProviderRefundID = providerID
	p.Refunds[i] = r
	p.ReservedMinor -= r.AmountMinor
	if status == queries.RefundFailed {
		return p.touched(at, e)
	}
	if p.Status != paymentCompleted {
		return p
	}
	p.RefundedMinor += r.AmountMinor
	return p.touched(at, e)
}

// view is API.md's payment object.
func (p payment) view() queries.Payment {
	out := queries.Payment{
		ID: p.ID, AmountMinor: p.AmountMinor, Currency: p.Currency, RefundedMinor: p.RefundedMinor,
		Description: p.Description, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
	switch {
	case p.Status == paymentFailed:
		out.Status = queries.PaymentFailed
	case p.Status != paymentCompleted:
		out.Status = queries.PaymentPending
	case p.RefundedMinor >= p.AmountMinor:
		out.Status = queries.PaymentRefunded
	case p.RefundedMinor > 0:
		out.Status = queries.PaymentPartiallyRefunded
	default:
		out.Status = queries.PaymentCompleted
	}
	if p.FailureCode != "" {
		code := p.FailureCode
		out.FailureCode = &code
	}
	if p.ProviderPaymentID != "" {
		id := p.ProviderPaymentID
		out.ProviderPaymentID = &id
	}
	return out
}

// requestedView is the payment as its request left it: what the first POST /payments answered.
func requestedView(ev events.PaymentRequested) queries.Payment {
	var p payment
	p = evolvePayment(p, events.Envelope{Type: ev.EventType(), Data: ev, OccurredAt: ev.RequestedAt})
	return p.view()
}

// notFoundPayment answers a payment that does not exist and another user's payment alike.
var notFoundPayment = commands.NotFound("payment")

// loadOwnPayment loads a payment for a command of actor, who must own it.
func loadOwnPayment(ctx context.Context, s *Store, id, actor uuid.UUID) (loaded[payment], error) {
	p, err := load(ctx, s, payments, id)
	if err != nil {
		return p, err
	}
	if !p.state.exists() || p.state.Owner != actor {
		return p, notFoundPayment
	}
	return p, nil
}

// ProviderAvailability tells whether the payments provider can be asked now; while its circuit is
// open, new payments are refused at once with the time until it may be asked again.
type ProviderAvailability interface {
	ProviderUnavailable() (retryAfter time.Duration, unavailable bool)
}

// PaymentCommands holds what the payment command handlers share. Each command has its own handler
// type embedding it.
type PaymentCommands struct {
	store     *Store
	claims    ClaimOwners
	available ProviderAvailability
	now       func() time.Time
}

// NewPaymentCommands refuses nil dependencies.
func NewPaymentCommands(store *Store, claims ClaimOwners, available ProviderAvailability, now func() time.Time) (*PaymentCommands, error) {
	if store == nil || claims == nil || available == nil || now == nil {
		return nil, errNilDependency
	}
	return &PaymentCommands{store: store, claims: claims, available: available, now: now}, nil
}

func (h *PaymentCommands) timestamp() time.Time { return h.now().UTC().Truncate(time.Microsecond) }

// unavailable refuses new work while the provider's circuit is open.
func (h *PaymentCommands) unavailable() error {
	if retry, unavailable := h.available.ProviderUnavailable(); unavailable {
		return &commands.Error{Kind: commands.KindProviderUnavailable,
			Detail: "the payments provider is unavailable; try again later", RetryAfter: retry}
	}
	return nil
}

func idempotencyValue(user uuid.UUID, key string) string { return user.String() + ":" + key }

func idempotencyKeyReused() error {
	return commands.NewError(commands.KindIdempotencyKeyReused,
		"this Idempotency-Key was used with another request body")
}
