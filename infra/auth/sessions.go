package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-contrib/sessions"
	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	gsessions "github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/commands"
)

// CookieName is the session cookie's name (API.md, "Authentication, CSRF").
const CookieName = "taki_session"

// maxUserAgentLen bounds what a client can make us store per session.
const maxUserAgentLen = 256

// SessionConfig configures a Manager. Zero fields get the defaults of API.md.
type SessionConfig struct {
	// IdleTimeout ends a session unused for this long (default 30 min).
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after login whatever its use (default 8 h). Rotate keeps
	// it: a new id is not a new login.
	AbsoluteTimeout time.Duration
	// TouchInterval is how stale last_seen_at may get before a request writes it (default 1 min, or
	// half the idle timeout when that is shorter).
	TouchInterval time.Duration
	// CookieSecure sets the cookie's Secure flag (TAKI_COOKIE_SECURE); off only for plain-HTTP
	// development.
	CookieSecure bool
	// Now is the clock (default time.Now); tests move it to expire sessions.
	Now func() time.Time
	// OnLoadError answers a request whose session could not be loaded because the database failed.
	// The default aborts with 503 and records err on the gin context (c.Error): treating the request as
	// anonymous would answer 401 to a client whose session is fine.
	OnLoadError func(c *gin.Context, err error)
	// Logger receives warnings about the cache's invalidation channel and the pruning of expired
	// sessions (default: discarded).
	Logger *slog.Logger
}

func (c *SessionConfig) setDefaults() {
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Minute
	}
	if c.AbsoluteTimeout == 0 {
		c.AbsoluteTimeout = 8 * time.Hour
	}
	if c.TouchInterval == 0 {
		// Shorter than the shortest idle timeout configuration allows (TAKI_SESSION_IDLE=1m).
		c.TouchInterval = min(time.Minute, c.IdleTimeout/2)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.OnLoadError == nil {
		c.OnLoadError = func(c *gin.Context, err error) {
			_ = c.Error(err)
			c.AbortWithStatus(http.StatusServiceUnavailable)
		}
	}
}

func (c SessionConfig) validate() error {
	var errs []error
	if c.IdleTimeout < time.Minute {
		errs = append(errs, fmt.Errorf("idle timeout must be at least 1m (IdleTimeout %s)", c.IdleTimeout))
	}
	if c.AbsoluteTimeout < c.IdleTimeout {
		errs = append(errs, fmt.Errorf("absolute timeout must not be shorter than the idle timeout (AbsoluteTimeout %s, IdleTimeout %s)", c.AbsoluteTimeout, c.IdleTimeout))
	}
	if c.TouchInterval <= 0 || c.TouchInterval >= c.IdleTimeout {
		errs = append(errs, fmt.Errorf("touch interval must be positive and shorter than the idle timeout (TouchInterval %s)", c.TouchInterval))
	}
	return errors.Join(errs...)
}

// Session is an authenticated session as handlers see it. It never holds the cookie value.
type Session struct {
	PublicID   uuid.UUID
	UserID     uuid.UUID
	Role       string
	CSRFToken  string
	CreatedAt  time.Time
	LastSeenAt time.Time
	// ExpiresAt is when the session ends unless it is used before: the earlier of the idle and the
	// absolute expiry.
	ExpiresAt time.Time
}

