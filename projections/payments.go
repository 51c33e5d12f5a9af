package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/queries"
)

// Payments is the payments projection: each user's payments with their status and refunded amount,
// the refunds, and each user's billing summary per currency.
//
// Statuses (API.md): a payment is pending until the provider decides it, then completed or failed; a
// completed payment is partially_refunded once its completed refunds sum to more than zero and less
// than its amount, and refunded once they reach it. An outcome never moves a payment backwards: a
// decided payment ignores later outcomes, and a refund's outcome counts once.
//
// These rules are the payment aggregate's (handlers.evolvePayment), which the WebSocket feed folds
// too; Apply states them as one set-based statement per event rather than computing the row in Go,
// because that would read each payment before writing it and so cost replay a round trip per event.
// handlers' TestPaymentsReadModelFollowsEvolvePayment holds the two to the same answers.
type Payments struct {
	pool *pgxpool.Pool
}

// NewPayments returns the payments projection on pool.
func NewPayments(pool *pgxpool.Pool) (*Payments, error) {
	if pool == nil {
		return nil, errors.New("new payments projection: nil pool")
	}
	return &Payments{pool: pool}, nil
}

// Name implements postgres.Projection.
func (*Payments) Name() string { return queries.PaymentsReadModel }

// Tables implements postgres.Projection.
func (*Payments) Tables() []string {
	return []string{"payments", "payment_refunds", "billing_summaries"}
}

// paymentsRefundable are the statuses of a completed payment (before or after refunds).
const paymentsRefundable = `('` + queries.PaymentCompleted + `', '` + queries.PaymentPartiallyRefunded + `', '` + queries.PaymentRefunded + `')`

// Apply implements postgres.Projection. Each event is one statement; each is safe to apply twice.
// updated_at is the time the event carries (its envelope's time when it carries none).
func (*Payments) Apply(b *pgx.Batch, e events.Envelope) error {
	switch ev := e.Data.(type) {
	case events.PaymentRequested:
		t := eventTime(ev.RequestedAt, e)
		b.Queue(`INSERT INTO payments (id, user_id, status, amount_minor, currency, description, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING`,
			ev.PaymentID, ev.UserID, queries.PaymentPending, ev.AmountMinor, ev.Currency, ev.Description, t)
	case events.PaymentPending:
		b.Queue(`UPDATE payments SET provider_payment_id = COALESCE(NULLIF($2, ''), provider_payment_id), updated_at = $3
			WHERE id = $1 AND status = $4`,
			ev.PaymentID, ev.ProviderPaymentID, eventTime(ev.At, e), queries.PaymentPending)
	case events.PaymentCompleted:
		// Only a pending payment completes; its completion counts once in its owner's billing.
		b.Queue(`WITH p AS (
				UPDATE payments SET status = $4, provider_payment_id = COALESCE(NULLIF($2, ''), provider_payment_id), updated_at = $3
				WHERE id = $1 AND status = $5 RETURNING user_id, currency, amount_minor)
			INSERT INTO billing_summaries AS s (user_id, currency, payments_count, paid_minor, refunded_minor)
			SELECT user_id, currency, 1, amount_minor, 0 FROM p
			ON CONFLICT (user_id, currency) DO UPDATE
				SET payments_count = s.payments_count + 1, paid_minor = s.paid_minor + excluded.paid_minor`,
			ev.PaymentID, ev.ProviderPaymentID, eventTime(ev.At, e), queries.PaymentCompleted, queries.PaymentPending)
	case events.PaymentFailed:
		b.Queue(`UPDATE payments SET status = $5, failure_code = NULLIF($3, ''),
				provider_payment_id = COALESCE(NULLIF($2, ''), provider_payment_id), updated_at = $4
			WHERE id = $1 AND status = $6`,
			ev.PaymentID, ev.ProviderPaymentID, ev.FailureCode, eventTime(ev.At, e), queries.PaymentFailed, queries.PaymentPending)
	case events.RefundRequested:
		t := eventTime(ev.RequestedAt, e)
		b.Queue(`WITH r AS (
				INSERT INTO payment_refunds (id, payment_id, amount_minor, status, requested_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING RETURNING payment_id, amount_minor)
			UPDATE payments p SET pending_refund_minor = p.pending_refund_minor + r.amount_minor, updated_at = $5
			FROM r WHERE p.id = r.payment_id`,
			ev.RefundID, ev.PaymentID, ev.AmountMinor, queries.RefundPending, t)
	case events.RefundCompleted:
		// A pending refund completes once: its amount moves from pending to refunded, the status
		// follows, and the owner's billing counts it.
		b.Queue(`WITH r AS (
				UPDATE payment_refunds SET status = $4, provider_refund_id = NULLIF($2, ''), updated_at = $3
				WHERE id = $1 AND status = $5 RETURNING payment_id, amount_minor),
			p AS (
				UPDATE payments p SET refunded_minor = p.refunded_minor + r.amount_minor,
					pending_refund_minor = GREATEST(p.pending_refund_minor - r.amount_minor, 0),
					status = CASE WHEN p.refunded_minor + r.amount_minor >= p.amount_minor THEN $6
						WHEN p.refunded_minor + r.amount_minor > 0 THEN $7 ELSE p.status END,
					updated_at = $3
				FROM r WHERE p.id = r.payment_id AND p.status IN `+paymentsRefundable+`
				RETURNING p.user_id, p.currency, r.amount_minor)
			UPDATE billing_summaries s SET refunded_minor = s.refunded_minor + p.amount_minor
			FROM p WHERE s.user_id = p.user_id AND s.currency = p.currency`,
			ev.RefundID, ev.ProviderRefundID, eventTime(ev.At, e), queries.RefundCompleted, queries.RefundPending,
			queries.PaymentRefunded, queries.PaymentPartiallyRefunded)
	case events.RefundFailed:
		// A failed refund restores nothing: only its reservation ends.
		b.Queue(`WITH r AS (
				UPDATE payment_refunds SET status = $4, failure_code = NULLIF($2, ''), updated_at = $3
				WHERE id = $1 AND status = $5 RETURNING payment_id, amount_minor)
			UPDATE payments p SET pending_refund_minor = GREATEST(p.pending_refund_minor - r.amount_minor, 0), updated_at = $3
			FROM r WHERE p.id = r.payment_id`,
			ev.RefundID, ev.FailureCode, eventTime(ev.At, e), queries.RefundFailed, queries.RefundPending)
	}
	return nil
}

