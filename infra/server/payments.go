package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"taki/commands"
	"taki/events"
	"taki/handlers"
	"taki/infra/bus"
	"taki/infra/config"
	httpapi "taki/infra/http"
	"taki/infra/payments"
	"taki/infra/postgres"
	"taki/queries"
)

// PaymentsOptions tune the payments provider for tests and tools.
type PaymentsOptions struct {
	// Client edits the provider client's configuration last (tests shorten the breaker's timeout).
	Client func(*payments.ClientConfig)
	// Sandbox edits the in-process sandbox's configuration last (sandbox provider only).
	Sandbox func(*payments.SandboxConfig)
	// SettleAfter is how long a payment or refund may stay pending at the provider, its webhook not
	// come, before the process manager asks the provider; 0 keeps the default (10s).
	SettleAfter time.Duration
}

// sandboxWebhookURL is the notification URL the in-process sandbox signs its webhooks for when
// TAKI_SQUARE_WEBHOOK_URL is not set; it delivers them to this instance's router directly.
const sandboxWebhookURL = "http://taki.sandbox.invalid/api/v1/provider-webhooks/square"

// paymentsRuntime is the payments side of a server: the provider client, the in-process sandbox
// (sandbox provider), the process manager's runner and what the webhook endpoint checks.
type paymentsRuntime struct {
	client    *payments.Client
	sandbox   *payments.Sandbox
	sandboxLn net.Listener
	runner    *postgres.ProcessRunner
	webhook   httpapi.SquareWebhook
	router    atomic.Pointer[http.Handler]
	closeOnce sync.Once
}

// wirePayments builds the provider client (and the sandbox it talks to in sandbox mode), registers
// the payment commands and the client's metrics, and prepares the process manager.
func wirePayments(cfg config.Config, logger *slog.Logger, pool *pgxpool.Pool, store *postgres.EventStore, notifier *postgres.Notifier,
	b *bus.Bus, aggregates *handlers.Store, reg prometheus.Registerer, opts PaymentsOptions, now func() time.Time) (*paymentsRuntime, error) {
	rt := &paymentsRuntime{webhook: httpapi.SquareWebhook{SignatureKey: cfg.SquareWebhookSignatureKey, URL: cfg.SquareWebhookURL}}
	clientCfg := payments.ClientConfig{BaseURL: cfg.SquareBaseURL, AccessToken: cfg.SquareAccessToken}
	if cfg.PaymentsProvider == "sandbox" {
		if err := rt.startSandbox(logger, opts); err != nil {
			return nil, err
		}
		clientCfg.BaseURL = "http://" + rt.sandboxLn.Addr().String()
		if clientCfg.AccessToken == "" {
			clientCfg.AccessToken = "taki-sandbox-token"
		}
	} else if rt.webhook.SignatureKey == "" || rt.webhook.URL == "" {
		logger.Warn("TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY and TAKI_SQUARE_WEBHOOK_URL are not set: provider webhooks are refused and pending payments are settled by asking the provider")
	}
	if opts.Client != nil {
		opts.Client(&clientCfg)
	}
	client, err := payments.NewClient(clientCfg, logger)
	if err != nil {
		rt.close()
		return nil, err
	}
	rt.client = client
	if err := reg.Register(client); err != nil {
		rt.close()
		return nil, err
	}
	cmds, err := handlers.NewPaymentCommands(aggregates, store, providerAvailability{client}, now)
	if err != nil {
		rt.close()
		return nil, err
	}
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.RequestPaymentHandler{PaymentCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.RequestRefundHandler{PaymentCommands: cmds}))
	bus.RegisterCommand(b, handlers.RecordPaymentOutcomeHandler{PaymentCommands: cmds})
	bus.RegisterCommand(b, handlers.RecordRefundOutcomeHandler{PaymentCommands: cmds})

	process, err := handlers.NewPaymentProcess(aggregates, gateway{client}, outcomeRecorder{b}, logger, handlers.PaymentProcessConfig{
		SettleAfter: opts.SettleAfter,
		Unsettled:   func(ctx context.Context) ([]uuid.UUID, error) { return unsettledPayments(ctx, pool) },
	})
	if err != nil {
		rt.close()
		return nil, err
	}
	rt.runner, err = postgres.NewProcessRunner(pool, store, notifier, postgres.ProcessConfig{
		Name: "payments", Types: handlers.PaymentProcessEvents, Handle: process.Handle, Lead: process.Lead, Logger: logger,
	})
	if err != nil {
		rt.close()
		return nil, err
	}
	return rt, nil
}

