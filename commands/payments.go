package commands

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/text/currency"
)

// Limits of payments.
const (
	MaxAmountMinor       = 100_000_000_00 // one hundred million major units
	MaxDescriptionRunes  = 500
	MaxSourceIDLen       = 256
	MaxIdempotencyKeyLen = 64
)

// Money is a positive amount in minor units of an ISO 4217 currency (three upper-case letters).
type Money struct {
	amount   int64
	currency string
}

// NewMoney validates an amount and a currency.
func NewMoney(amountMinor int64, currency string) (Money, error) {
	if err := checkCurrency(currency); err != nil {
		return Money{}, err
	}
	if amountMinor < 1 || amountMinor > MaxAmountMinor {
		return Money{}, fmt.Errorf("amount_minor must be between 1 and %d", int64(MaxAmountMinor))
	}
	return Money{amount: amountMinor, currency: currency}, nil
}

// Amount is the amount in minor units.
func (m Money) Amount() int64 { return m.amount }

// Currency is the ISO 4217 code.
func (m Money) Currency() string { return m.currency }

func checkCurrency(c string) error {
	if len(c) != 3 {
		return errors.New("currency must be a three-letter ISO 4217 code")
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return errors.New("currency must be a three-letter ISO 4217 code in upper case")
		}
	}
	// Checked here rather than left to the provider: an unknown code would be accepted now and fail
	// later, asynchronously, as a failed payment.
	if _, err := currency.ParseISO(c); err != nil {
		return fmt.Errorf("currency %q is not an ISO 4217 code", c)
	}
	return nil
}

// IdempotencyKey is a client's key for one request: 1 to 64 printable ASCII characters.
type IdempotencyKey struct{ v string }

// NewIdempotencyKey validates s.
func NewIdempotencyKey(s string) (IdempotencyKey, error) {
	if s == "" {
		return IdempotencyKey{}, errors.New("is required")
	}
	if len(s) > MaxIdempotencyKeyLen {
		return IdempotencyKey{}, fmt.Errorf("must be at most %d characters", MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return IdempotencyKey{}, errors.New("must be printable ASCII without spaces")
		}
	}
	return IdempotencyKey{s}, nil
}

func (k IdempotencyKey) String() string { return k.v }

func checkDescription(s string) error {
	if err := CheckPlainText(s); err != nil {
		return err
	}
	if utf8.RuneCountInString(s) > MaxDescriptionRunes {
		return fmt.Errorf("must be at most %d characters", MaxDescriptionRunes)
	}
	return nil
}

// RequestPayment asks to charge the actor's card (SourceID, a provider nonce). The provider is
// called afterwards by the payments process manager, outside any transaction.
type RequestPayment struct {
	Actor          uuid.UUID
	PaymentID      uuid.UUID
	IdempotencyKey string
	// RequestHash fingerprints the request body (the transport computes it over the decoded fields).
	RequestHash string
	AmountMinor int64
	Currency    string
	SourceID    string
	Description string
}

// Validate implements bus.Validatable.
func (c RequestPayment) Validate() error {
	var f fields
	_, err := NewIdempotencyKey(c.IdempotencyKey)
	f.check("Idempotency-Key", err)
	if err := checkCurrency(c.Currency); err != nil {
		f.check("currency", err)
	}
	if c.AmountMinor < 1 || c.AmountMinor > MaxAmountMinor {
		f.check("amount_minor", fmt.Errorf("must be between 1 and %d", int64(MaxAmountMinor)))
	}
	switch {
	case c.SourceID == "":
		f.check("source_id", errors.New("is required"))
	case len(c.SourceID) > MaxSourceIDLen:
		f.check("source_id", fmt.Errorf("must be at most %d bytes", MaxSourceIDLen))
	default:
		f.check("source_id", CheckPlainText(c.SourceID))
	}
	f.check("description", checkDescription(c.Description))
	return Invalid(f)
}

// RequestRefund asks to refund AmountMinor of one of the actor's completed payments.
type RequestRefund struct {
	Actor          uuid.UUID
	PaymentID      uuid.UUID
	IdempotencyKey string
	RequestHash    string
	AmountMinor    int64
}

// Validate implements bus.Validatable.
func (c RequestRefund) Validate() error {
	var f fields
	_, err := NewIdempotencyKey(c.IdempotencyKey)
	f.check("Idempotency-Key", err)
	if c.AmountMinor < 1 || c.AmountMinor > MaxAmountMinor {
		f.check("amount_minor", fmt.Errorf("must be between 1 and %d", int64(MaxAmountMinor)))
	}
	return Invalid(f)
}

// Provider outcomes, as the payments process manager and the provider's webhooks report them.
const (
	OutcomePending   = "pending"
	OutcomeCompleted = "completed"
	OutcomeFailed    = "failed"
)

// RecordPaymentOutcome records what the provider decided for a payment. Outcomes never move a payment
// backwards: a decided payment ignores later ones.
type RecordPaymentOutcome struct {
	PaymentID         uuid.UUID
	Outcome           string
	ProviderPaymentID string
	FailureCode       string
	// ProviderEventID, when set, is the provider webhook event reporting the outcome: it is claimed
	// with the outcome, so the same event delivered again changes nothing.
	ProviderEventID string
}

// RecordRefundOutcome records what the provider decided for a refund.
type RecordRefundOutcome struct {
	PaymentID        uuid.UUID
	RefundID         uuid.UUID
	Outcome          string
	ProviderRefundID string
	FailureCode      string
	// ProviderEventID is as in RecordPaymentOutcome.
	ProviderEventID string
}
