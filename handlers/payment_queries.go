package handlers

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"taki/commands"
	"taki/queries"
)

// PaymentsReadModel is what the payments projection serves to queries. Payment answers false for
// another user's payment, so its existence is not revealed.
type PaymentsReadModel interface {
	Payment(ctx context.Context, actor, paymentID uuid.UUID) (queries.Payment, bool, error)
	ListPayments(ctx context.Context, actor uuid.UUID, after *queries.PaymentCursor, limit int) ([]queries.Payment, *queries.PaymentCursor, error)
	BillingSummary(ctx context.Context, actor uuid.UUID) (queries.BillingSummary, error)
}

// PaymentQueries answers the payment and billing queries from the payments read model.
type PaymentQueries struct{ rm PaymentsReadModel }

// NewPaymentQueries refuses a nil read model.
func NewPaymentQueries(rm PaymentsReadModel) (*PaymentQueries, error) {
	if rm == nil {
		return nil, errors.New("new payment queries: nil read model")
	}
	return &PaymentQueries{rm: rm}, nil
}

// GetPaymentHandler answers GetPayment.
type GetPaymentHandler struct{ *PaymentQueries }

// Handle implements bus.QueryHandler.
func (h GetPaymentHandler) Handle(ctx context.Context, q queries.GetPayment) (queries.Payment, error) {
	p, ok, err := h.rm.Payment(ctx, q.Actor, q.PaymentID)
	if err != nil {
		return queries.Payment{}, err
	}
	if !ok {
		return queries.Payment{}, commands.NotFound("payment")
	}
	return p, nil
}

// ListPaymentsHandler answers ListPayments.
type ListPaymentsHandler struct{ *PaymentQueries }

// Handle implements bus.QueryHandler.
func (h ListPaymentsHandler) Handle(ctx context.Context, q queries.ListPayments) (queries.Page[queries.Payment], error) {
	limit := q.Limit
	if limit == 0 {
		limit = queries.DefaultLimit
	}
	var after *queries.PaymentCursor
	if q.Cursor != "" {
		after = &queries.PaymentCursor{}
		if err := queries.DecodeCursor(q.Cursor, after); err != nil {
			return queries.Page[queries.Payment]{}, q.Validate()
		}
	}
	items, next, err := h.rm.ListPayments(ctx, q.Actor, after, limit)
	if err != nil {
		return queries.Page[queries.Payment]{}, err
	}
	page := queries.Page[queries.Payment]{Items: items}
	if page.Items == nil {
		page.Items = []queries.Payment{}
	}
	if next != nil {
		page.NextCursor = queries.EncodeCursor(next)
	}
	return page, nil
}

// GetBillingSummaryHandler answers GetBillingSummary.
type GetBillingSummaryHandler struct{ *PaymentQueries }

// Handle implements bus.QueryHandler.
func (h GetBillingSummaryHandler) Handle(ctx context.Context, q queries.GetBillingSummary) (queries.BillingSummary, error) {
	s, err := h.rm.BillingSummary(ctx, q.Actor)
	if err != nil {
		return queries.BillingSummary{}, err
	}
	if s.Currencies == nil {
		s.Currencies = []queries.CurrencySummary{}
	}
	return s, nil
}
