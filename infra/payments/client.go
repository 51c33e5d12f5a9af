package payments

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultSquareVersion is the Square-Version header sent when ClientConfig leaves it empty.
const DefaultSquareVersion = "2025-01-23"

// maxIdempotencyKeyLen is Square's limit for payments and refunds.
const maxIdempotencyKeyLen = 45

// maxResponseBytes bounds what the client reads of an answer.
const maxResponseBytes = 1 << 20

// ClientConfig configures a Client. Zero fields take the defaults of setDefaults.
type ClientConfig struct {
	BaseURL       string // e.g. https://connect.squareup.com or the sandbox's http://127.0.0.1:8081
	AccessToken   string // sent as Bearer; required
	SquareVersion string // Square-Version header; default DefaultSquareVersion

	AttemptTimeout time.Duration // per HTTP call; default 10s
	MaxAttempts    int           // per operation, the first included; default 4
	BaseBackoff    time.Duration // first wait between attempts (doubled each time, jittered); default 100ms
	MaxBackoff     time.Duration // cap of one wait; default 2s
	MaxRetryAfter  time.Duration // a longer Retry-After ends the retries; default 10s

	Breaker BreakerConfig

	// HTTPClient sends the requests; default: a client of its own with pooled connections.
	HTTPClient *http.Client
}

func (c *ClientConfig) setDefaults() {
	if c.SquareVersion == "" {
		c.SquareVersion = DefaultSquareVersion
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 10 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 4
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 2 * time.Second
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 10 * time.Second
	}
	c.Breaker.setDefaults()
}

func (c *ClientConfig) validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("payments client: base URL %q is not an http(s) URL", c.BaseURL)
	}
	if c.AccessToken == "" {
		return errors.New("payments client: access token is missing")
	}
	switch {
	case c.AttemptTimeout < 0:
		return errors.New("payments client: attempt timeout must be positive")
	case c.MaxAttempts < 1:
		return errors.New("payments client: max attempts must be at least 1")
	case c.BaseBackoff < 0 || c.MaxBackoff < c.BaseBackoff:
		return errors.New("payments client: backoff must be positive with max backoff >= base backoff")
	case c.MaxRetryAfter < 0:
		return errors.New("payments client: max Retry-After must be positive")
	}
	return c.Breaker.validate()
}

// Client calls a provider that speaks Square's Payments API. It is safe for concurrent use.
type Client struct {
	cfg     ClientConfig
	base    string
	http    *http.Client
	logger  *slog.Logger
	breaker *breaker
}

// NewClient checks cfg and builds a client. logger is required.
func NewClient(cfg ClientConfig, logger *slog.Logger) (*Client, error) {
	if logger == nil {
		return nil, errors.New("payments client: nil logger")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: tr}
	}
	c := &Client{
		cfg:    cfg,
		base:   strings.TrimRight(cfg.BaseURL, "/"),
		http:   hc,
		logger: logger,
	}
	c.breaker = newBreaker(cfg.Breaker, logger)
	return c, nil
}

var _ Provider = (*Client)(nil)

// BreakerState is the breaker's current state: closed, half-open or open.
func (c *Client) BreakerState() string { return c.breaker.cb.State().String() }

// CreatePayment takes a card payment (POST /v2/payments, autocomplete). A decline is not an error: it
// answers a FAILED payment whose FailureCode says why. Errors are *APIError (other answers),
// *NetworkError (no answer after every attempt), *UnavailableError (breaker open) or the caller's
// cancellation.
func (c *Client) CreatePayment(ctx context.Context, req CreatePaymentRequest) (Payment, error) {
	const op = "create payment"
	if err := checkKey(op, req.IdempotencyKey); err != nil {
		return Payment{}, err
	}
	autocomplete := true
	body, err := json.Marshal(createPaymentBody{
		IdempotencyKey: req.IdempotencyKey,
		AmountMoney:    &Money{Amount: req.AmountMinor, Currency: req.Currency},
		SourceID:       req.SourceID,
		Autocomplete:   &autocomplete,
		ReferenceID:    req.ReferenceID,
		Note:           req.Note,
	})
	if err != nil {
		return Payment{}, fmt.Errorf("payments: %s: %w", op, err)
	}
	resp, err := c.execute(ctx, op, http.MethodPost, "/v2/payments", body)
	if err != nil {
		return Payment{}, err
	}
	return decodePayment(op, resp)
}

// GetPayment reads a payment (GET /v2/payments/{id}).
func (c *Client) GetPayment(ctx context.Context, id string) (Payment, error) {
	const op = "get payment"
	if id == "" {
		return Payment{}, fmt.Errorf("payments: %s: empty payment id", op)
	}
	resp, err := c.execute(ctx, op, http.MethodGet, "/v2/payments/"+url.PathEscape(id), nil)
	if err != nil {
		return Payment{}, err
	}
	return decodePayment(op, resp)
}

