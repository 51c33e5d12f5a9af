package e2e

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/events"
	"taki/infra/config"
	"taki/infra/postgres/pgtest"
	"taki/tests/testserver"
)

// The payments read side end to end (API.md, "Payments and billing" and "Real time"): payments made
// through POST /payments and decided by the in-process sandbox show in the caller's list, detail and
// billing summary, never in another user's, and reach the owner's sockets as payment.updated frames.

// paymentJSONKeys are the keys of API.md's payment object.
var paymentJSONKeys = []string{"amount_minor", "created_at", "currency", "description", "failure_code", "id",
	"provider_payment_id", "refunded_minor", "status", "updated_at"}

// prStart starts a server on a database of its own. On the shared test database, another test's
// server may run the payments process manager (one active per database) and drive this server's
// payments through its own sandbox and command cache; this server's cache then lags the log (a refund
// of a completed payment is refused as not completed) and a pending payment's webhook goes to the
// other server, which may have stopped.
func prStart(t *testing.T) *testserver.Server {
	return testserver.Start(t, pgtest.NewDatabase(t), testserver.WithConfig(func(c *config.Config) {
		c.AllowedOrigins = []string{rtOrigin}
	}))
}

// prObject decodes a payment object and checks that it has exactly API.md's keys.
func prObject(t testing.TB, what string, b []byte) (paymentJSON, map[string]any) {
	t.Helper()
	var p paymentJSON
	var raw map[string]any
	if err := json.Unmarshal(b, &p); err != nil || json.Unmarshal(b, &raw) != nil {
		t.Fatalf("%s: %s: %v", what, b, err)
	}
	if got := slices.Sorted(maps.Keys(raw)); !slices.Equal(got, paymentJSONKeys) {
		t.Fatalf("%s has keys %v, want %v", what, got, paymentJSONKeys)
	}
	return p, raw
}

// prCreate pays through POST /payments and returns the payment it answers.
func prCreate(t testing.TB, u rtUser, amount int64, currency, source string) paymentJSON {
	t.Helper()
	r := u.client.Do(http.MethodPost, "/api/v1/payments",
		map[string]any{"amount_minor": amount, "currency": currency, "source_id": source, "description": "for " + source},
		"Idempotency-Key", uuid.NewString())
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("POST /payments: %d %s", r.StatusCode, r.Body)
	}
	p, _ := prObject(t, "POST /payments answer", r.Body)
	return p
}

// prAwait reads conn's frames until a payment.updated frame shows payment id with status; every frame
// before it must be a payment.updated of that payment. It returns the payment and the frame's position.
func prAwait(t testing.TB, conn *websocket.Conn, id, status string) (paymentJSON, map[string]any, string) {
	t.Helper()
	for range 20 {
		f := evRead(t, conn)
		if f.Type != "payment.updated" {
			t.Fatalf("got %s frame %s, want payment.updated", f.Type, f.Data)
		}
		// A payment frame belongs to no chat: it has no chat_id.
		if !slices.Equal(f.keys, []string{"data", "position", "type"}) {
			t.Fatalf("payment.updated frame has keys %v", f.keys)
		}
		if _, err := events.ParsePosition(f.Position); err != nil {
			t.Fatalf("payment.updated position %q: %v", f.Position, err)
		}
		p, raw := prObject(t, "payment.updated data", f.Data)
		if p.ID != id {
			t.Fatalf("payment.updated of %s, want %s", p.ID, id)
		}
		if p.Status == status {
			return p, raw, f.Position
		}
	}
	t.Fatalf("payment %s never reached %s", id, status)
	return paymentJSON{}, nil, ""
}

// prGet reads GET /payments/{id} after the write at position token.
func prGet(t testing.TB, c *testserver.Client, id, token string) (paymentJSON, map[string]any) {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/payments/"+id, nil, "X-Consistency-Token", token)
	if r.StatusCode != http.StatusOK || r.Header.Get("X-Consistency-Stale") != "" {
		t.Fatalf("GET /payments/%s: %d (stale %q) %s", id, r.StatusCode, r.Header.Get("X-Consistency-Stale"), r.Body)
	}
	return prObject(t, "GET /payments/{id}", r.Body)
}

type prPage struct {
	Items      []json.RawMessage `json:"items"`
	NextCursor *string           `json:"next_cursor"`
}

