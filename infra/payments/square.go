// Package payments speaks Square's Payments API shape: a provider client (retries with the same
// idempotency key, a circuit breaker, per-call timeouts) and an in-memory sandbox server that answers
// like Square's sandbox, with its test nonces, signed webhooks, latency and failure injection.
//
// Provider calls never belong inside a database transaction: callers record their intent first and
// drive it to a decision with the same idempotency key, however often they have to retry.
package payments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"taki/commands"
)

// Provider is what Taki needs of a payments provider. *Client implements it against Square or the sandbox.
type Provider interface {
	CreatePayment(ctx context.Context, req CreatePaymentRequest) (Payment, error)
	Refund(ctx context.Context, req RefundRequest) (Refund, error)
	GetPayment(ctx context.Context, id string) (Payment, error)
}

// Money is an amount in minor units of an ISO 4217 currency, as Square writes it.
type Money struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// PaymentStatus is a Square payment's status.
type PaymentStatus string

// Square's payment statuses.
const (
	PaymentApproved  PaymentStatus = "APPROVED"
	PaymentPending   PaymentStatus = "PENDING"
	PaymentCompleted PaymentStatus = "COMPLETED"
	PaymentCanceled  PaymentStatus = "CANCELED"
	PaymentFailed    PaymentStatus = "FAILED"
)

// Final reports whether no later change of the payment's status is possible (refunds aside).
func (s PaymentStatus) Final() bool {
	return s == PaymentCompleted || s == PaymentCanceled || s == PaymentFailed
}

// Outcome is what a payment's status decides for Taki (commands.Outcome*; "" for a payment without
// a status) and, for a failure, its code. APPROVED is authorised but not yet captured: still pending, as Taki asks for autocomplete
// and the capture's COMPLETED follows.
func (p Payment) Outcome() (outcome, failureCode string) {
	switch p.Status {
	case "":
		return "", "" // no status at all decides nothing
	case PaymentCompleted:
		return commands.OutcomeCompleted, ""
	case PaymentPending, PaymentApproved:
		return commands.OutcomePending, ""
	}
	if p.FailureCode != "" {
		return commands.OutcomeFailed, p.FailureCode
	}
	return commands.OutcomeFailed, string(p.Status)
}

// UnmarshalJSON accepts only the statuses Square documents.
func (s *PaymentStatus) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("payment status: %w", err)
	}
	switch p := PaymentStatus(v); p {
	case PaymentApproved, PaymentPending, PaymentCompleted, PaymentCanceled, PaymentFailed:
		*s = p
		return nil
	}
	return fmt.Errorf("payment status %q is not one of APPROVED, PENDING, COMPLETED, CANCELED, FAILED", v)
}

// RefundStatus is a Square refund's status.
type RefundStatus string

// Square's refund statuses.
const (
	RefundPending   RefundStatus = "PENDING"
	RefundCompleted RefundStatus = "COMPLETED"
	RefundRejected  RefundStatus = "REJECTED"
	RefundFailed    RefundStatus = "FAILED"
)

// UnmarshalJSON accepts only the statuses Square documents.
func (s *RefundStatus) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("refund status: %w", err)
	}
	switch r := RefundStatus(v); r {
	case RefundPending, RefundCompleted, RefundRejected, RefundFailed:
		*s = r
		return nil
	}
	return fmt.Errorf("refund status %q is not one of PENDING, COMPLETED, REJECTED, FAILED", v)
}

// CardDetails is the part of Square's card_details Taki reads.
type CardDetails struct {
	Status string `json:"status"` // AUTHORIZED, CAPTURED, VOIDED, FAILED
	Card   struct {
		CardBrand string `json:"card_brand,omitempty"`
		Last4     string `json:"last_4,omitempty"`
	} `json:"card"`
}

