package httpapi

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/commands"
	"taki/handlers"
	"taki/infra/auth"
	"taki/queries"
)

type sessionJSON struct {
	User      queries.UserSummary `json:"user"`
	CSRFToken string              `json:"csrf_token"`
	ExpiresAt time.Time           `json:"expires_at"`
}

func (a *api) logIn(c *gin.Context) {
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	in, ok := send[handlers.LoggedIn](c, a.Bus, commands.LogIn{Email: body.Email, Password: body.Password})
	if !ok {
		return
	}
	u := in.User
	// A new session id at every login, the old one destroyed (fixation defence); none if the password
	// or role changed since the credentials were checked.
	s, err := a.Sessions.Start(c, u.ID, u.Role, in.Version)
	if err != nil {
		WriteError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, sessionJSON{User: u.UserSummary, CSRFToken: s.CSRFToken, ExpiresAt: s.ExpiresAt})
}

func (a *api) currentSession(c *gin.Context) {
	s := session(c)
	u, ok := ownProfile(c, a)
	if !ok {
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, sessionJSON{User: u.UserSummary, CSRFToken: s.CSRFToken, ExpiresAt: s.ExpiresAt})
}

func (a *api) logOut(c *gin.Context) {
	if err := a.Sessions.Destroy(c); err != nil {
		WriteError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (a *api) listSessions(c *gin.Context) {
	s := session(c)
	items, err := a.Sessions.List(c.Request.Context(), s.UserID, s.PublicID)
	if err != nil {
		WriteError(c, err)
		return
	}
	if items == nil {
		items = []auth.SessionInfo{}
	}
	c.JSON(http.StatusOK, gin.H{"items": items})
}

func (a *api) revokeSession(c *gin.Context) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		WriteError(c, commands.NotFound("session"))
		return
	}
	if err := a.Sessions.Revoke(c.Request.Context(), session(c).UserID, id); err != nil {
		WriteError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
