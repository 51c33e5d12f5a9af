package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/infra/config"
	"taki/infra/logging"
	"taki/infra/payments"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/tests/testserver"
)

// Payments and billing (API.md): payments, refunds and the provider's webhooks through the real
// router, against the in-process sandbox provider on loopback. Every test runs its own database, so
// that its server's process manager is the one driving its payments (one leader per database).

type paymentJSON struct {
	ID                string  `json:"id"`
	Status            string  `json:"status"`
	AmountMinor       int64   `json:"amount_minor"`
	Currency          string  `json:"currency"`
	RefundedMinor     int64   `json:"refunded_minor"`
	Description       string  `json:"description"`
	FailureCode       *string `json:"failure_code"`
	ProviderPaymentID *string `json:"provider_payment_id"`
	CreatedAt         string  `json:"created_at"`
	UpdatedAt         string  `json:"updated_at"`
}

type refundJSON struct {
	ID          string `json:"id"`
	PaymentID   string `json:"payment_id"`
	Status      string `json:"status"`
	AmountMinor int64  `json:"amount_minor"`
}

var paymentKeys = []string{"amount_minor", "created_at", "currency", "description", "failure_code", "id",
	"provider_payment_id", "refunded_minor", "status", "updated_at"}

// payWebhookKey and payWebhookURL are what the test servers' webhook endpoint checks signatures with.
const (
	payWebhookKey = "taki-test-webhook-signature-key"
	payWebhookURL = "http://taki.sandbox.invalid/api/v1/provider-webhooks/square"
)

// payServer starts a server on a database of its own, with a webhook key the test knows. edit, if
// not nil, tunes the payments options further.
func payServer(t *testing.T, edit func(*server.PaymentsOptions)) *testserver.Server {
	t.Helper()
	return testserver.Start(t, pgtest.NewDatabase(t), testserver.WithOptions(func(o *server.Options) {
		o.Payments.Sandbox = func(c *payments.SandboxConfig) { c.SignatureKey = payWebhookKey }
		if edit != nil {
			edit(&o.Payments)
		}
	}))
}

func payBody(amount int64, source string) map[string]any {
	return map[string]any{"amount_minor": amount, "currency": "EUR", "source_id": source, "description": "a coffee"}
}

func payCreate(t testing.TB, c *testserver.Client, key string, body any) testserver.Response {
	t.Helper()
	return c.Do(http.MethodPost, "/api/v1/payments", body, "Idempotency-Key", key)
}

func payCreateOK(t testing.TB, c *testserver.Client, amount int64, source string) paymentJSON {
	t.Helper()
	r := payCreate(t, c, uuid.NewString(), payBody(amount, source))
	acctWantStatus(t, r, http.StatusCreated)
	acctWantKeys(t, "payment", r.Body, paymentKeys...)
	var p paymentJSON
	r.JSON(t, &p)
	if p.Status != "pending" || p.AmountMinor != amount || p.Currency != "EUR" || p.RefundedMinor != 0 {
		t.Fatalf("new payment: %s", r.Body)
	}
	if r.Header.Get("X-Consistency-Token") == "" || r.Header.Get("Location") != "/api/v1/payments/"+p.ID {
		t.Fatalf("new payment: headers %v", r.Header)
	}
	return p
}

