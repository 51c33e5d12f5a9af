package handlers

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/events"
	"taki/infra/postgres/pgtest"
	"taki/projections"
	"taki/queries"
)

// paymentRuleScenarios are payment streams that reach every rule of evolvePayment, the edge cases
// included: outcomes after a decision, repeated and late refund outcomes, outcomes without a provider
// id or a time, a request repeated, a refund of a failed payment, times finer than a microsecond.
func paymentRuleScenarios(owner, other uuid.UUID) []paymentRuleScenario {
	t := func(s int) time.Time { return time.Date(2026, 3, 4, 5, 6, s, 0, time.UTC) }
	req := func(id uuid.UUID, amount int64, at time.Time) events.PaymentRequested {
		return events.PaymentRequested{PaymentID: id, UserID: owner, AmountMinor: amount, Currency: "EUR", SourceID: "cnon:card-nonce-ok",
			Description: "d", IdempotencyKey: id.String(), RequestHash: "h", RequestedAt: at}
	}
	refund := func(p, r uuid.UUID, amount int64, at time.Time) events.RefundRequested {
		return events.RefundRequested{PaymentID: p, RefundID: r, UserID: owner, AmountMinor: amount, IdempotencyKey: r.String(),
			RequestHash: "h", RequestedAt: at}
	}
	p, r1, r2, r3 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	declined, dr := uuid.New(), uuid.New()
	untimed, again, ghost := uuid.New(), uuid.New(), uuid.New()
	fine := t(1).Add(1234567 * time.Nanosecond)
	return []paymentRuleScenario{
		{"refunded in parts", p, []events.Event{
			req(p, 1000, t(0)),
			events.PaymentPending{PaymentID: p, ProviderPaymentID: "sq-a", At: t(1)},
			events.PaymentPending{PaymentID: p, ProviderPaymentID: "sq-b", At: t(2)},
			events.PaymentCompleted{PaymentID: p, At: t(3)}, // no id: sq-b stays
			refund(p, r1, 300, t(4)),
			refund(p, r1, 300, t(5)), // the same refund again
			refund(p, r2, 200, t(6)),
			events.RefundFailed{PaymentID: p, RefundID: r2, FailureCode: "X", At: t(7)},
			events.RefundCompleted{PaymentID: p, RefundID: r1, ProviderRefundID: "rf-1", At: t(8)},
			events.RefundCompleted{PaymentID: p, RefundID: r1, ProviderRefundID: "rf-1", At: t(9)},
			events.RefundFailed{PaymentID: p, RefundID: r1, At: t(10)},
			events.RefundCompleted{PaymentID: p, RefundID: r2, At: t(11)},
			events.PaymentFailed{PaymentID: p, ProviderPaymentID: "sq-c", FailureCode: "GENERIC_DECLINE", At: t(12)},
			events.PaymentPending{PaymentID: p, ProviderPaymentID: "sq-d", At: t(13)},
			refund(p, r3, 700, t(14)),
			events.RefundCompleted{PaymentID: p, RefundID: r3, At: t(15)},
			events.PaymentCompleted{PaymentID: p, ProviderPaymentID: "sq-e", At: t(16)},
		}},
		{"declined", declined, []events.Event{
			req(declined, 700, fine),
			events.PaymentPending{PaymentID: declined, ProviderPaymentID: "sq-1", At: fine.Add(time.Nanosecond)},
			events.PaymentFailed{PaymentID: declined, FailureCode: "CVV_FAILURE", At: t(2)}, // no id: sq-1 stays
			events.PaymentCompleted{PaymentID: declined, ProviderPaymentID: "sq-2", At: t(3)},
			refund(declined, dr, 100, t(4)),
			events.RefundCompleted{PaymentID: declined, RefundID: dr, At: t(5)},
		}},
		{"without times", untimed, []events.Event{
			req(untimed, 50, time.Time{}),
			events.PaymentCompleted{PaymentID: untimed, ProviderPaymentID: "sq"},
			refund(untimed, uuid.New(), 50, time.Time{}),
		}},
		{"requested twice", again, []events.Event{
			req(again, 300, t(0)),
			events.PaymentRequested{PaymentID: again, UserID: other, AmountMinor: 999, Currency: "GBP", RequestedAt: t(1)},
			events.PaymentCompleted{PaymentID: again, ProviderPaymentID: "sq", At: t(2)},
		}},
		{"never requested", ghost, []events.Event{
			events.PaymentCompleted{PaymentID: ghost, ProviderPaymentID: "sq", At: t(1)},
			refund(ghost, uuid.New(), 1, t(2)),
		}},
	}
}

type paymentRuleScenario struct {
	name string
	id   uuid.UUID
	evs  []events.Event
}

// TestPaymentsReadModelFollowsEvolvePayment holds the payments projection, which states the payment
// rules in SQL, and the WebSocket feed's payment.updated frames to evolvePayment's view after every
// event of every scenario: the one place the rules are written in Go is the one they all answer by.
func TestPaymentsReadModelFollowsEvolvePayment(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t, pgtest.NewDatabase(t))
	rm, err := projections.NewPayments(pool)
	if err != nil {
		t.Fatal(err)
	}
	owner, other := uuid.New(), uuid.New()
	occurred := time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC) // the envelopes' time, for events without one
	for _, sc := range paymentRuleScenarios(owner, other) {
		t.Run(sc.name, func(t *testing.T) {
			log := newMemLog()
			feed := paymentFeed(t, log, 0, nil)
			id := sc.id
			var st payment
			for i, ev := range sc.evs {
				env := log.addAt(id, ev, occurred)
				st = evolvePayment(st, env)
				b := &pgx.Batch{}
				if err := rm.Apply(b, env); err != nil {
					t.Fatalf("step %d (%s): apply: %v", i, env.Type, err)
				}
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
					t.Fatalf("step %d (%s): %v", i, env.Type, err)
				}
				got, found, err := rm.Payment(ctx, owner, id)
				if err != nil {
					t.Fatal(err)
				}
				frames, err := feed.Frames(ctx, env)
				if err != nil {
					t.Fatal(err)
				}
				// A feed that holds nothing folds the payment from the log up to env.
				reloaded, err := feed.ForUser(owner, 1).Frames(ctx, env)
				if err != nil {
					t.Fatal(err)
				}
				frames = append(frames, reloaded...)
				if !st.exists() {
					if found || len(frames) != 0 {
						t.Fatalf("step %d (%s): a payment never requested: read model %v %+v, frames %+v", i, env.Type, found, got, frames)
					}
					continue
				}
				want := paymentJSON(t, st.view())
				if !found {
					t.Fatalf("step %d (%s): not in the read model, want %s", i, env.Type, want)
				}
				if g := paymentJSON(t, got); g != want {
					t.Fatalf("step %d (%s): read model\n%s\nwant (evolvePayment)\n%s", i, env.Type, g, want)
				}
				if len(frames) != 2 {
					t.Fatalf("step %d (%s): frames %+v, want one of the feed and one of a feed that reloads", i, env.Type, frames)
				}
				for _, f := range frames {
					if g := paymentJSON(t, f.Data.(queries.Payment)); g != want {
						t.Fatalf("step %d (%s): payment.updated\n%s\nwant (evolvePayment)\n%s", i, env.Type, g, want)
					}
				}
			}
		})
	}
}

func paymentJSON(t *testing.T, p queries.Payment) string {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
