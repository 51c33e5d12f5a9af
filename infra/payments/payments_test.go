package payments_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"taki/commands"
	"taki/infra/logging"
	"taki/infra/payments"
)

const token = "sandbox-token"

// newSandbox serves a sandbox on loopback for the test.
func newSandbox(t *testing.T, cfg payments.SandboxConfig) (*payments.Sandbox, string) {
	t.Helper()
	cfg.AccessToken = token
	sb, err := payments.NewSandbox(cfg, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	t.Cleanup(func() {
		srv.Close()
		sb.Close()
	})
	return sb, srv.URL
}

// newClient is a client with quick retries and a small breaker; mod adjusts its config.
func newClient(t *testing.T, baseURL string, mod func(*payments.ClientConfig)) *payments.Client {
	t.Helper()
	cfg := payments.ClientConfig{
		BaseURL: baseURL, AccessToken: token,
		AttemptTimeout: 5 * time.Second, MaxAttempts: 4, BaseBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Breaker: payments.BreakerConfig{ConsecutiveFailures: 50, OpenTimeout: time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := payments.NewClient(cfg, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var keySeq struct {
	sync.Mutex
	n int
}

func newKey(t *testing.T) string {
	keySeq.Lock()
	defer keySeq.Unlock()
	keySeq.n++
	k := fmt.Sprintf("%s-%d", t.Name(), keySeq.n)
	if len(k) > 45 {
		k = k[len(k)-45:]
	}
	return k
}

func pay(key, nonce string, amount int64) payments.CreatePaymentRequest {
	return payments.CreatePaymentRequest{IdempotencyKey: key, AmountMinor: amount, Currency: "EUR", SourceID: nonce, Note: "test"}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func apiErr(t *testing.T, err error) *payments.APIError {
	t.Helper()
	var api *payments.APIError
	if !errors.As(err, &api) {
		t.Fatalf("error %v (%T), want *payments.APIError", err, err)
	}
	return api
}

func TestEveryNonce(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{PendingDelay: time.Hour})
	c := newClient(t, url, nil)
	cases := []struct {
		nonce  string
		status payments.PaymentStatus
		code   string
	}{
		{payments.NonceOK, payments.PaymentCompleted, ""},
		{payments.NonceDeclined, payments.PaymentFailed, "GENERIC_DECLINE"},
		{payments.NonceRejectedCVV, payments.PaymentFailed, "CVV_FAILURE"},
		{payments.NonceRejectedPostalCode, payments.PaymentFailed, "ADDRESS_VERIFICATION_FAILURE"},
		{payments.NonceRejectedExpiration, payments.PaymentFailed, "INVALID_EXPIRATION"},
		{payments.NoncePending, payments.PaymentPending, ""},
	}
	for _, tc := range cases {
		key := newKey(t)
		p, err := c.CreatePayment(ctxT(t), pay(key, tc.nonce, 1250))
		if err != nil {
			t.Fatalf("%s: %v", tc.nonce, err)
		}
		if p.Status != tc.status || p.FailureCode != tc.code || p.ID == "" ||
			p.AmountMoney != (payments.Money{Amount: 1250, Currency: "EUR"}) || p.Note != "test" {
			t.Errorf("%s: payment %+v, want status %s code %q", tc.nonce, p, tc.status, tc.code)
		}
		// A decline is an answer: it is not retried.
		if n := len(sb.KeyCalls(key)); n != 1 {
			t.Errorf("%s: %d calls with the key, want 1", tc.nonce, n)
		}
		got, err := c.GetPayment(ctxT(t), p.ID)
		if err != nil || got.ID != p.ID || got.Status != tc.status {
			t.Errorf("%s: GetPayment = %+v, %v", tc.nonce, got, err)
		}
	}

	key := newKey(t)
	_, err := c.CreatePayment(ctxT(t), pay(key, "cnon:card-nonce-unknown", 100))
	api := apiErr(t, err)
	if api.StatusCode != 400 || api.Code() != payments.CodeInvalidCardData || payments.IsTransient(err) {
		t.Errorf("unknown nonce: %v", err)
	}
	if n := len(sb.KeyCalls(key)); n != 1 {
		t.Errorf("unknown nonce: %d calls, want 1 (no retry on 4xx)", n)
	}
	_, err = c.GetPayment(ctxT(t), "nope")
	if api := apiErr(t, err); api.StatusCode != 404 || api.Code() != payments.CodeNotFound {
		t.Errorf("unknown payment: %v", err)
	}
}

func TestWrongTokenIsUnauthorized(t *testing.T) {
	t.Parallel()
	_, url := newSandbox(t, payments.SandboxConfig{})
	c := newClient(t, url, func(cfg *payments.ClientConfig) { cfg.AccessToken = "wrong" })
	_, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 100))
	if api := apiErr(t, err); api.StatusCode != 401 || api.Errors[0].Category != payments.CategoryAuthentication {
		t.Errorf("wrong token: %v", err)
	}
}

func TestIdempotentReplayAndKeyReuse(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{})
	c := newClient(t, url, nil)
	key := newKey(t)
	first, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 500))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 500))
	if err != nil || again.ID != first.ID || again.Status != payments.PaymentCompleted {
		t.Fatalf("replay = %+v, %v; want payment %s", again, err, first.ID)
	}
	_, err = c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 501))
	if api := apiErr(t, err); api.StatusCode != 400 || api.Code() != payments.CodeIdempotencyKeyReused {
		t.Errorf("reuse: %v", err)
	}
	// A declined payment replays as the same decline.
	dkey := newKey(t)
	d1, err1 := c.CreatePayment(ctxT(t), pay(dkey, payments.NonceDeclined, 500))
	d2, err2 := c.CreatePayment(ctxT(t), pay(dkey, payments.NonceDeclined, 500))
	if err1 != nil || err2 != nil || d1.ID != d2.ID || d2.FailureCode != "GENERIC_DECLINE" {
		t.Errorf("declined replay: %+v %v / %+v %v", d1, err1, d2, err2)
	}
	if n := sb.Payments(); n != 2 {
		t.Errorf("%d payments taken, want 2", n)
	}
}

