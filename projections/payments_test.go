package projections

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/postgres/pgtest"
	"taki/queries"
)

// paymentsFixture applies events to the payments projection the way the projector does: Apply queues
// statements on a batch that is sent in a transaction.
type paymentsFixture struct {
	t        *testing.T
	pool     *pgxpool.Pool
	payments *Payments
	twice    bool // apply every event twice in a row (idempotency)
}

func newPaymentsFixture(t *testing.T, url string) *paymentsFixture {
	t.Helper()
	pool := pgtest.NewPool(t, url)
	p, err := NewPayments(pool)
	if err != nil {
		t.Fatal(err)
	}
	return &paymentsFixture{t: t, pool: pool, payments: p}
}

func (f *paymentsFixture) apply(evs ...events.Event) {
	f.t.Helper()
	ctx := context.Background()
	b := &pgx.Batch{}
	for _, ev := range evs {
		for range 1 + btoi(f.twice) {
			env := events.Envelope{ID: uuid.New(), Type: ev.EventType(), OccurredAt: at(9999), Data: ev}
			if err := f.payments.Apply(b, env); err != nil {
				f.t.Fatalf("apply %s: %v", ev.EventType(), err)
			}
		}
	}
	if err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		f.t.Fatalf("send batch: %v", err)
	}
}

func (f *paymentsFixture) get(actor, id uuid.UUID) queries.Payment {
	f.t.Helper()
	p, ok, err := f.payments.Payment(context.Background(), actor, id)
	if err != nil {
		f.t.Fatal(err)
	}
	if !ok {
		f.t.Fatalf("payment %s not visible to %s", id, actor)
	}
	return p
}

func (f *paymentsFixture) billing(actor uuid.UUID) []queries.CurrencySummary {
	f.t.Helper()
	s, err := f.payments.BillingSummary(context.Background(), actor)
	if err != nil {
		f.t.Fatal(err)
	}
	if s.Currencies == nil {
		f.t.Fatal("billing currencies are nil, want an empty list")
	}
	return s.Currencies
}

func requested(user, id uuid.UUID, amount int64, currency string, when time.Time) events.PaymentRequested {
	return events.PaymentRequested{PaymentID: id, UserID: user, AmountMinor: amount, Currency: currency,
		SourceID: "cnon:card-nonce-ok", Description: "d-" + currency, IdempotencyKey: id.String(), RequestHash: "h", RequestedAt: when}
}

func completed(id uuid.UUID, when time.Time) events.PaymentCompleted {
	return events.PaymentCompleted{PaymentID: id, ProviderPaymentID: "sq-" + id.String()[:8], At: when}
}

func refundReq(payment, refund, user uuid.UUID, amount int64, when time.Time) events.RefundRequested {
	return events.RefundRequested{PaymentID: payment, RefundID: refund, UserID: user, AmountMinor: amount,
		IdempotencyKey: refund.String(), RequestHash: "h", RequestedAt: when}
}

func refundDone(payment, refund uuid.UUID, when time.Time) events.RefundCompleted {
	return events.RefundCompleted{PaymentID: payment, RefundID: refund, ProviderRefundID: "r-" + refund.String()[:8], At: when}
}

func refundFailed(payment, refund uuid.UUID, when time.Time) events.RefundFailed {
	return events.RefundFailed{PaymentID: payment, RefundID: refund, FailureCode: "REFUND_DECLINED", At: when}
}

func wantPayment(t *testing.T, p queries.Payment, status string, refunded int64, updated time.Time) {
	t.Helper()
	if p.Status != status || p.RefundedMinor != refunded || !p.UpdatedAt.Equal(updated) {
		t.Fatalf("payment = {status %s, refunded %d, updated %s}, want {%s, %d, %s}", p.Status, p.RefundedMinor,
			p.UpdatedAt, status, refunded, updated)
	}
}

func TestNewPaymentsRefusesNilPool(t *testing.T) {
	if _, err := NewPayments(nil); err == nil {
		t.Fatal("NewPayments(nil) succeeded")
	}
}

