package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/events"
	"taki/infra/config"
	"taki/infra/postgres/pgtest"
	"taki/infra/server"
	"taki/infra/ws"
	"taki/tests/testserver"
)

// Real-time delivery end to end (API.md, "Real time"; DESIGN.md, "Real time"): events of the log reach
// the sockets of the chats' members through the log tail, the feed and the fan-out of each instance;
// reconnecting sockets recover with ?since=. Every wait is on a frame, never a sleep: frames of one
// socket follow the log's order, so "the next frame is the probe" proves that nothing came before it.

// evFrame is any server frame as a client decodes it, with its top-level keys.
type evFrame struct {
	Type        string          `json:"type"`
	Position    string          `json:"position"`
	ChatID      string          `json:"chat_id"`
	ClientMsgID string          `json:"client_msg_id"`
	Data        json.RawMessage `json:"data"`
	Problem     *struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Errors []struct {
			Field string `json:"field"`
		} `json:"errors"`
	} `json:"problem"`
	keys []string
}

func evRead(t testing.TB, conn *websocket.Conn) evFrame {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(rtWait))
	_, b, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f evFrame
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil || json.Unmarshal(b, &keys) != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	f.keys = slices.Sorted(maps.Keys(keys))
	return f
}

// evNext reads the next frame and checks its type; event frames must have exactly API.md's keys and
// a position.
func evNext(t testing.TB, conn *websocket.Conn, typ string) evFrame {
	t.Helper()
	f := evRead(t, conn)
	if f.Type != typ {
		t.Fatalf("got %s frame %s, want %s", f.Type, f.Data, typ)
	}
	if strings.Contains(typ, ".") {
		if !slices.Equal(f.keys, []string{"chat_id", "data", "position", "type"}) {
			t.Fatalf("%s frame has keys %v", typ, f.keys)
		}
		if _, err := events.ParsePosition(f.Position); err != nil {
			t.Fatalf("%s frame position %q: %v", typ, f.Position, err)
		}
	}
	return f
}

// evAckAndEvent reads the ack of a message.send and the message.sent frame of the same message, in
// either order: the ack answers the command, the event frame comes through the fan-out, and neither
// waits for the other.
func evAckAndEvent(t testing.TB, conn *websocket.Conn) (ack, sent evFrame) {
	t.Helper()
	for range 2 {
		f := evRead(t, conn)
		switch {
		case f.Type == ws.TypeAck && ack.Type == "":
			ack = f
		case f.Type == "message.sent" && sent.Type == "":
			if _, err := events.ParsePosition(f.Position); err != nil {
				t.Fatalf("message.sent frame position %q: %v", f.Position, err)
			}
			sent = f
		default:
			t.Fatalf("got %s frame %s, want an ack and a message.sent", f.Type, f.Data)
		}
	}
	return ack, sent
}

func (f evFrame) message(t testing.TB) messageJSON {
	t.Helper()
	var m messageJSON
	if err := json.Unmarshal(f.Data, &m); err != nil {
		t.Fatalf("%s data %s: %v", f.Type, f.Data, err)
	}
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(f.Data, &keys)
	if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, messageKeys) {
		t.Fatalf("%s data has keys %v, want %v", f.Type, got, messageKeys)
	}
	return m
}

func (f evFrame) chat(t testing.TB) chatJSON {
	t.Helper()
	var c chatJSON
	if err := json.Unmarshal(f.Data, &c); err != nil {
		t.Fatalf("%s data %s: %v", f.Type, f.Data, err)
	}
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(f.Data, &keys)
	if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, chatKeys) {
		t.Fatalf("%s data has keys %v, want %v", f.Type, got, chatKeys)
	}
	return c
}

func (f evFrame) position(t testing.TB) events.Position {
	t.Helper()
	p, err := events.ParsePosition(f.Position)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// evPost sends a command and checks its status; out, if not nil, gets the answer.
func evPost(t testing.TB, u rtUser, method, path string, body any, status int, out any) {
	t.Helper()
	r := u.client.Do(method, "/api/v1"+path, body)
	if r.StatusCode != status {
		t.Fatalf("%s %s: %d %s, want %d", method, path, r.StatusCode, r.Body, status)
	}
	if out != nil {
		r.JSON(t, out)
	}
}

func evGroup(t testing.TB, admin rtUser, members ...rtUser) string {
	t.Helper()
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.id.String()
	}
	var c chatJSON
	evPost(t, admin, http.MethodPost, "/chats", map[string]any{"type": "group", "title": "g", "member_ids": ids}, http.StatusCreated, &c)
	return c.ID
}

