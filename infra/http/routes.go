package httpapi

import (
	"errors"
	"log/slog"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"taki/infra/auth"
	"taki/infra/bus"
	"taki/infra/ws"
)

// Deps is everything the routes need. Handlers only decode, call the bus and encode; sessions and
// WebSocket tokens are the transport's own credentials and are managed here through auth.
type Deps struct {
	Bus       *bus.Bus
	Sessions  *auth.Manager
	WSTokens  *auth.WSTokens
	Logger    *slog.Logger
	Registry  prometheus.Registerer
	Gatherer  prometheus.Gatherer
	Readiness []ReadinessCheck
	WS        *ws.Hub
	// SquareWebhook checks the signatures of the payments provider's webhooks.
	SquareWebhook SquareWebhook
}

func (d Deps) validate() error {
	if d.Bus == nil || d.Sessions == nil || d.WSTokens == nil || d.Logger == nil || d.Registry == nil || d.Gatherer == nil || d.WS == nil {
		return errors.New("new router: missing dependency")
	}
	return nil
}

// api holds the dependencies of the route handlers.
type api struct{ Deps }

// NewRouter builds the gin engine with every route of API.md.
func NewRouter(d Deps) (*gin.Engine, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	a := &api{d}
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.ContextWithFallback = true
	if err := e.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	e.Use(RequestID(), AccessLog(d.Logger), NewMetrics(d.Registry).Middleware(), Recovery(d.Logger), BodyLimit())
	e.NoRoute(NoRoute())
	e.NoMethod(NoMethod())

	e.GET("/healthz", Healthz())
	e.GET("/readyz", Readyz(d.Readiness...))
	e.GET("/metrics", MetricsHandler(d.Gatherer))
	e.GET("/openapi.json", ServeSpec())
	e.GET("/ws", d.Sessions.Middleware(), d.WS.Handle)

	v1 := e.Group("/api/v1", d.Sessions.Middleware())
	v1.POST("/users", a.register)
	v1.POST("/sessions", a.logIn)

	authed := v1.Group("", a.requireSession)
	authed.GET("/sessions/current", a.currentSession)
	authed.DELETE("/sessions/current", a.logOut)
	authed.GET("/sessions", a.listSessions)
	authed.DELETE("/sessions/:id", a.revokeSession)
	authed.GET("/users/me", a.me)
	authed.PATCH("/users/me", a.updateMe)
	authed.PUT("/users/me/password", a.changePassword)
	authed.GET("/users", a.searchUsers)
	authed.GET("/users/:id", a.getUser)
	authed.POST("/ws-tokens", a.issueWSToken)

	authed.POST("/chats", a.createChat)
	authed.GET("/chats", a.listChats)
	authed.GET("/chats/:id", a.getChat)
	authed.PATCH("/chats/:id", a.renameChat)
	authed.POST("/chats/:id/members", a.addChatMember)
	authed.DELETE("/chats/:id/members/:user_id", a.removeChatMember)
	authed.POST("/chats/:id/messages", a.sendMessage)
	authed.GET("/chats/:id/messages", a.listMessages)
	authed.PATCH("/chats/:id/messages/:message_id", a.editMessage)
	authed.DELETE("/chats/:id/messages/:message_id", a.deleteMessage)
	authed.POST("/chats/:id/read", a.markChatRead)

	authed.GET("/payments", a.listPayments)
	authed.GET("/payments/:id", a.getPayment)
	authed.GET("/billing/summary", a.billingSummary)
	a.paymentRoutes(e, authed)

	admin := authed.Group("/admin", a.requireAdmin)
	admin.GET("/projections", a.listProjections)
	admin.POST("/projections/:name/replay", a.replayProjection)
	admin.POST("/projections/:name/verify", a.verifyProjection)
	admin.GET("/events", a.listEvents)
	return e, nil
}