// payWait reads the payment until cond holds (the process manager and the webhooks decide payments
// in the background), failing after 20 s.
func payWait(t testing.TB, c *testserver.Client, id string, what string, cond func(paymentJSON) bool) paymentJSON {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var p paymentJSON
	for {
		r := c.Do(http.MethodGet, "/api/v1/payments/"+id, nil)
		if r.StatusCode == http.StatusOK {
			p = paymentJSON{}
			r.JSON(t, &p)
			if cond(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("payment %s never became %s: last %d %s", id, what, r.StatusCode, r.Body)
		}
		<-tick.C
	}
}

func payWaitStatus(t testing.TB, c *testserver.Client, id, status string) paymentJSON {
	t.Helper()
	return payWait(t, c, id, status, func(p paymentJSON) bool { return p.Status == status })
}

func TestPaymentsEveryNonceReachesItsDecision(t *testing.T) {
	t.Parallel()
	srv := payServer(t, nil)
	c, _ := acctSignUp(t, srv, "Payer")
	cases := []struct {
		nonce, status, code string
	}{
		{payments.NonceOK, "completed", ""},
		{payments.NonceDeclined, "failed", "GENERIC_DECLINE"},
		{payments.NonceRejectedCVV, "failed", "CVV_FAILURE"},
		{payments.NoncePending, "completed", ""}, // pending until the sandbox's webhook completes it
	}
	for _, tc := range cases {
		p := payCreateOK(t, c, 1250, tc.nonce)
		got := payWaitStatus(t, c, p.ID, tc.status)
		if tc.code == "" && got.FailureCode != nil || tc.code != "" && (got.FailureCode == nil || *got.FailureCode != tc.code) {
			t.Errorf("%s: failure_code %v, want %q", tc.nonce, got.FailureCode, tc.code)
		}
		if tc.status == "completed" && (got.ProviderPaymentID == nil || *got.ProviderPaymentID == "") {
			t.Errorf("%s: no provider_payment_id: %+v", tc.nonce, got)
		}
		if got.CreatedAt != p.CreatedAt || got.UpdatedAt < got.CreatedAt {
			t.Errorf("%s: times %s %s after %s", tc.nonce, got.CreatedAt, got.UpdatedAt, p.CreatedAt)
		}
	}
	// The pending payment was taken once, and its webhook arrived. The sandbox records a delivery once
	// it has Taki's answer, which may be after the payment shows completed.
	for deadline := time.Now().Add(10 * time.Second); ; {
		delivered := false
		for _, d := range srv.PaymentsSandbox().Deliveries() {
			if d.Status == http.StatusOK && d.Type == payments.EventPaymentUpdated {
				delivered = true
			}
		}
		if delivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no webhook delivered: %+v", srv.PaymentsSandbox().Deliveries())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPaymentsIdempotencyKeyReplaysReusesAndRaces(t *testing.T) {
	t.Parallel()
	srv := payServer(t, nil)
	c, _ := acctSignUp(t, srv, "Payer")
	first := payCreate(t, c, "key-1", payBody(500, payments.NonceOK))
	acctWantStatus(t, first, http.StatusCreated)
	var p paymentJSON
	first.JSON(t, &p)
	payWaitStatus(t, c, p.ID, "completed")

	// The same key and body: the first answer again, although the payment completed meanwhile.
	again := payCreate(t, c, "key-1", payBody(500, payments.NonceOK))
	acctWantStatus(t, again, http.StatusCreated)
	if !bytes.Equal(again.Body, first.Body) {
		t.Errorf("replay answered\n%s\nwant\n%s", again.Body, first.Body)
	}
	// Another body with that key.
	acctWantProblem(t, payCreate(t, c, "key-1", payBody(501, payments.NonceOK)), http.StatusUnprocessableEntity, "idempotency-key-reused")
	// Another user's key of the same name is another payment.
	c2, _ := acctSignUp(t, srv, "Other")
	other := payCreate(t, c2, "key-1", payBody(500, payments.NonceOK))
	acctWantStatus(t, other, http.StatusCreated)
	var op paymentJSON
	other.JSON(t, &op)
	if op.ID == p.ID {
		t.Errorf("two users' key-1 made one payment")
	}
	// A missing key is a validation error.
	acctWantProblem(t, c.Do(http.MethodPost, "/api/v1/payments", payBody(500, payments.NonceOK)), http.StatusUnprocessableEntity, "validation")

	// Racing duplicates make one payment.
	var wg sync.WaitGroup
	bodies := make([][]byte, 8)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := payCreate(t, c.Fork(), "race-key", payBody(700, payments.NonceOK))
			if r.StatusCode != http.StatusCreated {
				t.Errorf("racing duplicate: %d %s", r.StatusCode, r.Body)
			}
			bodies[i] = r.Body
		}()
	}
	wg.Wait()
	var raced paymentJSON
	json.Unmarshal(bodies[0], &raced)
	for i, b := range bodies {
		if !bytes.Equal(b, bodies[0]) {
			t.Errorf("racing duplicate %d answered %s, want %s", i, b, bodies[0])
		}
	}
	payWaitStatus(t, c, raced.ID, "completed")
	if n := len(srv.PaymentsSandbox().KeyCalls(raced.ID)); n != 1 {
		t.Errorf("the raced payment was asked of the provider %d times, want 1", n)
	}
}

