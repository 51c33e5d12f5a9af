package bus

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"taki/commands"
	"taki/events"
)

// Logging logs each dispatch: debug on success, warn on a client error, error on anything else.
func Logging(logger *slog.Logger) Middleware {
	return func(ctx context.Context, m Message, next Next) (any, error) {
		start := time.Now()
		out, err := next(ctx, m)
		attrs := []any{slog.String("kind", m.Kind.String()), slog.String("name", m.Name), slog.Duration("took", time.Since(start))}
		switch {
		case err == nil:
			logger.DebugContext(ctx, "dispatched", attrs...)
		case isClientError(err):
			logger.DebugContext(ctx, "rejected", append(attrs, slog.String("err", err.Error()))...)
		default:
			logger.ErrorContext(ctx, "dispatch failed", append(attrs, slog.String("err", err.Error()))...)
		}
		return out, err
	}
}

func isClientError(err error) bool {
	_, ok := commands.AsError(err)
	return ok || errors.Is(err, context.Canceled)
}

// Metrics counts dispatches and their durations by message name and outcome.
func Metrics(reg prometheus.Registerer) Middleware {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taki_bus_messages_total",
		Help: "Commands and queries dispatched, by kind, name and outcome (ok, rejected, error).",
	}, []string{"kind", "name", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "taki_bus_message_duration_seconds",
		Help:    "Time to handle a command or query, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
	}, []string{"kind", "name"})
	reg.MustRegister(total, duration)
	return func(ctx context.Context, m Message, next Next) (any, error) {
		start := time.Now()
		out, err := next(ctx, m)
		outcome := "ok"
		if err != nil {
			outcome = "error"
			if isClientError(err) {
				outcome = "rejected"
			}
		}
		total.WithLabelValues(m.Kind.String(), m.Name, outcome).Inc()
		duration.WithLabelValues(m.Kind.String(), m.Name).Observe(time.Since(start).Seconds())
		return out, err
	}
}

// Validatable messages check their own fields before any handler runs.
type Validatable interface {
	Validate() error
}

// Validation rejects a message whose Validate fails, before its handler loads anything.
func Validation() Middleware {
	return func(ctx context.Context, m Message, next Next) (any, error) {
		if v, ok := m.Body.(Validatable); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
		return next(ctx, m)
	}
}

// RetryConflicts re-runs a command (load, decide, append) when another writer appended to its stream
// first, up to attempts times with a short jittered pause, so clients never see a concurrency conflict
// under ordinary contention.
func RetryConflicts(attempts int) Middleware {
	if attempts < 1 {
		attempts = 1
	}
	return func(ctx context.Context, m Message, next Next) (any, error) {
		if m.Kind != KindCommand {
			return next(ctx, m)
		}
		var err error
		for i := 0; i < attempts; i++ {
			var out any
			out, err = next(ctx, m)
			if !errors.Is(err, events.ErrConflict) {
				return out, err
			}
			if rec, ok := ctx.Value(recorderKey{}).(*recorder); ok {
				rec.reset()
			}
			pause := time.Duration(rand.Int64N(int64(time.Millisecond)*int64(i+1))) + 100*time.Microsecond
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pause):
			}
		}
		return nil, commands.Conflict("the resource changed concurrently too often; try again")
	}
}

// ReadModelQuery is a query served by one projection's read model.
type ReadModelQuery interface {
	ReadModel() string
}

// Waiter blocks until a projection has applied the event at a log position, or timeout passes.
type Waiter interface {
	WaitFor(ctx context.Context, projection string, pos events.Position, timeout time.Duration) (applied bool, err error)
}

// Consistency is a read-your-writes request attached to a context: the client's token, and whether the
// answer had to be served before its read model caught up.
type Consistency struct {
	Token events.Position
	Stale bool
}

type consistencyKey struct{}

// WithConsistency asks every query run with the returned context to wait for token first.
func WithConsistency(ctx context.Context, token events.Position) (context.Context, *Consistency) {
	c := &Consistency{Token: token}
	return context.WithValue(ctx, consistencyKey{}, c), c
}

// ReadYourWrites makes a query wait (at most timeout) until its read model has applied the caller's
// consistency token; past that it answers with what it has and marks the answer stale.
func ReadYourWrites(w Waiter, timeout time.Duration) Middleware {
	return func(ctx context.Context, m Message, next Next) (any, error) {
		c, ok := ctx.Value(consistencyKey{}).(*Consistency)
		rm, isRM := m.Body.(ReadModelQuery)
		if m.Kind != KindQuery || !ok || !isRM || c.Token.IsZero() {
			return next(ctx, m)
		}
		applied, err := w.WaitFor(ctx, rm.ReadModel(), c.Token, timeout)
		if err != nil {
			return nil, err
		}
		if !applied {
			c.Stale = true
		}
		return next(ctx, m)
	}
}
