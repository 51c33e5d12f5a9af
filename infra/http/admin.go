package httpapi

import (
	"net/http"

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

func (a *api) verifyProjection(c *gin.Context) {
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