func TestPaymentsReadRoutesAndFrames(t *testing.T) {
	t.Parallel()
	srv := prStart(t)
	owner, other := rtSignUp(t, srv, "payer"), rtSignUp(t, srv, "bystander")
	ownerConn, otherConn := evDial(t, srv, owner, ""), evDial(t, srv, other, "")
	defer ownerConn.Close()
	defer otherConn.Close()
	// A chat of the two, to probe the bystander's socket at the end.
	probe := evDirect(t, owner, other)
	evNext(t, ownerConn, "chat.created")
	evNext(t, otherConn, "chat.created")

	// A completed payment: its frames reach the owner, and GET shows what the last frame showed.
	ok := prCreate(t, owner, 1500, "USD", "cnon:card-nonce-ok")
	done, doneRaw, pos := prAwait(t, ownerConn, ok.ID, "completed")
	if done.AmountMinor != 1500 || done.Currency != "USD" || done.RefundedMinor != 0 || done.FailureCode != nil ||
		done.ProviderPaymentID == nil || done.Description != "for cnon:card-nonce-ok" || done.CreatedAt != ok.CreatedAt {
		t.Fatalf("completed payment %+v", done)
	}
	got, gotRaw := prGet(t, owner.client, ok.ID, pos)
	if !maps.Equal(gotRaw, doneRaw) {
		t.Fatalf("GET answers %+v, the frame showed %+v", got, done)
	}

	// A declined one fails with the provider's code.
	declined := prCreate(t, owner, 700, "USD", "cnon:card-nonce-declined")
	failed, _, pos := prAwait(t, ownerConn, declined.ID, "failed")
	if failed.FailureCode == nil || *failed.FailureCode != "GENERIC_DECLINE" {
		t.Fatalf("declined payment %+v", failed)
	}
	if got, _ := prGet(t, owner.client, declined.ID, pos); got.Status != "failed" || *got.FailureCode != "GENERIC_DECLINE" {
		t.Fatalf("GET declined payment %+v", got)
	}

	// A partial refund.
	r := owner.client.Do(http.MethodPost, "/api/v1/payments/"+ok.ID+"/refunds", map[string]any{"amount_minor": 500},
		"Idempotency-Key", uuid.NewString())
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("POST refunds: %d %s", r.StatusCode, r.Body)
	}
	part, _, pos := prAwait(t, ownerConn, ok.ID, "partially_refunded")
	if part.RefundedMinor != 500 {
		t.Fatalf("partially refunded payment %+v", part)
	}
	if got, _ := prGet(t, owner.client, ok.ID, pos); got.Status != "partially_refunded" || got.RefundedMinor != 500 {
		t.Fatalf("GET refunded payment %+v", got)
	}

	// The list: own payments, newest first, keyset pages.
	var page prPage
	owner.client.Token = pos
	resp := owner.client.Do(http.MethodGet, "/api/v1/payments?limit=1", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /payments: %d %s", resp.StatusCode, resp.Body)
	}
	resp.JSON(t, &page)
	if len(page.Items) != 1 || page.NextCursor == nil {
		t.Fatalf("first page %+v", page)
	}
	if p, _ := prObject(t, "list item", page.Items[0]); p.ID != declined.ID {
		t.Fatalf("first item %s, want the newest payment %s", p.ID, declined.ID)
	}
	resp = owner.client.Do(http.MethodGet, "/api/v1/payments?limit=1&cursor="+*page.NextCursor, nil)
	resp.JSON(t, &page)
	if resp.StatusCode != http.StatusOK || len(page.Items) != 1 {
		t.Fatalf("second page: %d %s", resp.StatusCode, resp.Body)
	}
	if p, _ := prObject(t, "list item", page.Items[0]); p.ID != ok.ID || p.Status != "partially_refunded" {
		t.Fatalf("second item %+v", p)
	}
	if page.NextCursor != nil {
		// Two payments in all: a third page, if any, is empty.
		resp = owner.client.Do(http.MethodGet, "/api/v1/payments?limit=1&cursor="+*page.NextCursor, nil)
		resp.JSON(t, &page)
		if len(page.Items) != 0 || page.NextCursor != nil {
			t.Fatalf("third page %s", resp.Body)
		}
	}
	for _, bad := range []string{"?limit=0", "?limit=201", "?cursor=nope"} {
		if r := owner.client.Do(http.MethodGet, "/api/v1/payments"+bad, nil); r.StatusCode != http.StatusBadRequest &&
			r.StatusCode != http.StatusUnprocessableEntity || r.Slug(t) != "validation" {
			t.Fatalf("GET /payments%s: %d %s", bad, r.StatusCode, r.Body)
		}
	}

	// The billing summary counts the completed payment, refunded in part, not the declined one.
	var billing struct {
		Currencies []map[string]any `json:"currencies"`
	}
	resp = owner.client.Do(http.MethodGet, "/api/v1/billing/summary", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /billing/summary: %d %s", resp.StatusCode, resp.Body)
	}
	resp.JSON(t, &billing)
	want := map[string]any{"currency": "USD", "payments_count": 1.0, "paid_minor": 1500.0, "refunded_minor": 500.0, "net_minor": 1000.0}
	if len(billing.Currencies) != 1 || !maps.Equal(billing.Currencies[0], want) {
		t.Fatalf("billing %s, want one currency %v", resp.Body, want)
	}

	// Another user sees none of it: 404 (as for a payment that does not exist), an empty list and summary.
	for _, path := range []string{"/api/v1/payments/" + ok.ID, "/api/v1/payments/" + uuid.NewString(), "/api/v1/payments/not-a-uuid"} {
		if r := other.client.Do(http.MethodGet, path, nil, "X-Consistency-Token", pos); r.StatusCode != http.StatusNotFound || r.Slug(t) != "not-found" {
			t.Fatalf("bystander GET %s: %d %s", path, r.StatusCode, r.Body)
		}
	}
	resp = other.client.Do(http.MethodGet, "/api/v1/payments", nil)
	if resp.JSON(t, &page); resp.StatusCode != http.StatusOK || page.Items == nil || len(page.Items) != 0 || page.NextCursor != nil {
		t.Fatalf("bystander's list: %d %s", resp.StatusCode, resp.Body)
	}
	resp = other.client.Do(http.MethodGet, "/api/v1/billing/summary", nil)
	if resp.JSON(t, &billing); resp.StatusCode != http.StatusOK || billing.Currencies == nil || len(billing.Currencies) != 0 {
		t.Fatalf("bystander's billing: %d %s", resp.StatusCode, resp.Body)
	}
	// No session, no payments.
	anon := srv.Client(t)
	for _, path := range []string{"/api/v1/payments", "/api/v1/payments/" + ok.ID, "/api/v1/billing/summary"} {
		if r := anon.Do(http.MethodGet, path, nil); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("anonymous GET %s: %d %s", path, r.StatusCode, r.Body)
		}
	}

	// The bystander's socket got no payment frame: its next frame is the probe message.
	evProbe(t, owner, probe, otherConn)
}

