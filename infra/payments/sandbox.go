package payments

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Square's sandbox test nonces the sandbox knows.
const (
	NonceOK                 = "cnon:card-nonce-ok"
	NonceDeclined           = "cnon:card-nonce-declined"
	NonceRejectedCVV        = "cnon:card-nonce-rejected-cvv"
	NonceRejectedPostalCode = "cnon:card-nonce-rejected-postalcode"
	NonceRejectedExpiration = "cnon:card-nonce-rejected-expiration"
	NoncePending            = "cnon:card-nonce-pending"
)

// declines maps a declining nonce to its error code.
var declines = map[string]string{
	NonceDeclined:           CodeGenericDecline,
	NonceRejectedCVV:        CodeCVVFailure,
	NonceRejectedPostalCode: CodeAddressVerification,
	NonceRejectedExpiration: CodeInvalidExpiration,
}

// Failure is a fault the sandbox injects in place of an answer.
type Failure int

// The faults. FailDropAfter is the dangerous one: the payment is taken, the answer is lost.
const (
	FailNone      Failure = iota
	Fail500               // 500 INTERNAL_SERVER_ERROR, nothing done
	Fail503               // 503 SERVICE_UNAVAILABLE (+ Retry-After when set), nothing done
	Fail429               // 429 RATE_LIMITED (+ Retry-After when set), nothing done
	FailDrop              // the connection closes before anything is done
	FailDropAfter         // the request takes effect, then the connection closes without an answer
)

var failureNames = map[Failure]string{
	FailNone: "none", Fail500: "500", Fail503: "503", Fail429: "429", FailDrop: "drop", FailDropAfter: "drop-after",
}

func (f Failure) String() string { return failureNames[f] }

// ParseFailure reads a Failure by its name: 500, 503, 429, drop, drop-after or none.
func ParseFailure(s string) (Failure, error) {
	for f, n := range failureNames {
		if n == s {
			return f, nil
		}
	}
	return FailNone, fmt.Errorf("failure %q is not one of 500, 503, 429, drop, drop-after, none", s)
}

// SandboxConfig configures a Sandbox. Zero fields take the defaults of setDefaults.
type SandboxConfig struct {
	// AccessToken, when set, must come as the Bearer token of every request; when empty any Bearer
	// token is accepted (a missing one is still 401).
	AccessToken string
	MerchantID  string // default "TAKI-SANDBOX-MERCHANT"
	LocationID  string // default "TAKI-SANDBOX-LOCATION"

	PendingDelay time.Duration // how long cnon:card-nonce-pending stays PENDING; default 500ms
	RefundDelay  time.Duration // how long a refund stays PENDING; 0 completes it at once

	// WebhookURL receives the signed events; empty sends none. SignatureKey is required with it.
	WebhookURL      string
	SignatureKey    string
	WebhookAttempts int           // deliveries of one event until a 2xx; default 5
	WebhookBackoff  time.Duration // first wait between deliveries, doubled each time; default 200ms
	WebhookTimeout  time.Duration // per delivery; default 5s

	Latency    time.Duration // added before every answer; settable later with SetLatency
	RetryAfter time.Duration // Retry-After of injected 429 and 503 (whole seconds); 0 sends none

	// HTTPClient delivers webhooks; default: a client of its own.
	HTTPClient *http.Client
}

func (c *SandboxConfig) setDefaults() {
	if c.MerchantID == "" {
		c.MerchantID = "TAKI-SANDBOX-MERCHANT"
	}
	if c.LocationID == "" {
		c.LocationID = "TAKI-SANDBOX-LOCATION"
	}
	if c.PendingDelay == 0 {
		c.PendingDelay = 500 * time.Millisecond
	}
	if c.WebhookAttempts == 0 {
		c.WebhookAttempts = 5
	}
	if c.WebhookBackoff == 0 {
		c.WebhookBackoff = 200 * time.Millisecond
	}
	if c.WebhookTimeout == 0 {
		c.WebhookTimeout = 5 * time.Second
	}
}