func evDirect(t testing.TB, a, b rtUser) string {
	t.Helper()
	var c chatJSON
	evPost(t, a, http.MethodPost, "/chats", map[string]any{"type": "direct", "member_id": b.id.String()}, http.StatusCreated, &c)
	return c.ID
}

func evSend(t testing.TB, u rtUser, chatID, text string) messageJSON {
	t.Helper()
	var m messageJSON
	evPost(t, u, http.MethodPost, "/chats/"+chatID+"/messages", map[string]any{"text": text, "client_msg_id": uuid.NewString()},
		http.StatusCreated, &m)
	return m
}

// evDial opens a socket for u with a fresh token and optional ?since=, and reads its hello.
func evDial(t testing.TB, srv *testserver.Server, u rtUser, since string) *websocket.Conn {
	t.Helper()
	q := "token=" + url.QueryEscape(rtTokenOf(t, u))
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	conn, resp, err := rtDial(t, srv, q, nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	f := evRead(t, conn)
	if f.Type != ws.TypeHello {
		t.Fatalf("first frame %+v, want hello", f)
	}
	return conn
}

func rtTokenOf(t testing.TB, u rtUser) string {
	t.Helper()
	r := u.client.Do(http.MethodPost, "/api/v1/ws-tokens", nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("ws-tokens: %d %s", r.StatusCode, r.Body)
	}
	var body struct {
		Token string `json:"token"`
	}
	r.JSON(t, &body)
	return body.Token
}

// evProbe sends a message to probeChat and checks that it is the next frame of each conn: nothing
// that was in the log before it is still to come for them. conns must be every socket open for the
// probe chat's members.
func evProbe(t testing.TB, from rtUser, probeChat string, conns ...*websocket.Conn) {
	t.Helper()
	m := evSend(t, from, probeChat, "probe")
	for i, c := range conns {
		f := evNext(t, c, "message.sent")
		if got := f.message(t); got.ID != m.ID {
			t.Fatalf("socket %d: next frame is message %s %q, want the probe", i, got.ID, got.Text)
		}
	}
}

// Chat events reach every socket of every member at that event, in log order, and nobody else: a
// removed member gets its removal and nothing of the chat afterwards, an added one its addition and
// what follows. Frames carry API.md's data.
func TestRTChatEventsReachTheMembersInLogOrder(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice, bob := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob")
	carol, dave := rtSignUp(t, srv, "carol"), rtSignUp(t, srv, "dave")
	a1 := evDial(t, srv, alice, "")
	a2, resp, err := rtDial(t, srv, "", alice.client.HTTP.Jar, "Origin", rtOrigin) // the cookie's socket
	if err != nil {
		t.Fatalf("dial with cookie: %v (%v)", err, resp)
	}
	rtWantHello(t, a2, alice.id)
	b, c, d := evDial(t, srv, bob, ""), evDial(t, srv, carol, ""), evDial(t, srv, dave, "")
	probeC, probeD := evDirect(t, alice, carol), evDirect(t, alice, dave)
	evNext(t, a1, "chat.created")
	evNext(t, a2, "chat.created")
	evNext(t, c, "chat.created")
	evNext(t, a1, "chat.created")
	evNext(t, a2, "chat.created")
	evNext(t, d, "chat.created")

	chat := evGroup(t, alice, bob, carol)
	members := []*websocket.Conn{a1, a2, b, c}
	for _, conn := range members {
		f := evNext(t, conn, "chat.created")
		if ch := f.chat(t); f.ChatID != chat || ch.ID != chat || len(ch.Members) != 3 || ch.Type != "group" {
			t.Fatalf("chat.created %s", f.Data)
		}
	}
	var sent []messageJSON
	for i := range 10 {
		from := alice
		if i%2 == 1 {
			from = bob
		}
		sent = append(sent, evSend(t, from, chat, fmt.Sprintf("m%d", i+1)))
	}
	for _, conn := range members {
		var last events.Position
		for i := range 10 {
			f := evNext(t, conn, "message.sent")
			m := f.message(t)
			if m.Seq != int64(i+1) || m.ID != sent[i].ID || m.Text != sent[i].Text || m.ChatID != chat || f.ChatID != chat {
				t.Fatalf("frame %d: %s, want message %+v", i, f.Data, sent[i])
			}
			if p := f.position(t); !last.Less(p) {
				t.Fatalf("position %v after %v", p, last)
			} else {
				last = p
			}
		}
	}
	evProbe(t, alice, probeD, a1, a2, d) // dave, no member, got none of it

	// Bob reads; everyone sees it, and the next message shows read_by_count.
	evPost(t, bob, http.MethodPost, "/chats/"+chat+"/read", map[string]any{"up_to_seq": 10}, http.StatusNoContent, nil)
	for _, conn := range members {
		f := evNext(t, conn, "chat.read")
		var r struct {
			UserID  string `json:"user_id"`
			UpToSeq int64  `json:"up_to_seq"`
		}
		if json.Unmarshal(f.Data, &r) != nil || r.UserID != bob.id.String() || r.UpToSeq != 10 || f.ChatID != chat {
			t.Fatalf("chat.read %s", f.Data)
		}
	}
	// Edits and deletes carry the message; a deleted one has no text.
	evPost(t, alice, http.MethodPatch, "/chats/"+chat+"/messages/"+sent[0].ID, map[string]any{"text": "m1!"}, http.StatusOK, nil)
	evPost(t, alice, http.MethodDelete, "/chats/"+chat+"/messages/"+sent[2].ID, nil, http.StatusNoContent, nil)
	for _, conn := range members {
		m := evNext(t, conn, "message.edited").message(t)
		if m.ID != sent[0].ID || m.Text != "m1!" || m.EditedAt == nil || m.ReadByCount != 1 || m.Seq != 1 {
			t.Fatalf("message.edited %+v", m)
		}
		m = evNext(t, conn, "message.deleted").message(t)
		if m.ID != sent[2].ID || m.Text != "" || !m.Deleted || m.Seq != 3 {
			t.Fatalf("message.deleted %+v", m)
		}
	}

	// Carol is removed: she gets the removal (a chat that no longer lists her), then nothing of it.
	evPost(t, alice, http.MethodDelete, "/chats/"+chat+"/members/"+carol.id.String(), nil, http.StatusNoContent, nil)
	for _, conn := range members {
		ch := evNext(t, conn, "chat.member_removed").chat(t)
		if ch.ID != chat || len(ch.Members) != 2 {
			t.Fatalf("chat.member_removed %+v", ch)
		}
		if _, listed := chatMember(ch, carol.id.String()); listed {
			t.Fatalf("chat.member_removed still lists carol: %+v", ch)
		}
	}
	m11 := evSend(t, alice, chat, "after carol")
	members = []*websocket.Conn{a1, a2, b}
	for _, conn := range members {
		if m := evNext(t, conn, "message.sent").message(t); m.ID != m11.ID {
			t.Fatalf("got %+v, want the message after carol's removal", m)
		}
	}
	evProbe(t, alice, probeC, a1, a2, c)

	// Dave is added: he gets the addition and what follows.
	evPost(t, alice, http.MethodPost, "/chats/"+chat+"/members", map[string]any{"user_id": dave.id.String()}, http.StatusNoContent, nil)
	members = append(members, d)
	for _, conn := range members {
		ch := evNext(t, conn, "chat.member_added").chat(t)
		if _, listed := chatMember(ch, dave.id.String()); !listed || ch.LastSeq != 11 {
			t.Fatalf("chat.member_added %+v", ch)
		}
	}
	m12 := evSend(t, bob, chat, "hi dave")
	for _, conn := range members {
		if m := evNext(t, conn, "message.sent").message(t); m.ID != m12.ID || m.Seq != 12 {
			t.Fatalf("got %+v, want the message after dave joined", m)
		}
	}
	evProbe(t, alice, probeC, a1, a2, c)
}

// A socket that reconnects with ?since= gets every event after that position, then the live ones,
// with no gap and no duplicate at the seam, while messages keep being sent.
func TestRTRecoveryHasNoGapNorDuplicateWhileMessagesFlow(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice, bob := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob")
	a := evDial(t, srv, alice, "")
	chat := evDirect(t, alice, bob)
	evNext(t, a, "chat.created")
	positions := map[int64]string{}
	for range 20 {
		evSend(t, bob, chat, "before")
	}
	for i := range 20 {
		f := evNext(t, a, "message.sent")
		if m := f.message(t); m.Seq != int64(i+1) {
			t.Fatalf("seq %d, want %d", m.Seq, i+1)
		}
		positions[int64(i+1)] = f.Position
	}
	a.Close()
	from := int64(10)
	for round := range 3 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				evSend(t, bob, chat, "during")
			}
		}()
		conn := evDial(t, srv, alice, positions[from])
		wg.Wait()
		last := evSend(t, alice, chat, "last")
		var prev events.Position
		for seq := from + 1; seq <= last.Seq; seq++ {
			f := evNext(t, conn, "message.sent")
			m := f.message(t)
			if m.Seq != seq {
				t.Fatalf("round %d: got seq %d, want %d (recovering from %d)", round, m.Seq, seq, from)
			}
			p := f.position(t)
			if !prev.Less(p) {
				t.Fatalf("round %d: position %v after %v", round, p, prev)
			}
			prev = p
			positions[seq] = f.Position
		}
		evProbe(t, bob, chat, conn) // and nothing twice after the last
		conn.Close()
		from = last.Seq - 25
	}
}

