package handlers

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

func payFold(evs ...events.Event) payment {
	var p payment
	for i, ev := range evs {
		p = evolvePayment(p, events.Envelope{Type: ev.EventType(), Version: int64(i + 1), Data: ev})
	}
	return p
}

var (
	payID  = uuid.MustParse("01900000-0000-7000-8000-000000000001")
	payT0  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	payReq = events.PaymentRequested{PaymentID: payID, UserID: uuid.New(), AmountMinor: 1000, Currency: "EUR",
		SourceID: "cnon:card-nonce-ok", Description: "d", IdempotencyKey: "k", RequestHash: "h", RequestedAt: payT0}
)

func TestPaymentViewFollowsTheEvents(t *testing.T) {
	p := payFold(payReq)
	v := p.view()
	if v.Status != queries.PaymentPending || v.FailureCode != nil || v.ProviderPaymentID != nil || !v.UpdatedAt.Equal(payT0) || !v.CreatedAt.Equal(payT0) {
		t.Fatalf("requested: %+v", v)
	}
	if v != requestedView(requestedEvent(p)) {
		t.Errorf("requestedView(requestedEvent(p)) = %+v, want %+v", requestedView(requestedEvent(p)), v)
	}
	t1 := payT0.Add(time.Second)
	p = payFold(payReq, events.PaymentPending{PaymentID: payID, ProviderPaymentID: "P", At: t1})
	if v := p.view(); v.Status != queries.PaymentPending || *v.ProviderPaymentID != "P" || !v.UpdatedAt.Equal(t1) {
		t.Errorf("pending: %+v", v)
	}
	r1, r2 := uuid.New(), uuid.New()
	p = payFold(payReq,
		events.PaymentCompleted{PaymentID: payID, ProviderPaymentID: "P", At: t1},
		events.RefundRequested{PaymentID: payID, RefundID: r1, AmountMinor: 300, RequestedAt: t1},
		events.RefundRequested{PaymentID: payID, RefundID: r2, AmountMinor: 700, RequestedAt: t1},
	)
	if v := p.view(); v.Status != queries.PaymentCompleted || v.RefundedMinor != 0 || p.refundable() != 0 {
		t.Errorf("completed with pending refunds: %+v, refundable %d", v, p.refundable())
	}
	t2 := t1.Add(time.Second)
	p = evolvePayment(p, events.Envelope{Data: events.RefundCompleted{PaymentID: payID, RefundID: r1, At: t2}})
	if v := p.view(); v.Status != queries.PaymentPartiallyRefunded || v.RefundedMinor != 300 || !v.UpdatedAt.Equal(t2) {
		t.Errorf("partially refunded: %+v", v)
	}
	failed := evolvePayment(p, events.Envelope{Data: events.RefundFailed{PaymentID: payID, RefundID: r2, At: t2}})
	if failed.refundable() != 700 || failed.view().Status != queries.PaymentPartiallyRefunded {
		t.Errorf("failed refund: refundable %d, %+v", failed.refundable(), failed.view())
	}
	done := evolvePayment(p, events.Envelope{Data: events.RefundCompleted{PaymentID: payID, RefundID: r2, At: t2}})
	if v := done.view(); v.Status != queries.PaymentRefunded || v.RefundedMinor != 1000 {
		t.Errorf("refunded: %+v", v)
	}
	// A decided refund stays decided.
	again := evolvePayment(done, events.Envelope{Data: events.RefundFailed{PaymentID: payID, RefundID: r2, At: t2}})
	if again.RefundedMinor != 1000 || again.ReservedMinor != 0 {
		t.Errorf("refund decided twice: %+v", again)
	}
	// The earlier state is unchanged (states share no memory).
	if r, _ := p.refund(r2); r.Status != queries.RefundPending {
		t.Errorf("evolve changed an earlier state's refund: %+v", r)
	}
}

func TestPaymentOutcomesNeverMoveBackwards(t *testing.T) {
	at := payT0.Add(time.Minute)
	out := func(p payment, outcome string) events.Event {
		ev, err := paymentOutcomeEvent(p, commands.RecordPaymentOutcome{PaymentID: payID, Outcome: outcome, ProviderPaymentID: "P", FailureCode: "X"}, at)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	requested := payFold(payReq)
	pending := payFold(payReq, events.PaymentPending{PaymentID: payID, ProviderPaymentID: "P"})
	completed := payFold(payReq, events.PaymentCompleted{PaymentID: payID, ProviderPaymentID: "P"})
	failed := payFold(payReq, events.PaymentFailed{PaymentID: payID, FailureCode: "GENERIC_DECLINE"})
	for _, tc := range []struct {
		name    string
		p       payment
		outcome string
		want    string // event type, or "" for none
	}{
		{"requested pending", requested, commands.OutcomePending, "payment.pending"},
		{"requested completed", requested, commands.OutcomeCompleted, "payment.completed"},
		{"requested failed", requested, commands.OutcomeFailed, "payment.failed"},
		{"pending pending", pending, commands.OutcomePending, ""},
		{"pending completed", pending, commands.OutcomeCompleted, "payment.completed"},
		{"completed pending", completed, commands.OutcomePending, ""},
		{"completed failed", completed, commands.OutcomeFailed, ""},
		{"failed completed", failed, commands.OutcomeCompleted, ""},
	} {
		ev := out(tc.p, tc.outcome)
		got := ""
		if ev != nil {
			got = ev.EventType()
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Even if such an event were in the log, evolve would not move a decided payment.
	back := evolvePayment(completed, events.Envelope{Data: events.PaymentPending{PaymentID: payID, ProviderPaymentID: "Q"}})
	if back.Status != paymentCompleted || back.ProviderPaymentID != "P" {
		t.Errorf("completed moved back: %+v", back)
	}
	if _, err := paymentOutcomeEvent(requested, commands.RecordPaymentOutcome{Outcome: "maybe"}, at); err == nil {
		t.Errorf("unknown outcome accepted")
	}
}