func (c *SandboxConfig) validate() error {
	if c.PendingDelay < 0 || c.RefundDelay < 0 || c.Latency < 0 || c.RetryAfter < 0 ||
		c.WebhookBackoff < 0 || c.WebhookTimeout < 0 {
		return errors.New("payments sandbox: delays must not be negative")
	}
	if c.WebhookAttempts < 1 {
		return errors.New("payments sandbox: webhook attempts must be at least 1")
	}
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("payments sandbox: webhook URL %q is not an absolute http(s) URL", c.WebhookURL)
		}
		if c.SignatureKey == "" {
			return errors.New("payments sandbox: a webhook URL needs a signature key")
		}
	}
	return nil
}

// Call is one request the sandbox received, in arrival order.
type Call struct {
	Method         string
	Path           string
	IdempotencyKey string
	Injected       Failure // the fault answered instead, FailNone when it was served
}

// Delivery is one attempt to deliver a webhook event.
type Delivery struct {
	EventID string
	Type    string
	Attempt int
	Status  int   // the receiver's status; 0 when it did not answer
	Err     error // why there was no answer
}

// Sandbox is an in-memory provider that speaks Square's Payments API. It is an http.Handler; Serve
// runs it on a listener. Safe for concurrent use; Close stops its timers and pending webhooks.
type Sandbox struct {
	cfg    SandboxConfig
	logger *slog.Logger
	httpc  *http.Client
	mux    *http.ServeMux

	ctx    context.Context // ends on Close: timers, webhook deliveries
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	payments   map[string]*Payment
	failures   map[string]string // payment id → decline code
	refunds    map[string]*Refund
	reserved   map[string]int64 // payment id → amount of its refunds not yet completed
	idem       map[string]idemEntry
	timers     map[*time.Timer]struct{}
	calls      []Call
	deliveries []Delivery
	latency    time.Duration
	retryAfter time.Duration
	failNext   []Failure
	failRatio  float64
	ratioMode  Failure
}

type idemEntry struct {
	fingerprint string
	objectID    string
}

// NewSandbox builds a sandbox. logger is required.
func NewSandbox(cfg SandboxConfig, logger *slog.Logger) (*Sandbox, error) {
	if logger == nil {
		return nil, errors.New("payments sandbox: nil logger")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sandbox{
		cfg: cfg, logger: logger, httpc: hc, ctx: ctx, cancel: cancel,
		payments: map[string]*Payment{}, failures: map[string]string{}, refunds: map[string]*Refund{},
		reserved: map[string]int64{}, idem: map[string]idemEntry{}, timers: map[*time.Timer]struct{}{},
		latency: cfg.Latency, retryAfter: cfg.RetryAfter,
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /v2/payments", s.handle(s.createPayment))
	s.mux.HandleFunc("GET /v2/payments/{id}", s.handle(s.getPayment))
	s.mux.HandleFunc("POST /v2/refunds", s.handle(s.refundPayment))
	s.mux.HandleFunc("GET /v2/refunds/{id}", s.handle(s.getRefund))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, errorResponse{Errors: []ErrorDetail{{Category: CategoryInvalidRequest, Code: CodeNotFound, Detail: "no such endpoint"}}})
	})
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve answers on ln until ctx ends, then shuts down gracefully (at most 5 s) and closes the sandbox.
func (s *Sandbox) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("payments sandbox: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	s.Close()
	if err != nil {
		return fmt.Errorf("payments sandbox: shutdown: %w", err)
	}
	return nil
}

