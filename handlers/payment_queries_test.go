package handlers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/handlers"
	"taki/queries"
)

// fakePaymentsReadModel answers from fixed data and records what it was asked.
type fakePaymentsReadModel struct {
	owner   map[uuid.UUID]uuid.UUID // payment → owner
	err     error
	after   *queries.PaymentCursor
	limit   int
	next    *queries.PaymentCursor
	billing queries.BillingSummary
}

func (f *fakePaymentsReadModel) Payment(_ context.Context, actor, id uuid.UUID) (queries.Payment, bool, error) {
	if f.err != nil {
		return queries.Payment{}, false, f.err
	}
	owner, ok := f.owner[id]
	if !ok || owner != actor {
		return queries.Payment{}, false, nil
	}
	return queries.Payment{ID: id, Status: queries.PaymentCompleted}, true, nil
}

func (f *fakePaymentsReadModel) ListPayments(_ context.Context, _ uuid.UUID, after *queries.PaymentCursor, limit int) ([]queries.Payment, *queries.PaymentCursor, error) {
	f.after, f.limit = after, limit
	return nil, f.next, f.err
}

func (f *fakePaymentsReadModel) BillingSummary(context.Context, uuid.UUID) (queries.BillingSummary, error) {
	return f.billing, f.err
}

func TestPaymentQueries(t *testing.T) {
	ctx := context.Background()
	if _, err := handlers.NewPaymentQueries(nil); err == nil {
		t.Fatal("NewPaymentQueries(nil) succeeded")
	}
	owner, stranger, pay := uuid.New(), uuid.New(), uuid.New()
	rm := &fakePaymentsReadModel{owner: map[uuid.UUID]uuid.UUID{pay: owner}}
	q, err := handlers.NewPaymentQueries(rm)
	if err != nil {
		t.Fatal(err)
	}

	get := handlers.GetPaymentHandler{PaymentQueries: q}
	if p, err := get.Handle(ctx, queries.GetPayment{Actor: owner, PaymentID: pay}); err != nil || p.ID != pay {
		t.Fatalf("GetPayment owner: %+v, %v", p, err)
	}
	_, err = get.Handle(ctx, queries.GetPayment{Actor: stranger, PaymentID: pay})
	var ce *commands.Error
	if !commands.IsKind(err, commands.KindNotFound) || !errors.As(err, &ce) {
		t.Fatalf("GetPayment stranger: %v", err)
	}
	// Another user's payment and one that does not exist answer the same.
	_, err2 := get.Handle(ctx, queries.GetPayment{Actor: owner, PaymentID: uuid.New()})
	if err2 == nil || err.Error() != err2.Error() {
		t.Fatalf("another's payment %v, a missing one %v", err, err2)
	}

	list := handlers.ListPaymentsHandler{PaymentQueries: q}
	if _, err := list.Handle(ctx, queries.ListPayments{Actor: owner, Cursor: "not a cursor!"}); !commands.IsKind(err, commands.KindValidation) {
		t.Fatalf("bad cursor: %v", err)
	}
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	rm.next = &queries.PaymentCursor{CreatedAt: created, ID: pay}
	page, err := list.Handle(ctx, queries.ListPayments{Actor: owner})
	if err != nil || page.Items == nil || page.NextCursor == nil || rm.limit != queries.DefaultLimit || rm.after != nil {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	rm.next = nil
	page, err = list.Handle(ctx, queries.ListPayments{Actor: owner, Cursor: *page.NextCursor, Limit: 7})
	if err != nil || page.NextCursor != nil || rm.limit != 7 || rm.after == nil || rm.after.ID != pay || !rm.after.CreatedAt.Equal(created) {
		t.Fatalf("next page: %+v, %v, after %+v", page, err, rm.after)
	}
	if err := (queries.ListPayments{Actor: owner, Limit: queries.MaxLimit + 1}).Validate(); !commands.IsKind(err, commands.KindValidation) {
		t.Fatalf("limit over the max: %v", err)
	}

	billing := handlers.GetBillingSummaryHandler{PaymentQueries: q}
	if s, err := billing.Handle(ctx, queries.GetBillingSummary{Actor: owner}); err != nil || s.Currencies == nil || len(s.Currencies) != 0 {
		t.Fatalf("empty billing: %+v, %v", s, err)
	}
	rm.billing = queries.BillingSummary{Currencies: []queries.CurrencySummary{{Currency: "USD", PaymentsCount: 1, PaidMinor: 5, NetMinor: 5}}}
	if s, err := billing.Handle(ctx, queries.GetBillingSummary{Actor: owner}); err != nil || len(s.Currencies) != 1 || s.Currencies[0].PaidMinor != 5 {
		t.Fatalf("billing: %+v, %v", s, err)
	}

	rm.err = errors.New("boom")
	if _, err := get.Handle(ctx, queries.GetPayment{Actor: owner, PaymentID: pay}); !errors.Is(err, rm.err) {
		t.Fatalf("read model error: %v", err)
	}
	if _, err := list.Handle(ctx, queries.ListPayments{Actor: owner}); !errors.Is(err, rm.err) {
		t.Fatalf("read model error: %v", err)
	}
	if _, err := billing.Handle(ctx, queries.GetBillingSummary{Actor: owner}); !errors.Is(err, rm.err) {
		t.Fatalf("read model error: %v", err)
	}
}