func TestRacingDuplicatesMakeOnePayment(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{Latency: 5 * time.Millisecond})
	c := newClient(t, url, nil)
	key := newKey(t)
	const n = 24
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 700))
			ids[i], errs[i] = p.ID, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("racer %d: id %q err %v, want id %q", i, ids[i], errs[i], ids[0])
		}
	}
	if got := sb.Payments(); got != 1 {
		t.Errorf("%d payments taken, want 1", got)
	}
}

func TestRefundBounds(t *testing.T) {
	t.Parallel()
	_, url := newSandbox(t, payments.SandboxConfig{})
	c := newClient(t, url, nil)
	p, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 1000))
	if err != nil {
		t.Fatal(err)
	}
	refund := func(amount int64) (payments.Refund, error) {
		return c.Refund(ctxT(t), payments.RefundRequest{IdempotencyKey: newKey(t), PaymentID: p.ID, AmountMinor: amount, Currency: "EUR"})
	}
	r, err := refund(600)
	if err != nil || r.Status != payments.RefundCompleted || r.PaymentID != p.ID || r.AmountMoney.Amount != 600 {
		t.Fatalf("refund 600: %+v %v", r, err)
	}
	_, err = refund(401)
	if api := apiErr(t, err); api.StatusCode != 400 || api.Code() != payments.CodeRefundAmountInvalid {
		t.Errorf("refund beyond the rest: %v", err)
	}
	if _, err := refund(400); err != nil {
		t.Fatalf("refund the rest: %v", err)
	}
	got, err := c.GetPayment(ctxT(t), p.ID)
	if err != nil || got.Refunded() != 1000 || len(got.RefundIDs) != 2 {
		t.Errorf("payment after refunds: %+v %v", got, err)
	}
	if _, err := refund(1); apiErr(t, err).Code() != payments.CodeRefundAmountInvalid {
		t.Errorf("refund of a refunded payment: %v", err)
	}
	// A declined payment cannot be refunded; another currency neither.
	d, _ := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceDeclined, 1000))
	_, err = c.Refund(ctxT(t), payments.RefundRequest{IdempotencyKey: newKey(t), PaymentID: d.ID, AmountMinor: 1, Currency: "EUR"})
	if apiErr(t, err).Code() != payments.CodePaymentNotRefundable {
		t.Errorf("refund of a declined payment: %v", err)
	}
	_, err = c.Refund(ctxT(t), payments.RefundRequest{IdempotencyKey: newKey(t), PaymentID: "nope", AmountMinor: 1, Currency: "EUR"})
	if apiErr(t, err).StatusCode != 404 {
		t.Errorf("refund of an unknown payment: %v", err)
	}
}

