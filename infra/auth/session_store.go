package auth

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gin-contrib/sessions"
	"github.com/google/uuid"
	gsessions "github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/commands"
	"taki/events"
	"taki/infra/postgres"
)

// pgStore is the gin-contrib/gorilla session store. Unlike gorilla's stores it does not persist
// arbitrary Values: a session's state is the fixed set of columns of the sessions table, kept in Values
// under recordKey. Anything else put into Values lives for the current request only.
//
// The gorilla session's ID is the session's public id, never the cookie value, so that code logging
// ID() leaks nothing usable.
type pgStore struct {
	pool    *pgxpool.Pool
	cfg     SessionConfig
	options gsessions.Options
	// lastPrune (unix nanoseconds of the injected clock) spaces out the pruning of other users'
	// expired sessions.
	lastPrune atomic.Int64
	cache     *sessionCache
	hooks     invalidationHooks
}

var _ sessions.Store = (*pgStore)(nil)

// recordKey is unexported so that no other package can read or forge the session record in Values.
type recordKey struct{}

// record is one session as the store knows it.
type record struct {
	s                 Session
	absoluteExpiresAt time.Time

	// The fields below are set only on a record that Save has yet to insert.
	token     string    // the cookie value; dropped once the cookie is written
	replaces  uuid.UUID // public id of the session this one supersedes (destroyed in the same tx)
	userAgent string
	ip        *netip.Addr
	// credentialsAt, when not 0, is the version of the user's stream the login checked the password
	// at: the session is not created if a password or role change was recorded after it.
	credentialsAt int64
}

func currentRecord(s sessions.Session) *record {
	rec, _ := s.Get(recordKey{}).(*record)
	return rec
}

// Get returns the request's session, loading it once per request (gorilla's registry caches it).
func (st *pgStore) Get(r *http.Request, name string) (*gsessions.Session, error) {
	return gsessions.GetRegistry(r).Get(st, name)
}

// New returns the session named by the request's cookie, or an empty new one when the cookie is
// missing, malformed, unknown or expired. The error is only for a failing database; the session returned
// with it is empty, as gorilla's registry needs one.
func (st *pgStore) New(r *http.Request, name string) (*gsessions.Session, error) {
	gs := gsessions.NewSession(st, name)
	opts := st.options
	gs.Options = &opts
	gs.IsNew = true
	c, err := r.Cookie(name)
	if err != nil {
		return gs, nil
	}
	hash, ok := tokenHash(c.Value)
	if !ok {
		return gs, nil
	}
	rec, err := st.load(r.Context(), hash)
	if err != nil || rec == nil {
		return gs, err
	}
	gs.ID = rec.s.PublicID.String()
	gs.Values[recordKey{}] = rec
	gs.IsNew = false
	return gs, nil
}

// Save destroys the session when its MaxAge is negative or its record was removed from Values, and
// inserts a record that Start or Rotate made (destroying the session it replaces in the same
// transaction). A stored session has nothing to save: its columns never change but for last_seen_at,
// which load maintains.
func (st *pgStore) Save(r *http.Request, w http.ResponseWriter, gs *gsessions.Session) error {
	rec, _ := gs.Values[recordKey{}].(*record)
	if gs.Options.MaxAge < 0 || rec == nil {
		if id, err := uuid.Parse(gs.ID); err == nil {
			var userID uuid.UUID
			err := st.pool.QueryRow(r.Context(), `DELETE FROM sessions WHERE public_id = $1 RETURNING user_id`, id).Scan(&userID)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("destroy session: %w", err)
			default:
				st.invalidate(r.Context(), userID)
			}
		}
		gs.ID = ""
		gs.IsNew = true
		delete(gs.Values, recordKey{})
		expired := *gs.Options
		expired.MaxAge = -1
		http.SetCookie(w, cookie(gs.Name(), "", &expired))
		return nil
	}
	if rec.token == "" {
		return nil
	}
	if err := st.insert(r.Context(), rec); err != nil {
		return err
	}
	http.SetCookie(w, cookie(gs.Name(), rec.token, gs.Options))
	rec.token = ""
	gs.ID = rec.s.PublicID.String()
	gs.IsNew = false
	return nil
}