// A payment the provider leaves pending reaches the owner's socket as pending, then completed once the
// provider's webhook decides it; the list and the billing summary follow.
func TestPaymentsReadPendingThenCompletedByWebhook(t *testing.T) {
	t.Parallel()
	srv := prStart(t)
	owner := rtSignUp(t, srv, "patient")
	conn := evDial(t, srv, owner, "")
	defer conn.Close()
	p := prCreate(t, owner, 250, "EUR", "cnon:card-nonce-pending")
	if p.Status != "pending" {
		t.Fatalf("POST /payments answered %+v, want pending", p)
	}
	first, _, _ := prAwait(t, conn, p.ID, "pending")
	if first.CreatedAt != p.CreatedAt {
		t.Fatalf("first frame %+v", first)
	}
	done, raw, pos := prAwait(t, conn, p.ID, "completed")
	if done.ProviderPaymentID == nil || done.UpdatedAt < done.CreatedAt {
		t.Fatalf("completed by webhook: %+v", done)
	}
	if _, got := prGet(t, owner.client, p.ID, pos); !maps.Equal(got, raw) {
		t.Fatalf("GET answers %v, the frame showed %v", got, raw)
	}
	var billing struct {
		Currencies []map[string]any `json:"currencies"`
	}
	r := owner.client.Do(http.MethodGet, "/api/v1/billing/summary", nil, "X-Consistency-Token", pos)
	r.JSON(t, &billing)
	want := map[string]any{"currency": "EUR", "payments_count": 1.0, "paid_minor": 250.0, "refunded_minor": 0.0, "net_minor": 250.0}
	if r.StatusCode != http.StatusOK || len(billing.Currencies) != 1 || !maps.Equal(billing.Currencies[0], want) {
		t.Fatalf("billing: %d %s", r.StatusCode, r.Body)
	}
}
