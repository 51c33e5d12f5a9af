package httpapi

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"taki/commands"
	"taki/infra/auth"
	"taki/infra/logging"
)

const sessionKey = "taki.session"

// requireSession admits requests with a live session; unsafe methods must also carry the session's
// CSRF token (synchronizer token pattern).
func (a *api) requireSession(c *gin.Context) {
	s, ok := a.Sessions.Current(c)
	if !ok {
		WriteError(c, commands.Unauthenticated("log in first"))
		return
	}
	c.Set(sessionKey, s)
	c.Request = c.Request.WithContext(logging.WithUserID(c.Request.Context(), s.UserID.String()))
	if unsafeMethod(c.Request.Method) && !a.Sessions.CheckCSRF(s, c.GetHeader("X-CSRF-Token")) {
		WriteError(c, commands.NewError(commands.KindCSRF, "missing or wrong X-CSRF-Token header"))
		return
	}
	c.Next()
}

// requireAdmin admits admins only. The role is the session's: a role change ends every session of
// the user, so it cannot be stale.
func (a *api) requireAdmin(c *gin.Context) {
	if session(c).Role != string(commands.RoleAdmin) {
		WriteError(c, commands.Forbidden("admins only"))
		return
	}
	c.Next()
}

func session(c *gin.Context) auth.Session {
	s, _ := c.MustGet(sessionKey).(auth.Session)
	return s
}

func unsafeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}
