package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/events"
)

func TestCheckPaymentLog(t *testing.T) {
	at := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	done := paymentStream{Requested: 1, Completed: 1, Last: "payment.completed", RequestedAt: at, CompletedAt: at.Add(time.Millisecond)}
	a, b := uuid.New(), uuid.New()
	if err := checkPaymentLog([]uuid.UUID{a, b}, map[uuid.UUID]paymentStream{a: done, b: done}); err != nil {
		t.Fatalf("a clean log: %v", err)
	}

	for name, tc := range map[string]struct {
		accepted []uuid.UUID
		log      map[uuid.UUID]paymentStream
		want     string
	}{
		"missing":         {[]uuid.UUID{a, b}, map[uuid.UUID]paymentStream{a: done}, "has no events"},
		"extra":           {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: done, b: done}, "no request was answered"},
		"same id twice":   {[]uuid.UUID{a, a}, map[uuid.UUID]paymentStream{a: done}, "two requests"},
		"two requested":   {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: {Requested: 2, Completed: 1, Last: "payment.completed"}}, "2 payment.requested"},
		"two completed":   {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: {Requested: 1, Completed: 2, Last: "payment.completed"}}, "2 payment.completed"},
		"undecided":       {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: {Requested: 1, Last: "payment.requested"}}, "last event payment.requested"},
		"failed":          {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: {Requested: 1, Failed: 1, Last: "payment.failed"}}, "1 payment.failed"},
		"not last":        {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: {Requested: 1, Completed: 1, Last: "payment.pending"}}, "last event payment.pending"},
		"failed, then ok": {[]uuid.UUID{a}, map[uuid.UUID]paymentStream{a: {Requested: 1, Completed: 1, Failed: 1, Last: "payment.completed"}}, "1 payment.failed"},
	} {
		err := checkPaymentLog(tc.accepted, tc.log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, tc.want)
		}
	}
}

func TestCheckPaymentLogCapsErrors(t *testing.T) {
	var accepted []uuid.UUID
	for range 25 {
		accepted = append(accepted, uuid.New())
	}
	err := checkPaymentLog(accepted, map[uuid.UUID]paymentStream{})
	if err == nil || !strings.Contains(err.Error(), "and 15 more") || strings.Count(err.Error(), "has no events") != 10 {
		t.Fatalf("got %v", err)
	}
}

func TestSummarizePayments(t *testing.T) {
	start := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	end := start.Add(2 * time.Second)
	log := map[uuid.UUID]paymentStream{
		uuid.New(): {Requested: 1, Completed: 1, RequestedAt: start.Add(10 * time.Millisecond), CompletedAt: start.Add(30 * time.Millisecond)},
		uuid.New(): {Requested: 1, Completed: 1, RequestedAt: start.Add(time.Second), CompletedAt: start.Add(time.Second + 40*time.Millisecond)},
		uuid.New(): {Requested: 1, Completed: 1, RequestedAt: end.Add(-time.Millisecond), CompletedAt: end.Add(499 * time.Millisecond)},
		uuid.New(): {Requested: 1, Completed: 1, RequestedAt: end.Add(-time.Millisecond), CompletedAt: start.Add(2500 * time.Millisecond)},
		uuid.New(): {Requested: 1, RequestedAt: end}, // undecided: not counted
	}
	s := summarizePayments(log, start, end)
	if !s.LastCompleted.Equal(start.Add(2500 * time.Millisecond)) {
		t.Errorf("last completed %v", s.LastCompleted)
	}
	if s.Drain != 500*time.Millisecond {
		t.Errorf("drain %v, want 500ms", s.Drain)
	}
	if want := 4 / 2.5; s.DecisionRate != want {
		t.Errorf("decision rate %v, want %v", s.DecisionRate, want)
	}
	if s.ToCompleted.Len() != 4 || s.ToCompleted.Percentile(0.5) != 40*time.Millisecond ||
		s.ToCompleted.Percentile(1) != 501*time.Millisecond {
		t.Errorf("request to completed: n %d, p50 %v, max %v", s.ToCompleted.Len(), s.ToCompleted.Percentile(0.5), s.ToCompleted.Percentile(1))
	}

	// Caught up before the load ended: no drain.
	early := summarizePayments(map[uuid.UUID]paymentStream{
		uuid.New(): {Requested: 1, Completed: 1, RequestedAt: start, CompletedAt: start.Add(time.Second)},
	}, start, end)
	if early.Drain != 0 || early.DecisionRate != 1 {
		t.Errorf("caught up early: drain %v, rate %v", early.Drain, early.DecisionRate)
	}
	if none := summarizePayments(nil, start, end); none.DecisionRate != 0 || none.Drain != 0 || none.ToCompleted.Len() != 0 {
		t.Errorf("no payments: %+v", none)
	}
}

