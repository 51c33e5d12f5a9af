package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// RecordPaymentOutcomeHandler records what the provider decided for a payment (reported by the
// payments process manager or by a provider webhook). Outcomes only move a payment forward:
// requested → pending → completed or failed; a decided payment ignores later outcomes, and a repeated
// outcome appends nothing.
type RecordPaymentOutcomeHandler struct{ *PaymentCommands }

// Handle implements bus.CommandHandler. It answers the payment as it is afterwards.
func (h RecordPaymentOutcomeHandler) Handle(ctx context.Context, cmd commands.RecordPaymentOutcome) (queries.Payment, error) {
	p, err := load(ctx, h.store, payments, cmd.PaymentID)
	if err != nil {
		return queries.Payment{}, err
	}
	if !p.state.exists() {
		return queries.Payment{}, notFoundPayment
	}
	ev, err := paymentOutcomeEvent(p.state, cmd, h.timestamp())
	if err != nil || ev == nil {
		return p.state.view(), err
	}
	next, err := save(ctx, h.store, payments, p, providerEventClaims(cmd.ProviderEventID), ev)
	var taken *events.ClaimTakenError
	if errors.As(err, &taken) {
		return p.state.view(), nil // this webhook event was recorded before
	}
	if err != nil {
		return queries.Payment{}, err
	}
	return next.state.view(), nil
}

// paymentOutcomeEvent is the event that records cmd's outcome on p, or nil when it changes nothing.
func paymentOutcomeEvent(p payment, cmd commands.RecordPaymentOutcome, at time.Time) (events.Event, error) {
	if p.decided() {
		return nil, nil
	}
	if p.ProviderPaymentID != "" && cmd.ProviderPaymentID != "" && p.ProviderPaymentID != cmd.ProviderPaymentID {
		return nil, nil // about another provider payment than the one this payment became
	}
	switch cmd.Outcome {
	case commands.OutcomePending:
		if p.Status == paymentPending {
			return nil, nil
		}
		return events.PaymentPending{PaymentID: p.ID, ProviderPaymentID: cmd.ProviderPaymentID, At: at}, nil
	case commands.OutcomeCompleted:
		return events.PaymentCompleted{PaymentID: p.ID, ProviderPaymentID: cmd.ProviderPaymentID, At: at}, nil
	case commands.OutcomeFailed:
		code := cmd.FailureCode
		if code == "" {
			code = "PROVIDER_ERROR"
		}
		return events.PaymentFailed{PaymentID: p.ID, ProviderPaymentID: cmd.ProviderPaymentID, FailureCode: code, At: at}, nil
	}
	return nil, fmt.Errorf("record payment outcome: unknown outcome %q", cmd.Outcome)
}

func providerEventClaims(id string) []events.Claim {
	if id == "" {
		return nil
	}
	return []events.Claim{{Kind: providerEventClaim, Value: id}}
}