// Close stops the pending-payment and refund timers and the webhook deliveries, and waits for them.
func (s *Sandbox) Close() {
	s.mu.Lock()
	s.closed = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// SetLatency sets the delay added before every answer.
func (s *Sandbox) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetRetryAfter sets the Retry-After of injected 429 and 503 answers (0: none).
func (s *Sandbox) SetRetryAfter(d time.Duration) {
	s.mu.Lock()
	s.retryAfter = d
	s.mu.Unlock()
}

// FailNext answers the next n requests with f instead of serving them (after those queued before).
func (s *Sandbox) FailNext(n int, f Failure) {
	s.mu.Lock()
	for range n {
		s.failNext = append(s.failNext, f)
	}
	s.mu.Unlock()
}

// SetFailureRatio answers that share (0 to 1) of the requests with f; 0 stops it. Queued FailNext
// faults come first.
func (s *Sandbox) SetFailureRatio(ratio float64, f Failure) {
	s.mu.Lock()
	s.failRatio, s.ratioMode = min(max(ratio, 0), 1), f
	s.mu.Unlock()
}

// Calls lists the requests received so far.
func (s *Sandbox) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// KeyCalls lists the requests that carried idempotency key key.
func (s *Sandbox) KeyCalls(key string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.IdempotencyKey == key {
			out = append(out, c)
		}
	}
	return out
}

// Payments counts the payments taken (of every status).
func (s *Sandbox) Payments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.payments)
}

// Deliveries lists the webhook delivery attempts so far.
func (s *Sandbox) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}

// answer is what an endpoint decided: a status and a JSON body.
type answer struct {
	status int
	body   any
}

func apiError(status int, category, code, detail string) answer {
	return answer{status, errorResponse{Errors: []ErrorDetail{{Category: category, Code: code, Detail: detail}}}}
}

// handle wraps an endpoint with latency, call recording, fault injection and authentication.
func (s *Sandbox) handle(endpoint func(r *http.Request, body []byte) answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxResponseBytes))
		if err != nil {
			a := apiError(http.StatusRequestEntityTooLarge, CategoryInvalidRequest, CodeRequestEntityTooLarge, err.Error())
			writeJSON(w, a.status, a.body)
			return
		}
		var keyed struct {
			IdempotencyKey string `json:"idempotency_key"`
		}
		_ = json.Unmarshal(body, &keyed)

		s.mu.Lock()
		latency := s.latency
		fault := FailNone
		if len(s.failNext) > 0 {
			fault, s.failNext = s.failNext[0], s.failNext[1:]
		} else if s.failRatio > 0 && mrand.Float64() < s.failRatio {
			fault = s.ratioMode
		}
		retryAfter := s.retryAfter
		s.calls = keepLast(append(s.calls, Call{Method: r.Method, Path: r.URL.Path, IdempotencyKey: keyed.IdempotencyKey, Injected: fault}))
		s.mu.Unlock()

		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-r.Context().Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if retryAfter > 0 && (fault == Fail429 || fault == Fail503) {
			w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
		}
		switch fault {
		case Fail500:
			a := apiError(http.StatusInternalServerError, CategoryAPI, CodeInternalServerError, "injected failure")
			writeJSON(w, a.status, a.body)
			return
		case Fail503:
			a := apiError(http.StatusServiceUnavailable, CategoryAPI, CodeServiceUnavailable, "injected failure")
			writeJSON(w, a.status, a.body)
			return
		case Fail429:
			a := apiError(http.StatusTooManyRequests, CategoryRateLimit, CodeRateLimited, "injected failure")
			writeJSON(w, a.status, a.body)
			return
		case FailDrop:
			dropConnection(w)
			return
		}
		a := s.authenticate(r)
		if a.status == 0 {
			a = endpoint(r, body)
		}
		if fault == FailDropAfter {
			dropConnection(w)
			return
		}
		writeJSON(w, a.status, a.body)
	}
}

func (s *Sandbox) authenticate(r *http.Request) answer {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" || (s.cfg.AccessToken != "" && token != s.cfg.AccessToken) {
		return apiError(http.StatusUnauthorized, CategoryAuthentication, CodeUnauthorized, "the access token is missing or wrong")
	}
	return answer{}
}

// dropConnection closes the connection without an answer.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errors":[{"category":"API_ERROR","code":"INTERNAL_SERVER_ERROR"}]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)

