package httpapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"taki/commands"
	"taki/queries"
)

func (a *api) listProjections(c *gin.Context) {
	items, ok := ask[[]queries.ProjectionStatus](c, a.Bus, queries.ListProjections{})
	if ok {
		c.JSON(http.StatusOK, items)
	}
}

func (a *api) replayProjection(c *gin.Context) {
	if _, ok := send[struct{}](c, a.Bus, commands.ReplayProjection{Name: c.Param("name")}); ok {
		c.JSON(http.StatusAccepted, gin.H{"name": c.Param("name"), "status": "replaying"})
	}
}

// verifyWriteTimeout bounds a verify's answer instead of the server's write timeout.
const verifyWriteTimeout = 30 * time.Minute

func (a *api) verifyProjection(c *gin.Context) {
	// A verify takes as long as rebuilding the read model does (tens of seconds for a million events),
	// longer than the server's write timeout allows other answers.
	if err := http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(verifyWriteTimeout)); err != nil {
		loggerFrom(c).Warn("cannot extend the write deadline of a verify", slog.String("err", err.Error()))
	}
	v, ok := ask[queries.ProjectionVerification](c, a.Bus, queries.VerifyProjection{Name: c.Param("name")})
	if ok {
		c.JSON(http.StatusOK, v)
	}
}

func (a *api) listEvents(c *gin.Context) {
	limit, ok := queryLimit(c)
	if !ok {
		return
	}
	page, ok := ask[queries.Page[queries.LoggedEvent]](c, a.Bus, queries.ListEvents{After: c.Query("after"), Type: c.Query("type"), Limit: limit})
	if ok {
		c.JSON(http.StatusOK, page)
	}
}
