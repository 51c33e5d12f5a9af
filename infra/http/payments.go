package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/commands"
	"taki/infra/bus"
	"taki/infra/payments"
	"taki/queries"
)

// SquareWebhook is what the provider webhook endpoint checks signatures with: the signature key and
// the notification URL exactly as registered with the provider (Square signs URL + raw body).
type SquareWebhook struct {
	SignatureKey string
	URL          string
}

// headerIdempotencyKey is API.md's Idempotency-Key.
const headerIdempotencyKey = "Idempotency-Key"

// paymentRoutes registers the payment commands on authed and the provider webhook on e.
func (a *api) paymentRoutes(e *gin.Engine, authed *gin.RouterGroup) {
	authed.POST("/payments", a.requestPayment)
	authed.POST("/payments/:id/refunds", a.requestRefund)
	e.POST("/api/v1/provider-webhooks/square", a.squareWebhook)
}

type requestPaymentBody struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	SourceID    string `json:"source_id"`
	Description string `json:"description"`
}

// requestHash fingerprints a request's decoded fields, so that the same Idempotency-Key with another
// body is told apart from a replay.
func requestHash(v any) string {
	b, _ := json.Marshal(v) // structs of strings and numbers always encode
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (a *api) requestPayment(c *gin.Context) {
	var body requestPaymentBody
	if !DecodeJSON(c, &body) {
		return
	}
	id, err := uuid.NewV7()
	if err != nil {
		WriteError(c, err)
		return
	}
	p, ok := send[queries.Payment](c, a.Bus, commands.RequestPayment{
		Actor: session(c).UserID, PaymentID: id, IdempotencyKey: c.GetHeader(headerIdempotencyKey),
		RequestHash: requestHash(body), AmountMinor: body.AmountMinor, Currency: body.Currency,
		SourceID: body.SourceID, Description: body.Description,
	})
	if !ok {
		return
	}
	c.Header("Location", "/api/v1/payments/"+p.ID.String())
	c.JSON(http.StatusCreated, p)
}

type requestRefundBody struct {
	AmountMinor int64 `json:"amount_minor"`
}

func (a *api) requestRefund(c *gin.Context) {
	paymentID, ok := idParam(c, "id", "payment")
	if !ok {
		return
	}
	var body requestRefundBody
	if !DecodeJSON(c, &body) {
		return
	}
	hash := requestHash(struct {
		PaymentID   uuid.UUID `json:"payment_id"`
		AmountMinor int64     `json:"amount_minor"`
	}{paymentID, body.AmountMinor})
	r, ok := send[queries.Refund](c, a.Bus, commands.RequestRefund{
		Actor: session(c).UserID, PaymentID: paymentID, IdempotencyKey: c.GetHeader(headerIdempotencyKey),
		RequestHash: hash, AmountMinor: body.AmountMinor,
	})
	if ok {
		c.JSON(http.StatusCreated, r)
	}
}

// The replay window of provider notifications: how old (by their created_at) one may be and still be
// acted on, which covers the provider's redeliveries over an outage of a few hours, and how far ahead
// of this clock.
const (
	webhookMaxAge  = 6 * time.Hour
	webhookMaxSkew = 5 * time.Minute
)

func withinReplayWindow(created, now time.Time) bool {
	return !created.IsZero() && created.After(now.Add(-webhookMaxAge)) && created.Before(now.Add(webhookMaxSkew))
}

// squareWebhook takes the provider's signed notifications. It needs no session and no CSRF token: the
// signature over the raw body authenticates it. An event already recorded, an event about a payment
// Taki does not know, an event that would move a payment backwards, and an event created outside the
// replay window are acknowledged and change nothing.
func (a *api) squareWebhook(c *gin.Context) {
	raw, ok := ReadBody(c)
	if !ok {
		return
	}
	if !payments.VerifySignature(a.SquareWebhook.SignatureKey, a.SquareWebhook.URL, raw, c.GetHeader(payments.SignatureHeader)) {
		WriteError(c, commands.Unauthenticated("the webhook signature does not match"))
		return
	}
	ev, err := payments.ParseEvent(raw)
	if err != nil {
		BadRequest(c, "the body is not a provider event: "+err.Error())
		return
	}
	log := loggerFrom(c).With(slog.String("event_id", ev.EventID), slog.String("event_type", ev.Type))
	ctx := c.Request.Context()
	switch {
	case !withinReplayWindow(ev.CreatedAt, time.Now()):
		// A signed notification captured and sent again later is acknowledged and changes nothing;
		// a payment whose genuine notification came too late is settled by the payments process,
		// which asks the provider.
		log.Warn("provider webhook outside the replay window acknowledged without action", slog.Time("created_at", ev.CreatedAt))
	case ev.Type == payments.EventPaymentUpdated && ev.Data.Object.Payment != nil:
		pp := ev.Data.Object.Payment
		id, err := uuid.Parse(pp.ReferenceID)
		if err != nil {
			log.Warn("provider webhook about an unknown payment", slog.String("provider_payment_id", pp.ID))
			break
		}
		cmd := commands.RecordPaymentOutcome{PaymentID: id, ProviderPaymentID: pp.ID, ProviderEventID: ev.EventID}
		cmd.Outcome, cmd.FailureCode = pp.Outcome()
		if cmd.Outcome == "" {
			log.Warn("provider webhook about a payment without a status", slog.String("provider_payment_id", pp.ID))
			break
		}
		_, _, err = bus.Send[queries.Payment](ctx, a.Bus, cmd)
		switch {
		case commands.IsKind(err, commands.KindNotFound):
			log.Warn("provider webhook about an unknown payment", slog.String("payment_id", id.String()),
				slog.String("provider_payment_id", pp.ID))
		case err != nil:
			WriteError(c, err)
			return
		}
	default:
		// Refunds are driven to their decision by the payments process manager, which asks the
		// provider again (same idempotency key) until the refund is decided.
		log.Info("provider webhook acknowledged without action")
	}
	c.JSON(http.StatusOK, gin.H{"received": true})
}
