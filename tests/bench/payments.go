package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// paymentsBench measures the payments path (DESIGN.md "Payments", issue 4 item 7): env.Clients
// clients, one seeded user each, POST /api/v1/payments with the sandbox nonce cnon:card-nonce-ok and a
// fresh Idempotency-Key per request, against the raw INSERT commits of command-throughput's baseline
// at the same concurrency (>= 0.6x, as the other command benchmarks). The provider is the sandbox
// `taki serve` runs in-process, with its default latency of zero: the figures are Taki's cost, not a
// provider's.
//
// A 201 only records payment.requested; the process manager then asks the sandbox and records
// payment.completed. So after the load the benchmark waits (at most env.PaymentsTimeout) until every
// accepted payment is decided, and also reports the end-to-end decision rate (payments completed per
// second from the first request to the last completion), how far the process manager was behind when
// the load ended, and each payment's time from request to completion, all read from the log.
// Every 201 must have exactly one payment.requested and end with exactly one payment.completed.
func paymentsBench() Benchmark {
	return Benchmark{Name: "payments", Run: runPayments}
}

// paymentSource is the sandbox's nonce that completes at once.
const paymentSource = "cnon:card-nonce-ok"

// paymentsPoll is how often the log is counted while waiting for the decisions. The completion times
// reported come from the log, not from the poll, so this only bounds how late the wait notices.
const paymentsPoll = 50 * time.Millisecond

// paymentServerEnv makes sure the server runs the in-process sandbox with its own webhook key and
// route, whatever TAKI_* settings the harness's environment carries (a real provider must never be
// charged by a benchmark). The sandbox's latency has no setting in `taki serve`; its default is 0.
var paymentServerEnv = []string{
	"TAKI_PAYMENTS_PROVIDER=sandbox",
	"TAKI_SQUARE_BASE_URL=",
	"TAKI_SQUARE_ACCESS_TOKEN=",
	"TAKI_SQUARE_WEBHOOK_URL=",
	"TAKI_SQUARE_WEBHOOK_SIGNATURE_KEY=",
}

