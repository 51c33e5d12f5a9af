// Package problem is Taki's RFC 9457 vocabulary shared by every transport: the problem object, its
// type URIs and titles, and the mapping from a command's error Kind to a status. HTTP answers write it
// as application/problem+json; WebSocket error frames carry it.
package problem

import (
	"net/http"

	"taki/commands"
)

// TypeBase prefixes every problem slug.
const TypeBase = "https://taki.dev/problems/"

// Slugs of failures that belong to the transport rather than to a command.
const (
	SlugInternal             = "internal"
	SlugBadRequest           = "bad-request"
	SlugMethodNotAllowed     = "method-not-allowed"
	SlugPayloadTooLarge      = "payload-too-large"
	SlugUnsupportedMediaType = "unsupported-media-type"
)

// InternalDetail is all a client learns of an internal error; the rest goes to the log.
const InternalDetail = "an unexpected error occurred; it has been logged"

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type   string                `json:"type"`
	Title  string                `json:"title"`
	Status int                   `json:"status"`
	Detail string                `json:"detail,omitempty"`
	Errors []commands.FieldError `json:"errors,omitempty"`
}

// Type returns the type URI of a slug.
func Type(slug string) string { return TypeBase + slug }

// New returns the problem of a slug with its usual title.
func New(status int, slug, detail string) Problem {
	return Problem{Type: Type(slug), Title: Title(slug, status), Status: status, Detail: detail}
}

// Internal is the problem of an error whose details must not reach the client.
func Internal() Problem { return New(http.StatusInternalServerError, SlugInternal, InternalDetail) }

// Title is the usual title of a slug.
func Title(slug string, status int) string {
	switch slug {
	case string(commands.KindValidation):
		return "Invalid request"
	case string(commands.KindUnauthenticated):
		return "Authentication required"
	case string(commands.KindForbidden):
		return "Forbidden"
	case string(commands.KindNotFound):
		return "Not found"
	case string(commands.KindConflict):
		return "Conflict"
	case string(commands.KindEmailTaken):
		return "Email already registered"
	case string(commands.KindCSRF):
		return "Missing or invalid CSRF token"
	case string(commands.KindRateLimited):
		return "Too many requests"
	case string(commands.KindIdempotencyKeyReused):
		return "Idempotency key reused with a different request"
	case string(commands.KindProviderUnavailable):
		return "Payment provider unavailable"
	case string(commands.KindUnavailable):
		return "Service unavailable"
	case SlugBadRequest:
		return "Bad request"
	case SlugMethodNotAllowed:
		return "Method not allowed"
	case SlugPayloadTooLarge:
		return "Payload too large"
	case SlugUnsupportedMediaType:
		return "Unsupported media type"
	case SlugInternal:
		return "Internal server error"
	}
	return http.StatusText(status)
}

// KindStatus maps every Kind clients know to its status; a Kind missing here is a programming error
// and answers 500, so a new Kind cannot leak an unreviewed detail.
func KindStatus(k commands.Kind) (int, bool) {
	switch k {
	case commands.KindValidation, commands.KindIdempotencyKeyReused:
		return http.StatusUnprocessableEntity, true
	case commands.KindUnauthenticated:
		return http.StatusUnauthorized, true
	case commands.KindForbidden, commands.KindCSRF:
		return http.StatusForbidden, true
	case commands.KindNotFound:
		return http.StatusNotFound, true
	case commands.KindConflict, commands.KindEmailTaken:
		return http.StatusConflict, true
	case commands.KindRateLimited:
		return http.StatusTooManyRequests, true
	case commands.KindProviderUnavailable, commands.KindUnavailable:
		return http.StatusServiceUnavailable, true
	}
	return 0, false
}

// OfError returns the problem of a command error, and false when err is not one a client may see
// (then the caller answers Internal and logs err).
func OfError(err error) (Problem, bool) {
	ce, ok := commands.AsError(err)
	if !ok || ce == nil {
		return Problem{}, false
	}
	status, known := KindStatus(ce.Kind)
	if !known {
		return Problem{}, false
	}
	p := New(status, string(ce.Kind), ce.Detail)
	if ce.Kind == commands.KindValidation {
		p.Errors = ce.Fields
	}
	return p, true
}