func TestRacingRefundsNeverExceedThePayment(t *testing.T) {
	t.Parallel()
	// Pending refunds hold their amount: the bound holds before any completes.
	_, url := newSandbox(t, payments.SandboxConfig{RefundDelay: time.Hour})
	c := newClient(t, url, nil)
	p, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 1000))
	if err != nil {
		t.Fatal(err)
	}
	var ok sync.WaitGroup
	var mu sync.Mutex
	succeeded := 0
	for range 12 {
		ok.Go(func() {
			r, err := c.Refund(ctxT(t), payments.RefundRequest{IdempotencyKey: newKey(t), PaymentID: p.ID, AmountMinor: 200, Currency: "EUR"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && r.Status == payments.RefundPending:
				succeeded++
			case err != nil && apiErr(t, err).Code() == payments.CodeRefundAmountInvalid:
			default:
				t.Errorf("refund: %+v %v", r, err)
			}
		})
	}
	ok.Wait()
	if succeeded != 5 {
		t.Errorf("%d refunds of 200 accepted on a payment of 1000, want 5", succeeded)
	}
}

func TestRetriesHonourRetryAfterWithTheSameKey(t *testing.T) {
	t.Parallel()
	for _, f := range []payments.Failure{payments.Fail503, payments.Fail429} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			sb, url := newSandbox(t, payments.SandboxConfig{RetryAfter: time.Second})
			c := newClient(t, url, nil)
			sb.FailNext(1, f)
			key := newKey(t)
			start := time.Now()
			p, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 300))
			took := time.Since(start)
			if err != nil || p.Status != payments.PaymentCompleted {
				t.Fatalf("payment after one %s: %+v %v", f, p, err)
			}
			if took < time.Second {
				t.Errorf("retried after %s, before the Retry-After of 1s", took)
			}
			calls := sb.KeyCalls(key)
			if len(calls) != 2 || calls[0].Injected != f || calls[1].Injected != payments.FailNone {
				t.Errorf("calls %+v, want one %s and one served, both with key %s", calls, f, key)
			}
		})
	}
}

func TestRetryAfterBeyondTheLimitEndsRetries(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{RetryAfter: 3 * time.Second})
	c := newClient(t, url, func(cfg *payments.ClientConfig) { cfg.MaxRetryAfter = time.Second })
	sb.FailNext(1, payments.Fail503)
	key := newKey(t)
	_, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 300))
	if api := apiErr(t, err); api.StatusCode != 503 || api.RetryAfter != 3*time.Second || !payments.IsTransient(err) {
		t.Errorf("error %v, want the 503 with its Retry-After", err)
	}
	if n := len(sb.KeyCalls(key)); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestRetriesOnDroppedConnectionTakeTheMoneyOnce(t *testing.T) {
	t.Parallel()
	for _, f := range []payments.Failure{payments.FailDrop, payments.FailDropAfter, payments.Fail500} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			sb, url := newSandbox(t, payments.SandboxConfig{})
			c := newClient(t, url, nil)
			sb.FailNext(2, f)
			key := newKey(t)
			p, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 300))
			if err != nil || p.Status != payments.PaymentCompleted {
				t.Fatalf("payment after two %s: %+v %v", f, p, err)
			}
			if calls := sb.KeyCalls(key); len(calls) != 3 {
				t.Errorf("calls %+v, want 3 with key %s", calls, key)
			}
			if n := sb.Payments(); n != 1 {
				t.Errorf("%d payments taken, want 1", n)
			}
		})
	}
}

func TestRetriesAreBounded(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{})
	c := newClient(t, url, nil)
	sb.SetFailureRatio(1, payments.Fail503)
	key := newKey(t)
	_, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 300))
	if !payments.IsTransient(err) || apiErr(t, err).StatusCode != 503 {
		t.Errorf("error %v, want a transient 503", err)
	}
	if n := len(sb.KeyCalls(key)); n != 4 {
		t.Errorf("%d calls, want MaxAttempts = 4", n)
	}
	sb.SetFailureRatio(0, payments.FailNone)
	if _, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 300)); err != nil {
		t.Errorf("after the failures stop: %v", err)
	}
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{Latency: 300 * time.Millisecond})
	c := newClient(t, url, func(cfg *payments.ClientConfig) { cfg.AttemptTimeout = 50 * time.Millisecond; cfg.MaxAttempts = 2 })
	key := newKey(t)
	_, err := c.CreatePayment(ctxT(t), pay(key, payments.NonceOK, 300))
	var ne *payments.NetworkError
	if !errors.As(err, &ne) || !payments.IsTransient(err) {
		t.Errorf("error %v, want a *NetworkError", err)
	}
	if n := len(sb.KeyCalls(key)); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

