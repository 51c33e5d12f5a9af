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

	_, cmds := chatCommandsOn(t, log)
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

// groupEnv is chat commands on a real PostgreSQL log holding the users of registered.
type groupEnv struct {
	log  *postgres.EventStore
	cmds *ChatCommands
}

func newGroupEnv(t *testing.T, registered ...uuid.UUID) groupEnv {
	t.Helper()
	ctx := context.Background()
	log, err := postgres.NewEventStore(pgtest.NewPool(t, pgtest.NewDatabase(t)), events.NewRegistry(), nil, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(log.Close)
	for _, id := range registered {
		if _, err := log.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, Events: []events.Event{
			events.UserRegistered{UserID: id, Email: id.String() + "@example.com", DisplayName: "u", Role: "member", RegisteredAt: time.Now().UTC()},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	_, cmds := chatCommandsOn(t, log)
	return groupEnv{log: log, cmds: cmds}
}

func (e groupEnv) create(actor uuid.UUID, members ...uuid.UUID) (uuid.UUID, error) {
	g := uuid.New()
	_, err := (CreateGroupChatHandler{e.cmds}).Handle(context.Background(), commands.CreateGroupChat{
		Actor: actor, ChatID: g, Title: "g", MemberIDs: members})
	return g, err
}

// createdMembers is the members group g was created with, in the order the event lists them.
func (e groupEnv) createdMembers(t *testing.T, g uuid.UUID) []string {
	t.Helper()
	st, err := e.log.Load(context.Background(), g, chats.stateVersion)
	if err != nil {
		t.Fatal(err)
	}
	created, ok := st.Events[0].Data.(events.ChatCreated)
	if !ok {
		t.Fatalf("first event of group %s is %T", g, st.Events[0].Data)
	}
	var got []string
	for _, m := range created.Members {
		got = append(got, m.UserID.String()+" "+m.Role)
	}
	return got
}

// A group of registered users lists them after its creator, in the request's order; repeated ids and
// the creator's own id among them are listed once.
func TestCreateGroupChatWithRegisteredMembers(t *testing.T) {
	t.Parallel()
	users := make([]uuid.UUID, 50)
	for i := range users {
		users[i] = uuid.New()
	}
	ann := users[0]
	e := newGroupEnv(t, users...)

	request := append([]uuid.UUID{users[3], ann, users[1], users[3]}, users[1:]...)
	g, err := e.create(ann, request...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ann.String() + " admin", users[3].String() + " member", users[1].String() + " member"}
	for _, id := range users[2:] {
		if id != users[3] {
			want = append(want, id.String()+" member")
		}
	}
	if got := e.createdMembers(t, g); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("group created with members\n%v\nwant\n%v", got, want)
	}
}

// A group listing ids of no user is refused naming the first of them in the request's order, and a
// stream of another type (a chat) is no user.
func TestCreateGroupChatNamesTheFirstMissingUser(t *testing.T) {
	t.Parallel()
	ann, bob, cy := uuid.New(), uuid.New(), uuid.New()
	e := newGroupEnv(t, ann, bob, cy)
	other, err := e.create(ann, bob)
	if err != nil {
		t.Fatal(err)
	}
	for _, missing := range []uuid.UUID{uuid.New(), other} {
		_, err := e.create(ann, bob, missing, cy, uuid.New(), missing)
		if ce, ok := commands.AsError(err); !ok || ce.Kind != commands.KindNotFound || ce.Detail != fmt.Sprintf("user %s not found", missing) {
			t.Fatalf("create with missing user %s: %v, want not-found naming it", missing, err)
		}
	}
}

// bigGroup is a chat of members whose read cursors are spread over its messages, and one of them.
func bigGroup(members int) (chat, uuid.UUID) {
	c := chat{ID: uuid.New(), Type: events.ChatGroup, LastSeq: int64(members),
		Members: make(map[uuid.UUID]chatMember, members)}
	var one uuid.UUID
	for i := range members {
		one = uuid.New()
		c.Members[one] = chatMember{Role: events.ChatRoleMember, LastRead: int64(i)}
	}
	return c, one
}

// The feed counts read_by_count for every message frame it fans out, so in a big group counting must
// not allocate per message.
func TestReadByAllocatesNothing(t *testing.T) {
	c, sender := bigGroup(1000)
	if n := testing.AllocsPerRun(100, func() { c.readBy(500, sender) }); n != 0 {
		t.Errorf("readBy allocates %v times per message", n)
	}
}

func BenchmarkReadByBigGroup(b *testing.B) {
	c, sender := bigGroup(1000)
	b.ReportAllocs()
	for b.Loop() {
		c.readBy(500, sender)
	}
}
