package handlers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/handlers"
	"taki/queries"
)

// fakeChatsReadModel answers from fixed data and records what it was asked.
type fakeChatsReadModel struct {
	member  map[uuid.UUID]bool // actors who are members of every chat
	err     error
	after   *queries.ChatCursor
	limit   int
	next    *queries.ChatCursor
	msgArgs [2]*int64
}

func (f *fakeChatsReadModel) Chat(_ context.Context, actor, chatID uuid.UUID) (queries.Chat, bool, error) {
	return queries.Chat{ID: chatID}, f.member[actor], f.err
}

func (f *fakeChatsReadModel) ListChats(_ context.Context, _ uuid.UUID, after *queries.ChatCursor, limit int) ([]queries.Chat, *queries.ChatCursor, error) {
	f.after, f.limit = after, limit
	return nil, f.next, f.err
}

func (f *fakeChatsReadModel) Messages(_ context.Context, actor, _ uuid.UUID, before, after *int64, limit int) (queries.MessagePage, bool, error) {
	f.msgArgs, f.limit = [2]*int64{before, after}, limit
	return queries.MessagePage{}, f.member[actor], f.err
}

func (f *fakeChatsReadModel) MessageFor(_ context.Context, actor, chatID, messageID uuid.UUID) (queries.Message, bool, error) {
	return queries.Message{ID: messageID, ChatID: chatID}, f.member[actor], f.err
}

func TestChatQueries(t *testing.T) {
	ctx := context.Background()
	if _, err := handlers.NewChatQueries(nil); err == nil {
		t.Fatal("NewChatQueries(nil) succeeded")
	}
	member, stranger, chat := uuid.New(), uuid.New(), uuid.New()
	rm := &fakeChatsReadModel{member: map[uuid.UUID]bool{member: true}}
	q, err := handlers.NewChatQueries(rm)
	if err != nil {
		t.Fatal(err)
	}

	if c, err := (handlers.GetChatHandler{ChatQueries: q}).Handle(ctx, queries.GetChat{Actor: member, ChatID: chat}); err != nil || c.ID != chat {
		t.Fatalf("GetChat member: %+v, %v", c, err)
	}
	if _, err := (handlers.GetChatHandler{ChatQueries: q}).Handle(ctx, queries.GetChat{Actor: stranger, ChatID: chat}); !commands.IsKind(err, commands.KindNotFound) {
		t.Fatalf("GetChat stranger: %v", err)
	}
	if _, err := (handlers.ListMessagesHandler{ChatQueries: q}).Handle(ctx, queries.ListMessages{Actor: stranger, ChatID: chat}); !commands.IsKind(err, commands.KindNotFound) {
		t.Fatalf("ListMessages stranger: %v", err)
	}
	before := int64(7)
	p, err := (handlers.ListMessagesHandler{ChatQueries: q}).Handle(ctx, queries.ListMessages{Actor: member, ChatID: chat, BeforeSeq: &before})
	if err != nil || p.Items == nil || rm.limit != queries.DefaultLimit || rm.msgArgs[0] != &before || rm.msgArgs[1] != nil {
		t.Fatalf("ListMessages member: %+v, %v (limit %d)", p, err, rm.limit)
	}
	if _, err := (handlers.GetMessageHandler{ChatQueries: q}).Handle(ctx, queries.GetMessage{Actor: stranger, ChatID: chat, MessageID: uuid.New()}); !commands.IsKind(err, commands.KindNotFound) {
		t.Fatalf("GetMessage stranger: %v", err)
	}
	if m, err := (handlers.GetMessageHandler{ChatQueries: q}).Handle(ctx, queries.GetMessage{Actor: member, ChatID: chat, MessageID: chat}); err != nil || m.ChatID != chat {
		t.Fatalf("GetMessage member: %+v, %v", m, err)
	}

	list := handlers.ListChatsHandler{ChatQueries: q}
	if _, err := list.Handle(ctx, queries.ListChats{Actor: member, Cursor: "not a cursor!"}); !commands.IsKind(err, commands.KindValidation) {
		t.Fatalf("bad cursor: %v", err)
	}
	rm.next = &queries.ChatCursor{Activity: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), ID: chat}
	page, err := list.Handle(ctx, queries.ListChats{Actor: member})
	if err != nil || page.Items == nil || page.NextCursor == nil || rm.limit != queries.DefaultLimit || rm.after != nil {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	rm.next = nil
	page, err = list.Handle(ctx, queries.ListChats{Actor: member, Cursor: *page.NextCursor, Limit: 7})
	if err != nil || page.NextCursor != nil || rm.limit != 7 || rm.after == nil || rm.after.ID != chat ||
		!rm.after.Activity.Equal(time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)) {
		t.Fatalf("next page: %+v, %v, after %+v", page, err, rm.after)
	}

	rm.err = errors.New("boom")
	if _, err := (handlers.GetChatHandler{ChatQueries: q}).Handle(ctx, queries.GetChat{Actor: member, ChatID: chat}); !errors.Is(err, rm.err) {
		t.Fatalf("read model error: %v", err)
	}
}