// Options sets the cookie options of sessions made from now on.
func (st *pgStore) Options(o sessions.Options) {
	st.options = *o.ToGorillaOptions()
}

func cookie(name, value string, o *gsessions.Options) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     o.Path,
		Domain:   o.Domain,
		MaxAge:   o.MaxAge,
		Secure:   o.Secure,
		HttpOnly: o.HttpOnly,
		SameSite: o.SameSite,
	}
	if o.MaxAge < 0 {
		// Browsers that predate Max-Age only drop a cookie whose Expires has passed.
		c.Expires = time.Unix(1, 0)
	}
	return c
}

// load returns the live session whose token hashes to hash, or nil. An expired session is deleted on
// sight. last_seen_at (and with it the idle expiry) is written at most once per TouchInterval, so that
// a busy client does not cost a write per request; the idle timeout is therefore enforced to within
// TouchInterval, always on the early side.
func (st *pgStore) load(ctx context.Context, hash []byte) (*record, error) {
	now := st.now()
	if rec, ok := st.cache.get(hash, now, st.cfg.TouchInterval); ok {
		return rec, nil
	}
	gen := st.cache.generation()
	rec := &record{}
	s := &rec.s
	err := st.pool.QueryRow(ctx, `
		SELECT public_id, user_id, role, csrf_token, created_at, last_seen_at, idle_expires_at, absolute_expires_at
		FROM sessions WHERE token_hash = $1`, hash).
		Scan(&s.PublicID, &s.UserID, &s.Role, &s.CSRFToken, &s.CreatedAt, &s.LastSeenAt, &s.ExpiresAt, &rec.absoluteExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load session: %w", err)
	}
	if !now.Before(s.ExpiresAt) || !now.Before(rec.absoluteExpiresAt) {
		if _, err := st.pool.Exec(ctx, `DELETE FROM sessions WHERE token_hash = $1`, hash); err != nil {
			return nil, fmt.Errorf("delete expired session: %w", err)
		}
		return nil, nil
	}
	if now.Sub(s.LastSeenAt) >= st.cfg.TouchInterval {
		idle := minTime(now.Add(st.cfg.IdleTimeout), rec.absoluteExpiresAt)
		// GREATEST lets concurrent requests of one client race harmlessly; no row means the session
		// was deleted (revoked, logged out) since it was read.
		tag, err := st.pool.Exec(ctx, `
			UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $2), idle_expires_at = GREATEST(idle_expires_at, $3)
			WHERE token_hash = $1`, hash, now, idle)
		if err != nil {
			return nil, fmt.Errorf("touch session: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil, nil
		}
		s.LastSeenAt, s.ExpiresAt = now, idle
	}
	normalizeTimes(rec)
	st.cache.put(hash, rec, now, gen)
	return rec, nil
}

// insert stores a new session and, in the same transaction, destroys the one it replaces, so that a
// failure leaves the old session working rather than neither.
func (st *pgStore) insert(ctx context.Context, rec *record) error {
	now := rec.s.LastSeenAt
	pruneAll := st.claimPrune(now)
	// The replaced session may be another user's (a session planted before login).
	var replacedOwner uuid.UUID
	for attempt := 0; ; attempt++ {
		hash, ok := tokenHash(rec.token)
		if !ok {
			return errors.New("insert session: malformed token")
		}
		err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
			replacedOwner = uuid.Nil
			if rec.credentialsAt > 0 {
				// Shared with other logins, exclusive with RevokeAllForUser: a revocation either
				// waits for this session and ends it, or ends first, and then the check below, whose
				// snapshot is taken after the lock, sees the change it revokes for. Taken first, as
				// RevokeAllForUser takes it before its deletes: taken after this transaction's own
				// deletes of the user's rows, the two waited for each other (a deadlock, and a 500).
				if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, credentialsLockKey(rec.s.UserID)); err != nil {
					return fmt.Errorf("lock the user's credentials: %w", err)
				}
			}
			if rec.replaces != uuid.Nil {
				err := tx.QueryRow(ctx, `DELETE FROM sessions WHERE public_id = $1 RETURNING user_id`, rec.replaces).Scan(&replacedOwner)
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					return fmt.Errorf("destroy replaced session: %w", err)
				}
			}
			// Expired sessions are otherwise only deleted when their cookie comes back, which it
			// often never does. Rows another transaction holds are left for a later prune: waiting
			// for them could close a cycle with a revocation.
			if _, err := tx.Exec(ctx, `DELETE FROM sessions WHERE token_hash IN (
					SELECT token_hash FROM sessions WHERE user_id = $1 AND idle_expires_at <= $2 FOR UPDATE SKIP LOCKED)`,
				rec.s.UserID, now); err != nil {
				return fmt.Errorf("prune user's expired sessions: %w", err)
			}
			tag, err := tx.Exec(ctx, `
				INSERT INTO sessions (token_hash, public_id, user_id, role, csrf_token, created_at, last_seen_at,
				                      idle_expires_at, absolute_expires_at, user_agent, ip)
				SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
				WHERE $12::bigint = 0 OR NOT EXISTS (
					SELECT 1 FROM events WHERE stream_id = $3 AND version > $12 AND event_type = ANY($13))`,
				hash, rec.s.PublicID, rec.s.UserID, rec.s.Role, rec.s.CSRFToken, rec.s.CreatedAt, rec.s.LastSeenAt,
				rec.s.ExpiresAt, rec.absoluteExpiresAt, rec.userAgent, rec.ip, rec.credentialsAt, credentialEvents)
			if err != nil {
				return fmt.Errorf("insert session: %w", err)
			}
			if tag.RowsAffected() == 0 {
				return errCredentialsChanged
			}
			return nil
		})
		// A 256-bit collision does not happen; if the generator were ever broken, failing loudly beats
		// handing one user another's session.
		if postgres.IsUniqueViolation(err, "sessions_pkey") && attempt < 2 {
			rec.token = randomToken()
			continue
		}
		if err == nil && replacedOwner != uuid.Nil {
			st.invalidate(ctx, replacedOwner)
		}
		if err == nil && pruneAll {
			st.pruneExpired(ctx, now)
		}
		return err
	}
}

