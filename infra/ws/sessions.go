package ws

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/commands"
)

// A socket lives no longer than the session that authorised it (OWASP, session management: ending a
// session ends what it authorised). The session is the cookie's for a cookie socket, and the one that
// asked for the token (its sid claim) for a token socket.
//
//   - The handshake checks that the session is live: a token outlives a logout by up to 5 minutes.
//   - SessionsChanged (wired to auth.Manager.OnInvalidate: local deletes and other instances'
//     NOTIFYs) queues a check of the user's sockets on this instance; the checker goroutine runs it
//     with one LiveSessions query for all their session ids, so a slow database delays the check,
//     never the caller (the invalidation listener).
//   - Every SessionCheckInterval the checker checks every socket's session the same way, in batches
//     of checkBatch ids: this is what ends the sockets of sessions that expired (idle or absolute;
//     expiry deletes nothing, so nothing announces it), and of sessions whose end was announced
//     while this instance was not listening.
//
// A socket whose session is gone, expired or (defensively) another user's is closed with 1008 and
// sessionEndedReason. Its client asks again: a cookie that still works (e.g. re-issued by a password
// change) opens a new socket at once, otherwise it must log in.
const (
	// CloseSessionEnded closes a socket whose session ended (logout, revocation, password or role
	// change, expiry): 1008, policy violation. Reconnecting needs a live session.
	CloseSessionEnded  = websocket.ClosePolicyViolation
	sessionEndedReason = "session ended: log in again"

	// sessionCheckBatch bounds the ids of one LiveSessions query: an instance with 100,000 sockets
	// checks them with 100 modest queries a minute.
	sessionCheckBatch = 1000
	// sessionCheckTimeout bounds one LiveSessions query; a failed check is retried at the next one.
	sessionCheckTimeout = 10 * time.Second
)

// SessionsChanged tells the hub that sessions of userID ended (were deleted); uuid.Nil means that
// any user's may have, unseen. The sockets of those users on this instance are checked soon after, on
// the hub's own goroutine, and those whose session is no longer live are closed with 1008. It never
// blocks and costs nothing for a user without sockets here, so that auth.Manager.OnInvalidate can
// call it from its listener.
func (h *Hub) SessionsChanged(userID uuid.UUID) {
	// Counted before the index is read: a handshake indexing its socket after this read sees the
	// count move and queues the check itself (connect).
	h.invalidations.Add(1)
	if userID != uuid.Nil && !h.Connected(userID) {
		return
	}
	h.queueCheck(userID)
}

// queueCheck queues a check of userID's sockets (uuid.Nil: of every socket) and wakes the checker.
func (h *Hub) queueCheck(userID uuid.UUID) {
	h.checkMu.Lock()
	if userID == uuid.Nil {
		h.checkAll = true
	} else {
		h.checkUsers[userID] = struct{}{}
	}
	h.checkMu.Unlock()
	select {
	case h.checkWake <- struct{}{}:
	default: // the checker is woken already and takes the queue as it is then
	}
}

// takeQueued empties the queue of checks.
func (h *Hub) takeQueued() (users []uuid.UUID, all bool) {
	h.checkMu.Lock()
	defer h.checkMu.Unlock()
	all = h.checkAll
	h.checkAll = false
	if !all {
		users = make([]uuid.UUID, 0, len(h.checkUsers))
		for id := range h.checkUsers {
			users = append(users, id)
		}
	}
	clear(h.checkUsers)
	return users, all
}

// runSessionChecks is the checker goroutine: queued checks as they come, every socket periodically.
func (h *Hub) runSessionChecks(ctx context.Context) {
	defer close(h.checksDone)
	tick := time.NewTicker(h.cfg.SessionCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.checkWake:
			users, all := h.takeQueued()
			if all {
				h.checkSessions(ctx, nil, true)
			} else {
				h.checkSessions(ctx, users, false)
			}
		case <-tick.C:
			h.checkSessions(ctx, nil, true)
		}
	}
}

// checkSessions closes the sockets of the given users (of everyone, if all) whose session is no
// longer live: one LiveSessions query per checkBatch distinct session ids. A query that fails leaves
// its sockets open until the next check; it is logged.
func (h *Hub) checkSessions(ctx context.Context, users []uuid.UUID, all bool) {
	clients := h.socketsOf(users, all)
	if len(clients) == 0 {
		return
	}
	ids := make([]uuid.UUID, 0, len(clients))
	seen := make(map[uuid.UUID]struct{}, len(clients))
	for _, c := range clients {
		if _, dup := seen[c.sessionID]; !dup {
			seen[c.sessionID] = struct{}{}
			ids = append(ids, c.sessionID)
		}
	}
	// checked holds the ids whose answer came back, live holds the live ones among them.
	checked := make(map[uuid.UUID]struct{}, len(ids))
	live := make(map[uuid.UUID]uuid.UUID, len(ids))
	for batch := range chunks(ids, h.checkBatch) {
		qctx, cancel := context.WithTimeout(ctx, sessionCheckTimeout)
		got, err := h.cfg.Sessions.LiveSessions(qctx, batch)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return // Close: every socket is closing anyway
			}
			h.log.Warn("websocket session check failed: sockets stay open until the next check",
				slog.Int("sessions", len(batch)), slog.String("error", err.Error()))
			continue
		}
		for _, id := range batch {
			checked[id] = struct{}{}
		}
		for id, user := range got {
			live[id] = user
		}
	}
	for _, c := range clients {
		if _, ok := checked[c.sessionID]; !ok {
			continue
		}
		if user, ok := live[c.sessionID]; ok && user == c.userID {
			continue
		}
		if c.closeWith(CloseSessionEnded, sessionEndedReason) {
			h.metrics.sessionCloses.Inc()
			h.log.InfoContext(c.ctx, "closing a websocket whose session ended", slog.String("via", c.via))
		}
	}
}

// chunks yields ids in slices of at most n.
func chunks(ids []uuid.UUID, n int) func(yield func([]uuid.UUID) bool) {
	return func(yield func([]uuid.UUID) bool) {
		for len(ids) > 0 {
			k := min(n, len(ids))
			if !yield(ids[:k:k]) {
				return
			}
			ids = ids[k:]
		}
	}
}

// checkHandshakeSession refuses a handshake whose session is not live (401), or cannot be checked
// (503). A token outlives a logout by up to its 5 minutes; a cookie session may end between the
// middleware's load and now. It returns the hub's invalidation count from before the check, for
// connect to compare.
func (h *Hub) checkHandshakeSession(ctx context.Context, userID, sessionID uuid.UUID) (uint64, error) {
	at := h.invalidations.Load()
	qctx, cancel := context.WithTimeout(ctx, sessionCheckTimeout)
	defer cancel()
	live, err := h.cfg.Sessions.LiveSessions(qctx, []uuid.UUID{sessionID})
	if err != nil {
		return 0, fmt.Errorf("websocket handshake: check session: %w: %w", err, &commands.Error{
			Kind: commands.KindUnavailable, Detail: "sessions are unavailable; try again shortly", RetryAfter: time.Second})
	}
	if user, ok := live[sessionID]; !ok || user != userID {
		return 0, commands.Unauthenticated("the session has ended: log in again")
	}
	return at, nil
}