func payRefund(t testing.TB, c *testserver.Client, paymentID, key string, amount int64) testserver.Response {
	t.Helper()
	return c.Do(http.MethodPost, "/api/v1/payments/"+paymentID+"/refunds", map[string]any{"amount_minor": amount}, "Idempotency-Key", key)
}

func TestPaymentsRefundsStayWithinThePayment(t *testing.T) {
	t.Parallel()
	srv := payServer(t, nil)
	c, _ := acctSignUp(t, srv, "Payer")
	p := payCreateOK(t, c, 1000, payments.NonceOK)
	// Not completed yet, or never: 409.
	declined := payCreateOK(t, c, 1000, payments.NonceDeclined)
	payWaitStatus(t, c, declined.ID, "failed")
	acctWantProblem(t, payRefund(t, c, declined.ID, "r-declined", 100), http.StatusConflict, "conflict")
	payWaitStatus(t, c, p.ID, "completed")

	// Another user's payment, and no payment, are not found.
	c2, _ := acctSignUp(t, srv, "Thief")
	acctWantProblem(t, payRefund(t, c2, p.ID, "r-steal", 100), http.StatusNotFound, "not-found")
	acctWantProblem(t, payRefund(t, c, uuid.NewString(), "r-none", 100), http.StatusNotFound, "not-found")

	acctWantProblem(t, payRefund(t, c, p.ID, "r-big", 1001), http.StatusConflict, "conflict")
	first := payRefund(t, c, p.ID, "r-1", 400)
	acctWantStatus(t, first, http.StatusCreated)
	var r refundJSON
	first.JSON(t, &r)
	if r.PaymentID != p.ID || r.AmountMinor != 400 || r.Status != "pending" || r.ID == "" {
		t.Fatalf("refund: %s", first.Body)
	}
	again := payRefund(t, c, p.ID, "r-1", 400)
	acctWantStatus(t, again, http.StatusCreated)
	if !bytes.Equal(again.Body, first.Body) {
		t.Errorf("refund replay answered %s, want %s", again.Body, first.Body)
	}
	acctWantProblem(t, payRefund(t, c, p.ID, "r-1", 300), http.StatusUnprocessableEntity, "idempotency-key-reused")

	// 8 racing refunds of 200 for the 600 left: exactly 3 succeed.
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := payRefund(t, c.Fork(), p.ID, fmt.Sprintf("r-race-%d", i), 200)
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses[http.StatusCreated] != 3 || statuses[http.StatusConflict] != 5 {
		t.Errorf("racing refunds answered %v, want 3×201 and 5×409", statuses)
	}
	acctWantProblem(t, payRefund(t, c, p.ID, "r-after", 1), http.StatusConflict, "conflict")
	got := payWait(t, c, p.ID, "refunded", func(p paymentJSON) bool { return p.Status == "refunded" && p.RefundedMinor == 1000 })
	if got.AmountMinor != 1000 {
		t.Errorf("refunded payment: %+v", got)
	}
	// A partial refund shows as partially_refunded.
	q := payCreateOK(t, c, 900, payments.NonceOK)
	payWaitStatus(t, c, q.ID, "completed")
	acctWantStatus(t, payRefund(t, c, q.ID, "q-1", 100), http.StatusCreated)
	payWait(t, c, q.ID, "partially refunded", func(p paymentJSON) bool { return p.Status == "partially_refunded" && p.RefundedMinor == 100 })
}

