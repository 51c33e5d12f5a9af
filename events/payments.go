package events

import (
	"time"

	"github.com/google/uuid"
)

// Stream type of payment aggregates. A payment's stream holds its request, the provider's decision
// and its refunds.
const StreamPayment = "payment"

// PaymentRequested starts a payment's stream: the user asked to pay and nothing was charged yet. The
// process manager takes it to the provider. RequestHash fingerprints the request body, so that a
// repeated Idempotency-Key with another body is told apart from a replay.
type PaymentRequested struct {
	PaymentID      uuid.UUID `json:"payment_id"`
	UserID         uuid.UUID `json:"user_id"`
	AmountMinor    int64     `json:"amount_minor"`
	Currency       string    `json:"currency"`
	SourceID       string    `json:"source_id"`
	Description    string    `json:"description"`
	IdempotencyKey string    `json:"idempotency_key"`
	RequestHash    string    `json:"request_hash"`
	RequestedAt    time.Time `json:"requested_at"`
}

// EventType implements Event.
func (PaymentRequested) EventType() string { return "payment.requested" }

// PaymentPending records that the provider took the payment but has not decided it yet (it decides
// later, by webhook or when asked).
type PaymentPending struct {
	PaymentID         uuid.UUID `json:"payment_id"`
	ProviderPaymentID string    `json:"provider_payment_id"`
	At                time.Time `json:"at"`
}

// EventType implements Event.
func (PaymentPending) EventType() string { return "payment.pending" }

// PaymentCompleted records that the money was taken.
type PaymentCompleted struct {
	PaymentID         uuid.UUID `json:"payment_id"`
	ProviderPaymentID string    `json:"provider_payment_id"`
	At                time.Time `json:"at"`
}

// EventType implements Event.
func (PaymentCompleted) EventType() string { return "payment.completed" }

// PaymentFailed records that the provider declined the payment (FailureCode is its code, such as
// GENERIC_DECLINE) or that it could not be made.
type PaymentFailed struct {
	PaymentID         uuid.UUID `json:"payment_id"`
	ProviderPaymentID string    `json:"provider_payment_id,omitempty"`
	FailureCode       string    `json:"failure_code"`
	At                time.Time `json:"at"`
}

// EventType implements Event.
func (PaymentFailed) EventType() string { return "payment.failed" }

// RefundRequested reserves AmountMinor of a completed payment for a refund; the process manager takes
// it to the provider. Requested refunds count against what remains refundable, so racing refunds can
// never exceed the payment.
type RefundRequested struct {
	PaymentID      uuid.UUID `json:"payment_id"`
	RefundID       uuid.UUID `json:"refund_id"`
	UserID         uuid.UUID `json:"user_id"`
	AmountMinor    int64     `json:"amount_minor"`
	IdempotencyKey string    `json:"idempotency_key"`
	RequestHash    string    `json:"request_hash"`
	RequestedAt    time.Time `json:"requested_at"`
}

// EventType implements Event.
func (RefundRequested) EventType() string { return "refund.requested" }

// RefundCompleted records that the provider refunded the money.
type RefundCompleted struct {
	PaymentID        uuid.UUID `json:"payment_id"`
	RefundID         uuid.UUID `json:"refund_id"`
	ProviderRefundID string    `json:"provider_refund_id"`
	At               time.Time `json:"at"`
}

// EventType implements Event.
func (RefundCompleted) EventType() string { return "refund.completed" }

// RefundFailed records that the provider refused the refund; its amount is refundable again.
type RefundFailed struct {
	PaymentID   uuid.UUID `json:"payment_id"`
	RefundID    uuid.UUID `json:"refund_id"`
	FailureCode string    `json:"failure_code"`
	At          time.Time `json:"at"`
}

// EventType implements Event.
func (RefundFailed) EventType() string { return "refund.failed" }

func registerPayments(r *Registry) {
	register[PaymentRequested](r, 1)
	register[PaymentPending](r, 1)
	register[PaymentCompleted](r, 1)
	register[PaymentFailed](r, 1)
	register[RefundRequested](r, 1)
	register[RefundCompleted](r, 1)
	register[RefundFailed](r, 1)
}