func TestPaymentBody(t *testing.T) {
	seen := map[string]bool{}
	for i := range 1000 {
		var b struct {
			AmountMinor int64  `json:"amount_minor"`
			Currency    string `json:"currency"`
			SourceID    string `json:"source_id"`
			Description string `json:"description"`
		}
		raw := paymentBody(3, i)
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if b.AmountMinor < 1 || b.Currency != "EUR" || b.SourceID != paymentSource || b.Description == "" || len(b.Description) > 500 {
			t.Fatalf("body %s", raw)
		}
		if seen[string(raw)] {
			t.Fatalf("body %s repeats", raw)
		}
		seen[string(raw)] = true
	}
}

func TestPaymentLogQueries(t *testing.T) {
	env, conn := testConn(t)
	ctx := context.Background()
	other, err := env.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)

	at := time.Now().UTC().Truncate(time.Microsecond)
	user := uuid.New()
	requested := func(id uuid.UUID) logRow {
		return logRow{StreamID: id, StreamType: events.StreamPayment, Version: 1, OccurredAt: at, Actor: user,
			Data: events.PaymentRequested{PaymentID: id, UserID: user, AmountMinor: 100, Currency: "EUR", SourceID: paymentSource, RequestedAt: at}}
	}
	completed := func(id uuid.UUID, version int64, d time.Duration) logRow {
		return logRow{StreamID: id, StreamType: events.StreamPayment, Version: version, OccurredAt: at.Add(d), Actor: user,
			Data: events.PaymentCompleted{PaymentID: id, ProviderPaymentID: "p", At: at.Add(d)}}
	}
	appendRows := func(c *pgx.Conn, rows ...logRow) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { return appendLogRows(ctx, tx, rows) }); err != nil {
			t.Fatal(err)
		}
	}
	count := func(d *decisionCounter, want int) {
		t.Helper()
		if n, err := d.Count(ctx, conn); err != nil || n != want {
			t.Fatalf("decisions: %d, %v; want %d", n, err, want)
		}
	}

	a, b, c := uuid.New(), uuid.New(), uuid.New()
	appendRows(conn, requested(a), requested(b), requested(c))
	var counter decisionCounter
	count(&counter, 0)
	appendRows(conn, completed(a, 2, 20*time.Millisecond))
	count(&counter, 1)

	// A transaction that appended before the count but commits after it is still counted, once.
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := appendLogRows(ctx, tx, []logRow{completed(b, 2, 30*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	appendRows(conn, completed(c, 2, 40*time.Millisecond))
	count(&counter, 2)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	count(&counter, 3)
	count(&counter, 3)
	var fresh decisionCounter
	count(&fresh, 3)

	counts, err := countPaymentEvents(ctx, conn)
	if err != nil || counts != (paymentCounts{Requested: 3, Completed: 3}) {
		t.Fatalf("counts %+v, %v", counts, err)
	}
	log, err := readPaymentLog(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPaymentLog([]uuid.UUID{a, b, c}, log); err != nil {
		t.Fatal(err)
	}
	if p := log[b]; !p.RequestedAt.Equal(at) || !p.CompletedAt.Equal(at.Add(30*time.Millisecond)) || p.Last != "payment.completed" {
		t.Fatalf("stream b: %+v", p)
	}

	// A payment not decided yet: no completion time, and the check names it.
	d := uuid.New()
	appendRows(conn, requested(d))
	if log, err = readPaymentLog(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if !log[d].CompletedAt.IsZero() || log[d].Last != "payment.requested" {
		t.Fatalf("undecided stream: %+v", log[d])
	}
	if err := checkPaymentLog([]uuid.UUID{a, b, c, d}, log); err == nil || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("undecided payment passed: %v", err)
	}
}