func TestPaymentsBreakerOpensAnswers503AndRecovers(t *testing.T) {
	t.Parallel()
	srv := payServer(t, func(o *server.PaymentsOptions) {
		o.Client = func(c *payments.ClientConfig) {
			c.MaxAttempts = 1
			c.Breaker.ConsecutiveFailures = 3
			c.Breaker.OpenTimeout = 2 * time.Second
		}
	})
	c, _ := acctSignUp(t, srv, "Payer")
	paid := payCreateOK(t, c, 500, payments.NonceOK)
	payWaitStatus(t, c, paid.ID, "completed")
	sandbox := srv.PaymentsSandbox()
	sandbox.FailNext(4, payments.Fail500)
	p := payCreateOK(t, c, 300, payments.NonceOK)
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for srv.PaymentsClient().BreakerState() != "open" {
		if time.Now().After(deadline) {
			t.Fatalf("the breaker never opened: %s", srv.PaymentsClient().BreakerState())
		}
		<-tick.C
	}
	start := time.Now()
	r := payCreate(t, c, "while-open", payBody(300, payments.NonceOK))
	if took := time.Since(start); took > time.Second {
		t.Errorf("503 took %s", took)
	}
	acctWantProblem(t, r, http.StatusServiceUnavailable, "provider-unavailable")
	if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q", ra)
	}
	acctWantProblem(t, payRefund(t, c, paid.ID, "refund-while-open", 100), http.StatusServiceUnavailable, "provider-unavailable")
	metrics := c.Do(http.MethodGet, "/metrics", nil)
	if !strings.Contains(string(metrics.Body), "taki_payments_breaker_state") {
		t.Errorf("/metrics has no breaker state")
	}
	// The process manager retries with the same key until the provider answers again.
	payWaitStatus(t, c, p.ID, "completed")
	if srv.PaymentsClient().BreakerState() == "open" {
		t.Errorf("breaker still open after a success")
	}
	again := payCreateOK(t, c, 301, payments.NonceOK)
	payWaitStatus(t, c, again.ID, "completed")
	if n := srv.PaymentsSandbox().Payments(); n != 3 {
		t.Errorf("sandbox took %d payments, want 3", n)
	}
}

// paySend posts a provider event to the webhook endpoint, signed with key.
func paySend(t testing.TB, srv *testserver.Server, key string, ev payments.Event) testserver.Response {
	t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	return c.Do(http.MethodPost, "/api/v1/provider-webhooks/square", body,
		payments.SignatureHeader, payments.Sign(key, payWebhookURL, body))
}

func payEvent(eventID, reference, providerID string, status payments.PaymentStatus) payments.Event {
	return payments.Event{
		MerchantID: "M", Type: payments.EventPaymentUpdated, EventID: eventID, CreatedAt: time.Now().UTC(),
		Data: payments.EventData{Type: "payment", ID: providerID, Object: payments.EventObject{Payment: &payments.Payment{
			ID: providerID, Status: status, ReferenceID: reference, AmountMoney: payments.Money{Amount: 1, Currency: "EUR"},
		}}},
	}
}

