package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"

	"taki/commands"
	"taki/events"
	"taki/infra/logging"
)

// handshakeKey marks, in the request's context, a handshake that Handle has authorized; its value is
// the request's gin context, for answering gorilla's handshake failures as problems.
type handshakeKey struct{}

// upgrader replaces melody's, whose CheckOrigin admits every Origin.
func (h *Hub) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		HandshakeTimeout: h.cfg.HandshakeTimeout,
		// Each socket keeps its read buffer for life; 1 KiB holds most client frames (larger ones
		// are read in more calls), where reusing the HTTP server's 4 KiB reader would keep that.
		ReadBufferSize: 1 << 10,
		// Write buffers come from a pool and go back after each frame, so an idle socket holds none.
		WriteBufferSize: 4 << 10,
		WriteBufferPool: &sync.Pool{},
		// Handle has applied the Origin rule of API.md (which depends on how the client identified
		// itself) before upgrading; a request that did not pass through it is refused.
		CheckOrigin: func(r *http.Request) bool {
			_, ok := r.Context().Value(handshakeKey{}).(*gin.Context)
			return ok
		},
		Error: h.handshakeError,
		// Off: per-message deflate costs memory and CPU on every socket, and compressing secrets
		// together with attacker-chosen text invites CRIME-style length oracles.
		EnableCompression: false,
	}
}

// Handle serves GET /ws (API.md, "Real time"). It needs the session middleware before it for cookie
// authentication. Refusals are problems: 400 for a request that is no WebSocket handshake, 401
// without valid credentials, 403 for a cookie from an Origin that is not allowed, 503 while closing.
func (h *Hub) Handle(c *gin.Context) {
	// Checked first: for a request that cannot become a socket, its credentials are beside the point,
	// and it is not identified (nor logged as a user's) for nothing.
	if !websocket.IsWebSocketUpgrade(c.Request) {
		c.Header("Sec-WebSocket-Version", "13")
		h.cfg.BadRequest(c, "GET /ws opens a WebSocket: send a WebSocket handshake (Connection: Upgrade, Upgrade: websocket)")
		return
	}
	userID, sessionID, via, err := h.identify(c)
	if err != nil {
		h.cfg.WriteError(c, err)
		return
	}
	since, err := sinceParam(c.Request)
	if err != nil {
		h.cfg.BadRequest(c, err.Error())
		return
	}
	checkedAt, err := h.checkHandshakeSession(c.Request.Context(), userID, sessionID)
	if err != nil {
		h.cfg.WriteError(c, err)
		return
	}
	// The user id goes into the request's context for the access log and the socket's logs.
	base := logging.WithUserID(c.Request.Context(), userID.String())
	r := c.Request.WithContext(context.WithValue(base, handshakeKey{}, c))
	redactToken(r)
	c.Request = r

	// The socket's context keeps the request's ids for its logs, not the request: the socket
	// outlives it, and with it everything its context holds.
	ctx, cancel := context.WithCancel(logging.Detach(base))
	client := &Client{hub: h, userID: userID, sessionID: sessionID, checkedAt: checkedAt, via: via, ctx: ctx,
		cancel: cancel, since: since, connected: make(chan struct{})}
	if since != nil {
		client.room = make(chan struct{}, 1)
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		cancel()
		h.cfg.WriteError(c, shuttingDown())
		return
	}
	h.upgrading.Add(1)
	h.mu.Unlock()

	// gin only records this status (for the access log and metrics); a failed handshake's problem
	// replaces it, and after a successful one the connection is no longer gin's to write.
	c.Status(http.StatusSwitchingProtocols)
	// melody serves the socket on the goroutine that calls it, for the socket's whole life. That is
	// not this one: the HTTP server's goroutine would keep its deep stack, its connection buffers and
	// the request's objects for as long as the socket is open. This one waits until the socket is
	// upgraded and registered (or failed to be), answers a failure, and returns.
	failed := make(chan error, 1)
	go func() {
		defer cancel()
		// The identity is passed in at registration: melody's Session.Set after the fact would race
		// with frames already flowing.
		if err := h.m.HandleRequestWithKeys(c.Writer, r, map[string]any{clientKey: client}); err != nil {
			failed <- err
		}
	}()
	select {
	case <-client.connected:
	case err := <-failed:
		// Neither upgraded nor registered, so connect did not run.
		h.upgrading.Done()
		if errors.Is(err, melody.ErrClosed) {
			h.cfg.WriteError(c, shuttingDown())
			return
		}
		// gorilla has answered already, through handshakeError.
		h.log.DebugContext(base, "websocket handshake failed", slog.String("error", err.Error()))
	}
}

