// Package commands holds the command types of every area with their validation, and the error vocabulary
// that commands and queries answer with. Transports (HTTP, WebSocket, CLI) map an *Error to their own form:
// over HTTP each Kind is an RFC 9457 problem type slug.
package commands

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind is the class of a failure; its value is the problem slug clients see.
type Kind string

// The kinds of failure a command or query reports.
const (
	KindValidation           Kind = "validation"
	KindUnauthenticated      Kind = "unauthenticated"
	KindForbidden            Kind = "forbidden"
	KindNotFound             Kind = "not-found"
	KindConflict             Kind = "conflict"
	KindEmailTaken           Kind = "email-taken"
	KindCSRF                 Kind = "csrf"
	KindRateLimited          Kind = "rate-limited"
	KindIdempotencyKeyReused Kind = "idempotency-key-reused"
	KindProviderUnavailable  Kind = "provider-unavailable"
	KindUnavailable          Kind = "unavailable"
)

// FieldError is one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a failure a client can act on. Anything else that reaches a transport is an internal error
// whose details stay in the logs.
type Error struct {
	Kind       Kind
	Detail     string
	Fields     []FieldError
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if len(e.Fields) == 0 {
		return fmt.Sprintf("%s: %s", e.Kind, e.Detail)
	}
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return fmt.Sprintf("%s: %s (%s)", e.Kind, e.Detail, strings.Join(parts, "; "))
}

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// IsKind reports whether err carries an *Error of kind k.
func IsKind(err error, k Kind) bool {
	e, ok := AsError(err)
	return ok && e.Kind == k
}

// NewError returns an *Error of kind k.
func NewError(k Kind, detail string) *Error { return &Error{Kind: k, Detail: detail} }

// Invalid returns a validation error for the given fields, or nil when there are none.
func Invalid(fields []FieldError) error {
	if len(fields) == 0 {
		return nil
	}
	return &Error{Kind: KindValidation, Detail: "the request has invalid fields", Fields: fields}
}

// NotFound reports a missing resource, or one the caller may not know exists.
func NotFound(what string) *Error { return NewError(KindNotFound, what+" not found") }

// Forbidden reports an action the caller may not take.
func Forbidden(detail string) *Error { return NewError(KindForbidden, detail) }

// Unauthenticated reports missing or bad credentials.
func Unauthenticated(detail string) *Error { return NewError(KindUnauthenticated, detail) }

// Conflict reports a request that contradicts the current state.
func Conflict(detail string) *Error { return NewError(KindConflict, detail) }