func TestPaymentsWebhooks(t *testing.T) {
	t.Parallel()
	srv := payServer(t, func(o *server.PaymentsOptions) {
		o.Sandbox = func(c *payments.SandboxConfig) {
			c.SignatureKey = payWebhookKey
			c.PendingDelay = time.Hour // the test's own events decide pending payments
		}
	})
	c, _ := acctSignUp(t, srv, "Payer")

	// A bad signature is 401, with no session and no CSRF token needed either way.
	acctWantProblem(t, paySend(t, srv, "wrong-key", payEvent("evt-bad", uuid.NewString(), "P", payments.PaymentCompleted)),
		http.StatusUnauthorized, "unauthenticated")

	pending := func() paymentJSON {
		p := payCreateOK(t, c, 800, payments.NoncePending)
		return payWait(t, c, p.ID, "pending at the provider", func(p paymentJSON) bool {
			return p.Status == "pending" && p.ProviderPaymentID != nil
		})
	}
	p1, p2 := pending(), pending()

	// Signed, but created outside the replay window (a captured notification sent again, or one from
	// a wrong clock): acknowledged, and p1 stays pending.
	for _, created := range []time.Time{time.Now().Add(-7 * time.Hour), time.Now().Add(time.Hour), {}} {
		old := payEvent("evt-replayed", p1.ID, *p1.ProviderPaymentID, payments.PaymentCompleted)
		old.CreatedAt = created
		acctWantStatus(t, paySend(t, srv, payWebhookKey, old), http.StatusOK)
	}
	// The webhook appends before it answers: nothing was.
	if n := payOutcomeEvents(t, srv, p1.ID); n != 0 {
		t.Fatalf("p1 has %d outcome events after notifications outside the replay window, want 0", n)
	}

	// evt-1 completes p1.
	acctWantStatus(t, paySend(t, srv, payWebhookKey, payEvent("evt-1", p1.ID, *p1.ProviderPaymentID, payments.PaymentCompleted)), http.StatusOK)
	payWaitStatus(t, c, p1.ID, "completed")
	// evt-1 again, now naming p2: seen before, acknowledged and ignored.
	acctWantStatus(t, paySend(t, srv, payWebhookKey, payEvent("evt-1", p2.ID, *p2.ProviderPaymentID, payments.PaymentCompleted)), http.StatusOK)
	// An older event (pending) after the completion does not move p1 back.
	acctWantStatus(t, paySend(t, srv, payWebhookKey, payEvent("evt-0", p1.ID, *p1.ProviderPaymentID, payments.PaymentPending)), http.StatusOK)
	// Nor does a later failure.
	acctWantStatus(t, paySend(t, srv, payWebhookKey, payEvent("evt-3", p1.ID, *p1.ProviderPaymentID, payments.PaymentFailed)), http.StatusOK)
	// Unknown payments are acknowledged.
	acctWantStatus(t, paySend(t, srv, payWebhookKey, payEvent("evt-4", uuid.NewString(), "NOPE", payments.PaymentCompleted)), http.StatusOK)
	acctWantStatus(t, paySend(t, srv, payWebhookKey, payEvent("evt-5", "", "NOPE", payments.PaymentCompleted)), http.StatusOK)

	// p2 is decided by its own event; the reads below come after every webhook above.
	r := paySend(t, srv, payWebhookKey, payEvent("evt-2", p2.ID, *p2.ProviderPaymentID, payments.PaymentFailed))
	acctWantStatus(t, r, http.StatusOK)
	got2 := payWaitStatus(t, c, p2.ID, "failed")
	if got2.FailureCode == nil || *got2.FailureCode != "FAILED" {
		t.Errorf("p2 failure code %v", got2.FailureCode)
	}
	got1 := payWaitStatus(t, c, p1.ID, "completed")
	if got1.FailureCode != nil {
		t.Errorf("p1 moved: %+v", got1)
	}
}

// An answer lost after the provider took the payment is asked again with the same key: the payment is
// taken once.
func TestPaymentsLostAnswerChargesOnce(t *testing.T) {
	t.Parallel()
	srv := payServer(t, nil)
	c, _ := acctSignUp(t, srv, "Payer")
	srv.PaymentsSandbox().FailNext(1, payments.FailDropAfter)
	p := payCreateOK(t, c, 420, payments.NonceOK)
	payWaitStatus(t, c, p.ID, "completed")
	if n := srv.PaymentsSandbox().Payments(); n != 1 {
		t.Errorf("sandbox took %d payments, want 1", n)
	}
	if n := len(srv.PaymentsSandbox().KeyCalls(p.ID)); n < 2 {
		t.Errorf("the payment was asked %d times, want a retry with its key", n)
	}
}

