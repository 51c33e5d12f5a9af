package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// RequestRefundHandler reserves part of one of the actor's completed payments for a refund; the
// payments process manager then takes it to the provider. Pending refunds count against what remains,
// and the payment stream's version check makes racing refunds decide one after the other (the bus
// retries the loser on the new state), so refunds never exceed the payment. The user's
// Idempotency-Key is claimed in the same transaction as the refund, as for payments.
type RequestRefundHandler struct{ *PaymentCommands }

// refundIDNamespace derives a refund's id from its user and Idempotency-Key.
var refundIDNamespace = uuid.MustParse("3d1f6a52-8c47-4b0e-9f21-5e7a3c9b0d64")

// Handle implements bus.CommandHandler.
func (h RequestRefundHandler) Handle(ctx context.Context, cmd commands.RequestRefund) (queries.Refund, error) {
	if err := cmd.Validate(); err != nil {
		return queries.Refund{}, err
	}
	claim := events.Claim{Kind: refundIdempotencyClaim, Value: idempotencyValue(cmd.Actor, cmd.IdempotencyKey)}
	if r, ok, err := h.replay(ctx, cmd, claim); ok || err != nil {
		return r, err
	}
	p, err := loadOwnPayment(ctx, h.store, cmd.PaymentID, cmd.Actor)
	if err != nil {
		return queries.Refund{}, err
	}
	if p.state.Status != paymentCompleted {
		return queries.Refund{}, commands.Conflict("only a completed payment can be refunded")
	}
	if left := p.state.refundable(); cmd.AmountMinor > left {
		return queries.Refund{}, commands.Conflict(fmt.Sprintf("at most %d %s of this payment can still be refunded", left, p.state.Currency))
	}
	if err := h.unavailable(); err != nil {
		return queries.Refund{}, err
	}
	id := uuid.NewSHA1(refundIDNamespace, []byte(claim.Value))
	ev := events.RefundRequested{
		PaymentID: cmd.PaymentID, RefundID: id, UserID: cmd.Actor, AmountMinor: cmd.AmountMinor,
		IdempotencyKey: cmd.IdempotencyKey, RequestHash: cmd.RequestHash, RequestedAt: h.timestamp(),
	}
	_, err = save(ctx, h.store, payments, p, []events.Claim{claim}, ev)
	var taken *events.ClaimTakenError
	if errors.As(err, &taken) {
		r, ok, err := h.replay(ctx, cmd, claim)
		if err == nil && !ok {
			err = fmt.Errorf("replay refund of key %q: claim taken but not found", claim.Value)
		}
		return r, err
	}
	if err != nil {
		return queries.Refund{}, err // a conflict is retried by the bus on the new state
	}
	return queries.Refund{ID: id, PaymentID: cmd.PaymentID, Status: queries.RefundPending, AmountMinor: cmd.AmountMinor}, nil
}

// replay answers the first refund asked with cmd's key, if there was one (as it was requested), or
// idempotency-key-reused when it was asked with another body.
func (h RequestRefundHandler) replay(ctx context.Context, cmd commands.RequestRefund, claim events.Claim) (queries.Refund, bool, error) {
	paymentID, ok, err := h.claims.ClaimOwner(ctx, claim.Kind, claim.Value)
	if err != nil || !ok {
		return queries.Refund{}, false, err
	}
	p, err := load(ctx, h.store, payments, paymentID)
	if err != nil {
		return queries.Refund{}, false, err
	}
	r, found := p.state.refundByKey(cmd.IdempotencyKey)
	if !found {
		// The claim committed with the refund: the cached state predates it.
		h.store.evict(paymentID)
		if p, err = load(ctx, h.store, payments, paymentID); err != nil {
			return queries.Refund{}, false, err
		}
		if r, found = p.state.refundByKey(cmd.IdempotencyKey); !found {
			return queries.Refund{}, false, fmt.Errorf("replay refund of key %q: claimed but not in payment %s", claim.Value, paymentID)
		}
	}
	if paymentID != cmd.PaymentID || p.state.Owner != cmd.Actor || r.RequestHash != cmd.RequestHash {
		return queries.Refund{}, true, idempotencyKeyReused()
	}
	return queries.Refund{ID: r.ID, PaymentID: paymentID, Status: queries.RefundPending, AmountMinor: r.AmountMinor}, true, nil
}
