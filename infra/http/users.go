package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/commands"
	"taki/queries"
)

func (a *api) register(c *gin.Context) {
	var body struct {
		Email       string `json:"email"`
		Password    string `json:"password"`
		DisplayName string `json:"display_name"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	id, err := uuid.NewV7()
	if err != nil {
		WriteError(c, err)
		return
	}
	u, ok := send[queries.User](c, a.Bus, commands.RegisterUser{UserID: id, Email: body.Email, Password: body.Password, DisplayName: body.DisplayName})
	if !ok {
		return
	}
	c.Header("Location", "/api/v1/users/"+u.ID.String())
	c.JSON(http.StatusCreated, u.UserSummary)
}

func (a *api) me(c *gin.Context) {
	if u, ok := ownProfile(c, a); ok {
		c.JSON(http.StatusOK, u)
	}
}

// ownProfile reads the caller's profile. The caller has a live session, so the user exists; a read
// model without the profile (still catching up, or being replayed) is a temporary 503, not a 404.
func ownProfile(c *gin.Context, a *api) (queries.User, bool) {
	return askMapping[queries.User](c, a.Bus, queries.GetProfile{UserID: session(c).UserID}, func(err error) error {
		if commands.IsKind(err, commands.KindNotFound) {
			return &commands.Error{Kind: commands.KindUnavailable, Detail: "your profile is being rebuilt; try again shortly", RetryAfter: time.Second}
		}
		return err
	})
}

func (a *api) updateMe(c *gin.Context) {
	var body struct {
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	u, ok := send[queries.User](c, a.Bus, commands.UpdateProfile{Actor: session(c).UserID, DisplayName: body.DisplayName, AvatarURL: body.AvatarURL})
	if ok {
		c.JSON(http.StatusOK, u)
	}
}

func (a *api) changePassword(c *gin.Context) {
	var body struct {
		CurrentPassword string `json:"current_password"`
		NewPassword     string `json:"new_password"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	s := session(c)
	if _, ok := send[struct{}](c, a.Bus, commands.ChangePassword{
		Actor: s.UserID, CurrentPassword: body.CurrentPassword, NewPassword: body.NewPassword, KeepSession: &s.PublicID,
	}); !ok {
		return
	}
	// The session that changed the password continues under a new id and CSRF token (fixation defence).
	ns, err := a.Sessions.Rotate(c)
	if err != nil {
		WriteError(c, err)
		return
	}
	c.Header("X-CSRF-Token", ns.CSRFToken)
	c.Status(http.StatusNoContent)
}

func (a *api) searchUsers(c *gin.Context) {
	limit, ok := queryLimit(c)
	if !ok {
		return
	}
	page, ok := ask[queries.Page[queries.PublicUser]](c, a.Bus, queries.SearchUsers{Prefix: c.Query("q"), Limit: limit, Cursor: c.Query("cursor")})
	if ok {
		c.JSON(http.StatusOK, page)
	}
}

func (a *api) getUser(c *gin.Context) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		WriteError(c, commands.NotFound("user"))
		return
	}
	u, ok := ask[queries.PublicUser](c, a.Bus, queries.GetUser{UserID: id})
	if ok {
		c.JSON(http.StatusOK, u)
	}
}

func (a *api) issueWSToken(c *gin.Context) {
	// The token names the session that asked for it: the socket it opens ends with that session.
	s := session(c)
	token, exp, err := a.WSTokens.Issue(s.UserID, s.PublicID)
	if err != nil {
		WriteError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, gin.H{"token": token, "expires_at": exp})
}

// queryLimit reads ?limit= (default applied by the query handler when 0).
func queryLimit(c *gin.Context) (int, bool) {
	s := c.Query("limit")
	if s == "" {
		return 0, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > queries.MaxLimit {
		WriteError(c, commands.Invalid([]commands.FieldError{{Field: "limit", Message: "must be a number from 1 to 200"}}))
		return 0, false
	}
	return n, true
}