// A payment requested while the provider cannot be reached survives a restart: the next instance
// picks it up from the process manager's checkpoint and decides it.
func TestPaymentsRequestSurvivesARestart(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	opts := testserver.WithOptions(func(o *server.Options) {
		o.Payments.Client = func(c *payments.ClientConfig) { c.MaxAttempts = 1; c.Breaker.ConsecutiveFailures = 1000 }
	})
	var user acctUser
	var id string
	t.Run("first instance", func(t *testing.T) {
		srv := testserver.Start(t, db, opts)
		srv.PaymentsSandbox().FailNext(1_000_000, payments.Fail503)
		var c *testserver.Client
		c, user = acctSignUp(t, srv, "Payer")
		id = payCreateOK(t, c, 999, payments.NonceOK).ID
		// The process manager has asked (and failed) at least once before the instance stops.
		deadline := time.Now().Add(20 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for len(srv.PaymentsSandbox().KeyCalls(id)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the provider was never asked")
			}
			<-tick.C
		}
	})
	srv := testserver.Start(t, db, opts)
	c := srv.Client(t)
	c.LogIn(user.Email, user.Password)
	payWaitStatus(t, c, id, "completed")
	if n := srv.PaymentsSandbox().Payments(); n != 1 {
		t.Errorf("sandbox took %d payments, want 1", n)
	}
}

// payWaitFor polls cond every 5 ms until it holds, failing after 20 s.
func payWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		<-tick.C
	}
}

// payPolls counts the reads of provider payment id the sandbox answered.
func payPolls(s *payments.Sandbox, id string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == http.MethodGet && c.Path == "/v2/payments/"+id && c.Injected == payments.FailNone {
			n++
		}
	}
	return n
}

