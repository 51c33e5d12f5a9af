package payments

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// SignatureHeader is the header in which Square sends a webhook's signature.
const SignatureHeader = "x-square-hmacsha256-signature"

// Square's webhook event types the sandbox sends.
const (
	EventPaymentUpdated = "payment.updated"
	EventRefundUpdated  = "refund.updated"
)

// Event is a Square webhook notification.
type Event struct {
	MerchantID string    `json:"merchant_id"`
	Type       string    `json:"type"` // payment.updated, refund.updated, ...
	EventID    string    `json:"event_id"`
	CreatedAt  time.Time `json:"created_at"`
	Data       EventData `json:"data"`
}

// EventData names the object an event is about and carries its state.
type EventData struct {
	Type   string      `json:"type"` // payment or refund
	ID     string      `json:"id"`
	Object EventObject `json:"object"`
}

// EventObject holds the payment or the refund of an event.
type EventObject struct {
	Payment *Payment `json:"payment,omitempty"`
	Refund  *Refund  `json:"refund,omitempty"`
}

// Sign is Square's webhook signature: base64(HMAC-SHA256(signatureKey, notificationURL + body)).
func Sign(signatureKey, notificationURL string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(signatureKey))
	mac.Write([]byte(notificationURL))
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// VerifySignature reports whether signature (the x-square-hmacsha256-signature header) signs body as
// sent to notificationURL (the URL exactly as registered with the provider) with signatureKey. The
// comparison takes constant time. An empty key or signature never verifies.
func VerifySignature(signatureKey, notificationURL string, body []byte, signature string) bool {
	if signatureKey == "" || signature == "" {
		return false
	}
	got, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(signatureKey))
	mac.Write([]byte(notificationURL))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// ParseEvent decodes a webhook body (verify its signature first) and checks it names an event and
// carries the object its type promises.
func ParseEvent(body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("payments webhook: decode event: %w", err)
	}
	if e.EventID == "" || e.Type == "" {
		return Event{}, errors.New("payments webhook: event without event_id or type")
	}
	switch e.Data.Type {
	case "payment":
		if e.Data.Object.Payment == nil || e.Data.Object.Payment.ID == "" {
			return Event{}, fmt.Errorf("payments webhook: %s event %s carries no payment", e.Type, e.EventID)
		}
	case "refund":
		if e.Data.Object.Refund == nil || e.Data.Object.Refund.ID == "" {
			return Event{}, fmt.Errorf("payments webhook: %s event %s carries no refund", e.Type, e.EventID)
		}
	}
	return e, nil
}
