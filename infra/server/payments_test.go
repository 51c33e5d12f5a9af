package server

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"taki/handlers"
	"taki/infra/payments"
)

// What the process manager makes of a provider error: a decision (the payment fails) or a retry with
// the same key.
func TestGatewayClassifiesProviderErrors(t *testing.T) {
	t.Parallel()
	api := func(status int, code string) error {
		return &payments.APIError{Op: "create payment", StatusCode: status, Errors: []payments.ErrorDetail{{Code: code}}}
	}
	for _, tc := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"declined", api(http.StatusPaymentRequired, "GENERIC_DECLINE"), false},
		{"bad request", api(http.StatusBadRequest, "INVALID_VALUE"), false},
		{"our credentials", api(http.StatusUnauthorized, "UNAUTHORIZED"), true},
		{"our permissions", api(http.StatusForbidden, "FORBIDDEN"), true},
		{"overloaded", api(http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE"), true},
		{"rate limited", api(http.StatusTooManyRequests, "RATE_LIMITED"), true},
		{"breaker open", &payments.UnavailableError{}, true},
		{"network", errors.New("connection reset"), true},
	} {
		err := gateway{}.classify(context.Background(), tc.err)
		var retry *handlers.ProviderRetryError
		if got := errors.As(err, &retry); got != tc.retry {
			t.Errorf("%s: classified as %v, want retry %v", tc.name, err, tc.retry)
		}
	}
}