// eventTime is t, or the envelope's time when the event carries none.
func eventTime(t time.Time, e events.Envelope) time.Time {
	if t.IsZero() {
		return e.OccurredAt.UTC()
	}
	return t.UTC()
}

const paymentColumns = `id, status, amount_minor, currency, refunded_minor, description, failure_code,
	provider_payment_id, created_at, updated_at`

// Payment reads: by id for its owner; a user's page newest first (ties by id, descending) and the
// page after a (created_at, id), both one range of payments_by_user; the billing summary, one range
// of billing_summaries_pkey.
const (
	paymentSQL        = `SELECT ` + paymentColumns + ` FROM payments WHERE id = $1 AND user_id = $2`
	listPaymentsSQL   = `SELECT ` + paymentColumns + ` FROM payments WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`
	listPaymentsAfter = `SELECT ` + paymentColumns + ` FROM payments WHERE user_id = $1 AND (created_at, id) < ($3, $4)
		ORDER BY created_at DESC, id DESC LIMIT $2`
	billingSQL = `SELECT currency, payments_count, paid_minor, refunded_minor FROM billing_summaries
		WHERE user_id = $1 ORDER BY currency`
)

func scanPayment(row pgx.Row) (queries.Payment, error) {
	var p queries.Payment
	err := row.Scan(&p.ID, &p.Status, &p.AmountMinor, &p.Currency, &p.RefundedMinor, &p.Description, &p.FailureCode,
		&p.ProviderPaymentID, &p.CreatedAt, &p.UpdatedAt)
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return p, err
}

// Payment reads one of actor's payments; false if it does not exist or belongs to another user.
func (p *Payments) Payment(ctx context.Context, actor, paymentID uuid.UUID) (queries.Payment, bool, error) {
	pay, err := scanPayment(p.pool.QueryRow(ctx, paymentSQL, paymentID, actor))
	if errors.Is(err, pgx.ErrNoRows) {
		return queries.Payment{}, false, nil
	}
	if err != nil {
		return queries.Payment{}, false, fmt.Errorf("read payment %s: %w", paymentID, err)
	}
	return pay, true, nil
}

// ListPayments lists actor's payments newest first (ties by id, descending), keyset-paged after the
// given position, in one query. The cursor is nil on the last page.
func (p *Payments) ListPayments(ctx context.Context, actor uuid.UUID, after *queries.PaymentCursor, limit int) ([]queries.Payment, *queries.PaymentCursor, error) {
	limit = clampLimit(limit)
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = p.pool.Query(ctx, listPaymentsSQL, actor, limit+1)
	} else {
		rows, err = p.pool.Query(ctx, listPaymentsAfter, actor, limit+1, after.CreatedAt, after.ID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list payments of %s: %w", actor, err)
	}
	defer rows.Close()
	out := make([]queries.Payment, 0, min(limit, 64))
	more := false
	for rows.Next() {
		if len(out) == limit {
			more = true
			break
		}
		pay, err := scanPayment(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("list payments of %s: %w", actor, err)
		}
		out = append(out, pay)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list payments of %s: %w", actor, err)
	}
	if !more {
		return out, nil, nil
	}
	last := out[len(out)-1]
	return out, &queries.PaymentCursor{CreatedAt: last.CreatedAt, ID: last.ID}, nil
}

// BillingSummary reads actor's billing summary, currencies in alphabetical order; none before the
// first completed payment.
func (p *Payments) BillingSummary(ctx context.Context, actor uuid.UUID) (queries.BillingSummary, error) {
	rows, err := p.pool.Query(ctx, billingSQL, actor)
	if err != nil {
		return queries.BillingSummary{}, fmt.Errorf("billing summary of %s: %w", actor, err)
	}
	out := queries.BillingSummary{Currencies: []queries.CurrencySummary{}}
	defer rows.Close()
	for rows.Next() {
		var c queries.CurrencySummary
		if err := rows.Scan(&c.Currency, &c.PaymentsCount, &c.PaidMinor, &c.RefundedMinor); err != nil {
			return queries.BillingSummary{}, fmt.Errorf("billing summary of %s: %w", actor, err)
		}
		c.NetMinor = c.PaidMinor - c.RefundedMinor
		out.Currencies = append(out.Currencies, c)
	}
	if err := rows.Err(); err != nil {
		return queries.BillingSummary{}, fmt.Errorf("billing summary of %s: %w", actor, err)
	}
	return out, nil
}
