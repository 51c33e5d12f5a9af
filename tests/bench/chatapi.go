package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"taki/events"
)

// This file holds what the chat benchmarks share: users written straight into the log, the chat API
// as a client sees it (API.md, "Chats and messages"), WebSocket clients ("Real time"), and waiting for
// a projection to reach a log position.

// benchUser is a user the harness created.
type benchUser struct {
	ID    uuid.UUID
	Email string
}

// seedPassword is every seeded user's password.
const seedPassword = "bench-password"

// seedHashParams is the argon2id cost of the seeded users' password hash: tests/testserver's cheap
// test cost. A login verifies with the parameters stored in the hash, so logging in a seeded user
// costs about a millisecond of CPU instead of the ~60-100 ms of the server's default cost (OWASP's
// m=19 MiB, t=2), which `taki serve` offers no setting to lower. Only set-up logs in; no measured
// request hashes a password.
var seedHashParams = &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// emailClaim is the unique-claim kind of an account's email (handlers.emailClaim): a registration
// claims it in its transaction, and logging in finds the account through it.
const emailClaim = "user.email"

// logRow is one event to append to the log directly, as the server's event store would write it.
type logRow struct {
	StreamID   uuid.UUID
	StreamType string
	Version    int64
	Data       events.Event
	OccurredAt time.Time
	// Actor is the acting user, written into the metadata as a command's events carry it.
	Actor uuid.UUID
}

// logRegistry gives the schema version appendLogRows stamps on each event type.
var logRegistry = events.NewRegistry()

// appendLogRows inserts rows in one statement inside tx, in slice order, each stamped with tx's
// pg_current_xact_id() as the server's own appends are. Payloads are the events' JSON as the server
// encodes them (no HTML escaping), at their type's current schema version as the server writes them.
func appendLogRows(ctx context.Context, tx pgx.Tx, rows []logRow) error {
	const insert = `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version, event_type,
			schema_version, occurred_at, payload, metadata)
		SELECT pg_current_xact_id(), e.event_id, e.stream_id, e.stream_type, e.version, e.event_type,
			e.schema_version, e.occurred_at, e.payload::json, e.metadata::json
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], $9::int[])
			WITH ORDINALITY AS e(event_id, stream_id, stream_type, version, event_type, occurred_at, payload, metadata, schema_version, ord)
		ORDER BY e.ord`
	n := len(rows)
	ids, streams, types := make([]uuid.UUID, n), make([]uuid.UUID, n), make([]string, n)
	versions, names, times := make([]int64, n), make([]string, n), make([]time.Time, n)
	payloads, metas, schemas := make([]string, n), make([]string, n), make([]int32, n)
	for i, r := range rows {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		payload, err := encodeEvent(r.Data)
		if err != nil {
			return err
		}
		ids[i], streams[i], types[i], versions[i] = id, r.StreamID, r.StreamType, r.Version
		names[i], times[i], payloads[i] = r.Data.EventType(), r.OccurredAt, payload
		metas[i] = `{"correlation_id":"` + id.String() + `","user_id":"` + r.Actor.String() + `"}`
		schemas[i] = int32(logRegistry.Version(names[i]))
	}
	if _, err := tx.Exec(ctx, insert, ids, streams, types, versions, names, times, payloads, metas, schemas); err != nil {
		return fmt.Errorf("append %d events: %w", n, err)
	}
	return nil
}

// encodeEvent is the server's payload encoding (infra/postgres marshalEvent): JSON without HTML escaping.
func encodeEvent(e events.Event) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return "", fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	return strings.TrimRight(b.String(), "\n"), nil
}