func breakerState(t *testing.T, c *payments.Client) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "taki_payments_breaker_state" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no taki_payments_breaker_state metric")
	return 0
}

func TestCallerCancellationIsNotRetriedNorCounted(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{Latency: 5 * time.Second})
	// One failure would open this breaker.
	c := newClient(t, url, func(cfg *payments.ClientConfig) { cfg.Breaker.ConsecutiveFailures = 1 })
	key := newKey(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.CreatePayment(ctx, pay(key, payments.NonceOK, 300))
		done <- err
	}()
	waitFor(t, "the call to reach the sandbox", func() bool { return len(sb.KeyCalls(key)) == 1 })
	start := time.Now()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("error %v after %s, want context.Canceled at once", err, time.Since(start))
	}
	if n := len(sb.KeyCalls(key)); n != 1 {
		t.Errorf("%d calls, want 1: a cancellation is not retried", n)
	}
	if s := c.BreakerState(); s != "closed" {
		t.Errorf("breaker %s after a cancellation, want closed", s)
	}
	// A caller deadline is the caller's too.
	dctx, dcancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer dcancel()
	if _, err := c.CreatePayment(dctx, pay(newKey(t), payments.NonceOK, 300)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	if s := c.BreakerState(); s != "closed" {
		t.Errorf("breaker %s after a caller deadline, want closed", s)
	}
}

func TestBreakerOpensAnswersAtOnceHalfOpensAndCloses(t *testing.T) {
	t.Parallel()
	sb, url := newSandbox(t, payments.SandboxConfig{})
	const timeout = 400 * time.Millisecond
	c := newClient(t, url, func(cfg *payments.ClientConfig) {
		cfg.MaxAttempts = 1
		cfg.Breaker = payments.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: timeout}
	})
	// Declines count as successes: they never open it.
	for range 5 {
		if p, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceDeclined, 100)); err != nil || p.Status != payments.PaymentFailed {
			t.Fatalf("decline: %+v %v", p, err)
		}
	}
	if s := breakerState(t, c); s != 0 {
		t.Fatalf("breaker state %v after declines, want 0 (closed)", s)
	}
	sb.FailNext(3, payments.Fail500)
	for i := range 3 {
		if _, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 100)); apiErr(t, err).StatusCode != 500 {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	if s := c.BreakerState(); s != "open" || breakerState(t, c) != 2 {
		t.Fatalf("breaker %s after 3 failures, want open (metric 2)", s)
	}
	calls := len(sb.Calls())
	start := time.Now()
	_, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 100))
	took := time.Since(start)
	var un *payments.UnavailableError
	if !errors.As(err, &un) || !errors.Is(err, payments.ErrUnavailable) || !payments.IsTransient(err) {
		t.Fatalf("open breaker: %v, want *UnavailableError", err)
	}
	if un.RetryAfter <= 0 || un.RetryAfter > timeout || un.RetryAfterSeconds() != 1 {
		t.Errorf("RetryAfter %s (%d s), want within (0, %s], 1 s", un.RetryAfter, un.RetryAfterSeconds(), timeout)
	}
	if took > 50*time.Millisecond || len(sb.Calls()) != calls {
		t.Errorf("open breaker took %s and called the provider %d times, want at once and never", took, len(sb.Calls())-calls)
	}

	// Half-open after the timeout; a failing probe opens it again.
	waitFor(t, "half-open", func() bool { return c.BreakerState() == "half-open" })
	if breakerState(t, c) != 1 {
		t.Errorf("metric %v while half-open, want 1", breakerState(t, c))
	}
	sb.FailNext(1, payments.Fail503)
	if _, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 100)); apiErr(t, err).StatusCode != 503 {
		t.Fatalf("failing probe: %v", err)
	}
	if s := c.BreakerState(); s != "open" {
		t.Fatalf("breaker %s after a failing probe, want open", s)
	}
	// Half-open again; a successful probe closes it.
	waitFor(t, "half-open again", func() bool { return c.BreakerState() == "half-open" })
	if p, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 100)); err != nil || p.Status != payments.PaymentCompleted {
		t.Fatalf("probe: %+v %v", p, err)
	}
	if s := c.BreakerState(); s != "closed" || breakerState(t, c) != 0 {
		t.Errorf("breaker %s after a successful probe, want closed", s)
	}
}