// A position too old to serve gets resync_required and then live frames; so does one this log never
// had.
func TestRTResyncRequired(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	srv := testserver.Start(t, db, testserver.WithOptions(func(o *server.Options) {
		o.WebSocket = func(c *ws.Config) { c.Recovery.MaxEvents = 5 }
	}))
	alice, bob := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob")
	a := evDial(t, srv, alice, "")
	chat := evDirect(t, alice, bob)
	created := evNext(t, a, "chat.created")
	for range 8 {
		evSend(t, bob, chat, "x")
	}
	var pos []string
	for range 8 {
		pos = append(pos, evNext(t, a, "message.sent").Position)
	}
	for _, since := range []string{created.Position, "0.0", "999999999999.1"} {
		conn := evDial(t, srv, alice, since)
		if f := evRead(t, conn); f.Type != ws.TypeResyncRequired || len(f.keys) != 1 {
			t.Fatalf("since %s: got %+v, want resync_required", since, f)
		}
		evProbe(t, bob, chat, conn)
		conn.Close()
	}
	// Within the bound it recovers: after the 7th message come the 8th and the three probes.
	conn := evDial(t, srv, alice, pos[len(pos)-2])
	if m := evNext(t, conn, "message.sent").message(t); m.Seq != 8 {
		t.Fatalf("recovered seq %d, want 8", m.Seq)
	}
	for seq := int64(9); seq <= 11; seq++ { // the probes
		if m := evNext(t, conn, "message.sent").message(t); m.Seq != seq {
			t.Fatalf("recovered seq %d, want %d", m.Seq, seq)
		}
	}
	// A malformed position is refused at the handshake.
	_, resp, err := rtDial(t, srv, "token="+url.QueryEscape(rtTokenOf(t, alice))+"&since=yesterday", nil)
	rtWantRefused(t, "malformed since", resp, err, http.StatusBadRequest, "bad-request")
}