// pruneExpired deletes every user's expired sessions, outside any login's transaction and skipping
// rows others hold, so that it never waits in a cycle with a revocation. It is housekeeping: a failure
// is logged and the next prune tries again.
func (st *pgStore) pruneExpired(ctx context.Context, now time.Time) {
	if _, err := st.pool.Exec(ctx, `DELETE FROM sessions WHERE token_hash IN (
			SELECT token_hash FROM sessions WHERE idle_expires_at <= $1 FOR UPDATE SKIP LOCKED)`, now); err != nil && ctx.Err() == nil {
		st.cfg.Logger.WarnContext(ctx, "prune expired sessions failed", slog.String("err", err.Error()))
	}
}

// credentialEvents end every session of their user; a login checked before one must not start one.
var credentialEvents = []string{events.UserPasswordChanged{}.EventType(), events.UserRoleChanged{}.EventType()}

var errCredentialsChanged = commands.Unauthenticated("the password or role changed while logging in; log in again")

// credentialsLockKey is the advisory lock that orders a user's session starts and revocations.
func credentialsLockKey(userID uuid.UUID) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("taki.credentials."))
	_, _ = h.Write(userID[:])
	return int64(h.Sum64())
}

// claimPrune reports whether this caller should prune every user's expired sessions now: once per
// pruneInterval per process.
func (st *pgStore) claimPrune(now time.Time) bool {
	last := st.lastPrune.Load()
	if now.UnixNano()-last < int64(pruneInterval) {
		return false
	}
	return st.lastPrune.CompareAndSwap(last, now.UnixNano())
}

// pruneInterval spaces out the table-wide deletes of expired sessions and old login failures.
const pruneInterval = 5 * time.Minute

// now is the injected clock at PostgreSQL's precision, so that times read back compare equal.
func (st *pgStore) now() time.Time {
	return st.cfg.Now().UTC().Truncate(time.Microsecond)
}

func normalizeTimes(rec *record) {
	rec.s.CreatedAt = rec.s.CreatedAt.UTC()
	rec.s.LastSeenAt = rec.s.LastSeenAt.UTC()
	rec.s.ExpiresAt = rec.s.ExpiresAt.UTC()
	rec.absoluteExpiresAt = rec.absoluteExpiresAt.UTC()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