func checkMoney(m *Money) (answer, bool) {
	switch {
	case m == nil:
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeMissingRequiredParam, "amount_money is required"), false
	case m.Amount < 1:
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeInvalidValue, "amount_money.amount must be at least 1"), false
	case !currencyRE.MatchString(m.Currency):
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeInvalidValue, "amount_money.currency must be an ISO 4217 code"), false
	}
	return answer{}, true
}

func checkIdempotencyKey(k string) (answer, bool) {
	if k == "" {
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeMissingRequiredParam, "idempotency_key is required"), false
	}
	if len(k) > maxIdempotencyKeyLen {
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeValueTooLong, "idempotency_key is longer than 45 characters"), false
	}
	return answer{}, true
}

func (s *Sandbox) createPayment(_ *http.Request, body []byte) answer {
	var req createPaymentBody
	if err := json.Unmarshal(body, &req); err != nil {
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeBadRequest, "malformed JSON: "+err.Error())
	}
	if a, ok := checkIdempotencyKey(req.IdempotencyKey); !ok {
		return a
	}
	if a, ok := checkMoney(req.AmountMoney); !ok {
		return a
	}
	if req.SourceID == "" {
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeMissingRequiredParam, "source_id is required")
	}
	fp, _ := json.Marshal(req)
	key := "payment\x00" + req.IdempotencyKey

	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.idem[key]; ok {
		if e.fingerprint != string(fp) {
			return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeIdempotencyKeyReused,
				"the idempotency key was used before with another request")
		}
		return s.paymentAnswer(e.objectID)
	}
	code, declined := declines[req.SourceID]
	if !declined && req.SourceID != NonceOK && req.SourceID != NoncePending {
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeInvalidCardData,
			fmt.Sprintf("source_id %q is not a sandbox test nonce", req.SourceID))
	}
	now := time.Now().UTC()
	p := &Payment{
		ID: newID(), AmountMoney: *req.AmountMoney, TotalMoney: *req.AmountMoney, SourceType: "CARD",
		LocationID: s.cfg.LocationID, ReferenceID: req.ReferenceID, Note: req.Note, CreatedAt: now, UpdatedAt: now,
		VersionToken: newID(),
	}
	p.CardDetails = &CardDetails{}
	p.CardDetails.Card.CardBrand, p.CardDetails.Card.Last4 = "VISA", "1111"
	switch {
	case declined:
		p.Status, p.CardDetails.Status = PaymentFailed, "FAILED"
		s.failures[p.ID] = code
	case req.Autocomplete != nil && !*req.Autocomplete:
		p.Status, p.CardDetails.Status = PaymentApproved, "AUTHORIZED"
	case req.SourceID == NoncePending:
		p.Status, p.CardDetails.Status = PaymentPending, "AUTHORIZED"
		s.afterLocked(s.cfg.PendingDelay, func() { s.completePending(p.ID) })
	default:
		p.Status, p.CardDetails.Status = PaymentCompleted, "CAPTURED"
	}
	s.payments[p.ID] = p
	s.idem[key] = idemEntry{fingerprint: string(fp), objectID: p.ID}
	return s.paymentAnswer(p.ID)
}

// paymentAnswer renders a payment as Square does: 200, or 402 with its errors when it was declined.
func (s *Sandbox) paymentAnswer(id string) answer {
	p := copyPayment(s.payments[id])
	if code, ok := s.failures[id]; ok {
		return answer{http.StatusPaymentRequired, paymentResponse{Payment: p, Errors: []ErrorDetail{{
			Category: CategoryPaymentMethod, Code: code, Detail: fmt.Sprintf("Authorization error: '%s'", code)}}}}
	}
	return answer{http.StatusOK, paymentResponse{Payment: p}}
}