// A pending payment whose webhook never comes is settled by asking the provider.
func TestPaymentsPendingWithoutWebhookSettlesByPolling(t *testing.T) {
	t.Parallel()
	srv := payServer(t, func(o *server.PaymentsOptions) {
		o.Sandbox = func(c *payments.SandboxConfig) {
			c.SignatureKey = payWebhookKey
			c.WebhookURL = "" // the sandbox sends no webhook at all
			c.PendingDelay = 200 * time.Millisecond
			c.RefundDelay = 200 * time.Millisecond
		}
		o.SettleAfter = 300 * time.Millisecond
		o.Client = func(c *payments.ClientConfig) { c.MaxAttempts = 1; c.Breaker.ConsecutiveFailures = 1000 }
	})
	c, _ := acctSignUp(t, srv, "Payer")
	sandbox := srv.PaymentsSandbox()
	p := payCreateOK(t, c, 640, payments.NoncePending)
	// Once the provider has taken it (pending), its first reads fail: the process manager keeps asking.
	payWaitFor(t, "the provider taking the payment", func() bool { return len(sandbox.KeyCalls(p.ID)) == 1 })
	sandbox.FailNext(2, payments.Fail503)
	got := payWaitStatus(t, c, p.ID, "completed")
	if got.ProviderPaymentID == nil {
		t.Fatalf("completed payment without provider id: %+v", got)
	}
	failed := 0
	for _, call := range sandbox.Calls() {
		if call.Method == http.MethodGet && call.Injected == payments.Fail503 {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d reads of the payment failed, want 2: %+v", failed, sandbox.Calls())
	}
	if d := sandbox.Deliveries(); len(d) != 0 {
		t.Errorf("the sandbox delivered webhooks: %+v", d)
	}
	if payPolls(sandbox, *got.ProviderPaymentID) == 0 {
		t.Errorf("the provider was never asked about the payment: %+v", sandbox.Calls())
	}
	if n := sandbox.Payments(); n != 1 || len(sandbox.KeyCalls(p.ID)) != 1 {
		t.Errorf("sandbox took %d payments in %d calls, want 1 in 1", n, len(sandbox.KeyCalls(p.ID)))
	}

	// A refund the provider leaves pending is asked about again with its key until it is decided.
	rr := payRefund(t, c, p.ID, "refund-1", 240)
	acctWantStatus(t, rr, http.StatusCreated)
	var refund refundJSON
	rr.JSON(t, &refund)
	payWait(t, c, p.ID, "partially refunded", func(p paymentJSON) bool {
		return p.Status == "partially_refunded" && p.RefundedMinor == 240
	})
	if n := len(sandbox.KeyCalls(refund.ID)); n < 2 {
		t.Errorf("the pending refund was asked %d times, want again after it was pending", n)
	}
	if d := sandbox.Deliveries(); len(d) != 0 {
		t.Errorf("the sandbox delivered webhooks: %+v", d)
	}
}

// A payment left pending by an instance that stopped before its webhook came is settled by the next
// instance, which finds it in the log. The provider (a sandbox on its own, as `taki sandbox` runs it)
// outlives both instances and sends no webhook.
func TestPaymentsPendingSettlesAfterARestart(t *testing.T) {
	t.Parallel()
	sandbox, err := payments.NewSandbox(payments.SandboxConfig{PendingDelay: 100 * time.Millisecond}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sandbox.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("sandbox: %v", err)
		}
	})
	db := pgtest.NewDatabase(t)
	instance := func(settleAfter time.Duration) testserver.Option {
		return testserver.WithOptions(func(o *server.Options) { o.Payments.SettleAfter = settleAfter })
	}
	provider := testserver.WithConfig(func(c *config.Config) {
		c.PaymentsProvider, c.SquareBaseURL, c.SquareAccessToken = "square", "http://"+ln.Addr().String(), "taki-test-token"
	})
	var user acctUser
	var id, providerID string
	t.Run("first instance", func(t *testing.T) {
		srv := testserver.Start(t, db, provider, instance(time.Hour)) // never asks in this test's time
		var c *testserver.Client
		c, user = acctSignUp(t, srv, "Payer")
		id = payCreateOK(t, c, 777, payments.NoncePending).ID
		p := payWait(t, c, id, "pending at the provider", func(p paymentJSON) bool {
			return p.Status == "pending" && p.ProviderPaymentID != nil
		})
		providerID = *p.ProviderPaymentID
	})
	if payPolls(sandbox, providerID) != 0 {
		t.Fatalf("the first instance asked about the payment")
	}
	srv := testserver.Start(t, db, provider, instance(100*time.Millisecond))
	c := srv.Client(t)
	c.LogIn(user.Email, user.Password)
	payWaitStatus(t, c, id, "completed")
	if payPolls(sandbox, providerID) == 0 {
		t.Errorf("the provider was never asked about the payment")
	}
	if n := sandbox.Payments(); n != 1 || len(sandbox.KeyCalls(id)) != 1 {
		t.Errorf("sandbox took %d payments in %d calls, want 1 in 1", n, len(sandbox.KeyCalls(id)))
	}
}