func TestPaymentsStatusNeverMovesBackwards(t *testing.T) {
	f := newPaymentsFixture(t, dbURL)
	u, other := uuid.New(), uuid.New()
	ok, declined, late := uuid.New(), uuid.New(), uuid.New()

	f.apply(requested(u, ok, 1500, "USD", at(1)))
	p := f.get(u, ok)
	if p.ID != ok || p.Status != queries.PaymentPending || p.AmountMinor != 1500 || p.Currency != "USD" || p.Description != "d-USD" ||
		p.FailureCode != nil || p.ProviderPaymentID != nil || !p.CreatedAt.Equal(at(1)) || !p.UpdatedAt.Equal(at(1)) || p.RefundedMinor != 0 {
		t.Fatalf("requested payment = %+v", p)
	}
	if _, seen, err := f.payments.Payment(context.Background(), other, ok); err != nil || seen {
		t.Fatalf("another user sees the payment: %v, %v", seen, err)
	}

	// Pending keeps the status and records the provider's id; completion moves it on.
	f.apply(events.PaymentPending{PaymentID: ok, ProviderPaymentID: "sq-1", At: at(2)})
	p = f.get(u, ok)
	wantPayment(t, p, queries.PaymentPending, 0, at(2))
	if p.ProviderPaymentID == nil || *p.ProviderPaymentID != "sq-1" {
		t.Fatalf("provider id = %v", p.ProviderPaymentID)
	}
	f.apply(events.PaymentCompleted{PaymentID: ok, At: at(3)}) // no id: the pending one stays
	p = f.get(u, ok)
	wantPayment(t, p, queries.PaymentCompleted, 0, at(3))
	if p.ProviderPaymentID == nil || *p.ProviderPaymentID != "sq-1" || !p.CreatedAt.Equal(at(1)) {
		t.Fatalf("completed payment = %+v", p)
	}
	// Late outcomes of a decided payment change nothing, updated_at included.
	f.apply(events.PaymentFailed{PaymentID: ok, FailureCode: "GENERIC_DECLINE", At: at(4)},
		events.PaymentPending{PaymentID: ok, ProviderPaymentID: "sq-x", At: at(5)},
		events.PaymentCompleted{PaymentID: ok, ProviderPaymentID: "sq-y", At: at(6)})
	p = f.get(u, ok)
	wantPayment(t, p, queries.PaymentCompleted, 0, at(3))
	if p.FailureCode != nil || *p.ProviderPaymentID != "sq-1" {
		t.Fatalf("late outcomes changed the payment: %+v", p)
	}

	// A decline records the provider's code; nothing completes it afterwards.
	f.apply(requested(u, declined, 700, "EUR", at(10)),
		events.PaymentFailed{PaymentID: declined, ProviderPaymentID: "sq-2", FailureCode: "CVV_FAILURE", At: at(11)},
		completed(declined, at(12)))
	p = f.get(u, declined)
	wantPayment(t, p, queries.PaymentFailed, 0, at(11))
	if p.FailureCode == nil || *p.FailureCode != "CVV_FAILURE" || *p.ProviderPaymentID != "sq-2" {
		t.Fatalf("failed payment = %+v", p)
	}
	// A refund of a failed payment (the write side never asks for one) refunds nothing.
	r := uuid.New()
	f.apply(refundReq(declined, r, u, 100, at(13)), refundDone(declined, r, at(14)))
	if p := f.get(u, declined); p.Status != queries.PaymentFailed || p.RefundedMinor != 0 {
		t.Fatalf("refunded a failed payment: %+v", p)
	}

	// A second request with the same id changes nothing; an event without a time takes the envelope's.
	f.apply(requested(u, late, 300, "USD", at(20)), requested(other, late, 999, "GBP", at(21)),
		events.PaymentCompleted{PaymentID: late})
	p = f.get(u, late)
	wantPayment(t, p, queries.PaymentCompleted, 0, at(9999))
	if p.AmountMinor != 300 || p.Currency != "USD" || !p.CreatedAt.Equal(at(20)) {
		t.Fatalf("re-requested payment = %+v", p)
	}
	got := f.billing(u)
	want := []queries.CurrencySummary{{Currency: "USD", PaymentsCount: 2, PaidMinor: 1800, NetMinor: 1800}}
	if !slices.Equal(got, want) {
		t.Fatalf("billing = %+v, want %+v", got, want)
	}
	if got := f.billing(other); len(got) != 0 {
		t.Fatalf("other's billing = %+v", got)
	}
}