func (s *Sandbox) completePending(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.payments[id]
	if s.closed || p == nil || p.Status != PaymentPending {
		return
	}
	p.Status, p.CardDetails.Status = PaymentCompleted, "CAPTURED"
	p.UpdatedAt, p.VersionToken = time.Now().UTC(), newID()
	s.emitLocked(EventPaymentUpdated, "payment", id, EventObject{Payment: copyPayment(p)})
}

func copyPayment(p *Payment) *Payment {
	c := *p
	c.RefundIDs = append([]string(nil), p.RefundIDs...)
	if p.RefundedMoney != nil {
		m := *p.RefundedMoney
		c.RefundedMoney = &m
	}
	if p.CardDetails != nil {
		d := *p.CardDetails
		c.CardDetails = &d
	}
	return &c
}

func (s *Sandbox) getPayment(r *http.Request, _ []byte) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := r.PathValue("id")
	if _, ok := s.payments[id]; !ok {
		return apiError(http.StatusNotFound, CategoryInvalidRequest, CodeNotFound, "no payment "+id)
	}
	a := s.paymentAnswer(id)
	a.status = http.StatusOK // reading a declined payment is not itself declined
	if pr, ok := a.body.(paymentResponse); ok {
		pr.Errors = nil
		a.body = pr
	}
	return a
}

func (s *Sandbox) refundPayment(_ *http.Request, body []byte) answer {
	var req refundPaymentBody
	if err := json.Unmarshal(body, &req); err != nil {
		return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeBadRequest, "malformed JSON: "+err.Error())
	}
	if a, ok := checkIdempotencyKey(req.IdempotencyKey); !ok {
		return a
	}
	if a, ok := checkMoney(req.AmountMoney); !ok {
		return a
	}
	fp, _ := json.Marshal(req)
	key := "refund\x00" + req.IdempotencyKey

	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.idem[key]; ok {
		if e.fingerprint != string(fp) {
			return apiError(http.StatusBadRequest, CategoryInvalidRequest, CodeIdempotencyKeyReused,
				"the idempotency key was used before with another request")
		}
		rf := *s.refunds[e.objectID]
		return answer{http.StatusOK, refundResponse{Refund: &rf}}
	}
	p := s.payments[req.PaymentID]
	switch {
	case p == nil:
		return apiError(http.StatusNotFound, CategoryInvalidRequest, CodeNotFound, "no payment "+req.PaymentID)
	case p.Status != PaymentCompleted:
		return apiError(http.StatusBadRequest, CategoryRefund, CodePaymentNotRefundable,
			fmt.Sprintf("payment %s is %s, not COMPLETED", p.ID, p.Status))
	case req.AmountMoney.Currency != p.AmountMoney.Currency:
		return apiError(http.StatusBadRequest, CategoryRefund, CodeCurrencyMismatch,
			fmt.Sprintf("payment is in %s", p.AmountMoney.Currency))
	}
	if left := p.AmountMoney.Amount - p.Refunded() - s.reserved[p.ID]; req.AmountMoney.Amount > left {
		return apiError(http.StatusBadRequest, CategoryRefund, CodeRefundAmountInvalid,
			fmt.Sprintf("the refund of %d exceeds the %d left to refund", req.AmountMoney.Amount, left))
	}
	now := time.Now().UTC()
	rf := &Refund{ID: newID(), Status: RefundPending, AmountMoney: *req.AmountMoney, PaymentID: p.ID,
		LocationID: s.cfg.LocationID, Reason: req.Reason, CreatedAt: now, UpdatedAt: now}
	s.refunds[rf.ID] = rf
	s.reserved[p.ID] += rf.AmountMoney.Amount
	p.RefundIDs = append(p.RefundIDs, rf.ID)
	s.idem[key] = idemEntry{fingerprint: string(fp), objectID: rf.ID}
	if s.cfg.RefundDelay == 0 {
		s.completeRefundLocked(rf)
	} else {
		s.afterLocked(s.cfg.RefundDelay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed {
				s.completeRefundLocked(rf)
			}
		})
	}
	out := *rf
	return answer{http.StatusOK, refundResponse{Refund: &out}}
}