// webhookReceiver collects events that arrive with a valid signature; the first failFirst deliveries
// are answered 500.
type webhookReceiver struct {
	mu        sync.Mutex
	url       string
	key       string
	failFirst int
	seen      int
	events    []payments.Event
	bad       int
}

func newReceiver(t *testing.T, key string, failFirst int) *webhookReceiver {
	rc := &webhookReceiver{key: key, failFirst: failFirst}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.seen++
		if rc.seen <= rc.failFirst {
			w.WriteHeader(500)
			return
		}
		if !payments.VerifySignature(rc.key, rc.url, body, r.Header.Get(payments.SignatureHeader)) {
			rc.bad++
			w.WriteHeader(401)
			return
		}
		e, err := payments.ParseEvent(body)
		if err != nil {
			t.Errorf("webhook: %v", err)
		}
		rc.events = append(rc.events, e)
	}))
	t.Cleanup(srv.Close)
	rc.url = srv.URL + "/api/v1/provider-webhooks/square"
	return rc
}

func (rc *webhookReceiver) find(typ, id string) (payments.Event, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, e := range rc.events {
		if e.Type == typ && e.Data.ID == id {
			return e, true
		}
	}
	return payments.Event{}, false
}

func TestPendingNonceCompletesWithASignedWebhook(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, "sig-key", 1) // the first delivery fails: the sandbox retries
	sb, url := newSandbox(t, payments.SandboxConfig{PendingDelay: 50 * time.Millisecond, WebhookURL: rc.url,
		SignatureKey: "sig-key", WebhookBackoff: 10 * time.Millisecond})
	c := newClient(t, url, nil)
	p, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NoncePending, 4200))
	if err != nil || p.Status != payments.PaymentPending {
		t.Fatalf("pending: %+v %v", p, err)
	}
	var e payments.Event
	waitFor(t, "payment.updated", func() (ok bool) { e, ok = rc.find(payments.EventPaymentUpdated, p.ID); return ok })
	if e.MerchantID == "" || e.EventID == "" || e.CreatedAt.IsZero() || e.Data.Type != "payment" ||
		e.Data.Object.Payment.Status != payments.PaymentCompleted || e.Data.Object.Payment.AmountMoney.Amount != 4200 {
		t.Errorf("event %+v", e)
	}
	if got, err := c.GetPayment(ctxT(t), p.ID); err != nil || got.Status != payments.PaymentCompleted {
		t.Errorf("payment after the webhook: %+v %v", got, err)
	}
	// The sandbox records a delivery once it has the receiver's answer, after the receiver took it.
	var ds []payments.Delivery
	waitFor(t, "the second delivery recorded", func() bool { ds = sb.Deliveries(); return len(ds) >= 2 })
	if len(ds) != 2 || ds[0].Status != 500 || ds[1].Status != 200 || ds[0].EventID != ds[1].EventID {
		t.Errorf("deliveries %+v, want a 500 then a 200 of one event", ds)
	}
	if rc.bad != 0 {
		t.Errorf("%d deliveries with a bad signature", rc.bad)
	}
}

func TestRefundCompletesLaterWithWebhooks(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, "sig-key", 0)
	_, url := newSandbox(t, payments.SandboxConfig{RefundDelay: 50 * time.Millisecond, WebhookURL: rc.url, SignatureKey: "sig-key"})
	c := newClient(t, url, nil)
	p, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NonceOK, 900))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Refund(ctxT(t), payments.RefundRequest{IdempotencyKey: newKey(t), PaymentID: p.ID, AmountMinor: 900, Currency: "EUR"})
	if err != nil || r.Status != payments.RefundPending {
		t.Fatalf("refund: %+v %v", r, err)
	}
	var e payments.Event
	waitFor(t, "refund.updated", func() (ok bool) { e, ok = rc.find(payments.EventRefundUpdated, r.ID); return ok })
	if e.Data.Object.Refund.Status != payments.RefundCompleted || e.Data.Object.Refund.PaymentID != p.ID {
		t.Errorf("refund event %+v", e.Data.Object.Refund)
	}
	if got, _ := c.GetPayment(ctxT(t), p.ID); got.Refunded() != 900 {
		t.Errorf("refunded %d, want 900", got.Refunded())
	}
}