func TestPaymentsRefunds(t *testing.T) {
	f := newPaymentsFixture(t, dbURL)
	u := uuid.New()
	p := uuid.New()
	r1, r2, r3, r4 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	f.apply(requested(u, p, 1000, "USD", at(1)), completed(p, at(2)))

	// Requested refunds reserve, but refund nothing yet.
	f.apply(refundReq(p, r1, u, 300, at(3)), refundReq(p, r2, u, 200, at(4)))
	wantPayment(t, f.get(u, p), queries.PaymentCompleted, 0, at(4))
	// A failed refund restores nothing and refunds nothing.
	f.apply(refundFailed(p, r2, at(5)))
	wantPayment(t, f.get(u, p), queries.PaymentCompleted, 0, at(5))
	// A completed one moves the payment to partially_refunded; its duplicate or a late failure does nothing.
	f.apply(refundDone(p, r1, at(6)), refundDone(p, r1, at(7)), refundFailed(p, r1, at(8)), refundDone(p, r2, at(9)))
	wantPayment(t, f.get(u, p), queries.PaymentPartiallyRefunded, 300, at(6))
	// A late payment outcome does not move it back.
	f.apply(events.PaymentFailed{PaymentID: p, FailureCode: "X", At: at(10)}, completed(p, at(11)))
	wantPayment(t, f.get(u, p), queries.PaymentPartiallyRefunded, 300, at(6))
	// Refunds adding up to the amount make it refunded.
	f.apply(refundReq(p, r3, u, 500, at(12)), refundDone(p, r3, at(13)))
	wantPayment(t, f.get(u, p), queries.PaymentPartiallyRefunded, 800, at(13))
	f.apply(refundReq(p, r4, u, 200, at(14)), refundDone(p, r4, at(15)))
	wantPayment(t, f.get(u, p), queries.PaymentRefunded, 1000, at(15))

	var pending int64
	if err := f.pool.QueryRow(context.Background(), `SELECT pending_refund_minor FROM payments WHERE id = $1`, p).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("pending refunds = %d, %v", pending, err)
	}
	got := f.billing(u)
	want := []queries.CurrencySummary{{Currency: "USD", PaymentsCount: 1, PaidMinor: 1000, RefundedMinor: 1000, NetMinor: 0}}
	if !slices.Equal(got, want) {
		t.Fatalf("billing = %+v, want %+v", got, want)
	}
}

func TestPaymentsBillingSummary(t *testing.T) {
	f := newPaymentsFixture(t, dbURL)
	a, b := uuid.New(), uuid.New()
	var evs []events.Event
	pay := func(user uuid.UUID, amount int64, currency string, outcome string) uuid.UUID {
		id := uuid.New()
		evs = append(evs, requested(user, id, amount, currency, at(len(evs))))
		switch outcome {
		case "completed":
			evs = append(evs, completed(id, at(len(evs))))
		case "failed":
			evs = append(evs, events.PaymentFailed{PaymentID: id, FailureCode: "GENERIC_DECLINE", At: at(len(evs))})
		}
		return id
	}
	refund := func(user, payment uuid.UUID, amount int64, done bool) {
		id := uuid.New()
		evs = append(evs, refundReq(payment, id, user, amount, at(len(evs))))
		if done {
			evs = append(evs, refundDone(payment, id, at(len(evs))))
		} else {
			evs = append(evs, refundFailed(payment, id, at(len(evs))))
		}
	}
	usd1 := pay(a, 1000, "USD", "completed")
	usd2 := pay(a, 500, "USD", "completed")
	pay(a, 700, "USD", "failed")
	pay(a, 900, "USD", "pending")
	eur := pay(a, 2000, "EUR", "completed")
	pay(a, 50, "JPY", "failed") // a currency with no completed payment does not show
	refund(a, usd1, 1000, true) // refunded later: still paid
	refund(a, usd2, 100, true)
	refund(a, usd2, 50, false)
	refund(a, eur, 1, true)
	bUSD := pay(b, 4000, "USD", "completed")
	refund(b, bUSD, 10, true)
	pay(b, 1, "CHF", "completed")
	f.apply(evs...)

	got := f.billing(a)
	want := []queries.CurrencySummary{ // currencies sorted
		{Currency: "EUR", PaymentsCount: 1, PaidMinor: 2000, RefundedMinor: 1, NetMinor: 1999},
		{Currency: "USD", PaymentsCount: 2, PaidMinor: 1500, RefundedMinor: 1100, NetMinor: 400},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("A's billing = %+v, want %+v", got, want)
	}
	got = f.billing(b)
	want = []queries.CurrencySummary{
		{Currency: "CHF", PaymentsCount: 1, PaidMinor: 1, NetMinor: 1},
		{Currency: "USD", PaymentsCount: 1, PaidMinor: 4000, RefundedMinor: 10, NetMinor: 3990},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("B's billing = %+v, want %+v", got, want)
	}
	if got := f.billing(uuid.New()); len(got) != 0 {
		t.Fatalf("a stranger's billing = %+v", got)
	}
	if p := f.get(a, usd1); p.Status != queries.PaymentRefunded {
		t.Fatalf("usd1 = %+v", p)
	}
}