func (s *Sandbox) completeRefundLocked(rf *Refund) {
	if rf.Status != RefundPending {
		return
	}
	p := s.payments[rf.PaymentID]
	now := time.Now().UTC()
	rf.Status, rf.UpdatedAt = RefundCompleted, now
	s.reserved[p.ID] -= rf.AmountMoney.Amount
	p.RefundedMoney = &Money{Amount: p.Refunded() + rf.AmountMoney.Amount, Currency: p.AmountMoney.Currency}
	p.UpdatedAt, p.VersionToken = now, newID()
	out := *rf
	s.emitLocked(EventRefundUpdated, "refund", rf.ID, EventObject{Refund: &out})
	s.emitLocked(EventPaymentUpdated, "payment", p.ID, EventObject{Payment: copyPayment(p)})
}

func (s *Sandbox) getRefund(r *http.Request, _ []byte) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf, ok := s.refunds[r.PathValue("id")]
	if !ok {
		return apiError(http.StatusNotFound, CategoryInvalidRequest, CodeNotFound, "no refund "+r.PathValue("id"))
	}
	out := *rf
	return answer{http.StatusOK, refundResponse{Refund: &out}}
}

// afterLocked runs f after d unless the sandbox closes first. s.mu is held; a fired timer forgets
// itself (taking s.mu, so only once afterLocked's caller released it).
func (s *Sandbox) afterLocked(d time.Duration, f func()) {
	if s.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		f()
		s.mu.Lock()
		delete(s.timers, t)
		s.mu.Unlock()
	})
	s.timers[t] = struct{}{}
}

// inspected (up to twice it) bounds what the sandbox keeps for inspection (Calls, Deliveries): it runs inside every
// `taki serve` by default, for as long as the server runs.
const inspected = 10000

// keepLast drops all but the last inspected entries of list once it holds twice that many, so the
// copy happens once per inspected appends, not on each.
func keepLast[T any](list []T) []T {
	if len(list) < 2*inspected {
		return list
	}
	return append(list[:0:0], list[len(list)-inspected:]...)
}

// emitLocked sends a signed webhook event in the background, retrying non-2xx answers. s.mu is held.
func (s *Sandbox) emitLocked(typ, objType, id string, obj EventObject) {
	if s.closed || s.cfg.WebhookURL == "" {
		return
	}
	eventID := newID()
	body, err := json.Marshal(Event{MerchantID: s.cfg.MerchantID, Type: typ, EventID: eventID, CreatedAt: time.Now().UTC(),
		Data: EventData{Type: objType, ID: id, Object: obj}})
	if err != nil {
		s.logger.Error("payments sandbox: encode webhook", "error", err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliver(eventID, typ, body)
	}()
}

func (s *Sandbox) deliver(eventID, typ string, body []byte) {
	sig := Sign(s.cfg.SignatureKey, s.cfg.WebhookURL, body)
	wait := s.cfg.WebhookBackoff
	for attempt := 1; attempt <= s.cfg.WebhookAttempts; attempt++ {
		d := Delivery{EventID: eventID, Type: typ, Attempt: attempt}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.WebhookTimeout)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.WebhookURL, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(SignatureHeader, sig)
			var res *http.Response
			if res, err = s.httpc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
				res.Body.Close()
				d.Status = res.StatusCode
			}
		}
		cancel()
		d.Err = err
		s.mu.Lock()
		s.deliveries = keepLast(append(s.deliveries, d))
		s.mu.Unlock()
		if err == nil && d.Status >= 200 && d.Status < 300 {
			return
		}
		if s.ctx.Err() != nil {
			return
		}
		s.logger.Warn("payments sandbox: webhook not accepted", "event_id", eventID, "type", typ, "attempt", attempt,
			"status", d.Status, "error", err)
		if attempt == s.cfg.WebhookAttempts {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID is a random Square-like object id.
func newID() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)
}