func runPayments(ctx context.Context, env *Env) (Result, error) {
	// Baseline first, while no server is running, so that it gets the machine to itself.
	phase, base, err := commitBaseline(ctx, env)
	if err != nil {
		return Result{}, err
	}

	srv, _, sessions, client, err := seedAndStart(ctx, env, env.Clients, paymentServerEnv...)
	if err != nil {
		return Result{}, err
	}
	defer client.CloseIdleConnections()
	conn, err := env.Connect(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	fmt.Fprintf(env.Log, "bench: POST /api/v1/payments (%s) from %d clients, one user each, for %s\n", paymentSource, env.Clients, env.Duration)
	accepted := make([][]uuid.UUID, env.Clients) // the payment of every 201, warm-up included, per client
	cpuBefore, err := srv.CPUTime()
	if err != nil {
		return Result{}, err
	}
	loadStart := time.Now()
	phase.ServerPID = srv.PID()
	taki, err := phase.Run(ctx, func(ctx context.Context, w, i int) error {
		id, err := sessions[w].requestPayment(ctx, client, srv.BaseURL, "bench-payment-"+strconv.Itoa(i), paymentBody(w, i))
		if err != nil {
			return err
		}
		accepted[w] = append(accepted[w], id)
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	loadEnd := time.Now()
	atEnd, err := countPaymentEvents(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	all := slices.Concat(accepted...)
	fmt.Fprintf(env.Log, "bench: %d payments accepted; at the end of the load %d requested, %d decided; waiting for the rest (at most %s)\n",
		len(all), atEnd.Requested, atEnd.Decided(), env.PaymentsTimeout)

	if err := waitPaymentsDecided(ctx, conn, srv, len(all), env.PaymentsTimeout); err != nil {
		return Result{}, err
	}
	cpuAfter, err := srv.CPUTime()
	if err != nil {
		return Result{}, err
	}
	log, err := readPaymentLog(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	if err := checkPaymentLog(all, log); err != nil {
		return Result{}, err
	}
	s := summarizePayments(log, loadStart, loadEnd)
	fmt.Fprintf(env.Log, "bench: %d accepted payments, each with one payment.requested and one final payment.completed; last completion %s after the load\n",
		len(all), s.Drain.Round(time.Millisecond))

	figures := againstCommits(taki, base, "payments/s", "server CPU per payment (request to completion)",
		ms(cpuAfter-cpuBefore)/float64(max(len(all), 1)))
	baseRate := base.Rate()
	figures = append(figures,
		Figure{Name: "completed/s, first request to last completion", Measured: Measure{s.DecisionRate, "payments/s"},
			Baseline: &Measure{baseRate, "commits/s"}},
		Figure{Name: "undecided at end of load", Measured: Measure{float64(atEnd.Requested - atEnd.Decided()), "payments"}},
		Figure{Name: "last completion after end of load", Measured: Measure{ms(s.Drain), "ms"}},
		Figure{Name: "p50 request to completed (log)", Measured: Measure{ms(s.ToCompleted.Percentile(0.50)), "ms"}},
		Figure{Name: "p99 request to completed (log)", Measured: Measure{ms(s.ToCompleted.Percentile(0.99)), "ms"}},
	)
	return Result{Figures: figures}, nil
}

// paymentBody is a payment of a typical size; amounts vary so that no two consecutive bodies match.
func paymentBody(w, i int) []byte {
	return mustJSON(map[string]any{
		"amount_minor": 100 + (i % 900),
		"currency":     "EUR",
		"source_id":    paymentSource,
		"description":  "bench payment " + strconv.Itoa(i) + " of client " + strconv.Itoa(w),
	})
}

// requestPayment sends POST /api/v1/payments with a key the caller never used, so the answer must be
// a new payment: 201, status pending (the process manager decides it later).
func (s *session) requestPayment(ctx context.Context, client *http.Client, baseURL, key string, body []byte) (uuid.UUID, error) {
	const path = "/api/v1/payments"
	h := http.Header{}
	h.Set("Cookie", s.cookie.String())
	h.Set("X-CSRF-Token", s.csrf)
	h.Set("Idempotency-Key", key)
	r, err := doJSON(ctx, client, http.MethodPost, baseURL+path, body, h)
	if err != nil {
		return uuid.Nil, fmt.Errorf("POST %s: %w", path, err)
	}
	if r.Status != http.StatusCreated {
		return uuid.Nil, unexpected(http.MethodPost, path, r)
	}
	var p struct {
		ID     uuid.UUID `json:"id"`
		Status string    `json:"status"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil || p.ID == uuid.Nil {
		return uuid.Nil, fmt.Errorf("POST %s: no payment id in %s", path, r.Body)
	}
	if p.Status != "pending" && p.Status != "completed" {
		return uuid.Nil, fmt.Errorf("POST %s: new payment %s has status %q", path, p.ID, p.Status)
	}
	s.takeCookie(r.Cookies)
	return p.ID, nil
}

// paymentCounts counts the payment events of the whole log (the benchmark's database holds no other
// payments).
type paymentCounts struct {
	Requested, Completed, Failed int
}

// Decided is how many payments the process manager has decided.
func (c paymentCounts) Decided() int { return c.Completed + c.Failed }

func countPaymentEvents(ctx context.Context, conn *pgx.Conn) (paymentCounts, error) {
	var c paymentCounts
	err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE event_type = 'payment.requested'),
			count(*) FILTER (WHERE event_type = 'payment.completed'),
			count(*) FILTER (WHERE event_type = 'payment.failed')
		FROM events WHERE stream_type = 'payment'`).Scan(&c.Requested, &c.Completed, &c.Failed)
	if err != nil {
		return c, fmt.Errorf("count payment events: %w", err)
	}
	return c, nil
}

// waitPaymentsDecided polls the log until it holds want decisions (completed or failed), and gives
// up after timeout or when the server exits. It reports progress every 10 s.
func waitPaymentsDecided(ctx context.Context, conn *pgx.Conn, srv *Server, want int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(paymentsPoll)
	defer tick.Stop()
	begin := time.Now()
	nextReport := begin.Add(10 * time.Second)
	counter := &decisionCounter{}
	decided := 0
	for {
		n, err := counter.Count(ctx, conn)
		switch {
		case err == nil && n >= want:
			return nil
		case err == nil:
			decided = n
		case ctx.Err() == nil:
			return err
		}
		if time.Now().After(nextReport) {
			fmt.Fprintf(srv.log, "bench: %d of %d payments decided, %s after the load\n", decided, want, time.Since(begin).Round(time.Second))
			nextReport = nextReport.Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d accepted payments decided %s after the load: %w",
				decided, want, time.Since(begin).Round(time.Millisecond), context.Cause(ctx))
		case <-srv.Done():
			return srv.exitError("while waiting for the payments to be decided")
		case <-tick.C:
		}
	}
}

// decisionCounter counts the payment decisions (completed or failed) in the log without rescanning
// it on every poll, so that waiting does not take the CPU from the process manager it waits for.
// Rows of transactions below a snapshot's xmin are settled (every such transaction had ended, so the
// snapshot sees all of their rows that will ever exist): they are counted once and the next count
// starts at that xmin. Rows of later transactions are counted again each time. The log's primary key
// leads with transaction_id, so each count reads only the log's tail.
type decisionCounter struct {
	from    string // an xid8 as text; "" is the log's start
	settled int
}

// Count returns the decisions the log holds now.
func (d *decisionCounter) Count(ctx context.Context, conn *pgx.Conn) (int, error) {
	from := d.from
	if from == "" {
		from = "0"
	}
	var xmin string
	var settled, open int
	err := conn.QueryRow(ctx, `SELECT s.xmin::text,
			count(e.transaction_id) FILTER (WHERE e.transaction_id < s.xmin),
			count(e.transaction_id) FILTER (WHERE e.transaction_id >= s.xmin)
		FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) s
		LEFT JOIN events e ON e.transaction_id >= $1::xid8
			AND e.event_type IN ('payment.completed', 'payment.failed')
		GROUP BY s.xmin`, from).Scan(&xmin, &settled, &open)
	if err != nil {
		return 0, fmt.Errorf("count payment decisions: %w", err)
	}
	d.settled += settled
	d.from = xmin
	return d.settled + open, nil
}

// paymentStream is what the log holds about one payment.
type paymentStream struct {
	Requested, Completed, Failed int
	// Last is the type of the stream's last event.
	Last        string
	RequestedAt time.Time // of its payment.requested
	CompletedAt time.Time // of its last payment.completed; zero without one
}

// readPaymentLog reads every payment stream of the log.
func readPaymentLog(ctx context.Context, conn *pgx.Conn) (map[uuid.UUID]paymentStream, error) {
	rows, err := conn.Query(ctx, `SELECT stream_id,
			count(*) FILTER (WHERE event_type = 'payment.requested'),
			count(*) FILTER (WHERE event_type = 'payment.completed'),
			count(*) FILTER (WHERE event_type = 'payment.failed'),
			(array_agg(event_type ORDER BY version DESC))[1],
			COALESCE(min(occurred_at) FILTER (WHERE event_type = 'payment.requested'), 'epoch'),
			COALESCE(max(occurred_at) FILTER (WHERE event_type = 'payment.completed'), 'epoch')
		FROM events WHERE stream_type = 'payment' GROUP BY stream_id`)
	if err != nil {
		return nil, fmt.Errorf("read payment streams: %w", err)
	}
	out := map[uuid.UUID]paymentStream{}
	for rows.Next() {
		var id uuid.UUID
		var p paymentStream
		if err := rows.Scan(&id, &p.Requested, &p.Completed, &p.Failed, &p.Last, &p.RequestedAt, &p.CompletedAt); err != nil {
			return nil, fmt.Errorf("read payment streams: %w", err)
		}
		if p.CompletedAt.Equal(time.Unix(0, 0)) {
			p.CompletedAt = time.Time{}
		}
		out[id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read payment streams: %w", err)
	}
	return out, nil
}

// checkPaymentLog judges the log against the 201 answers: each accepted payment id once, with exactly
// one payment.requested and exactly one payment.completed as its last event and no payment.failed; and
// no payment in the log that no 201 acknowledged (a request that made two payments).
func checkPaymentLog(accepted []uuid.UUID, log map[uuid.UUID]paymentStream) error {
	seen := make(map[uuid.UUID]bool, len(accepted))
	var errs []error
	for _, id := range accepted {
		if seen[id] {
			errs = append(errs, fmt.Errorf("payment %s was answered 201 to two requests with different keys", id))
			continue
		}
		seen[id] = true
		p, ok := log[id]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("payment %s answered 201 has no events in the log", id))
		case p.Requested != 1 || p.Completed != 1 || p.Failed != 0 || p.Last != "payment.completed":
			errs = append(errs, fmt.Errorf("payment %s: %d payment.requested, %d payment.completed, %d payment.failed, last event %s; want 1, 1, 0, payment.completed",
				id, p.Requested, p.Completed, p.Failed, p.Last))
		}
	}
	for id := range log {
		if !seen[id] {
			errs = append(errs, fmt.Errorf("payment %s is in the log but no request was answered with it", id))
		}
	}
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("... and %d more", len(errs)-10))
	}
	return errors.Join(errs...)
}

// paymentSummary is what the log says about the decisions.
type paymentSummary struct {
	// DecisionRate is completed payments per second from the start of the load to the last completion.
	DecisionRate float64
	// LastCompleted is the last payment.completed's time; Drain how long after the load's end it came
	// (0 when the process manager had already caught up).
	LastCompleted time.Time
	Drain         time.Duration
	// ToCompleted holds, per completed payment, the time from its payment.requested to its
	// payment.completed (both the server's clock, in the log).
	ToCompleted Latencies
}

// summarizePayments computes the decision figures from the log; loadStart is when the first request
// was sent and loadEnd when the load phase ended.
func summarizePayments(log map[uuid.UUID]paymentStream, loadStart, loadEnd time.Time) paymentSummary {
	var s paymentSummary
	completed := 0
	for _, p := range log {
		if p.CompletedAt.IsZero() {
			continue
		}
		completed++
		if p.CompletedAt.After(s.LastCompleted) {
			s.LastCompleted = p.CompletedAt
		}
		s.ToCompleted.Add(max(0, p.CompletedAt.Sub(p.RequestedAt)))
	}
	if completed == 0 {
		return s
	}
	if span := s.LastCompleted.Sub(loadStart); span > 0 {
		s.DecisionRate = float64(completed) / span.Seconds()
	}
	s.Drain = max(0, s.LastCompleted.Sub(loadEnd))
	return s
}
