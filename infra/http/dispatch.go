package httpapi

import (
	"github.com/gin-gonic/gin"

	"taki/events"
	"taki/infra/bus"
)

// Read-your-writes headers (API.md).
const (
	headerConsistencyToken = "X-Consistency-Token"
	headerConsistencyStale = "X-Consistency-Stale"
)

// send dispatches a command and sets X-Consistency-Token; on failure it writes the problem and
// returns false.
func send[R, C any](c *gin.Context, b *bus.Bus, cmd C) (R, bool) {
	r, pos, err := bus.Send[R](c.Request.Context(), b, cmd)
	if err != nil {
		WriteError(c, err)
		return r, false
	}
	c.Header(headerConsistencyToken, pos.String())
	return r, true
}

// ask dispatches a query, first asking it to wait for the client's X-Consistency-Token, and marks a
// stale answer with X-Consistency-Stale.
func ask[R, Q any](c *gin.Context, b *bus.Bus, q Q) (R, bool) {
	return askMapping[R](c, b, q, nil)
}

// askMapping is ask with the query's error passed through mapErr (when not nil) before it is written.
func askMapping[R, Q any](c *gin.Context, b *bus.Bus, q Q, mapErr func(error) error) (R, bool) {
	ctx := c.Request.Context()
	var cons *bus.Consistency
	if tok := c.GetHeader(headerConsistencyToken); tok != "" {
		pos, err := events.ParsePosition(tok)
		if err != nil {
			var zero R
			BadRequest(c, "X-Consistency-Token is not a token this server issued")
			return zero, false
		}
		ctx, cons = bus.WithConsistency(ctx, pos)
	}
	r, err := bus.Ask[R](ctx, b, q)
	if err != nil && mapErr != nil {
		err = mapErr(err)
	}
	if err != nil {
		WriteError(c, err)
		return r, false
	}
	if cons != nil && cons.Stale {
		c.Header(headerConsistencyStale, "true")
	}
	return r, true
}