// seedUsers writes n registered users into the log with their email claims, in transactions of
// loadChunk users, as n `POST /users` would (one user.registered event each), except that the password
// hash is made once, at seedHashParams. Run it before the server starts: the users projection then
// picks the users up at start-up, and no aggregate cache holds an older state.
func seedUsers(ctx context.Context, conn *pgx.Conn, n int) ([]benchUser, error) {
	hash, err := argon2id.CreateHash(seedPassword, seedHashParams)
	if err != nil {
		return nil, fmt.Errorf("hash seed password: %w", err)
	}
	run := randomHex(4)
	at := time.Now().UTC().Truncate(time.Microsecond)
	users := make([]benchUser, n)
	for from := 0; from < n; from += loadChunk {
		to := min(n, from+loadChunk)
		rows := make([]logRow, 0, to-from)
		kinds, values, streams := make([]string, 0, to-from), make([]string, 0, to-from), make([]uuid.UUID, 0, to-from)
		for i := from; i < to; i++ {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, err
			}
			u := benchUser{ID: id, Email: fmt.Sprintf("bench-%s-%d@example.com", run, i)}
			users[i] = u
			rows = append(rows, logRow{StreamID: id, StreamType: events.StreamUser, Version: 1, OccurredAt: at, Actor: id,
				Data: events.UserRegistered{UserID: id, Email: u.Email, DisplayName: fmt.Sprintf("Bench User %d", i),
					PasswordHash: hash, Role: "member", RegisteredAt: at}})
			kinds, values, streams = append(kinds, emailClaim), append(values, u.Email), append(streams, id)
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO unique_claims (kind, value, stream_id)
				SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[])`, kinds, values, streams); err != nil {
				return fmt.Errorf("claim emails: %w", err)
			}
			return appendLogRows(ctx, tx, rows)
		}); err != nil {
			return nil, fmt.Errorf("seed users: %w", err)
		}
	}
	return users, nil
}

// logIn logs one user in.
func logIn(ctx context.Context, client *http.Client, baseURL, email, password string) (*session, error) {
	const path = "/api/v1/sessions"
	r, err := doJSON(ctx, client, http.MethodPost, baseURL+path, mustJSON(map[string]string{"email": email, "password": password}), nil)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	if r.Status != http.StatusOK {
		return nil, unexpected(http.MethodPost, path, r)
	}
	var body struct {
		CSRFToken string `json:"csrf_token"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || body.CSRFToken == "" {
		return nil, fmt.Errorf("POST %s: no csrf_token in %s", path, r.Body)
	}
	s := &session{csrf: body.CSRFToken}
	s.takeCookie(r.Cookies)
	if s.cookie == nil {
		return nil, fmt.Errorf("POST %s: answer set no %s cookie", path, sessionCookie)
	}
	return s, nil
}

// logInAll logs every user in over HTTP, parallel at a time.
func logInAll(ctx context.Context, client *http.Client, baseURL string, users []benchUser, parallel int) ([]*session, error) {
	out := make([]*session, len(users))
	err := forEach(ctx, len(users), parallel, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := logIn(ctx, client, baseURL, users[i].Email, seedPassword)
		out[i] = s
		return err
	})
	return out, err
}