// unsettledPayments lists the payments whose log shows work the provider has not finished: pending
// at the provider with no decision after it, or a refund requested and not decided. One scan of the
// log's payment events, when an instance begins to lead the process manager.
func unsettledPayments(ctx context.Context, pool *pgxpool.Pool) ([]uuid.UUID, error) {
	rows, err := pool.Query(ctx, `SELECT DISTINCT e.stream_id FROM events e
		WHERE e.stream_type = $1 AND (
			(e.event_type = $2 AND NOT EXISTS (SELECT 1 FROM events d
				WHERE d.stream_id = e.stream_id AND d.event_type IN ($3, $4)))
			OR (e.event_type = $5 AND NOT EXISTS (SELECT 1 FROM events d
				WHERE d.stream_id = e.stream_id AND d.event_type IN ($6, $7)
					AND d.payload->>'refund_id' = e.payload->>'refund_id')))`,
		events.StreamPayment,
		events.PaymentPending{}.EventType(), events.PaymentCompleted{}.EventType(), events.PaymentFailed{}.EventType(),
		events.RefundRequested{}.EventType(), events.RefundCompleted{}.EventType(), events.RefundFailed{}.EventType())
	if err != nil {
		return nil, fmt.Errorf("list unsettled payments: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("list unsettled payments: %w", err)
	}
	return ids, nil
}

// startSandbox binds the sandbox's loopback listener and builds it; run serves it.
func (rt *paymentsRuntime) startSandbox(logger *slog.Logger, opts PaymentsOptions) error {
	if rt.webhook.SignatureKey == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		rt.webhook.SignatureKey = hex.EncodeToString(key)
	}
	sc := payments.SandboxConfig{SignatureKey: rt.webhook.SignatureKey, WebhookURL: rt.webhook.URL}
	if sc.WebhookURL == "" {
		// Delivered to this instance's own router: its listener is not known yet.
		sc.WebhookURL = sandboxWebhookURL
		rt.webhook.URL = sandboxWebhookURL
		sc.HTTPClient = &http.Client{Transport: inProcess{rt: rt}}
	}
	if opts.Sandbox != nil {
		opts.Sandbox(&sc)
		rt.webhook.SignatureKey, rt.webhook.URL = sc.SignatureKey, sc.WebhookURL
	}
	sandbox, err := payments.NewSandbox(sc, logger.With(slog.String("component", "payments-sandbox")))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		sandbox.Close()
		return fmt.Errorf("payments sandbox: %w", err)
	}
	rt.sandbox, rt.sandboxLn = sandbox, ln
	return nil
}

// setRouter is where the sandbox's webhooks go when no webhook URL is configured.
func (rt *paymentsRuntime) setRouter(h http.Handler) { rt.router.Store(&h) }

// run serves the sandbox and runs the process manager until ctx ends.
func (rt *paymentsRuntime) run(ctx context.Context, logger *slog.Logger) {
	var wg sync.WaitGroup
	if rt.sandbox != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rt.sandbox.Serve(ctx, rt.sandboxLn); err != nil && ctx.Err() == nil {
				logger.Error("payments sandbox stopped", slog.String("err", err.Error()))
			}
		}()
	}
	rt.runner.Run(ctx)
	wg.Wait()
}

// close releases the sandbox when run never served it.
func (rt *paymentsRuntime) close() {
	rt.closeOnce.Do(func() {
		if rt.sandbox != nil {
			rt.sandbox.Close()
			_ = rt.sandboxLn.Close()
		}
	})
}

// PaymentsSandbox is the in-process sandbox provider, or nil when the provider is Square.
func (s *Server) PaymentsSandbox() *payments.Sandbox { return s.payments.sandbox }

// PaymentsClient is the provider client.
func (s *Server) PaymentsClient() *payments.Client { return s.payments.client }

// inProcess delivers the sandbox's webhooks to the router without a network hop.
type inProcess struct{ rt *paymentsRuntime }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	h := t.rt.router.Load()
	if h == nil {
		return nil, errors.New("payments sandbox: the router is not ready")
	}
	rec := httptest.NewRecorder()
	(*h).ServeHTTP(rec, req)
	return rec.Result(), nil
}

// providerAvailability reports the breaker's state to the payment commands.
type providerAvailability struct{ c *payments.Client }

