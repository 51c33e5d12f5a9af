package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics counts and times HTTP requests by method and route template.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics with reg. Registering twice with one registry (two engines in
// one process, as in tests) shares the first collectors instead of failing.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests answered, by method, route template and status code.",
	}, []string{"method", "route", "status"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds",
		Help: "Time from the request reaching the router to its answer, by method and route template.",
		// Finer than the defaults at the low end: the targets are single-digit milliseconds.
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"method", "route"})
	return &Metrics{
		requests: register(reg, requests),
		duration: register(reg, duration),
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	// A clash with a different metric of the same name is a wiring bug best found at start-up.
	panic(err)
}

// Middleware records every request, labelled by its route template (c.FullPath()), never by its raw
// path: ids in paths would make a series per resource. Unmatched requests share the route "unmatched"
// and methods outside the standard set share "OTHER", so clients cannot grow the series count.
func (m *Metrics) Middleware() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		method := methodLabel(c.Request.Method)
		route := routeOf(c)
		status := c.Writer.Status()
		if status < 300 && strings.EqualFold(c.GetHeader("Upgrade"), "websocket") {
			// An upgraded WebSocket returns here only when the socket closes: it is counted, as 101,
			// but its lifetime is no request duration.
			m.requests.WithLabelValues(method, route, strconv.Itoa(http.StatusSwitchingProtocols)).Inc()
			return
		}
		m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
	}
}

func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// MetricsHandler serves g in the Prometheus text exposition format.
func MetricsHandler(g prometheus.Gatherer) gin.HandlerFunc {
	return gin.WrapH(promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}
