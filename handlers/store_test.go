package handlers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// Load and Append make memLog an events.Log, so that a Store can run on it.
func (l *memLog) Load(ctx context.Context, id uuid.UUID, snapshotVersion int) (events.Stream, error) {
	return l.LoadUntil(ctx, id, snapshotVersion, 1<<62)
}

func (l *memLog) Append(_ context.Context, appends ...events.Append) (events.Position, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range appends {
		if int64(len(l.streams[a.StreamID])) != a.ExpectedVersion {
			return events.Position{}, events.ErrConflict
		}
	}
	for _, a := range appends {
		for _, ev := range a.Events {
			l.pos.TxID++
			l.pos.Offset++
			l.streams[a.StreamID] = append(l.streams[a.StreamID], events.Envelope{Type: ev.EventType(), StreamID: a.StreamID,
				StreamType: a.StreamType, Version: int64(len(l.streams[a.StreamID]) + 1), Position: l.pos, Data: ev})
		}
	}
	return l.pos, nil
}

// ExistingStreams makes memLog a StreamDirectory.
func (l *memLog) ExistingStreams(_ context.Context, streamType string, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	found := map[uuid.UUID]bool{}
	for _, id := range ids {
		if s := l.streams[id]; len(s) > 0 && s[0].StreamType == streamType {
			found[id] = true
		}
	}
	return found, nil
}

type noMessages struct{}

func (noMessages) Message(context.Context, uuid.UUID, uuid.UUID, events.Position) (queries.Message, bool, error) {
	return queries.Message{}, false, nil
}

type noTyping struct{}

func (noTyping) RelayTyping(context.Context, uuid.UUID, uuid.UUID, []uuid.UUID) error { return nil }

// storeEnv is a chat whose state this instance's store has cached, and a log other instances write to.
type storeEnv struct {
	log          *memLog
	store        *Store
	cmds         *ChatCommands
	chat         uuid.UUID
	ann, bob, cy uuid.UUID
}

// chatCommandsOn returns a store of up to 100 states on log and chat commands deciding with it; the
// read model has no messages and typing goes nowhere.
func chatCommandsOn(t *testing.T, log interface {
	events.Log
	StreamDirectory
}) (*Store, *ChatCommands) {
	t.Helper()
	store, err := NewStore(log, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := NewChatCommands(store, log, noMessages{}, noTyping{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return store, cmds
}

func newStoreEnv(t *testing.T) storeEnv {
	t.Helper()
	e := storeEnv{log: newMemLog(), chat: uuid.New(), ann: uuid.New(), bob: uuid.New(), cy: uuid.New()}
	e.store, e.cmds = chatCommandsOn(t, e.log)
	e.log.add(e.chat, events.ChatCreated{ChatID: e.chat, Type: events.ChatGroup, Title: "g", CreatedBy: e.ann,
		Members: []events.ChatMember{{UserID: e.ann, Role: events.ChatRoleAdmin}, {UserID: e.bob, Role: events.ChatRoleMember}}})
	// This instance decides on the chat once, which caches it.
	if _, err := (SendMessageHandler{e.cmds}).Handle(context.Background(), commands.SendMessage{
		Actor: e.ann, ChatID: e.chat, Text: "hi", ClientMsgID: "a1"}); err != nil {
		t.Fatal(err)
	}
	// Another instance adds cy: this instance's cached chat does not know.
	e.log.add(e.chat, events.ChatMemberAdded{ChatID: e.chat, UserID: e.cy, Role: events.ChatRoleMember, AddedBy: e.ann, LastReadSeq: 1})
	return e
}

func (e storeEnv) cySends(h CommandHandler[commands.SendMessage, SentMessage]) (SentMessage, error) {
	return h.Handle(context.Background(), commands.SendMessage{Actor: e.cy, ChatID: e.chat, Text: "hello", ClientMsgID: "c1"})
}

// A refusal decided on a cached state that another instance moved on is decided again on the log.
func TestRedecideFreshRetriesARefusalOnTheLog(t *testing.T) {
	t.Parallel()
	e := newStoreEnv(t)
	if _, err := e.cySends(SendMessageHandler{e.cmds}); !commands.IsKind(err, commands.KindNotFound) {
		t.Fatalf("without a fresh decision, the stale cache refuses the new member: err %v", err)
	}
	sent, err := e.cySends(RedecideFresh[commands.SendMessage, SentMessage](SendMessageHandler{e.cmds}))
	if err != nil {
		t.Fatalf("with a fresh decision: %v", err)
	}
	if sent.Message.Seq != 2 || sent.Message.SenderID != e.cy {
		t.Fatalf("sent %+v", sent.Message)
	}
	// A refusal that the log confirms stays a refusal.
	_, err = RedecideFresh[commands.SendMessage, SentMessage](SendMessageHandler{e.cmds}).Handle(context.Background(),
		commands.SendMessage{Actor: uuid.New(), ChatID: e.chat, Text: "x", ClientMsgID: "x"})
	if !commands.IsKind(err, commands.KindNotFound) {
		t.Fatalf("a non-member: err %v, want not-found", err)
	}
}

// The log tail's report of a newer event drops the cached state, so the next decision reads the log.
func TestForgetDropsOnlyOlderStates(t *testing.T) {
	t.Parallel()
	e := newStoreEnv(t)
	e.store.Forget(e.chat, 2) // the version cached: kept
	if _, err := e.cySends(SendMessageHandler{e.cmds}); !commands.IsKind(err, commands.KindNotFound) {
		t.Fatalf("the cached state should still be used: err %v", err)
	}
	e.store.Forget(e.chat, 3) // the member's addition
	if _, err := e.cySends(SendMessageHandler{e.cmds}); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
}

// A command on a stream holding an event this binary cannot read is answered unavailable, to retry
// once a newer instance serves it, and the log's reason stays in the error for callers telling it apart.
func TestCommandOnAnUnreadableStreamIsUnavailable(t *testing.T) {
	t.Parallel()
	log := &unreadableAtFirst{memLog: newMemLog()}
	log.left.Store(1 << 30)
	_, cmds := chatCommandsOn(t, log)
	_, err := (SendMessageHandler{cmds}).Handle(context.Background(), commands.SendMessage{
		Actor: uuid.New(), ChatID: uuid.New(), Text: "hi", ClientMsgID: "a1"})
	ce, ok := commands.AsError(err)
	if !ok || ce.Kind != commands.KindUnavailable || ce.RetryAfter != 5*time.Second ||
		ce.Detail != "this chat holds events a newer version of the service wrote; retry shortly" {
		t.Fatalf("send to an unreadable chat: %v, want unavailable, retry after 5s", err)
	}
	if !errors.Is(err, events.ErrUndecodable) {
		t.Fatalf("%v does not wrap events.ErrUndecodable", err)
	}
}