// An event this binary cannot read (here a type of some newer binary, as during a rolling deploy)
// does not stop live delivery: the members of its chat get resync_required at its position, everyone
// else keeps getting frames, and a recovery across it gets resync_required.
func TestRTUnreadableEventInTheLog(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	srv := testserver.Start(t, db)
	alice, bob, carol := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob"), rtSignUp(t, srv, "carol")
	a, b, c := evDial(t, srv, alice, ""), evDial(t, srv, bob, ""), evDial(t, srv, carol, "")
	group := evGroup(t, alice, bob)
	evNext(t, a, "chat.created")
	evNext(t, b, "chat.created")
	direct := evDirect(t, alice, carol)
	evNext(t, a, "chat.created")
	evNext(t, c, "chat.created")
	evSend(t, bob, group, "before")
	before := evNext(t, a, "message.sent")
	evNext(t, b, "message.sent")

	pool := pgtest.NewPool(t, db)
	var unreadable events.Position
	var xid string
	err := pool.QueryRow(t.Context(), `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version,
			event_type, schema_version, occurred_at, payload, metadata)
		SELECT pg_current_xact_id(), $1, stream_id, stream_type, max(version) + 1, 'chat.pinned', 1, now(), '{"seq": 1}', '{}'
		FROM events WHERE stream_id = $2 GROUP BY stream_id, stream_type
		RETURNING transaction_id::text, "offset"`, uuid.New(), group).Scan(&xid, &unreadable.Offset)
	if err != nil {
		t.Fatal(err)
	}
	if unreadable.TxID, err = strconv.ParseUint(xid, 10, 64); err != nil {
		t.Fatal(err)
	}

	for _, conn := range []*websocket.Conn{a, b} {
		if f := evRead(t, conn); f.Type != ws.TypeResyncRequired || f.Position != unreadable.String() {
			t.Fatalf("got %s at %s, want resync_required at %s", f.Type, f.Position, unreadable)
		}
	}
	// Delivery goes on, to the group's members too.
	evProbe(t, carol, direct, a, c)
	r := srv.Client(t).Do(http.MethodGet, "/metrics", nil)
	if !strings.Contains(string(r.Body), "\ntaki_ws_fanout_unreadable_events_total 1\n") {
		t.Fatal("/metrics does not count the unreadable event")
	}

	// Recovering across it: resync_required, then live frames.
	conn := evDial(t, srv, alice, before.Position)
	if f := evRead(t, conn); f.Type != ws.TypeResyncRequired || f.Position != "" {
		t.Fatalf("recovery across an unreadable event: got %+v, want resync_required", f)
	}
	evProbe(t, carol, direct, conn, a, c)
}