// Payment is Square's payment object (the fields Taki uses).
type Payment struct {
	ID            string        `json:"id"`
	Status        PaymentStatus `json:"status"`
	AmountMoney   Money         `json:"amount_money"`
	TotalMoney    Money         `json:"total_money"`
	RefundedMoney *Money        `json:"refunded_money,omitempty"`
	RefundIDs     []string      `json:"refund_ids,omitempty"`
	SourceType    string        `json:"source_type,omitempty"`
	CardDetails   *CardDetails  `json:"card_details,omitempty"`
	LocationID    string        `json:"location_id,omitempty"`
	ReferenceID   string        `json:"reference_id,omitempty"`
	Note          string        `json:"note,omitempty"`
	VersionToken  string        `json:"version_token,omitempty"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`

	// FailureCode is the code of a declined payment (GENERIC_DECLINE, CVV_FAILURE, ...). Square sends it
	// in the errors beside the payment, not inside it; the client copies it here.
	FailureCode string `json:"-"`
}

// Refunded is the amount refunded so far, in minor units.
func (p Payment) Refunded() int64 {
	if p.RefundedMoney == nil {
		return 0
	}
	return p.RefundedMoney.Amount
}

// Refund is Square's payment refund object.
type Refund struct {
	ID          string       `json:"id"`
	Status      RefundStatus `json:"status"`
	AmountMoney Money        `json:"amount_money"`
	PaymentID   string       `json:"payment_id"`
	LocationID  string       `json:"location_id,omitempty"`
	Reason      string       `json:"reason,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
}

// CreatePaymentRequest asks for a card payment that completes at once (autocomplete).
type CreatePaymentRequest struct {
	// IdempotencyKey identifies the payment at the provider: every retry of one payment carries the same
	// key, so the provider takes the money at most once. 1 to 45 characters (Square's limit).
	IdempotencyKey string
	AmountMinor    int64
	Currency       string
	SourceID       string // a card nonce, e.g. cnon:card-nonce-ok in the sandbox
	ReferenceID    string // optional: Taki's payment id
	Note           string // optional: the description
}

// RefundRequest asks to refund part or all of a completed payment.
type RefundRequest struct {
	IdempotencyKey string
	PaymentID      string
	AmountMinor    int64
	Currency       string
	Reason         string // optional
}

// Square's request bodies.
type createPaymentBody struct {
	IdempotencyKey string `json:"idempotency_key"`
	AmountMoney    *Money `json:"amount_money"`
	SourceID       string `json:"source_id"`
	Autocomplete   *bool  `json:"autocomplete,omitempty"`
	LocationID     string `json:"location_id,omitempty"`
	ReferenceID    string `json:"reference_id,omitempty"`
	Note           string `json:"note,omitempty"`
}

type refundPaymentBody struct {
	IdempotencyKey string `json:"idempotency_key"`
	AmountMoney    *Money `json:"amount_money"`
	PaymentID      string `json:"payment_id"`
	Reason         string `json:"reason,omitempty"`
}

// Square's response bodies: the object, its errors, or both (a declined payment).
type paymentResponse struct {
	Payment *Payment      `json:"payment,omitempty"`
	Errors  []ErrorDetail `json:"errors,omitempty"`
}

type refundResponse struct {
	Refund *Refund       `json:"refund,omitempty"`
	Errors []ErrorDetail `json:"errors,omitempty"`
}

type errorResponse struct {
	Errors []ErrorDetail `json:"errors"`
}

// ErrorDetail is one entry of Square's errors array.
type ErrorDetail struct {
	Category string `json:"category"`
	Code     string `json:"code"`
	Detail   string `json:"detail,omitempty"`
	Field    string `json:"field,omitempty"`
}

// Square's error categories and the codes the sandbox uses.
const (
	CategoryAPI            = "API_ERROR"
	CategoryAuthentication = "AUTHENTICATION_ERROR"
	CategoryInvalidRequest = "INVALID_REQUEST_ERROR"
	CategoryRateLimit      = "RATE_LIMIT_ERROR"
	CategoryPaymentMethod  = "PAYMENT_METHOD_ERROR"
	CategoryRefund         = "REFUND_ERROR"

	CodeGenericDecline        = "GENERIC_DECLINE"
	CodeCVVFailure            = "CVV_FAILURE"
	CodeAddressVerification   = "ADDRESS_VERIFICATION_FAILURE"
	CodeInvalidExpiration     = "INVALID_EXPIRATION"
	CodeIdempotencyKeyReused  = "IDEMPOTENCY_KEY_REUSED"
	CodeInvalidCardData       = "INVALID_CARD_DATA"
	CodeNotFound              = "NOT_FOUND"
	CodeRefundAmountInvalid   = "REFUND_AMOUNT_INVALID"
	CodePaymentNotRefundable  = "PAYMENT_NOT_REFUNDABLE"
	CodeCurrencyMismatch      = "CURRENCY_MISMATCH"
	CodeUnauthorized          = "UNAUTHORIZED"
	CodeBadRequest            = "BAD_REQUEST"
	CodeInternalServerError   = "INTERNAL_SERVER_ERROR"
	CodeServiceUnavailable    = "SERVICE_UNAVAILABLE"
	CodeRateLimited           = "RATE_LIMITED"
	CodeMissingRequiredParam  = "MISSING_REQUIRED_PARAMETER"
	CodeInvalidValue          = "INVALID_VALUE"
	CodeValueTooLong          = "VALUE_TOO_LONG"
	CodeRequestEntityTooLarge = "REQUEST_ENTITY_TOO_LARGE"
)

// ErrUnavailable matches every error that means "the provider cannot be asked right now": the
// breaker is open (*UnavailableError). Answer 503 provider-unavailable with Retry-After.
var ErrUnavailable = errors.New("payments provider unavailable")

// UnavailableError is returned at once, without calling the provider, while the breaker is open
// (or half-open and already probing).
type UnavailableError struct {
	Breaker    string
	RetryAfter time.Duration // until the breaker half-opens and lets a probe through
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("payments provider unavailable: circuit %s is open, retry in %s", e.Breaker, e.RetryAfter.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1: the value of a Retry-After header.
func (e *UnavailableError) RetryAfterSeconds() int {
	s := int((e.RetryAfter + time.Second - 1) / time.Second)
	return max(s, 1)
}

// APIError is an answer of the provider other than success or a decline.
type APIError struct {
	Op         string
	StatusCode int
	Errors     []ErrorDetail
	RetryAfter time.Duration // from the Retry-After header, when there was one
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "payments: %s: provider answered %d", e.Op, e.StatusCode)
	for _, d := range e.Errors {
		fmt.Fprintf(&b, "; %s %s", d.Category, d.Code)
		if d.Detail != "" {
			fmt.Fprintf(&b, " (%s)", d.Detail)
		}
	}
	return b.String()
}

// Code is the first error code, or "" when the provider sent none.
func (e *APIError) Code() string {
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// Transient reports whether the same request may succeed later: 429 and 5xx.
func (e *APIError) Transient() bool {
	return e.StatusCode == 429 || e.StatusCode >= 500
}

// NetworkError is a call that got no answer: connection refused or dropped, or the per-call timeout.
type NetworkError struct {
	Op  string
	Err error
}

func (e *NetworkError) Error() string { return fmt.Sprintf("payments: %s: %v", e.Op, e.Err) }
func (e *NetworkError) Unwrap() error { return e.Err }

// IsTransient reports whether err may go away when the same request is retried later with the same
// idempotency key: network errors, 429, 5xx and an open breaker. Declines and other 4xx are decisions.
func IsTransient(err error) bool {
	var api *APIError
	var netErr *NetworkError
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrUnavailable), errors.As(err, &netErr):
		return true
	case errors.As(err, &api):
		return api.Transient()
	}
	return false
}
