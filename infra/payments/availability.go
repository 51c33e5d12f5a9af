package payments

import "github.com/sony/gobreaker/v2"

// Unavailable is the error a call would get at once because the breaker is open, or nil while the
// breaker lets calls through (closed, or half-open and probing). Callers that only record an intent
// to call later use it to refuse new work while the provider is known to be down.
func (c *Client) Unavailable() *UnavailableError {
	if c.breaker.cb.State() != gobreaker.StateOpen {
		return nil
	}
	return c.breaker.unavailable()
}