func (p providerAvailability) ProviderUnavailable() (time.Duration, bool) {
	if u := p.c.Unavailable(); u != nil {
		return time.Duration(u.RetryAfterSeconds()) * time.Second, true
	}
	return 0, false
}

// gateway adapts the provider client to the process manager.
type gateway struct{ c *payments.Client }

func (g gateway) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var unavailable *payments.UnavailableError
	var api *payments.APIError
	switch {
	case errors.As(err, &unavailable):
		return &handlers.ProviderRetryError{Err: err, After: unavailable.RetryAfter}
	case errors.As(err, &api) && (api.StatusCode == http.StatusUnauthorized || api.StatusCode == http.StatusForbidden):
		// Our credentials, not the payment, are wrong: hold the payment until an operator fixes
		// them rather than fail it.
		return &handlers.ProviderRetryError{Err: err, After: time.Minute}
	case errors.As(err, &api) && !api.Transient():
		return nil // a decision: the caller records it as failed
	case errors.As(err, &api):
		return &handlers.ProviderRetryError{Err: err, After: api.RetryAfter}
	}
	return &handlers.ProviderRetryError{Err: err}
}

func apiCode(err error) string {
	var api *payments.APIError
	if errors.As(err, &api) && api.Code() != "" {
		return api.Code()
	}
	return "PROVIDER_ERROR"
}

func (g gateway) Charge(ctx context.Context, key string, amount int64, currency, sourceID, reference, note string) (handlers.ProviderDecision, error) {
	p, err := g.c.CreatePayment(ctx, payments.CreatePaymentRequest{
		IdempotencyKey: key, AmountMinor: amount, Currency: currency, SourceID: sourceID, ReferenceID: reference, Note: note,
	})
	if err != nil {
		if err := g.classify(ctx, err); err != nil {
			return handlers.ProviderDecision{}, err
		}
		return handlers.ProviderDecision{Outcome: commands.OutcomeFailed, FailureCode: apiCode(err)}, nil
	}
	return paymentDecision(p), nil
}

func paymentDecision(p payments.Payment) handlers.ProviderDecision {
	d := handlers.ProviderDecision{ProviderID: p.ID}
	d.Outcome, d.FailureCode = p.Outcome()
	if d.Outcome == "" {
		// An answer without a status decides nothing: the payment stays pending and is asked about again.
		d.Outcome = commands.OutcomePending
	}
	return d
}

// Payment reads a payment at the provider. A refusal (404, say) is no decision on the payment: it is
// an error, and the process manager asks again later.
func (g gateway) Payment(ctx context.Context, providerPaymentID string) (handlers.ProviderDecision, error) {
	p, err := g.c.GetPayment(ctx, providerPaymentID)
	if err != nil {
		if cerr := g.classify(ctx, err); cerr != nil {
			return handlers.ProviderDecision{}, cerr
		}
		return handlers.ProviderDecision{}, fmt.Errorf("read provider payment %s: %w", providerPaymentID, err)
	}
	return paymentDecision(p), nil
}

func (g gateway) Refund(ctx context.Context, key, providerPaymentID string, amount int64, currency string) (handlers.ProviderDecision, error) {
	r, err := g.c.Refund(ctx, payments.RefundRequest{IdempotencyKey: key, PaymentID: providerPaymentID, AmountMinor: amount, Currency: currency})
	if err != nil {
		if err := g.classify(ctx, err); err != nil {
			return handlers.ProviderDecision{}, err
		}
		return handlers.ProviderDecision{Outcome: commands.OutcomeFailed, FailureCode: apiCode(err)}, nil
	}
	d := handlers.ProviderDecision{ProviderID: r.ID}
	switch r.Status {
	case payments.RefundCompleted:
		d.Outcome = commands.OutcomeCompleted
	case payments.RefundPending:
		d.Outcome = commands.OutcomePending
	default:
		d.Outcome, d.FailureCode = commands.OutcomeFailed, string(r.Status)
	}
	return d, nil
}

// outcomeRecorder sends the process manager's outcomes through the bus.
type outcomeRecorder struct{ b *bus.Bus }

func (r outcomeRecorder) RecordPaymentOutcome(ctx context.Context, cmd commands.RecordPaymentOutcome) error {
	_, _, err := bus.Send[queries.Payment](ctx, r.b, cmd)
	return err
}

func (r outcomeRecorder) RecordRefundOutcome(ctx context.Context, cmd commands.RecordRefundOutcome) error {
	_, _, err := bus.Send[queries.Refund](ctx, r.b, cmd)
	return err
}
