package httpapi

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/infra/logging"
)

const (
	headerRequestID     = "X-Request-Id"
	headerCorrelationID = "X-Correlation-Id"
	maxClientIDLen      = 128
)

// RequestID gives every request an id, echoing the client's X-Request-Id when it is usable, and sets
// it on the response and in the request context, where every log line of the request finds it. The
// request id is also the correlation id, unless the client sent its own X-Correlation-Id to tie several
// requests together.
func RequestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader(headerRequestID)
		if !validClientID(id) {
			id = newID()
		}
		correlation := c.GetHeader(headerCorrelationID)
		if !validClientID(correlation) {
			correlation = id
		}
		c.Header(headerRequestID, id)
		ctx := logging.WithRequestID(c.Request.Context(), id)
		ctx = logging.WithCorrelationID(ctx, correlation)
		c.Request = c.Request.WithContext(ctx)
	}
}

// validClientID accepts 1 to 128 visible ASCII characters. Anything else (spaces, control characters,
// other bytes) could forge or break log lines, so it is replaced rather than cleaned.
func validClientID(id string) bool {
	if len(id) == 0 || len(id) > maxClientIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// newID returns a UUIDv7 (time-ordered, so ids sort like the log), or a v4 in the unlikely event that
// the clock-based generator fails.
func newID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// AccessLog writes one line per request once it is answered. It logs the route template and the path,
// never the query string (a WebSocket token travels there), headers or cookies. It reads the request
// context after the handlers ran, so the user id set by authentication appears too. It also makes logger
// the one WriteError reports internal errors to.
func AccessLog(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		setLogger(c, logger)
		start := time.Now()
		c.Next()
		status := c.Writer.Status()
		level := slog.LevelInfo
		if status >= http.StatusInternalServerError {
			level = slog.LevelError
		}
		ctx := c.Request.Context()
		if !logger.Enabled(ctx, level) {
			return // spare building the line's attributes on every request
		}
		logger.LogAttrs(ctx, level, "http request",
			slog.String("method", c.Request.Method),
			slog.String("route", routeOf(c)),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)),
			slog.Int("bytes", max(c.Writer.Size(), 0)),
			slog.String("client_ip", c.ClientIP()),
		)
	}
}

// Recovery turns a panic in a handler into a 500 problem. The panic value and stack go to the log
// only. http.ErrAbortHandler is re-raised: it is net/http's way to drop a connection on purpose.
func Recovery(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		setLogger(c, logger)
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			logger.ErrorContext(c.Request.Context(), "panic in handler",
				slog.Any("panic", v),
				slog.String("method", c.Request.Method),
				slog.String("route", routeOf(c)),
				slog.String("stack", string(debug.Stack())),
			)
			WriteProblem(c, NewProblem(http.StatusInternalServerError, slugInternal, internalDetail))
		}()
		c.Next()
	}
}

// NoRoute answers requests that match no route with a 404 problem.
func NoRoute() gin.HandlerFunc {
	return func(c *gin.Context) {
		NotFound(c, "no resource at "+c.Request.URL.Path)
	}
}

// NoMethod answers a known path asked with a method it lacks with a 405 problem; gin's router has
// already set the Allow header. gin calls it only when the engine has HandleMethodNotAllowed = true;
// otherwise such requests reach NoRoute and get a 404.
func NoMethod() gin.HandlerFunc {
	return func(c *gin.Context) {
		MethodNotAllowed(c)
	}
}
