package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"taki/infra/auth"
)

// Defaults. melody's own (54 s pings, 256 frames queued, dropped silently beyond) do not fit a
// messenger; these follow DESIGN.md, "Real time". The frame size limit is API.md's, MaxFrameBytes.
const (
	// DefaultPingPeriod keeps NATs, proxies and load balancers (which commonly drop connections idle
	// for 30-60 s) from closing a quiet socket, and finds dead peers within about half a minute.
	DefaultPingPeriod = 25 * time.Second
	// DefaultPongWait is how long a socket may stay silent (no pong, which every client sends for a
	// ping without the application's help) before it is taken for dead. It exceeds the ping period
	// by a margin for one slow round trip on a poor mobile link.
	DefaultPongWait = DefaultPingPeriod + pongMargin
	// DefaultWriteWait bounds one frame's write. A socket that cannot take a frame in this long is
	// closed; it is also the longest a socket already judged too slow lingers before it is torn down.
	DefaultWriteWait = 10 * time.Second
	// DefaultSendBuffer is how many frames may wait for one socket. It absorbs bursts (a busy group
	// chat, a user active in many chats) for a client that reads at the pace of a phone on a poor
	// link, while a socket that falls this far behind is better reconnected with ?since= than fed
	// from memory. Each slot is a pointer, so the queue costs 1 KiB per socket whether used or not:
	// 256 slots took a tenth of the budget of 20 KiB per idle socket for bursts no client needs.
	DefaultSendBuffer = 128
	// DefaultHandshakeTimeout bounds the write of the 101 answer.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultSessionCheckInterval is how often every socket's session is checked for expiry (and for
	// an end whose notification was lost). A session's end announced through Hub.SessionsChanged
	// closes its sockets at once; an expiry, within this long.
	DefaultSessionCheckInterval = time.Minute

	pongMargin = 10 * time.Second
)

// TokenParser checks a ?token= credential and returns the user and the session it stands for;
// *auth.WSTokens is the production one.
type TokenParser interface {
	Parse(token string) (auth.WSIdentity, error)
}

// SessionReader returns the request's cookie session and tells which sessions are still live;
// *auth.Manager is the production one, and its Middleware must run before the handler.
type SessionReader interface {
	Current(c *gin.Context) (auth.Session, bool)
	// LiveSessions returns, of the sessions with the given public ids, those that exist and have
	// not expired, each with its user's id. One call is one query: the hub calls it once per batch of
	// ids, never per socket.
	LiveSessions(ctx context.Context, publicIDs []uuid.UUID) (map[uuid.UUID]uuid.UUID, error)
}

// Config configures a Hub. Zero tunables get the defaults above; every dependency is required.
type Config struct {
	// AllowedOrigins are the origins (scheme://host[:port], as TAKI_ALLOWED_ORIGINS) from which a
	// page may open a socket with the session cookie.
	AllowedOrigins []string

	Tokens   TokenParser
	Sessions SessionReader
	Logger   *slog.Logger
	Registry prometheus.Registerer

	// WriteError and BadRequest answer refused handshakes in the API's problem+json format. They are
	// infra/http's WriteError and BadRequest, passed in because infra/http imports this package for
	// its route and so cannot be imported from here.
	WriteError func(c *gin.Context, err error)
	BadRequest func(c *gin.Context, detail string)

	// Handlers are the client frame types beyond the built-in "ping", by type: the server adds
	// "message.send", "chat.read" and "typing" (ChatFrameHandlers).
	Handlers map[string]FrameHandler

	// Recovery serves GET /ws?since= (API.md, "Recovery"). Without it a socket that asks to recover
	// gets resync_required and live frames.
	Recovery *RecoveryConfig

	PingPeriod       time.Duration
	PongWait         time.Duration
	WriteWait        time.Duration
	SendBuffer       int
	HandshakeTimeout time.Duration
	// SessionCheckInterval is how often the sessions of every socket are checked, to close (1008) the
	// sockets of sessions that expired or ended unannounced (default DefaultSessionCheckInterval;
	// tests shorten it). A socket's own traffic does not extend its session: a client that only uses
	// the socket for 30 minutes is logged out like one that does nothing.
	SessionCheckInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.PingPeriod == 0 {
		c.PingPeriod = DefaultPingPeriod
	}
	if c.PongWait == 0 {
		// Follows a configured PingPeriod, so that shortening pings (tests) keeps the two consistent.
		c.PongWait = c.PingPeriod + pongMargin
	}
	if c.WriteWait == 0 {
		c.WriteWait = DefaultWriteWait
	}
	if c.SendBuffer == 0 {
		c.SendBuffer = DefaultSendBuffer
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.SessionCheckInterval == 0 {
		c.SessionCheckInterval = DefaultSessionCheckInterval
	}
	if c.Recovery != nil {
		r := *c.Recovery // the caller's stays as it was
		r.setDefaults()
		c.Recovery = &r
	}
}

func (c Config) validate() error {
	var errs []error
	if c.Tokens == nil || c.Sessions == nil || c.Logger == nil || c.Registry == nil || c.WriteError == nil || c.BadRequest == nil {
		errs = append(errs, errors.New("missing dependency (Tokens, Sessions, Logger, Registry, WriteError and BadRequest are required)"))
	}
	for _, o := range c.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	if c.PingPeriod < 0 || c.WriteWait < 0 || c.HandshakeTimeout < 0 || c.SessionCheckInterval < 0 {
		errs = append(errs, errors.New("durations must be positive"))
	}
	// A pong answers the ping after one round trip; a deadline no longer than the ping period would
	// close healthy sockets.
	if c.PongWait <= c.PingPeriod {
		errs = append(errs, fmt.Errorf("PongWait %s must exceed PingPeriod %s", c.PongWait, c.PingPeriod))
	}
	// Two slots at least: one frame, and the one always kept free for the close frame.
	if c.SendBuffer < 2 || c.SendBuffer > 1<<16 {
		errs = append(errs, fmt.Errorf("SendBuffer %d is not between 2 and 65536", c.SendBuffer))
	}
	if c.Recovery != nil {
		if err := c.Recovery.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for typ, h := range c.Handlers {
		if h == nil {
			errs = append(errs, fmt.Errorf("handler for %q is nil", typ))
		}
		if !validFrameType(typ) {
			errs = append(errs, fmt.Errorf("frame type %q is not a lower-case dotted name", typ))
		}
		if typ == TypePing {
			errs = append(errs, fmt.Errorf("frame type %q is built in", typ))
		}
	}
	return errors.Join(errs...)
}

// normalizeOrigin returns an origin as browsers serialize it (RFC 6454: lower-case scheme and host,
// no path, no trailing slash), so that the comparison is exact and cannot be fooled by prefixes.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(o), "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
		return "", fmt.Errorf("allowed origin %q is not an origin such as https://app.example.com", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}