// A command on a chat holding an event this binary cannot read (a newer one wrote it during a rolling
// deploy) is answered 503 with Retry-After over REST and an unavailable problem over the socket, not
// an internal error: retried once a newer instance serves it, it goes through.
func TestRTCommandOnAChatWithAnUnreadableEvent(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	srv := testserver.Start(t, db)
	alice, bob := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob")
	a := evDial(t, srv, alice, "")
	group := evGroup(t, alice, bob)
	evNext(t, a, "chat.created")
	// Sent first so that the instance holds the chat's state, which the row below makes stale.
	evSend(t, alice, group, "before")
	evNext(t, a, "message.sent")

	if _, err := pgtest.NewPool(t, db).Exec(t.Context(), `INSERT INTO events (transaction_id, event_id, stream_id,
			stream_type, version, event_type, schema_version, occurred_at, payload, metadata)
		SELECT pg_current_xact_id(), $1, stream_id, stream_type, max(version) + 1, 'chat.pinned', 1, now(), '{}', '{}'
		FROM events WHERE stream_id = $2 GROUP BY stream_id, stream_type`, uuid.New(), group); err != nil {
		t.Fatal(err)
	}
	const detail = "this chat holds events a newer version of the service wrote; retry shortly"

	r := alice.client.Do(http.MethodPost, "/api/v1/chats/"+group+"/messages", map[string]any{"text": "after", "client_msg_id": "m-after"})
	p := acctWantProblem(t, r, http.StatusServiceUnavailable, "unavailable")
	if p.Detail != detail {
		t.Fatalf("detail %q, want %q", p.Detail, detail)
	}
	if ra := r.Header.Get("Retry-After"); ra != "5" {
		t.Fatalf("Retry-After %q, want 5", ra)
	}

	if f := evRead(t, a); f.Type != ws.TypeResyncRequired {
		t.Fatalf("got %s, want resync_required", f.Type)
	}
	rtWrite(t, a, `{"type":"message.send","chat_id":"`+group+`","text":"after","client_msg_id":"w-after"}`)
	if f := evNext(t, a, ws.TypeError); f.Problem == nil || f.Problem.Status != http.StatusServiceUnavailable ||
		!strings.HasSuffix(f.Problem.Type, "/unavailable") || f.ClientMsgID != "w-after" {
		t.Fatalf("message.send over the socket: %+v %+v", f, f.Problem)
	}
}

