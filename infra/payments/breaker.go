package payments

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// BreakerConfig configures the circuit breaker around provider calls.
type BreakerConfig struct {
	Name string // label of the breaker in logs and metrics; default "square"
	// ConsecutiveFailures that open the breaker (network errors, 429, 5xx; declines and other 4xx
	// are successes, caller cancellations do not count); default 5.
	ConsecutiveFailures uint32
	// OpenTimeout is how long the breaker stays open before it half-opens; default 30s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes the half-open breaker lets through, and how many of them
	// must succeed for it to close; default 1.
	HalfOpenRequests uint32
	// Interval clears the failure counts of a closed breaker periodically; 0 never clears them (only
	// a success resets consecutive failures).
	Interval time.Duration
}

func (b *BreakerConfig) setDefaults() {
	if b.Name == "" {
		b.Name = "square"
	}
	if b.ConsecutiveFailures == 0 {
		b.ConsecutiveFailures = 5
	}
	if b.OpenTimeout == 0 {
		b.OpenTimeout = 30 * time.Second
	}
	if b.HalfOpenRequests == 0 {
		b.HalfOpenRequests = 1
	}
}

func (b *BreakerConfig) validate() error {
	if b.OpenTimeout < 0 || b.Interval < 0 {
		return errors.New("payments breaker: open timeout and interval must be positive")
	}
	return nil
}

// breaker wraps gobreaker with what Taki needs: the time until it half-opens and metrics.
type breaker struct {
	name    string
	timeout time.Duration
	cb      *gobreaker.CircuitBreaker[*response]

	mu       sync.Mutex
	openedAt time.Time

	stateDesc *prometheus.Desc
	attempts  *prometheus.CounterVec
}

func newBreaker(cfg BreakerConfig, logger *slog.Logger) *breaker {
	b := &breaker{
		name:    cfg.Name,
		timeout: cfg.OpenTimeout,
		stateDesc: prometheus.NewDesc("taki_payments_breaker_state",
			"State of the payments provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
			[]string{"breaker"}, nil),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taki_payments_provider_calls_total",
			Help: "Calls to the payments provider by operation and outcome (ok, declined, client_error, " +
				"server_error, rate_limited, network, canceled, rejected: refused by the open breaker).",
		}, []string{"breaker", "op", "outcome"}),
	}
	b.cb = gobreaker.NewCircuitBreaker[*response](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: cfg.HalfOpenRequests,
		Interval:    cfg.Interval,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.ConsecutiveFailures },
		OnStateChange: func(name string, from, to gobreaker.State) {
			// Called with gobreaker's lock held: no calls back into the breaker here.
			if to == gobreaker.StateOpen {
				b.mu.Lock()
				b.openedAt = time.Now()
				b.mu.Unlock()
			}
			logger.Warn("payments breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
		},
		IsSuccessful: isBreakerSuccess,
		IsExcluded: func(err error) bool {
			var c *canceledError
			return errors.As(err, &c)
		},
	})
	return b
}

// isBreakerSuccess: the provider answered as a working provider does. Declines and 4xx other than 429
// are decisions about the request, not failures of the provider.
func isBreakerSuccess(err error) bool {
	var declined *declinedError
	var api *APIError
	switch {
	case err == nil, errors.As(err, &declined):
		return true
	case errors.As(err, &api):
		return !api.Transient()
	}
	return false
}

func isBreakerRejection(err error) bool {
	return errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}

// unavailable is the error of a call the breaker refused, with the time until it half-opens.
func (b *breaker) unavailable() *UnavailableError {
	b.mu.Lock()
	left := time.Until(b.openedAt.Add(b.timeout))
	b.mu.Unlock()
	if left <= 0 {
		// Half-open with its probes in flight: the verdict comes within one call.
		left = min(b.timeout, time.Second)
	}
	return &UnavailableError{Breaker: b.name, RetryAfter: left}
}

func (b *breaker) count(op string, err error) {
	b.attempts.WithLabelValues(b.name, op, outcome(err)).Inc()
}

func outcome(err error) string {
	var declined *declinedError
	var api *APIError
	var netErr *NetworkError
	var canceled *canceledError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &declined):
		return "declined"
	case isBreakerRejection(err):
		return "rejected"
	case errors.As(err, &canceled):
		return "canceled"
	case errors.As(err, &netErr):
		return "network"
	case errors.As(err, &api) && api.StatusCode == 429:
		return "rate_limited"
	case errors.As(err, &api) && api.StatusCode >= 500:
		return "server_error"
	}
	return "client_error"
}

// Describe implements prometheus.Collector.
func (c *Client) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.breaker.stateDesc
	c.breaker.attempts.Describe(ch)
}

// Collect implements prometheus.Collector: the breaker's state (0 closed, 1 half-open, 2 open) and
// the provider calls by outcome.
func (c *Client) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.breaker.stateDesc, prometheus.GaugeValue,
		stateValue(c.breaker.cb.State()), c.breaker.name)
	c.breaker.attempts.Collect(ch)
}

var _ prometheus.Collector = (*Client)(nil)

func stateValue(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateClosed:
		return 0
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return -1
}
