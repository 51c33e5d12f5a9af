package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/infra/logging"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

// The write side decides on a chat whose log holds message.sent at schema version 1 (rows an older
// binary wrote, without format) in a real PostgreSQL log: the aggregate loads them upcast, the next
// message gets the next seq, and it is appended at schema version 2 while the v1 rows stay as written.
func TestChatLoadsALogHoldingMessageSentV1(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t, pgtest.NewDatabase(t))
	log, err := postgres.NewEventStore(pool, events.NewRegistry(), nil, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(log.Close)

	ann, bob, g := uuid.New(), uuid.New(), uuid.New()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := log.Append(ctx, events.Append{StreamID: g, StreamType: events.StreamChat, Events: []events.Event{
		events.ChatCreated{ChatID: g, Type: events.ChatGroup, Title: "g", CreatedBy: ann, CreatedAt: t0,
			Members: []events.ChatMember{{UserID: ann, Role: events.ChatRoleAdmin}, {UserID: bob, Role: events.ChatRoleMember}}},
	}}); err != nil {
		t.Fatal(err)
	}
	for seq := 1; seq <= 3; seq++ {
		sent := t0.Add(time.Duration(seq) * time.Second)
		payload := fmt.Sprintf(`{"chat_id":%q,"message_id":%q,"seq":%d,"sender_id":%q,"text":"old","client_msg_id":"a%d","sent_at":%q}`,
			g, uuid.New(), seq, ann, seq, sent.Format(time.RFC3339Nano))
		if _, err := pool.Exec(ctx, `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version, event_type,
				schema_version, occurred_at, payload, metadata)
			VALUES (pg_current_xact_id(), $1, $2, 'chat', $3, 'message.sent', 1, $4, $5, '{}')`,
			uuid.Must(uuid.NewV7()), g, seq+1, sent, payload); err != nil {
			t.Fatal(err)
		}
	}

	c, err := chats.load(ctx, log, g)
	if err != nil {
		t.Fatal(err)
	}
	if c.state.LastSeq != 3 || c.version != 4 {
		t.Fatalf("chat loaded at version %d with last seq %d, want 4 and 3", c.version, c.state.LastSeq)
	}

	store, err := NewStore(log, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := NewChatCommands(store, noMessages{}, noTyping{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := (SendMessageHandler{cmds}).Handle(ctx, commands.SendMessage{Actor: bob, ChatID: g, Text: "new", ClientMsgID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	if sent.Message.Seq != 4 {
		t.Fatalf("sent %+v, want seq 4", sent.Message)
	}

	rows, err := pool.Query(ctx, `SELECT version, schema_version, payload::jsonb ->> 'format' FROM events
		WHERE stream_id = $1 AND event_type = 'message.sent' ORDER BY version`, g)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var v int64
		var sv int
		var format *string
		if err := rows.Scan(&v, &sv, &format); err != nil {
			t.Fatal(err)
		}
		f, _ := json.Marshal(format)
		got = append(got, fmt.Sprintf("%d v%d %s", v, sv, f))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]string{"2 v1 null", "3 v1 null", "4 v1 null", `5 v2 "plain"`})
	if fmt.Sprint(got) != want {
		t.Fatalf("stored message.sent rows %v, want %s", got, want)
	}
}
