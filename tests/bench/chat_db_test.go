package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/google/uuid"

	"taki/events"
)

func TestSeedUsersAndChatLog(t *testing.T) {
	_, conn := testConn(t)
	ctx := context.Background()

	users, err := seedUsers(ctx, conn, 3)
	if err != nil {
		t.Fatal(err)
	}
	var claims int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM unique_claims c JOIN events e ON e.stream_id = c.stream_id
		WHERE c.kind = $1 AND e.event_type = 'user.registered' AND e.payload->>'email' = c.value`, emailClaim).Scan(&claims); err != nil {
		t.Fatal(err)
	}
	if claims != 3 {
		t.Errorf("%d users with a matching email claim, want 3", claims)
	}
	reg := events.NewRegistry()
	var payload []byte
	if err := conn.QueryRow(ctx, `SELECT payload::text FROM events WHERE stream_id = $1`, users[1].ID).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	ev, err := reg.Decode("user.registered", 1, payload)
	if err != nil {
		t.Fatal(err)
	}
	u := ev.(events.UserRegistered)
	if u.UserID != users[1].ID || u.Email != users[1].Email {
		t.Errorf("registered %+v, want %+v", u, users[1])
	}
	if ok, err := argon2id.ComparePasswordAndHash(seedPassword, u.PasswordHash); !ok || err != nil {
		t.Errorf("the seed password does not match its hash (%v)", err)
	}

	const n = 20
	chat, err := appendChatLog(ctx, conn, users, n, 7)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT version, event_type, payload::text FROM events WHERE stream_id = $1
		ORDER BY transaction_id, "offset"`, chat)
	if err != nil {
		t.Fatal(err)
	}
	var version int64
	for rows.Next() {
		var v int64
		var typ string
		var p []byte
		if err := rows.Scan(&v, &typ, &p); err != nil {
			t.Fatal(err)
		}
		version++
		if v != version {
			t.Fatalf("event %d has version %d", version, v)
		}
		ev, err := reg.Decode(typ, 1, p)
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		switch e := ev.(type) {
		case events.ChatCreated:
			if v != 1 || len(e.Members) != 3 || e.Members[0].Role != events.ChatRoleAdmin {
				t.Errorf("chat.created %+v at version %d", e, v)
			}
		case events.MessageSent:
			if e.Seq != v-1 || e.ChatID != chat || e.Text == "" {
				t.Errorf("message %+v at version %d", e, v)
			}
		default:
			t.Errorf("unexpected %s", typ)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if version != n+1 {
		t.Errorf("%d events in the chat stream, want %d", version, n+1)
	}
	if err := checkMessageLog(ctx, conn, map[uuid.UUID]int{chat: n, uuid.New(): 0}); err != nil {
		t.Error(err)
	}
	if err := checkMessageLog(ctx, conn, map[uuid.UUID]int{chat: n - 1}); err == nil {
		t.Error("a chat with one message more than acknowledged passed")
	}
}

func TestWaitGroupAt(t *testing.T) {
	env, conn := testConn(t)
	ctx := context.Background()
	if _, err := seedUsers(ctx, conn, 2); err != nil {
		t.Fatal(err)
	}
	last, err := lastPosition(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	running := &Server{done: make(chan struct{}), output: &cappedBuffer{limit: 100}}
	// No offset yet: not there.
	if _, err := waitGroupAt(ctx, env, conn, running, "chats", last, 150*time.Millisecond); err == nil {
		t.Fatal("a group without an offset reached the position")
	}
	conn2, err := env.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	// Past the position (a later write of the server's own), it is there.
	if _, err := conn2.Exec(ctx, `INSERT INTO events_offsets (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ('chats', $1, $2::xid8)`, last.Offset+5, last.TxID); err != nil {
		t.Fatal(err)
	}
	if at, err := waitGroupAt(ctx, env, conn2, running, "chats", last, 5*time.Second); err != nil || at.IsZero() {
		t.Errorf("past the position: %v", err)
	}
	// Behind it: the timeout, and the server's exit, end the wait.
	if _, err := conn2.Exec(ctx, `UPDATE events_offsets SET offset_acked = $1`, last.Offset-1); err != nil {
		t.Fatal(err)
	}
	exited := &Server{done: make(chan struct{}), output: &cappedBuffer{limit: 100}}
	_, _ = exited.output.Write([]byte("panic: boom\n"))
	close(exited.done)
	if _, err := waitGroupAt(ctx, env, conn2, exited, "chats", last, time.Minute); err == nil || !strings.Contains(err.Error(), "panic: boom") {
		t.Errorf("server exit: %v", err)
	}
}

func TestWatchForeignWriters(t *testing.T) {
	env := testEnv(t)
	stop, err := watchForeignWriters(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	got := stop()
	if got.Samples < 2 || got.Busy > got.Samples {
		t.Errorf("got %+v", got)
	}
}
