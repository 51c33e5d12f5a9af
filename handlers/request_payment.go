package handlers

import (
	"context"
	"errors"
	"fmt"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// RequestPaymentHandler records a user's request to pay; the payments process manager then takes it
// to the provider. The user's Idempotency-Key is claimed in the same transaction as the request, so a
// repeat (also a racing one) finds the claim taken and replays the first answer instead of asking
// for a second payment.
type RequestPaymentHandler struct{ *PaymentCommands }

// Handle implements bus.CommandHandler.
func (h RequestPaymentHandler) Handle(ctx context.Context, cmd commands.RequestPayment) (queries.Payment, error) {
	if err := cmd.Validate(); err != nil {
		return queries.Payment{}, err
	}
	claim := events.Claim{Kind: paymentIdempotencyClaim, Value: idempotencyValue(cmd.Actor, cmd.IdempotencyKey)}
	// A repeat is answered even while the provider is unavailable: it asks the provider for nothing.
	if p, ok, err := h.replay(ctx, cmd, claim); ok || err != nil {
		return p, err
	}
	if err := h.unavailable(); err != nil {
		return queries.Payment{}, err
	}
	ev := events.PaymentRequested{
		PaymentID: cmd.PaymentID, UserID: cmd.Actor, AmountMinor: cmd.AmountMinor, Currency: cmd.Currency,
		SourceID: cmd.SourceID, Description: cmd.Description, IdempotencyKey: cmd.IdempotencyKey,
		RequestHash: cmd.RequestHash, RequestedAt: h.timestamp(),
	}
	_, err := save(ctx, h.store, payments, loaded[payment]{id: cmd.PaymentID}, []events.Claim{claim}, ev)
	var taken *events.ClaimTakenError
	switch {
	case errors.As(err, &taken):
		p, ok, err := h.replay(ctx, cmd, claim)
		if err == nil && !ok {
			err = fmt.Errorf("replay payment of key %q: claim taken but not found", claim.Value)
		}
		return p, err
	case errors.Is(err, events.ErrConflict):
		return queries.Payment{}, commands.Conflict("this payment id is taken")
	case err != nil:
		return queries.Payment{}, err
	}
	return requestedView(ev), nil
}

// replay answers the first request made with cmd's key, if there was one: the payment as it was
// requested, or idempotency-key-reused when that request had another body.
func (h RequestPaymentHandler) replay(ctx context.Context, cmd commands.RequestPayment, claim events.Claim) (queries.Payment, bool, error) {
	id, ok, err := h.claims.ClaimOwner(ctx, claim.Kind, claim.Value)
	if err != nil || !ok {
		return queries.Payment{}, false, err
	}
	p, err := load(ctx, h.store, payments, id)
	if err != nil {
		return queries.Payment{}, false, err
	}
	if !p.state.exists() {
		// The claim committed with its event: a cached state that predates it cannot exist.
		h.store.evict(id)
		if p, err = load(ctx, h.store, payments, id); err != nil {
			return queries.Payment{}, false, err
		}
	}
	if p.state.Owner != cmd.Actor || p.state.RequestHash != cmd.RequestHash {
		return queries.Payment{}, true, idempotencyKeyReused()
	}
	return requestedView(requestedEvent(p.state)), true, nil
}

// requestedEvent rebuilds a payment's request from its state.
func requestedEvent(p payment) events.PaymentRequested {
	return events.PaymentRequested{
		PaymentID: p.ID, UserID: p.Owner, AmountMinor: p.AmountMinor, Currency: p.Currency, SourceID: p.SourceID,
		Description: p.Description, IdempotencyKey: p.IdempotencyKey, RequestHash: p.RequestHash, RequestedAt: p.CreatedAt,
	}
}
