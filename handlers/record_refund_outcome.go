package handlers

import (
	"context"
	"errors"
	"fmt"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// RecordRefundOutcomeHandler records what the provider decided for a refund. A decided refund stays
// decided.
type RecordRefundOutcomeHandler struct{ *PaymentCommands }

// Handle implements bus.CommandHandler. It answers the refund as it is afterwards.
func (h RecordRefundOutcomeHandler) Handle(ctx context.Context, cmd commands.RecordRefundOutcome) (queries.Refund, error) {
	p, err := load(ctx, h.store, payments, cmd.PaymentID)
	if err != nil {
		return queries.Refund{}, err
	}
	r, ok := p.state.refund(cmd.RefundID)
	if !p.state.exists() || !ok {
		return queries.Refund{}, commands.NotFound("refund")
	}
	view := queries.Refund{ID: r.ID, PaymentID: p.id, Status: r.Status, AmountMinor: r.AmountMinor}
	if r.Status != queries.RefundPending {
		return view, nil
	}
	var ev events.Event
	switch cmd.Outcome {
	case commands.OutcomePending:
		return view, nil
	case commands.OutcomeCompleted:
		ev = events.RefundCompleted{PaymentID: p.id, RefundID: r.ID, ProviderRefundID: cmd.ProviderRefundID, At: h.timestamp()}
		view.Status = queries.RefundCompleted
	case commands.OutcomeFailed:
		ev = events.RefundFailed{PaymentID: p.id, RefundID: r.ID, FailureCode: cmd.FailureCode, At: h.timestamp()}
		view.Status = queries.RefundFailed
	default:
		return view, fmt.Errorf("record refund outcome: unknown outcome %q", cmd.Outcome)
	}
	_, err = save(ctx, h.store, payments, p, providerEventClaims(cmd.ProviderEventID), ev)
	var taken *events.ClaimTakenError
	if errors.As(err, &taken) {
		view.Status = r.Status
		return view, nil
	}
	if err != nil {
		return queries.Refund{}, err
	}
	return view, nil
}