func shuttingDown() error {
	return &commands.Error{Kind: commands.KindUnavailable, Detail: "the server is shutting down; reconnect",
		RetryAfter: time.Second}
}

// identify returns who opens the socket, following API.md: ?token=, else the session cookie when the
// request's Origin is allowed; and the session that authorises it (the token's sid, or the cookie's).
func (h *Hub) identify(c *gin.Context) (userID, sessionID uuid.UUID, via string, err error) {
	r := c.Request
	if tokens, ok := r.URL.Query()["token"]; ok {
		// Any Origin is accepted with a token. API.md states the Origin rule for the cookie, and
		// rightly so: the cookie is an ambient credential a cross-site page gets sent for free,
		// while a token must be obtained through POST /api/v1/ws-tokens, which itself needs the
		// cookie and the CSRF token. A page that holds one is trusted by the user who fetched it,
		// and non-browser clients, which send no Origin, can connect too.
		if len(tokens) != 1 {
			return userID, sessionID, "", commands.Unauthenticated("send one token")
		}
		id, err := h.cfg.Tokens.Parse(tokens[0])
		if err != nil {
			// The error names what was wrong with the token, never the token.
			h.log.DebugContext(r.Context(), "websocket token refused", slog.String("error", err.Error()))
			return userID, sessionID, "", commands.Unauthenticated(
				"the token is invalid or expired; get a new one from POST /api/v1/ws-tokens")
		}
		return id.UserID, id.SessionID, "token", nil
	}
	origin, sent, allowed := h.checkOrigin(r)
	if sent && !allowed {
		return userID, sessionID, "", commands.Forbidden(fmt.Sprintf("origin %q may not open a socket with the session cookie",
			truncate(origin, 256)))
	}
	s, ok := h.cfg.Sessions.Current(c)
	if !ok {
		return userID, sessionID, "", commands.Unauthenticated(
			"log in, or pass ?token= with a token from POST /api/v1/ws-tokens")
	}
	if !sent {
		// Browsers always send Origin on a WebSocket handshake. Without one the request is from a
		// program that holds the cookie; API.md admits the cookie only with a listed Origin, and
		// such a program can use a token instead.
		return userID, sessionID, "", commands.Forbidden(
			"the session cookie is accepted only with an allowed Origin; other clients pass ?token=")
	}
	return s.UserID, s.PublicID, "cookie", nil
}

// checkOrigin reports the request's Origin, whether it sent one, and whether it is allowed. Several
// Origin headers are never allowed: a browser sends one.
func (h *Hub) checkOrigin(r *http.Request) (origin string, sent, allowed bool) {
	values := r.Header.Values("Origin")
	if len(values) == 0 {
		return "", false, false
	}
	if len(values) > 1 {
		return strings.Join(values, ", "), true, false
	}
	n, err := normalizeOrigin(values[0])
	if err != nil {
		return values[0], true, false
	}
	_, allowed = h.origins[n]
	return values[0], true, allowed
}

// sinceParam reads ?since=, the position of the last event frame a reconnecting client got (API.md,
// "Recovery"); nil when absent.
func sinceParam(r *http.Request) (*events.Position, error) {
	values, ok := r.URL.Query()["since"]
	if !ok {
		return nil, nil
	}
	if len(values) != 1 {
		return nil, errors.New("send one since: the position of the last frame received")
	}
	p, err := events.ParsePosition(values[0])
	if err != nil {
		return nil, errors.New("since is not a position: send the position of the last frame received")
	}
	return &p, nil
}

// redactToken removes ?token= from the request melody keeps for the socket's life (Session.Request),
// so that no later log of it can show the token. r must be a copy: the URL is replaced, not changed.
func redactToken(r *http.Request) {
	q := r.URL.Query()
	if !q.Has("token") {
		return
	}
	q.Del("token")
	u := *r.URL
	u.RawQuery = q.Encode()
	r.URL = &u
	r.RequestURI = u.RequestURI()
}

// handshakeError answers gorilla's handshake failures in the API's problem format.
func (h *Hub) handshakeError(w http.ResponseWriter, r *http.Request, status int, reason error) {
	c, ok := r.Context().Value(handshakeKey{}).(*gin.Context)
	if !ok {
		http.Error(w, http.StatusText(status), status)
		return
	}
	switch status {
	case http.StatusForbidden:
		h.cfg.WriteError(c, commands.Forbidden("origin not allowed"))
	case http.StatusInternalServerError:
		h.cfg.WriteError(c, fmt.Errorf("websocket handshake: %w", reason))
	default:
		// Tells a client speaking another protocol version which one we speak (RFC 6455, 4.4).
		c.Header("Sec-WebSocket-Version", "13")
		h.cfg.BadRequest(c, reason.Error())
	}
}
