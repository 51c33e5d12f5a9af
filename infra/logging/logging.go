// Package logging builds Taki's slog logger and carries the ids that every log line of a request names:
// request id, correlation id and acting user id. It never logs secrets: callers pass ids, not tokens.
package logging

import (
	"context"
	"io"
	"log/slog"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	correlationIDKey
	causationIDKey
	userIDKey
)

// New returns a logger writing format ("json" or "text") at level to w. Every record logged with a
// context gets that context's request, correlation and user ids.
func New(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(contextHandler{h})
}

// Discard is a logger for tests and tools that want no output.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if v := RequestID(ctx); v != "" {
		r.AddAttrs(slog.String("request_id", v))
	}
	if v := CorrelationID(ctx); v != "" {
		r.AddAttrs(slog.String("correlation_id", v))
	}
	if v := UserID(ctx); v != "" {
		r.AddAttrs(slog.String("user_id", v))
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}

// WithRequestID returns ctx carrying the id of the HTTP request or WebSocket frame being served.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// RequestID returns the request id of ctx, or "".
func RequestID(ctx context.Context) string { return str(ctx, requestIDKey) }

// WithCorrelationID returns ctx carrying the id that ties together everything one client action caused.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationIDKey, id)
}

// CorrelationID returns the correlation id of ctx, or "".
func CorrelationID(ctx context.Context) string { return str(ctx, correlationIDKey) }

// WithCausationID returns ctx carrying the id of the message (command or event) that caused the work.
func WithCausationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, causationIDKey, id)
}

// CausationID returns the causation id of ctx, or "".
func CausationID(ctx context.Context) string { return str(ctx, causationIDKey) }

// WithUserID returns ctx carrying the acting user's id.
func WithUserID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, userIDKey, id)
}

// UserID returns the acting user's id of ctx, or "".
func UserID(ctx context.Context) string { return str(ctx, userIDKey) }

// Detach returns a context that carries ctx's request, correlation, causation and user ids and
// nothing else of it: neither its cancellation nor its other values. Work that outlives a request
// (a WebSocket) logs with the request's ids without keeping the request's objects alive.
func Detach(ctx context.Context) context.Context {
	out := context.Background()
	for _, k := range []ctxKey{requestIDKey, correlationIDKey, causationIDKey, userIDKey} {
		if v := str(ctx, k); v != "" {
			out = context.WithValue(out, k, v)
		}
	}
	return out
}

func str(ctx context.Context, k ctxKey) string {
	if ctx == nil {
		return ""
	}
	v, _ := ctx.Value(k).(string)
	return v
}
