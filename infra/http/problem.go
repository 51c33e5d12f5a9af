package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"taki/commands"
	"taki/infra/http/problem"
)

const (
	problemContentType = "application/problem+json"

	// Slugs for failures that belong to HTTP itself rather than to a command.
	slugInternal             = problem.SlugInternal
	slugBadRequest           = problem.SlugBadRequest
	slugMethodNotAllowed     = problem.SlugMethodNotAllowed
	slugPayloadTooLarge      = problem.SlugPayloadTooLarge
	slugUnsupportedMediaType = problem.SlugUnsupportedMediaType

	internalDetail = problem.InternalDetail

	// statusClientClosedRequest is nginx's code for a client that left before the answer: it is never
	// seen by the client, but it keeps such requests apart from real successes in logs and metrics.
	statusClientClosedRequest = 499

	loggerKey = "taki.httpapi.logger"
)

// Problem is an RFC 9457 problem details object (shared with the WebSocket's error frames).
type Problem = problem.Problem

// ProblemType returns the type URI of a problem slug.
func ProblemType(slug string) string { return problem.Type(slug) }

// NewProblem returns the problem of a slug with its usual title.
func NewProblem(status int, slug, detail string) Problem { return problem.New(status, slug, detail) }

// WriteProblem answers with p and stops the handler chain. When the answer has already begun it can
// only stop the chain: a second status line would corrupt the response.
func WriteProblem(c *gin.Context, p Problem) {
	c.Abort()
	if c.Writer.Written() {
		loggerFrom(c).WarnContext(c.Request.Context(), "problem after the response was written",
			slog.String("problem", p.Type), slog.Int("status", p.Status))
		return
	}
	body, err := json.Marshal(p)
	if err != nil {
		// Only a Problem holding something unmarshalable gets here; answer without its detail.
		body, _ = json.Marshal(NewProblem(http.StatusInternalServerError, slugInternal, internalDetail))
		p.Status = http.StatusInternalServerError
	}
	// A problem describes this one attempt; caches must not serve it to the next.
	c.Header("Cache-Control", "no-store")
	// Set, not defaulted: a handler may have set another type before it failed.
	c.Header("Content-Type", problemContentType)
	c.Data(p.Status, problemContentType, body)
}

// WriteError answers with the problem for err. A *commands.Error becomes the problem of its Kind;
// an oversized body becomes 413; anything else is a 500 whose details are logged (through the logger
// given to AccessLog or Recovery, else slog.Default) and never sent. A request whose client has gone
// away gets nothing worth reading: the error is logged at debug level and the status recorded as 499.
func WriteError(c *gin.Context, err error) {
	ctx := c.Request.Context()
	if p, ok := problem.OfError(err); ok {
		ce, _ := commands.AsError(err)
		if secs := retryAfterSeconds(ce); secs > 0 {
			c.Header("Retry-After", strconv.FormatInt(secs, 10))
		}
		WriteProblem(c, p)
		return
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		PayloadTooLarge(c)
		return
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		loggerFrom(c).DebugContext(ctx, "client went away", slog.String("error", err.Error()))
		c.Abort()
		if !c.Writer.Written() {
			c.Status(statusClientClosedRequest)
		}
		return
	}
	msg := "<nil>"
	if err != nil {
		msg = err.Error()
	}
	loggerFrom(c).ErrorContext(ctx, "internal error", slog.String("error", msg),
		slog.String("method", c.Request.Method), slog.String("route", routeOf(c)))
	WriteProblem(c, NewProblem(http.StatusInternalServerError, slugInternal, internalDetail))
}

// retryAfterSeconds rounds up, so a client that waits as told never comes back too early; the kinds
// whose contract promises Retry-After get at least one second even when the producer left it unset.
func retryAfterSeconds(ce *commands.Error) int64 {
	var secs int64
	if d := ce.RetryAfter; d > 0 {
		secs = int64(d / time.Second)
		if d%time.Second != 0 {
			secs++
		}
	}
	if secs == 0 && (ce.Kind == commands.KindRateLimited || ce.Kind == commands.KindProviderUnavailable) {
		secs = 1
	}
	return secs
}

// BadRequest answers 400 bad-request: a request that cannot be understood at all, as opposed to
// one that is understood and invalid (422 validation).
func BadRequest(c *gin.Context, detail string) {
	WriteProblem(c, NewProblem(http.StatusBadRequest, slugBadRequest, detail))
}

// NotFound answers 404 not-found.
func NotFound(c *gin.Context, detail string) {
	WriteProblem(c, NewProblem(http.StatusNotFound, string(commands.KindNotFound), detail))
}

// MethodNotAllowed answers 405 method-not-allowed. RFC 9110 requires an Allow header: allowed sets
// it, and when allowed is empty the one gin's router already set is kept.
func MethodNotAllowed(c *gin.Context, allowed ...string) {
	if len(allowed) > 0 {
		c.Header("Allow", strings.Join(allowed, ", "))
	}
	detail := "this resource does not support " + c.Request.Method
	if allow := c.Writer.Header().Get("Allow"); allow != "" {
		detail += "; allowed: " + allow
	}
	WriteProblem(c, NewProblem(http.StatusMethodNotAllowed, slugMethodNotAllowed, detail))
}

// PayloadTooLarge answers 413 payload-too-large.
func PayloadTooLarge(c *gin.Context) {
	// The rest of an oversized body is not worth reading just to keep the connection alive.
	c.Header("Connection", "close")
	WriteProblem(c, NewProblem(http.StatusRequestEntityTooLarge, slugPayloadTooLarge,
		"the request body exceeds "+strconv.Itoa(maxBodyBytes)+" bytes"))
}

// UnsupportedMediaType answers 415 unsupported-media-type.
func UnsupportedMediaType(c *gin.Context, detail string) {
	WriteProblem(c, NewProblem(http.StatusUnsupportedMediaType, slugUnsupportedMediaType, detail))
}

func setLogger(c *gin.Context, logger *slog.Logger) {
	if _, ok := c.Get(loggerKey); !ok && logger != nil {
		c.Set(loggerKey, logger)
	}
}

func loggerFrom(c *gin.Context) *slog.Logger {
	if v, ok := c.Get(loggerKey); ok {
		if l, ok := v.(*slog.Logger); ok {
			return l
		}
	}
	return slog.Default()
}

// routeOf names the matched route template, never the raw path, so logs and metrics stay bounded.
func routeOf(c *gin.Context) string {
	if r := c.FullPath(); r != "" {
		return r
	}
	return "unmatched"
}