// SessionInfo is one item of a user's session listing (GET /sessions).
type SessionInfo struct {
	ID         uuid.UUID `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
	UserAgent  string    `json:"user_agent"`
	IP         string    `json:"ip"`
	Current    bool      `json:"current"`
}

// Manager runs server-side sessions: PostgreSQL rows named by a random cookie, through gin-contrib
// sessions with a store of its own.
type Manager struct {
	pool  *pgxpool.Pool
	cfg   SessionConfig
	store *pgStore
}

// NewManager returns a Manager keeping sessions in pool's database (the sessions table).
func NewManager(pool *pgxpool.Pool, cfg SessionConfig) (*Manager, error) {
	if pool == nil {
		return nil, errors.New("session manager: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("session manager config: %w", err)
	}
	m := &Manager{pool: pool, cfg: cfg, store: &pgStore{pool: pool, cfg: cfg, cache: newSessionCache()}}
	m.store.Options(m.cookieOptions())
	return m, nil
}

// cookieOptions are the cookie's attributes. MaxAge 0 makes it a browser-session cookie: the server
// decides when the session ends, and a closed browser forgets it.
func (m *Manager) cookieOptions() sessions.Options {
	return sessions.Options{
		Path:     "/",
		HttpOnly: true,
		Secure:   m.cfg.CookieSecure,
		SameSite: http.SameSiteLaxMode,
	}
}

// Middleware installs gin-contrib sessions with the PostgreSQL store and loads the request's session
// before the next handlers run. A request without a cookie, or with one that is malformed, unknown or
// expired, costs no database write and continues without a session; a database failure goes to
// SessionConfig.OnLoadError.
func (m *Manager) Middleware() gin.HandlerFunc {
	install := sessions.Sessions(CookieName, m.store)
	return func(c *gin.Context) {
		// gin-contrib loads lazily through the same gorilla registry, so loading here first just
		// fills the registry's cache for the request.
		if _, err := gsessions.GetRegistry(c.Request).Get(m.store, CookieName); err != nil {
			m.cfg.OnLoadError(c, err)
			if c.IsAborted() {
				return
			}
		}
		install(c)
	}
}

// Current returns the request's session, if it has a live one.
func (m *Manager) Current(c *gin.Context) (Session, bool) {
	gs, ok := ginSession(c)
	if !ok {
		return Session{}, false
	}
	rec := currentRecord(gs)
	if rec == nil {
		return Session{}, false
	}
	return rec.s, true
}

// Start begins a session for userID at login and sets its cookie. The id is always new, and a
// session the request came with is destroyed: a session id planted before login (fixation) never
// becomes an authenticated one. credentialsAt is the version of the user's stream the password was
// checked at: if a password or role change was recorded after it (and so revoked every session before
// this one existed), no session starts and the error is unauthenticated.
func (m *Manager) Start(c *gin.Context, userID uuid.UUID, role string, credentialsAt int64) (Session, error) {
	if userID == uuid.Nil {
		return Session{}, errors.New("start session: user id is nil")
	}
	if role == "" {
		return Session{}, errors.New("start session: role is empty")
	}
	gs, ok := ginSession(c)
	if !ok {
		return Session{}, errors.New("start session: session middleware is not installed")
	}
	now := m.store.now()
	rec, err := m.newRecord(c, userID, role, now, now, now.Add(m.cfg.AbsoluteTimeout))
	if err != nil {
		return Session{}, fmt.Errorf("start session: %w", err)
	}
	rec.credentialsAt = credentialsAt
	if err := m.replace(gs, rec); err != nil {
		return Session{}, fmt.Errorf("start session: %w", err)
	}
	return rec.s, nil
}

// Rotate gives the request's session a new id and CSRF token and destroys the old id (after a password
// change). The user, role, creation time and absolute expiry stay. Without a session it answers a
// commands.KindUnauthenticated error.
func (m *Manager) Rotate(c *gin.Context) (Session, error) {
	gs, ok := ginSession(c)
	if !ok {
		return Session{}, errors.New("rotate session: session middleware is not installed")
	}
	old := currentRecord(gs)
	if old == nil {
		return Session{}, commands.Unauthenticated("no session")
	}
	rec, err := m.newRecord(c, old.s.UserID, old.s.Role, m.store.now(), old.s.CreatedAt, old.absoluteExpiresAt)
	if err != nil {
		return Session{}, fmt.Errorf("rotate session: %w", err)
	}
	if err := m.replace(gs, rec); err != nil {
		return Session{}, fmt.Errorf("rotate session: %w", err)
	}
	return rec.s, nil
}

// Destroy ends the request's session (logout): its row is deleted and the cookie cleared. Without a
// session it only clears the cookie.
func (m *Manager) Destroy(c *gin.Context) error {
	gs, ok := ginSession(c)
	if !ok {
		return errors.New("destroy session: session middleware is not installed")
	}
	opts := m.cookieOptions()
	opts.MaxAge = -1
	gs.Options(opts)
	if err := gs.Save(); err != nil {
		return fmt.Errorf("destroy session: %w", err)
	}
	return nil
}

// List returns userID's live sessions, newest first, marking the one whose public id is currentPublicID.
func (m *Manager) List(ctx context.Context, userID, currentPublicID uuid.UUID) ([]SessionInfo, error) {
	rows, err := m.pool.Query(ctx, `
		SELECT public_id, created_at, last_seen_at, user_agent, COALESCE(host(ip), '')
		FROM sessions
		WHERE user_id = $1 AND idle_expires_at > $2
		ORDER BY created_at DESC, public_id DESC`, userID, m.store.now())
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	items := []SessionInfo{}
	for rows.Next() {
		var it SessionInfo
		if err := rows.Scan(&it.ID, &it.CreatedAt, &it.LastSeenAt, &it.UserAgent, &it.IP); err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		it.CreatedAt, it.LastSeenAt = it.CreatedAt.UTC(), it.LastSeenAt.UTC()
		it.Current = it.ID == currentPublicID
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return items, nil
}

// Revoke ends userID's session publicID at once. A session that is not the user's answers
// commands.NotFound("session"), exactly like one that does not exist.
func (m *Manager) Revoke(ctx context.Context, userID, publicID uuid.UUID) error {
	tag, err := m.pool.Exec(ctx, `DELETE FROM sessions WHERE public_id = $1 AND user_id = $2`, publicID, userID)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return commands.NotFound("session")
	}
	m.store.invalidate(ctx, userID)
	return nil
}

// RevokeAllForUser ends every session of userID but exceptPublicID (when not nil) and returns how many
// live sessions it ended. Password and role changes use it.
func (m *Manager) RevokeAllForUser(ctx context.Context, userID uuid.UUID, exceptPublicID *uuid.UUID) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		// Exclusive with the logins' session starts (see pgStore.insert).
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, credentialsLockKey(userID)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			WITH gone AS (
				DELETE FROM sessions
				WHERE user_id = $1 AND ($2::uuid IS NULL OR public_id <> $2)
				RETURNING idle_expires_at
			)
			SELECT count(*) FROM gone WHERE idle_expires_at > $3`, userID, exceptPublicID, m.store.now()).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("revoke user's sessions: %w", err)
	}
	m.store.invalidate(ctx, userID)
	return n, nil
}