func TestPaymentsListKeysetPagesWithTies(t *testing.T) {
	f := newPaymentsFixture(t, dbURL)
	ctx := context.Background()
	u, other := uuid.New(), uuid.New()
	type row struct {
		id      uuid.UUID
		created time.Time
	}
	var rows []row
	var evs []events.Event
	for i := range 23 {
		id := uuid.New()
		created := at(i / 4) // four payments per second: ties broken by id
		rows = append(rows, row{id, created})
		evs = append(evs, requested(u, id, int64(i+1), "USD", created))
		evs = append(evs, requested(other, uuid.New(), 1, "USD", created))
	}
	f.apply(evs...)
	slices.SortFunc(rows, func(a, b row) int {
		if c := b.created.Compare(a.created); c != 0 {
			return c
		}
		return strings.Compare(b.id.String(), a.id.String())
	})
	want := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		want[i] = r.id
	}
	for _, limit := range []int{1, 3, 4, 5, 23, 50} {
		var got []uuid.UUID
		var after *queries.PaymentCursor
		pages := 0
		for {
			items, next, err := f.payments.ListPayments(ctx, u, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(items) > limit || (next != nil && len(items) != limit) {
				t.Fatalf("limit %d: page of %d, next %v", limit, len(items), next)
			}
			for _, p := range items {
				got = append(got, p.ID)
			}
			if next == nil {
				break
			}
			after = next
			if pages > 30 {
				t.Fatal("too many pages")
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: order %v, want %v", limit, got, want)
		}
		if wantPages := (len(want) + limit - 1) / limit; pages != wantPages && pages != wantPages+1 {
			t.Fatalf("limit %d: %d pages", limit, pages)
		}
	}
	if items, next, err := f.payments.ListPayments(ctx, uuid.New(), nil, 0); err != nil || len(items) != 0 || next != nil {
		t.Fatalf("a stranger's list: %v, %v, %v", items, next, err)
	}
	// limit 0 means the default page.
	if items, _, err := f.payments.ListPayments(ctx, u, nil, 0); err != nil || len(items) != 23 {
		t.Fatalf("default limit: %d, %v", len(items), err)
	}
}

func paymentsScenario(u uuid.UUID) []events.Event {
	p1, p2, p3 := uuid.New(), uuid.New(), uuid.New()
	r1, r2 := uuid.New(), uuid.New()
	return []events.Event{
		requested(u, p1, 1000, "USD", at(1)), events.PaymentPending{PaymentID: p1, ProviderPaymentID: "sq", At: at(2)},
		completed(p1, at(3)), refundReq(p1, r1, u, 400, at(4)), refundReq(p1, r2, u, 100, at(5)),
		refundDone(p1, r1, at(6)), refundFailed(p1, r2, at(7)),
		requested(u, p2, 50, "EUR", at(8)), events.PaymentFailed{PaymentID: p2, FailureCode: "GENERIC_DECLINE", At: at(9)},
		requested(u, p3, 70, "EUR", at(10)), completed(p3, at(11)),
	}
}

func dumpPayments(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	return dumpRows(t, pool,
		`SELECT to_jsonb(x)::text FROM payments x ORDER BY id`,
		`SELECT to_jsonb(x)::text FROM payment_refunds x ORDER BY id`,
		`SELECT to_jsonb(x)::text FROM billing_summaries x ORDER BY user_id, currency`,
	)
}

func TestPaymentsApplyTwiceChangesNothing(t *testing.T) {
	u := uuid.New()
	evs := paymentsScenario(u)
	once := newPaymentsFixture(t, pgtest.NewDatabase(t))
	once.apply(evs...)
	twice := newPaymentsFixture(t, pgtest.NewDatabase(t))
	twice.twice = true
	twice.apply(evs...)
	d1, d2 := dumpPayments(t, once.pool), dumpPayments(t, twice.pool)
	if d1 != d2 {
		t.Fatalf("once:\n%s\ntwice:\n%s", d1, d2)
	}
	got := once.billing(u)
	want := []queries.CurrencySummary{
		{Currency: "EUR", PaymentsCount: 1, PaidMinor: 70, NetMinor: 70},
		{Currency: "USD", PaymentsCount: 1, PaidMinor: 1000, RefundedMinor: 400, NetMinor: 600},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("billing = %+v, want %+v", got, want)
	}
}

// TestPaymentsQueriesUseIndexes checks the plans of the payment queries on tables with enough rows for
// the planner's choice to mean something.
func TestPaymentsQueriesUseIndexes(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t, pgtest.NewDatabase(t))
	// 100,000 payments of 1,000 users (100 each), 5,000 of them for u7; billing in 3 currencies each.
	for _, q := range []string{
		`INSERT INTO payments (id, user_id, status, amount_minor, currency, description, created_at, updated_at)
			SELECT gen_random_uuid(), md5('u' || CASE WHEN i % 20 = 0 THEN 7 ELSE i % 1000 END)::uuid, 'completed', i, 'USD', 'x',
				now() - (i / 3) * interval '1 second', now()
			FROM generate_series(0, 99999) i`,
		`INSERT INTO billing_summaries (user_id, currency, payments_count, paid_minor, refunded_minor)
			SELECT md5('u' || i)::uuid, c, 1, 1, 0 FROM generate_series(0, 999) i, unnest(ARRAY['EUR', 'USD', 'GBP']) c`,
		`ANALYZE payments`, `ANALYZE billing_summaries`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var user, payment uuid.UUID
	var created time.Time
	if err := pool.QueryRow(ctx, `SELECT md5('u7')::uuid`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT id, created_at FROM payments WHERE user_id = $1 ORDER BY created_at DESC, id DESC OFFSET 2500 LIMIT 1`,
		user).Scan(&payment, &created); err != nil {
		t.Fatal(err)
	}
	pay, _ := NewPayments(pool)
	items, next, err := pay.ListPayments(ctx, user, &queries.PaymentCursor{CreatedAt: created, ID: payment}, 50)
	if err != nil || len(items) != 50 || next == nil {
		t.Fatalf("list on the bulk data: %d items, next %v, err %v", len(items), next, err)
	}
	for _, tc := range []struct {
		name, sql string
		args      []any
		index     string
	}{
		{"payment list, first page", listPaymentsSQL, []any{user, 51}, "payments_by_user"},
		{"payment list, next page", listPaymentsAfter, []any{user, 51, created, payment}, "payments_by_user"},
		{"one payment", paymentSQL, []any{payment, user}, "payments_pkey"},
		{"billing summary", billingSQL, []any{user}, "billing_summaries_pkey"},
	} {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				plan := explain(t, pool, mode, tc.sql, tc.args...)
				if testing.Verbose() {
					t.Logf("plan:\n%s", plan)
				}
				if !strings.Contains(plan, "using "+tc.index) && !strings.Contains(plan, "Index Scan on "+tc.index) ||
					strings.Contains(plan, "Seq Scan") {
					t.Fatalf("plan does not use %s:\n%s", tc.index, plan)
				}
				// A page is read in index order: no sort of the user's payments (a billing summary's few
				// currencies may be sorted).
				if strings.HasPrefix(tc.name, "payment list") && strings.Contains(plan, "Sort") {
					t.Fatalf("payment list sorts:\n%s", plan)
				}
				// The keyset bound is an index condition, not a filter over the user's earlier rows.
				if tc.name == "payment list, next page" && strings.Contains(plan, "Filter") {
					t.Fatalf("keyset bound is a filter:\n%s", plan)
				}
			})
		}
	}
}

// TestPaymentsThroughProjector runs the projection in the real projector on events appended to the
// log, then replays it from scratch.
func TestPaymentsThroughProjector(t *testing.T) {
	ctx := context.Background()
	pool, store := newLogDatabase(t)
	payments, err := NewPayments(pool)
	if err != nil {
		t.Fatal(err)
	}
	proj := runProjector(t, pool, store, payments)

	u, p, r := uuid.New(), uuid.New(), uuid.New()
	pos, err := store.Append(ctx, events.Append{StreamID: p, StreamType: events.StreamPayment, Events: []events.Event{
		requested(u, p, 1000, "EUR", at(1)), completed(p, at(2)), refundReq(p, r, u, 250, at(3)), refundDone(p, r, at(4)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	f := &paymentsFixture{t: t, pool: pool, payments: payments}
	check := func() {
		t.Helper()
		if ok, err := proj.WaitFor(ctx, payments.Name(), pos, 10*time.Second); err != nil || !ok {
			t.Fatalf("projection did not catch up: %v, %v", ok, err)
		}
		wantPayment(t, f.get(u, p), queries.PaymentPartiallyRefunded, 250, at(4))
		want := []queries.CurrencySummary{{Currency: "EUR", PaymentsCount: 1, PaidMinor: 1000, RefundedMinor: 250, NetMinor: 750}}
		if got := f.billing(u); !slices.Equal(got, want) {
			t.Fatalf("billing = %+v, want %+v", got, want)
		}
	}
	check()
	if ok, err := proj.Replay(ctx, payments.Name()); err != nil || !ok {
		t.Fatalf("replay: %v, %v", ok, err)
	}
	check()
}
