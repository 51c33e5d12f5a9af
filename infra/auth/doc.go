// Package auth holds Taki's authentication adapters: password hashing, server-side sessions, CSRF
// tokens, login throttling and WebSocket tokens. It follows OWASP's session management, password
// storage and authentication cheat sheets; API.md ("Authentication, CSRF", "Users and sessions") is the
// contract it serves.
//
// # Passwords
//
// A [Hasher] hashes with argon2id (OWASP: m=19 MiB, t=2, p=1 unless configured). [Hasher.Verify]
// checks a password; [Hasher.VerifyDummy] costs the same for an email that has no account, so that the
// login's timing does not reveal which emails are registered.
//
// # Sessions
//
// A [Manager] keeps sessions in the sessions table, behind gin-contrib/sessions with a PostgreSQL store
// of its own. The cookie taki_session (HttpOnly, SameSite=Lax, Path=/, Secure when configured, no
// Domain, no expiry) holds only a random 256-bit id; the table holds its SHA-256, never the id. A
// session ends 30 minutes after its last use or 8 hours after login, whichever comes first; an expired
// session is treated as absent and deleted.
//
// The HTTP layer uses it so:
//
//	r.Use(m.Middleware())                        // loads the request's session, if any
//	s, ok := m.Current(c)                        // who is calling; ok=false: 401
//	m.CheckCSRF(s, c.GetHeader("X-CSRF-Token"))  // on unsafe methods; false: 403 csrf
//	s, err := m.Start(c, userID, role, version)  // POST /sessions, after the password checked out at version
//	err := m.Destroy(c)                          // DELETE /sessions/current
//	items, err := m.List(ctx, s.UserID, s.PublicID)   // GET /sessions
//	err := m.Revoke(ctx, s.UserID, id)           // DELETE /sessions/{id}; not-found when not the user's
//	s, err := m.Rotate(c)                        // PUT /users/me/password, then:
//	n, err := m.RevokeAllForUser(ctx, s.UserID, &s.PublicID)
//	n, err := m.RevokeAllForUser(ctx, userID, nil)    // role change: the user logs in again
//	m.OnInvalidate(hub.SessionsChanged)          // hear of every session deleted, here or elsewhere
//	live, err := m.LiveSessions(ctx, publicIDs)  // which sessions are live (sockets' periodic check)
//
// Start always issues a new id and destroys the session the request came with (fixation defence), and
// Rotate does the same while keeping the user, role and absolute expiry. Session state changes only
// through these methods; values set on the gin-contrib session directly are not persisted.
//
// # Login throttling
//
// A [Throttle] admits at most 5 failed logins per email in 15 minutes (configurable):
//
//	if err := th.Check(ctx, email); err != nil { ... }  // *commands.Error, KindRateLimited, RetryAfter
//	ok := ...verify the password (VerifyDummy for an unknown email)...
//	if ok { th.Succeed(ctx, email) } else { th.Fail(ctx, email) }
//
// # WebSocket tokens
//
// [WSTokens] issues and parses the JWTs of POST /ws-tokens: HS256, iss "taki", aud "taki-ws", sub the
// user id, sid the public id of the session that asked for the token, a random jti, and at most 5
// minutes of life. The socket a token opens lives no longer than its sid's session; a token without
// sid is refused.
//
// Nothing here logs or puts into errors a password, a token or a cookie value.
package auth