// PruneExpired deletes every expired session and returns how many. Start already prunes now and then;
// this is for a janitor that wants it done on its own schedule.
func (m *Manager) PruneExpired(ctx context.Context) (int64, error) {
	tag, err := m.pool.Exec(ctx, `DELETE FROM sessions WHERE idle_expires_at <= $1`, m.store.now())
	if err != nil {
		return 0, fmt.Errorf("prune expired sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// LiveSessions returns which of the sessions with the given public ids are live (exist and have not
// expired), each with its user's id, in one query. WebSocket hubs use it to close the sockets of
// sessions that ended; they batch the ids, so that one call stays a modest query.
//
// It only reads: an expired row is left to the pruning, and nothing here extends a session (a socket's
// traffic does not keep its session alive).
func (m *Manager) LiveSessions(ctx context.Context, publicIDs []uuid.UUID) (map[uuid.UUID]uuid.UUID, error) {
	live := make(map[uuid.UUID]uuid.UUID, len(publicIDs))
	if len(publicIDs) == 0 {
		return live, nil
	}
	// idle_expires_at is never after absolute_expires_at (sessions_expiry_order), so it alone says
	// whether the session expired.
	rows, err := m.pool.Query(ctx, `
		SELECT public_id, user_id FROM sessions
		WHERE public_id = ANY($1) AND idle_expires_at > $2`, publicIDs, m.store.now())
	if err != nil {
		return nil, fmt.Errorf("check sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, user uuid.UUID
		if err := rows.Scan(&id, &user); err != nil {
			return nil, fmt.Errorf("check sessions: %w", err)
		}
		live[id] = user
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("check sessions: %w", err)
	}
	return live, nil
}

// CheckCSRF reports whether headerValue (X-CSRF-Token) is s's CSRF token. The comparison takes the
// same time wherever the first differing byte is, so the token cannot be guessed byte by byte.
func (m *Manager) CheckCSRF(s Session, headerValue string) bool {
	if s.CSRFToken == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(s.CSRFToken), []byte(headerValue)) == 1
}

func (m *Manager) newRecord(c *gin.Context, userID uuid.UUID, role string, now, createdAt, absolute time.Time) (*record, error) {
	publicID, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("public id: %w", err)
	}
	rec := &record{
		s: Session{
			PublicID:   publicID,
			UserID:     userID,
			Role:       role,
			CSRFToken:  randomToken(),
			CreatedAt:  createdAt,
			LastSeenAt: now,
			ExpiresAt:  minTime(now.Add(m.cfg.IdleTimeout), absolute),
		},
		absoluteExpiresAt: absolute,
		token:             randomToken(),
		userAgent:         cleanUserAgent(c.Request.UserAgent()),
	}
	if ip, err := netip.ParseAddr(c.ClientIP()); err == nil {
		ip = ip.Unmap().WithZone("")
		rec.ip = &ip
	}
	normalizeTimes(rec)
	return rec, nil
}

// replace makes rec the request's session, destroying the one it had (if any) in the same transaction.
// On failure the request keeps its old session, as the database does.
func (m *Manager) replace(gs sessions.Session, rec *record) error {
	old := currentRecord(gs)
	if old != nil {
		rec.replaces = old.s.PublicID
	}
	gs.Options(m.cookieOptions())
	gs.Set(recordKey{}, rec)
	if err := gs.Save(); err != nil {
		if old != nil {
			gs.Set(recordKey{}, old)
		} else {
			gs.Delete(recordKey{})
		}
		return err
	}
	return nil
}

func ginSession(c *gin.Context) (sessions.Session, bool) {
	v, ok := c.Get(sessions.DefaultKey)
	if !ok {
		return nil, false
	}
	s, ok := v.(sessions.Session)
	return s, ok
}

// cleanUserAgent makes a client's User-Agent storable: PostgreSQL text refuses NUL and invalid UTF-8,
// and the length is bounded in characters.
func cleanUserAgent(ua string) string {
	ua = strings.ToValidUTF8(strings.ReplaceAll(ua, "\x00", ""), "\uFFFD")
	if utf8.RuneCountInString(ua) <= maxUserAgentLen {
		return ua
	}
	n := 0
	for i := range ua {
		if n == maxUserAgentLen {
			return ua[:i]
		}
		n++
	}
	return ua
}