// Refund refunds part or all of a completed payment (POST /v2/refunds). The refund may answer
// PENDING; the provider's refund.updated webhook (or a later read) tells when it completes.
func (c *Client) Refund(ctx context.Context, req RefundRequest) (Refund, error) {
	const op = "refund payment"
	if err := checkKey(op, req.IdempotencyKey); err != nil {
		return Refund{}, err
	}
	body, err := json.Marshal(refundPaymentBody{
		IdempotencyKey: req.IdempotencyKey,
		AmountMoney:    &Money{Amount: req.AmountMinor, Currency: req.Currency},
		PaymentID:      req.PaymentID,
		Reason:         req.Reason,
	})
	if err != nil {
		return Refund{}, fmt.Errorf("payments: %s: %w", op, err)
	}
	resp, err := c.execute(ctx, op, http.MethodPost, "/v2/refunds", body)
	if err != nil {
		return Refund{}, err
	}
	var rr refundResponse
	if err := json.Unmarshal(resp.body, &rr); err != nil {
		return Refund{}, fmt.Errorf("payments: %s: decode answer: %w", op, err)
	}
	if rr.Refund == nil || rr.Refund.ID == "" {
		return Refund{}, fmt.Errorf("payments: %s: answer %d carries no refund", op, resp.status)
	}
	return *rr.Refund, nil
}

func checkKey(op, key string) error {
	if key == "" || len(key) > maxIdempotencyKeyLen {
		return fmt.Errorf("payments: %s: idempotency key must be 1 to %d characters", op, maxIdempotencyKeyLen)
	}
	return nil
}

func decodePayment(op string, resp *response) (Payment, error) {
	var pr paymentResponse
	if err := json.Unmarshal(resp.body, &pr); err != nil {
		return Payment{}, fmt.Errorf("payments: %s: decode answer: %w", op, err)
	}
	if pr.Payment == nil || pr.Payment.ID == "" {
		return Payment{}, fmt.Errorf("payments: %s: answer %d carries no payment", op, resp.status)
	}
	p := *pr.Payment
	if p.Status == PaymentFailed && len(pr.Errors) > 0 {
		p.FailureCode = pr.Errors[0].Code
	}
	return p, nil
}

// response is one answer of the provider, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// declinedError is a declined payment inside the breaker: the provider works, the card does not.
type declinedError struct{ code string }

func (e *declinedError) Error() string { return "payment declined: " + e.code }

// canceledError is the caller giving up (its context ended): no verdict on the provider.
type canceledError struct{ cause error }

func (e *canceledError) Error() string { return e.cause.Error() }
func (e *canceledError) Unwrap() error { return e.cause }

// execute runs one operation: attempts through the breaker, retrying transient failures with the same
// body (so the same idempotency key) after a backoff or the provider's Retry-After.
func (c *Client) execute(ctx context.Context, op, method, path string, body []byte) (*response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.breaker.cb.Execute(func() (*response, error) {
			return c.attempt(ctx, op, method, path, body)
		})
		c.breaker.count(op, err)
		var declined *declinedError
		var api *APIError
		var canceled *canceledError
		switch {
		case err == nil, errors.As(err, &declined):
			return resp, nil
		case isBreakerRejection(err):
			return nil, c.breaker.unavailable()
		case errors.As(err, &canceled):
			return nil, fmt.Errorf("payments: %s: %w", op, canceled.cause)
		case !IsTransient(err):
			return nil, err
		case attempt >= c.cfg.MaxAttempts:
			return nil, fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		wait := c.backoff(attempt)
		if errors.As(err, &api) && api.RetryAfter > 0 {
			if api.RetryAfter > c.cfg.MaxRetryAfter {
				return nil, fmt.Errorf("provider asks to wait %s: %w", api.RetryAfter, err)
			}
			wait = api.RetryAfter
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, fmt.Errorf("no time left for attempt %d: %w", attempt+1, err)
		}
		c.logger.LogAttrs(ctx, slog.LevelWarn, "payments provider call failed, retrying",
			slog.String("op", op), slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("payments: %s: %w", op, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// backoff is the wait after the attempt-th failure: exponential from BaseBackoff, capped, with jitter
// in its upper half.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BaseBackoff << min(attempt-1, 20)
	if d > c.cfg.MaxBackoff || d <= 0 {
		d = c.cfg.MaxBackoff
	}
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// attempt is one HTTP call, classified for the breaker.
func (c *Client) attempt(ctx context.Context, op, method, path string, body []byte) (*response, error) {
	if err := ctx.Err(); err != nil {
		return nil, &canceledError{cause: context.Cause(ctx)}
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("payments: %s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.AccessToken)
	req.Header.Set("Square-Version", c.cfg.SquareVersion)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, c.noAnswer(ctx, op, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return nil, c.noAnswer(ctx, op, err)
	}
	resp := &response{status: res.StatusCode, header: res.Header, body: data}
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return resp, nil
	case res.StatusCode == http.StatusBadRequest || res.StatusCode == http.StatusPaymentRequired:
		// A declined card: Square answers the FAILED payment beside its errors.
		var pr paymentResponse
		if json.Unmarshal(data, &pr) == nil && pr.Payment != nil && pr.Payment.Status == PaymentFailed {
			code := ""
			if len(pr.Errors) > 0 {
				code = pr.Errors[0].Code
			}
			return resp, &declinedError{code: code}
		}
	}
	api := &APIError{Op: op, StatusCode: res.StatusCode, RetryAfter: parseRetryAfter(res.Header.Get("Retry-After"), time.Now())}
	var er errorResponse
	if json.Unmarshal(data, &er) == nil {
		api.Errors = er.Errors
	}
	return resp, api
}

// noAnswer classifies a failed round trip: the caller's cancellation, or a network error.
func (c *Client) noAnswer(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return &canceledError{cause: context.Cause(ctx)}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = fmt.Errorf("no answer within %s: %w", c.cfg.AttemptTimeout, err)
	}
	return &NetworkError{Op: op, Err: err}
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date; 0 when absent or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