// forEach runs fn(0..n-1), parallel at a time, and stops starting new calls after the first error,
// which it returns.
func forEach(ctx context.Context, n, parallel int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(parallel, n)) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(fmt.Errorf("item %d: %w", i, err))
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// call sends an authenticated request (cookie, and the CSRF token for unsafe methods) and wants the
// status want.
func (s *session) call(ctx context.Context, client *http.Client, method, baseURL, path string, body []byte, want int) (apiResponse, error) {
	h := http.Header{}
	h.Set("Cookie", s.cookie.String())
	if method != http.MethodGet {
		h.Set("X-CSRF-Token", s.csrf)
	}
	r, err := doJSON(ctx, client, method, baseURL+path, body, h)
	if err != nil {
		return r, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if r.Status != want {
		return r, unexpected(method, path, r)
	}
	return r, nil
}

// maxMembersPerRequest is how many member_ids one POST /chats may carry (API limit).
const maxMembersPerRequest = 1000

// createDirectChat opens (or finds) the direct chat with member and returns its id.
func (s *session) createDirectChat(ctx context.Context, client *http.Client, baseURL string, member uuid.UUID) (uuid.UUID, error) {
	r, err := s.call(ctx, client, http.MethodPost, baseURL, "/api/v1/chats",
		mustJSON(map[string]any{"type": "direct", "member_id": member}), http.StatusCreated)
	if err != nil {
		return uuid.Nil, err
	}
	return chatID(r)
}

// createGroup creates a group with members (the caller becomes its admin), adding those beyond the
// first maxMembersPerRequest one request each.
func (s *session) createGroup(ctx context.Context, client *http.Client, baseURL, title string, members []uuid.UUID) (uuid.UUID, error) {
	first := members[:min(len(members), maxMembersPerRequest)]
	r, err := s.call(ctx, client, http.MethodPost, baseURL, "/api/v1/chats",
		mustJSON(map[string]any{"type": "group", "title": title, "member_ids": first}), http.StatusCreated)
	if err != nil {
		return uuid.Nil, err
	}
	id, err := chatID(r)
	if err != nil {
		return uuid.Nil, err
	}
	for _, m := range members[len(first):] {
		if _, err := s.call(ctx, client, http.MethodPost, baseURL, "/api/v1/chats/"+id.String()+"/members",
			mustJSON(map[string]any{"user_id": m}), http.StatusNoContent); err != nil {
			return uuid.Nil, err
		}
	}
	return id, nil
}

func chatID(r apiResponse) (uuid.UUID, error) {
	var chat struct {
		ID uuid.UUID `json:"id"`
	}
	if err := json.Unmarshal(r.Body, &chat); err != nil || chat.ID == uuid.Nil {
		return uuid.Nil, fmt.Errorf("POST /api/v1/chats: no chat id in %s", r.Body)
	}
	return chat.ID, nil
}

// sentMessage is what POST /chats/{id}/messages answers, as far as the benchmarks look.
type sentMessage struct {
	ID  uuid.UUID `json:"id"`
	Seq int64     `json:"seq"`
}

// sendMessage sends a new message; the client_msg_id must be new, so the answer must be 201 (a 200
// replay would mean the harness sent a duplicate and measured nothing).
func (s *session) sendMessage(ctx context.Context, client *http.Client, baseURL string, chat uuid.UUID, text, clientMsgID string) (sentMessage, error) {
	r, err := s.call(ctx, client, http.MethodPost, baseURL, "/api/v1/chats/"+chat.String()+"/messages",
		mustJSON(map[string]string{"text": text, "client_msg_id": clientMsgID}), http.StatusCreated)
	if err != nil {
		return sentMessage{}, err
	}
	var m sentMessage
	if err := json.Unmarshal(r.Body, &m); err != nil || m.Seq < 1 {
		return sentMessage{}, fmt.Errorf("POST /api/v1/chats/%s/messages: no message seq in %s", chat, r.Body)
	}
	s.takeCookie(r.Cookies)
	return m, nil
}

// messagePage is GET /chats/{id}/messages's answer.
type messagePage struct {
	Items []struct {
		ID     uuid.UUID `json:"id"`
		ChatID uuid.UUID `json:"chat_id"`
		Seq    int64     `json:"seq"`
		Text   string    `json:"text"`
	} `json:"items"`
	HasMore bool `json:"has_more"`
}

// listMessages reads one page of a chat's history; query is the URL query (before_seq, limit, ...).
func (s *session) listMessages(ctx context.Context, client *http.Client, baseURL string, chat uuid.UUID, query url.Values) (messagePage, error) {
	r, err := s.call(ctx, client, http.MethodGet, baseURL, "/api/v1/chats/"+chat.String()+"/messages?"+query.Encode(), nil, http.StatusOK)
	if err != nil {
		return messagePage{}, err
	}
	var p messagePage
	if err := json.Unmarshal(r.Body, &p); err != nil {
		return messagePage{}, fmt.Errorf("GET /api/v1/chats/%s/messages: %w in %.200s", chat, err, r.Body)
	}
	return p, nil
}

// checkPage verifies a page asked with before_seq and limit of a chat whose seqs run gapless from 1:
// the limit messages right below before_seq, ascending, of that chat, and has_more while seq 1 is not
// on it.
func checkPage(p messagePage, chat uuid.UUID, beforeSeq int64, limit int) error {
	want := min(int64(limit), beforeSeq-1)
	if int64(len(p.Items)) != want {
		return fmt.Errorf("page before seq %d: %d items, want %d", beforeSeq, len(p.Items), want)
	}
	for i, m := range p.Items {
		if wantSeq := beforeSeq - want + int64(i); m.Seq != wantSeq {
			return fmt.Errorf("page before seq %d: item %d has seq %d, want %d", beforeSeq, i, m.Seq, wantSeq)
		}
		if m.ChatID != chat {
			return fmt.Errorf("page before seq %d: item %d is of chat %s", beforeSeq, i, m.ChatID)
		}
	}
	if wantMore := beforeSeq-want > 1; p.HasMore != wantMore {
		return fmt.Errorf("page before seq %d: has_more %v, want %v", beforeSeq, p.HasMore, wantMore)
	}
	return nil
}

// wsToken asks POST /ws-tokens for a WebSocket token.
func (s *session) wsToken(ctx context.Context, client *http.Client, baseURL string) (string, error) {
	r, err := s.call(ctx, client, http.MethodPost, baseURL, "/api/v1/ws-tokens", nil, http.StatusCreated)
	if err != nil {
		return "", err
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || body.Token == "" {
		return "", fmt.Errorf("POST /api/v1/ws-tokens: no token in %s", r.Body)
	}
	return body.Token, nil
}

// wsFrame is a server frame (API.md, "Real time").
type wsFrame struct {
	Type     string          `json:"type"`
	Position string          `json:"position"`
	ChatID   string          `json:"chat_id"`
	Data     json.RawMessage `json:"data"`
}

// wsDialer is the benchmarks' WebSocket client: gorilla's, with small buffers, since thousands of
// sockets share the harness's memory with the server under test, and no Origin header (a token
// client is no browser page).
var wsDialer = &websocket.Dialer{
	HandshakeTimeout: 30 * time.Second,
	ReadBufferSize:   1024,
	WriteBufferSize:  1024,
}

// dialWS opens GET /ws?token= and reads the hello frame, which must come first.
func dialWS(ctx context.Context, baseURL, token string) (*websocket.Conn, error) {
	u := "ws" + strings.TrimPrefix(baseURL, "http") + "/ws?token=" + url.QueryEscape(token)
	conn, resp, err := wsDialer.DialContext(ctx, u, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("GET /ws: %w (status %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("GET /ws: %w", err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(deadline)
	}
	var hello wsFrame
	if err := conn.ReadJSON(&hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("GET /ws: read hello: %w", err)
	}
	if hello.Type != "hello" {
		conn.Close()
		return nil, fmt.Errorf("GET /ws: first frame is %q, want hello", hello.Type)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// waitGroupAt polls consumer group's committed position every offsetPoll until it is at or past
// (txID, offset), and returns when it saw that. It gives up after timeout or when the server exits.
func waitGroupAt(ctx context.Context, env *Env, conn *pgx.Conn, srv *Server, group string, last logPosition, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(offsetPoll)
	defer tick.Stop()
	begin := time.Now()
	nextReport := begin.Add(10 * time.Second)
	for {
		var done bool
		var offset int64
		err := conn.QueryRow(ctx, `SELECT (last_processed_transaction_id, COALESCE(offset_acked, 0)) >= ($2::xid8, $3::bigint),
				COALESCE(offset_acked, 0)
			FROM events_offsets WHERE consumer_group = $1`, group, last.TxID, last.Offset).Scan(&done, &offset)
		switch {
		case err == nil && done:
			return time.Now(), nil
		case err != nil && !errors.Is(err, pgx.ErrNoRows) && ctx.Err() == nil:
			return time.Time{}, fmt.Errorf("read %s offset: %w", group, err)
		}
		if time.Now().After(nextReport) {
			fmt.Fprintf(env.Log, "bench: %s projection at offset %d of %d, %s\n", group, offset, last.Offset,
				time.Since(begin).Round(time.Second))
			nextReport = nextReport.Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s projection not at offset %d after %s (at %d): %w",
				group, last.Offset, time.Since(begin).Round(time.Millisecond), offset, context.Cause(ctx))
		case <-srv.Done():
			return time.Time{}, srv.exitError("while waiting for the " + group + " projection")
		case <-tick.C:
		}
	}
}

// startServer starts `taki serve` on env's database, with the extra KEY=value settings of
// StartServerWith, and waits until it is ready.
func startServer(ctx context.Context, env *Env, extra ...string) (*Server, error) {
	srv, err := env.StartServerWith(ctx, extra...)
	if err != nil {
		return nil, err
	}
	if _, err := srv.WaitReady(ctx); err != nil {
		return nil, err
	}
	return srv, nil
}

// seedAndStart seeds n users, starts the server, waits until its users projection has them, and
// logs them in: the set-up every chat benchmark shares. It reports how long that took. extra are
// settings for the server's environment (StartServerWith).
func seedAndStart(ctx context.Context, env *Env, n int, extra ...string) (*Server, []benchUser, []*session, *http.Client, error) {
	begin := time.Now()
	conn, err := env.Connect(ctx)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	users, err := seedUsers(ctx, conn, n)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	last, err := lastPosition(ctx, conn)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	srv, err := startServer(ctx, env, extra...)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if _, err := waitGroupAt(ctx, env, conn, srv, "users", last, env.CatchUpTimeout); err != nil {
		return nil, nil, nil, nil, err
	}
	client := newHTTPClient(max(env.Clients, loginParallel))
	sessions, err := logInAll(ctx, client, srv.BaseURL, users, loginParallel)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	fmt.Fprintf(env.Log, "bench: set-up: %d users written to the log, server started, %d logins over HTTP, in %s\n",
		n, n, time.Since(begin).Round(time.Millisecond))
	return srv, users, sessions, client, nil
}

// loginParallel is how many logins run at once in set-up: each is a few queries and one cheap hash.
const loginParallel = 8

// messageText is a message body of a typical chat line's length (about 60 bytes).
func messageText(w, i int) string {
	return "bench message " + strconv.Itoa(i) + " from client " + strconv.Itoa(w) + ", about sixty bytes long"
}