// A socket that stops reading is closed with 1013 once it falls a whole buffer behind, after the
// frames already queued; reconnecting with the last position it got, it recovers the rest.
func TestRTSlowConsumerClosedThenRecovers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL, testserver.WithConfig(func(c *config.Config) { c.AllowedOrigins = []string{rtOrigin} }),
		testserver.WithOptions(func(o *server.Options) {
			o.WebSocket = func(c *ws.Config) { c.SendBuffer = 4 }
		}))
	alice, bob := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob")
	a := evDial(t, srv, alice, "")
	chat := evDirect(t, alice, bob)
	evNext(t, a, "chat.created")
	// Frames of about 12 KB: the kernel's buffers of both ends fill after a few hundred.
	big := strings.Repeat("€", 4000)
	var sent int64
	for sent = 0; !rtSlowClosed(t, srv); sent++ {
		if sent == 5000 {
			t.Fatal("the socket that reads nothing was never closed")
		}
		evSend(t, bob, chat, big)
	}
	got, lastPos, closed := evReadSeqs(t, a, 1, sent)
	if !closed || got == 0 || got >= sent {
		t.Fatalf("got %d of %d frames before the close (closed: %v)", got, sent, closed)
	}
	t.Logf("closed after %d of %d frames", got, sent)
	// Reconnect from the last position received, as a client does. While the socket catches up it
	// may fall behind again (a burst of events becoming visible at once overruns a 4-frame buffer):
	// then it is closed again and reconnects again, and still nothing is lost or repeated.
	final := int64(-1)
	for attempt := 0; got != final; attempt++ {
		if attempt == 20 {
			t.Fatalf("still not recovered after %d reconnects", attempt)
		}
		conn := evDial(t, srv, alice, lastPos)
		if final < 0 {
			final = evSend(t, bob, chat, "final").Seq
		}
		var n int64
		n, lastPos, closed = evReadSeqs(t, conn, got+1, final)
		got += n
		if !closed && got != final {
			t.Fatalf("read up to seq %d, want %d", got, final)
		}
		conn.Close()
	}
}

// evReadSeqs reads message.sent frames with seqs from, from+1, ... until seq until or a close 1013,
// and returns how many it read, the position of the last and whether the socket was closed.
func evReadSeqs(t testing.TB, conn *websocket.Conn, from, until int64) (n int64, last string, closed bool) {
	t.Helper()
	for seq := from; seq <= until; seq++ {
		conn.SetReadDeadline(time.Now().Add(rtWait))
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater {
				t.Fatalf("after %d frames: %v, want close 1013", n, err)
			}
			return n, last, true
		}
		var f evFrame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if m := f.message(t); m.Seq != seq {
			t.Fatalf("frame seq %d, want %d: a frame was lost or repeated", m.Seq, seq)
		}
		n++
		last = f.Position
	}
	return n, last, false
}

func rtSlowClosed(t testing.TB, srv *testserver.Server) bool {
	t.Helper()
	mfs, err := srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "taki_ws_slow_closes_total" {
			return mf.GetMetric()[0].GetCounter().GetValue() > 0
		}
	}
	return false
}