func TestCloseStopsPendingWork(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, "k", 0)
	sb, err := payments.NewSandbox(payments.SandboxConfig{PendingDelay: 20 * time.Millisecond, WebhookURL: rc.url, SignatureKey: "k"}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	defer srv.Close()
	c := newClient(t, srv.URL, nil)
	if _, err := c.CreatePayment(ctxT(t), pay(newKey(t), payments.NoncePending, 1)); err != nil {
		t.Fatal(err)
	}
	sb.Close()
	time.Sleep(100 * time.Millisecond) // the completion was due after 20 ms: give it the chance to (wrongly) fire
	if n := len(sb.Deliveries()); n != 0 {
		t.Errorf("%d deliveries after Close", n)
	}
}

func TestVerifySignature(t *testing.T) {
	t.Parallel()
	const key, url = "signature-key", "https://taki.example.com/api/v1/provider-webhooks/square"
	body := []byte(`{"merchant_id":"M","type":"payment.updated","event_id":"e1","data":{"type":"payment","id":"p1"}}`)
	sig := payments.Sign(key, url, body)
	cases := []struct {
		name      string
		key, url  string
		body, sig string
		want      bool
	}{
		{"valid", key, url, string(body), sig, true},
		{"tampered body", key, url, strings.Replace(string(body), "p1", "p2", 1), sig, false},
		{"wrong URL", key, url + "/", string(body), sig, false},
		{"wrong key", "other-key", url, string(body), sig, false},
		{"not base64", key, url, string(body), "%%%", false},
		{"empty signature", key, url, string(body), "", false},
		{"empty key", "", url, string(body), payments.Sign("", url, body), false},
	}
	for _, tc := range cases {
		if got := payments.VerifySignature(tc.key, tc.url, []byte(tc.body), tc.sig); got != tc.want {
			t.Errorf("%s: verified %v, want %v", tc.name, got, tc.want)
		}
	}
	var e payments.Event
	if err := json.Unmarshal(body, &e); err != nil || e.Data.ID != "p1" {
		t.Errorf("event shape: %+v %v", e, err)
	}
	if _, err := payments.ParseEvent(body); err == nil {
		t.Error("ParseEvent accepted a payment event without its payment")
	}
}

func TestConstructorsRefuseBadInput(t *testing.T) {
	t.Parallel()
	good := payments.ClientConfig{BaseURL: "http://127.0.0.1:1", AccessToken: "t"}
	if _, err := payments.NewClient(good, nil); err == nil {
		t.Error("NewClient accepted a nil logger")
	}
	for _, bad := range []payments.ClientConfig{
		{BaseURL: "127.0.0.1:8081", AccessToken: "t"},
		{BaseURL: "http://127.0.0.1:1"},
		{BaseURL: "http://127.0.0.1:1", AccessToken: "t", MaxAttempts: -1},
	} {
		if _, err := payments.NewClient(bad, logging.Discard()); err == nil {
			t.Errorf("NewClient accepted %+v", bad)
		}
	}
	if _, err := payments.NewSandbox(payments.SandboxConfig{}, nil); err == nil {
		t.Error("NewSandbox accepted a nil logger")
	}
	if _, err := payments.NewSandbox(payments.SandboxConfig{WebhookURL: "http://x/hook"}, logging.Discard()); err == nil {
		t.Error("NewSandbox accepted a webhook URL without a signature key")
	}
	c := newClient(t, "http://127.0.0.1:1", nil)
	if _, err := c.CreatePayment(ctxT(t), pay(strings.Repeat("k", 46), payments.NonceOK, 1)); err == nil {
		t.Error("CreatePayment accepted a 46-character key")
	}
}

func TestPaymentOutcome(t *testing.T) {
	for _, tc := range []struct {
		p             payments.Payment
		outcome, code string
	}{
		{payments.Payment{Status: payments.PaymentCompleted}, commands.OutcomeCompleted, ""},
		// Authorised, not captured yet: the capture's COMPLETED decides it.
		{payments.Payment{Status: payments.PaymentApproved}, commands.OutcomePending, ""},
		{payments.Payment{Status: payments.PaymentPending}, commands.OutcomePending, ""},
		{payments.Payment{Status: payments.PaymentFailed, FailureCode: "CARD_DECLINED"}, commands.OutcomeFailed, "CARD_DECLINED"},
		{payments.Payment{Status: payments.PaymentCanceled}, commands.OutcomeFailed, "CANCELED"},
		{payments.Payment{}, "", ""},
	} {
		if o, c := tc.p.Outcome(); o != tc.outcome || c != tc.code {
			t.Errorf("%s (failure code %q): outcome %q, %q; want %q, %q", tc.p.Status, tc.p.FailureCode, o, c, tc.outcome, tc.code)
		}
	}
}