// Issue 4's "killing the sandbox mid-run": while payments are being requested the provider stops
// answering (connections dropped, the first after taking the payment). The breaker opens; new
// payments are refused at once with 503 and recorded nowhere; the payments accepted before are asked
// again with their keys and decided once the provider is back, each taken exactly once.
func TestPaymentsProviderOutageOpensTheBreakerAndChargesOnce(t *testing.T) {
	t.Parallel()
	srv := payServer(t, func(o *server.PaymentsOptions) {
		o.Client = func(c *payments.ClientConfig) {
			c.MaxAttempts = 2
			c.Breaker.ConsecutiveFailures = 3
			c.Breaker.OpenTimeout = 3 * time.Second
		}
	})
	c, _ := acctSignUp(t, srv, "Payer")
	sandbox, client := srv.PaymentsSandbox(), srv.PaymentsClient()

	var mu sync.Mutex
	var accepted []string // payment ids answered 201
	refused := 0          // 503 answers
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // the load: one payment at a time with fresh keys, until stopped
		defer close(stopped)
		cl := c.Fork()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			r := payCreate(t, cl, fmt.Sprintf("load-%d", i), payBody(100+int64(i), payments.NonceOK))
			mu.Lock()
			switch r.StatusCode {
			case http.StatusCreated:
				var p paymentJSON
				if err := json.Unmarshal(r.Body, &p); err != nil || p.ID == "" {
					t.Errorf("payment under load: %s", r.Body)
				}
				accepted = append(accepted, p.ID)
			case http.StatusServiceUnavailable:
				refused++
			default:
				t.Errorf("payment under load: %d %s", r.StatusCode, r.Body)
			}
			mu.Unlock()
		}
	}()
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted), refused
	}
	payWaitFor(t, "payments accepted before the outage", func() bool { n, _ := counts(); return n >= 5 })

	// The provider goes away: the next two calls take the payment and lose the answer, every later one
	// finds the connection dropped.
	sandbox.FailNext(2, payments.FailDropAfter)
	sandbox.SetFailureRatio(1, payments.FailDrop)
	before, _ := counts()
	payWaitFor(t, "the breaker opening", func() bool { return client.BreakerState() == "open" })
	r := payCreate(t, c, "while-down", payBody(999, payments.NonceOK))
	acctWantProblem(t, r, http.StatusServiceUnavailable, "provider-unavailable")
	if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q", ra)
	}
	payWaitFor(t, "the load meeting the open breaker", func() bool { _, n := counts(); return n > 0 })
	close(stop)
	<-stopped
	during, _ := counts()
	if during <= before {
		t.Logf("no payment accepted after the provider went away (%d before)", before)
	}

	// The provider comes back.
	sandbox.SetFailureRatio(0, payments.FailNone)
	mu.Lock()
	ids := slices.Clone(accepted)
	mu.Unlock()
	providerIDs := map[string]bool{}
	retried := 0
	for _, id := range ids {
		p := payWaitStatus(t, c, id, "completed")
		if p.ProviderPaymentID == nil {
			t.Fatalf("completed payment without provider id: %+v", p)
		}
		providerIDs[*p.ProviderPaymentID] = true
		calls := sandbox.KeyCalls(id)
		if len(calls) > 1 {
			retried++
		}
		for _, call := range calls[:len(calls)-1] {
			if call.Injected == payments.FailNone {
				t.Errorf("payment %s was asked again after an answer: %+v", id, calls)
			}
		}
	}
	if retried == 0 {
		t.Errorf("no payment was asked again with its key")
	}
	// Nothing charged twice, nothing lost, nothing recorded of the refused requests.
	if n := sandbox.Payments(); n != len(ids) || len(providerIDs) != len(ids) {
		t.Errorf("sandbox took %d payments, %d distinct, for %d accepted requests", n, len(providerIDs), len(ids))
	}
	var summary struct {
		Currencies []struct {
			Currency      string `json:"currency"`
			PaymentsCount int    `json:"payments_count"`
		} `json:"currencies"`
	}
	sum := c.Do(http.MethodGet, "/api/v1/billing/summary", nil)
	acctWantStatus(t, sum, http.StatusOK)
	sum.JSON(t, &summary)
	if len(summary.Currencies) != 1 || summary.Currencies[0].PaymentsCount != len(ids) {
		t.Errorf("billing summary %s, want %d payments", sum.Body, len(ids))
	}
	// The key refused while the provider was down was never recorded: it makes a new payment now.
	again := payCreate(t, c, "while-down", payBody(999, payments.NonceOK))
	acctWantStatus(t, again, http.StatusCreated)
	var p paymentJSON
	again.JSON(t, &p)
	if p.Status != "pending" || slices.Contains(ids, p.ID) {
		t.Errorf("the refused request's payment existed: %s", again.Body)
	}
	payWaitStatus(t, c, p.ID, "completed")
	if n := sandbox.Payments(); n != len(ids)+1 {
		t.Errorf("sandbox took %d payments, want %d", n, len(ids)+1)
	}
}

// payOutcomeEvents counts the outcome events (completed or failed) in payment's stream.
func payOutcomeEvents(t *testing.T, srv *testserver.Server, payment string) int {
	t.Helper()
	var n int
	if err := srv.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events
		WHERE stream_id = $1 AND event_type IN ('payment.completed', 'payment.failed')`, payment).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