// Two instances on one database: each delivers every event to its own sockets, whichever instance
// appended it; typing notices cross instances to the chat's other members only.
func TestRTTwoInstancesOnOneDatabase(t *testing.T) {
	t.Parallel()
	one, two := rtStart(t), rtStart(t)
	alice, carol := rtSignUp(t, one, "alice"), rtSignUp(t, one, "carol")
	bob, dave := rtSignUp(t, two, "bob"), rtSignUp(t, two, "dave")
	a, c := evDial(t, one, alice, ""), evDial(t, one, carol, "")
	b, d := evDial(t, two, bob, ""), evDial(t, two, dave, "")
	probeD := evDirect(t, bob, dave)
	evNext(t, b, "chat.created")
	evNext(t, d, "chat.created")

	chat := evGroup(t, alice, bob, carol)
	for _, conn := range []*websocket.Conn{a, b, c} {
		evNext(t, conn, "chat.created")
	}
	// Posted through the second instance, delivered by both.
	m := evSend(t, bob, chat, "from two")
	for _, conn := range []*websocket.Conn{a, b, c} {
		if got := evNext(t, conn, "message.sent").message(t); got.ID != m.ID {
			t.Fatalf("got %+v, want bob's message", got)
		}
	}
	// Sent over alice's socket on the first, delivered on the second.
	rtWrite(t, a, `{"type":"message.send","chat_id":"`+chat+`","text":"from one","client_msg_id":"a-1"}`)
	ack, sent := evAckAndEvent(t, a)
	if ack.ClientMsgID != "a-1" || ack.message(t).Text != "from one" || sent.message(t).ID != ack.message(t).ID {
		t.Fatalf("ack %+v %s, message.sent %s", ack, ack.Data, sent.Data)
	}
	for _, conn := range []*websocket.Conn{b, c} {
		if got := evNext(t, conn, "message.sent").message(t); got.ID != ack.message(t).ID {
			t.Fatalf("got %+v, want alice's message", got)
		}
	}
	evProbe(t, bob, probeD, b, d)

	// Typing on the first reaches bob on the second and carol on the first; on the second, bob's
	// reaches alice and carol on the first. Nobody gets their own; dave, no member, gets nothing.
	rtWrite(t, a, `{"type":"typing","chat_id":"`+chat+`"}`)
	for _, conn := range []*websocket.Conn{b, c} {
		evTyping(t, conn, chat, alice)
	}
	rtWrite(t, b, `{"type":"typing","chat_id":"`+chat+`"}`)
	for _, conn := range []*websocket.Conn{a, c} {
		evTyping(t, conn, chat, bob) // for alice: not her own notice first
	}
	for _, conn := range []*websocket.Conn{d, b} {
		rtWrite(t, conn, `{"type":"ping"}`)
		evNext(t, conn, "pong")
	}
	// Typing in a chat one does not belong to is refused like any other command.
	rtWrite(t, d, `{"type":"typing","chat_id":"`+chat+`"}`)
	if f := evNext(t, d, ws.TypeError); f.Problem == nil || f.Problem.Status != http.StatusNotFound {
		t.Fatalf("typing by a non-member: %+v", f)
	}
}

func evTyping(t testing.TB, conn *websocket.Conn, chat string, from rtUser) {
	t.Helper()
	f := evNext(t, conn, ws.TypeTyping)
	var d struct {
		UserID string `json:"user_id"`
	}
	if f.ChatID != chat || f.Position != "" || json.Unmarshal(f.Data, &d) != nil || d.UserID != from.id.String() {
		t.Fatalf("typing frame %+v %s, want %s typing in %s", f, f.Data, from.id, chat)
	}
}

