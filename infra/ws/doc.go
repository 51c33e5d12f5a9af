// Package ws is Taki's WebSocket transport (GET /ws, API.md "Real time"), built on melody v1.1.4 with
// its unsafe defaults replaced (DESIGN.md, "Real time"):
//
//   - identification before the upgrade: ?token= (a JWT from POST /api/v1/ws-tokens, any Origin) or
//     the session cookie with an Origin from TAKI_ALLOWED_ORIGINS; 401 without credentials, 403 for
//     another Origin. The identity is handed to melody at registration (HandleRequestWithKeys), and
//     the token is removed from the request melody keeps;
//   - frames up to 64 KiB (a bigger one closes the socket with 1009), pings every 25 s, a socket
//     silent for 35 s taken for dead, 10 s to write a frame;
//   - an own user → sockets index: SendToUsers writes to exactly the sockets of the given users
//     with Session.Write, never by filtering every socket;
//   - flow control: melody drops frames silently once a socket's queue is full. Here a socket that
//     falls SendBuffer frames behind is closed once with 1013 instead, after the frames already
//     queued, and its client reconnects with ?since= to recover what it missed;
//   - client frames dispatched by type (FrameHandler): "ping" is built in; "message.send", "chat.read"
//     and "typing" go to the bus (ChatFrameHandlers, through Config.Handlers). A malformed frame or
//     an unknown type is answered with an error frame and the socket stays open;
//   - the fan-out (Fanout): the log's events, handed over in log order by the instance's log tail,
//     become frames {"type", "position", "chat_id", "data"} for the users the feed names
//     (SendEvent);
//   - recovery (?since=, RecoveryConfig): a reconnecting socket first gets the events after its
//     position read from the log, then the live ones, with no gap and no duplicate at the seam (see
//     eventStream); a position too old to serve gets resync_required;
//   - typing notices relayed to other members' sockets on every instance (TypingRelay), never stored;
//   - sockets bound to sessions (sessions.go): a socket remembers the session that authorised it (the
//     cookie's, or the token's sid: the session that asked POST /ws-tokens for it). The handshake
//     refuses (401) a session that has ended; when a session ends later (logout, revocation, password
//     or role change: auth.Manager.OnInvalidate, wired to SessionsChanged, on every instance through
//     NOTIFY) or expires (found by a check of every socket each SessionCheckInterval, one query per
//     1000 sessions), its sockets are closed with 1008 (policy violation, CloseSessionEnded) and the
//     reason "session ended: log in again". A password change re-issues the current session under a
//     new id: its sockets close too, and the client reconnects with its new cookie or a new token. A
//     socket's own traffic does not extend its session.
//
// Metrics: taki_ws_sockets, taki_ws_frames_sent_total, taki_ws_slow_closes_total,
// taki_ws_dropped_total, taki_ws_session_closes_total and the fan-out's taki_ws_fanout_events_total, taki_ws_fanout_frames_total
// and taki_ws_fanout_lag_seconds.
//
// Publishers encode a frame once (EncodeFrame) and call SendToUsers (or SendEvent, for frames of log
// events) from one goroutine per ordered stream; the bytes are shared by every socket and must not
// change afterwards.
package ws
