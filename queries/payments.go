package queries

import (
	"time"

	"github.com/google/uuid"

	"taki/commands"
)

// PaymentsReadModel is the projection that serves payment and billing queries.
const PaymentsReadModel = "payments"

// Payment statuses (API.md).
const (
	PaymentPending           = "pending"
	PaymentCompleted         = "completed"
	PaymentFailed            = "failed"
	PaymentPartiallyRefunded = "partially_refunded"
	PaymentRefunded          = "refunded"
)

// Payment is API.md's payment object.
type Payment struct {
	ID                uuid.UUID `json:"id"`
	Status            string    `json:"status"`
	AmountMinor       int64     `json:"amount_minor"`
	Currency          string    `json:"currency"`
	RefundedMinor     int64     `json:"refunded_minor"`
	Description       string    `json:"description"`
	FailureCode       *string   `json:"failure_code"`
	ProviderPaymentID *string   `json:"provider_payment_id"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// Refund is what POST /payments/{id}/refunds answers.
type Refund struct {
	ID          uuid.UUID `json:"id"`
	PaymentID   uuid.UUID `json:"payment_id"`
	Status      string    `json:"status"`
	AmountMinor int64     `json:"amount_minor"`
}

// Refund statuses.
const (
	RefundPending   = "pending"
	RefundCompleted = "completed"
	RefundFailed    = "failed"
)

// CurrencySummary is one currency of the billing summary.
type CurrencySummary struct {
	Currency      string `json:"currency"`
	PaymentsCount int64  `json:"payments_count"`
	PaidMinor     int64  `json:"paid_minor"`
	RefundedMinor int64  `json:"refunded_minor"`
	NetMinor      int64  `json:"net_minor"`
}

// BillingSummary is GET /billing/summary.
type BillingSummary struct {
	Currencies []CurrencySummary `json:"currencies"`
}

// GetPayment answers one of the actor's payments; another user's is not found.
type GetPayment struct {
	Actor     uuid.UUID
	PaymentID uuid.UUID
}

// ReadModel implements bus.ReadModelQuery.
func (GetPayment) ReadModel() string { return PaymentsReadModel }

// ListPayments lists the actor's payments, newest first.
type ListPayments struct {
	Actor  uuid.UUID
	Limit  int
	Cursor string
}

// ReadModel implements bus.ReadModelQuery.
func (ListPayments) ReadModel() string { return PaymentsReadModel }

// Validate implements bus.Validatable.
func (q ListPayments) Validate() error {
	var f []commands.FieldError
	if q.Limit < 0 || q.Limit > MaxLimit {
		f = append(f, commands.FieldError{Field: "limit", Message: "must be between 1 and 200"})
	}
	if q.Cursor != "" {
		var c PaymentCursor
		if err := DecodeCursor(q.Cursor, &c); err != nil {
			f = append(f, commands.FieldError{Field: "cursor", Message: err.Error()})
		}
	}
	return commands.Invalid(f)
}

// PaymentCursor is the keyset position of a payment list: creation time and id.
type PaymentCursor struct {
	CreatedAt time.Time `json:"c"`
	ID        uuid.UUID `json:"i"`
}

// GetBillingSummary answers the actor's billing summary per currency.
type GetBillingSummary struct {
	Actor uuid.UUID
}

// ReadModel implements bus.ReadModelQuery.
func (GetBillingSummary) ReadModel() string { return PaymentsReadModel }