// Client frames go through the bus: message.send is acked with the message (a repeated client_msg_id
// with the original one, and nothing is sent twice), chat.read moves the cursor, and every failure is
// an error frame with its problem while the socket stays open.
func TestRTClientFrames(t *testing.T) {
	t.Parallel()
	srv := rtStart(t)
	alice, bob, eve := rtSignUp(t, srv, "alice"), rtSignUp(t, srv, "bob"), rtSignUp(t, srv, "eve")
	a, b := evDial(t, srv, alice, ""), evDial(t, srv, bob, "")
	chat := evDirect(t, alice, bob)
	evNext(t, a, "chat.created")
	evNext(t, b, "chat.created")

	send := `{"type":"message.send","chat_id":"` + chat + `","text":"hello","client_msg_id":"c-1"}`
	rtWrite(t, a, send)
	ack, sent := evAckAndEvent(t, a)
	first := ack.message(t)
	if ack.ClientMsgID != "c-1" || first.Seq != 1 || first.Text != "hello" || first.SenderID != alice.id.String() ||
		first.ClientMsgID == nil || *first.ClientMsgID != "c-1" {
		t.Fatalf("ack %+v %s", ack, ack.Data)
	}
	if m := sent.message(t); m.ID != first.ID {
		t.Fatalf("alice's own message.sent %+v", m)
	}
	// The same client_msg_id again: the original message, no second one.
	rtWrite(t, a, send)
	again := evNext(t, a, ws.TypeAck)
	if m := again.message(t); m.ID != first.ID || m.Seq != 1 || again.ClientMsgID != "c-1" {
		t.Fatalf("repeated send acked with %s", again.Data)
	}
	if m := evNext(t, b, "message.sent").message(t); m.ID != first.ID {
		t.Fatalf("bob got %+v", m)
	}
	evProbe(t, alice, chat, a, b) // seq 2: the repeat sent nothing

	// chat.read over the socket.
	rtWrite(t, b, `{"type":"chat.read","chat_id":"`+chat+`","up_to_seq":2}`)
	for _, conn := range []*websocket.Conn{a, b} {
		f := evNext(t, conn, "chat.read")
		if !strings.Contains(string(f.Data), `"up_to_seq":2`) || !strings.Contains(string(f.Data), bob.id.String()) {
			t.Fatalf("chat.read %s", f.Data)
		}
	}

	// Failures: error frames with the problem and the frame's client_msg_id.
	other := evDirect(t, bob, eve)
	evNext(t, b, "chat.created")
	cases := []struct {
		frame  string
		status int
		slug   string
		fields []string
	}{
		{`{"type":"message.send","chat_id":"` + other + `","text":"hi","client_msg_id":"e-1"}`, 404, "not-found", nil},
		{`{"type":"message.send","chat_id":"` + uuid.NewString() + `","text":"hi","client_msg_id":"e-2"}`, 404, "not-found", nil},
		{`{"type":"message.send","chat_id":"nope","text":5,"client_msg_id":"e-3"}`, 422, "validation", []string{"chat_id", "text"}},
		{`{"type":"message.send","chat_id":"` + chat + `","client_msg_id":"e-4"}`, 422, "validation", []string{"text"}},
		{`{"type":"message.send","chat_id":"` + chat + `","text":"   ","client_msg_id":"e-5"}`, 422, "validation", []string{"text"}},
		{`{"type":"message.send","chat_id":"` + chat + `","text":"` + strings.Repeat("x", 4001) + `","client_msg_id":"e-6"}`, 422, "validation", []string{"text"}},
		{`{"type":"message.send","chat_id":"` + chat + `","text":"hi","client_msg_id":"has space"}`, 422, "validation", []string{"client_msg_id"}},
		{`{"type":"chat.read","chat_id":"` + chat + `","up_to_seq":99,"client_msg_id":"e-7"}`, 422, "validation", []string{"up_to_seq"}},
		{`{"type":"chat.read","chat_id":"` + chat + `","up_to_seq":"2","client_msg_id":"e-8"}`, 422, "validation", []string{"up_to_seq"}},
		{`{"type":"chat.read","chat_id":"` + other + `","up_to_seq":0,"client_msg_id":"e-9"}`, 404, "not-found", nil},
		{`{"type":"typing","client_msg_id":"e-10"}`, 422, "validation", []string{"chat_id"}},
	}
	for _, tc := range cases {
		rtWrite(t, a, tc.frame)
		f := evNext(t, a, ws.TypeError)
		var msgID struct {
			ClientMsgID string `json:"client_msg_id"`
		}
		_ = json.Unmarshal([]byte(tc.frame), &msgID)
		if f.Problem == nil || f.Problem.Status != tc.status || !strings.HasSuffix(f.Problem.Type, "/"+tc.slug) ||
			f.ClientMsgID != msgID.ClientMsgID {
			t.Fatalf("%.100s: got %+v %+v", tc.frame, f, f.Problem)
		}
		var fields []string
		for _, e := range f.Problem.Errors {
			fields = append(fields, e.Field)
		}
		if !slices.Equal(fields, tc.fields) {
			t.Fatalf("%.100s: bad fields %v, want %v", tc.frame, fields, tc.fields)
		}
	}
	// None of it was sent, and the socket is still open.
	evProbe(t, bob, chat, a, b)
	rtWrite(t, a, `{"type":"ping"}`)
	evNext(t, a, "pong")
}
