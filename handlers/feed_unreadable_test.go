package handlers

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"taki/events"
)

// addUnreadable appends to stream an event this binary cannot read, as the log tail hands it over:
// its metadata without data.
func (l *memLog) addUnreadable(stream uuid.UUID, streamType string) events.Envelope {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pos.TxID++
	l.pos.Offset++
	env := events.Envelope{Type: "chat.pinned", SchemaVersion: 1, StreamID: stream, StreamType: streamType,
		Version: int64(len(l.streams[stream]) + 1), Position: l.pos}
	l.streams[stream] = append(l.streams[stream], env)
	l.unreadable[stream] = env.Version
	return env
}

func wantTold(t *testing.T, what string, to []uuid.UUID, all bool, want ...uuid.UUID) {
	t.Helper()
	if all || !sameUsers(to, want) {
		t.Fatalf("%s: told %v (everyone: %v), want %v", what, to, all, want)
	}
}

// A chat stuck on an event this binary cannot read: its members as of the event before are told, for
// it and for each later event, which fails at once, without loading the stream again.
func TestFeedUnreadableChatEventTellsItsMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newFeedEnv(t, 100)
	e.frames(e.created())
	e.frames(e.sent(e.a))
	bad := e.log.addUnreadable(e.chatID, events.StreamChat)

	to, all := e.feed.Unreadable(ctx, bad)
	wantTold(t, "the unreadable event", to, all, e.a, e.b, e.c)

	loads := e.log.loadCount()
	later := e.sent(e.b)
	if _, err := e.feed.Frames(ctx, later); !errors.Is(err, events.ErrUndecodable) {
		t.Fatalf("a later event of the stuck chat: %v, want ErrUndecodable", err)
	}
	if n := e.log.loadCount(); n != loads {
		t.Fatalf("the stuck chat was loaded %d more times", n-loads)
	}
	to, all = e.feed.Unreadable(ctx, later)
	wantTold(t, "a later event", to, all, e.a, e.b, e.c)
}

// A chat the feed does not hold is loaded up to the event before; a member that a later event adds is
// told too; a user's own feed tells only that user; a chat whose first event is unreadable, everyone.
func TestFeedUnreadableRecipients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newFeedEnv(t, 100)
	e.created()
	e.sent(e.a)
	bad := e.log.addUnreadable(e.chatID, events.StreamChat)

	f, err := NewFeed(FeedConfig{Log: e.log, Chats: e.views, Waiter: e.waiter})
	if err != nil {
		t.Fatal(err)
	}
	to, all := f.Unreadable(ctx, bad) // not held: loaded up to the event before
	wantTold(t, "a chat not held", to, all, e.a, e.b, e.c)
	added := e.log.add(e.chatID, events.ChatMemberAdded{ChatID: e.chatID, UserID: e.d, Role: events.ChatRoleMember, AddedBy: e.a})
	if _, err := f.Frames(ctx, added); !errors.Is(err, events.ErrUndecodable) {
		t.Fatalf("a member added to the stuck chat: %v, want ErrUndecodable", err)
	}
	to, all = f.Unreadable(ctx, added)
	wantTold(t, "a member added after it", to, all, e.a, e.b, e.c, e.d)
	removed := e.log.add(e.chatID, events.ChatMemberRemoved{ChatID: e.chatID, UserID: e.c, RemovedBy: e.a})
	to, all = f.Unreadable(ctx, removed)
	wantTold(t, "a member removed after it, with the one added before", to, all, e.a, e.b, e.c, e.d)
	to, all = f.Unreadable(ctx, e.sent(e.b))
	wantTold(t, "a message after both", to, all, e.a, e.b, e.d)

	to, all = f.ForUser(e.b, 10).Unreadable(ctx, bad)
	wantTold(t, "b's own feed", to, all, e.b)
	// d's own feed cannot load the chat before d's addition (it is stuck): d may be concerned.
	if _, all := f.ForUser(e.d, 10).Unreadable(ctx, added); !all {
		t.Fatal("d's own feed, for d's addition: want d told")
	}
	to, all = f.ForUser(uuid.New(), 10).Unreadable(ctx, bad)
	wantTold(t, "a stranger's own feed", to, all)

	if _, all := f.Unreadable(ctx, e.log.addUnreadable(uuid.New(), events.StreamChat)); !all {
		t.Fatal("a chat whose first event is unreadable: want everyone told")
	}
	// A payment's owner; nobody for a user stream (it makes no frames); everyone for a stream the
	// feed cannot place.
	payment, owner := uuid.New(), uuid.New()
	e.log.add(payment, events.PaymentRequested{PaymentID: payment, UserID: owner, AmountMinor: 100, Currency: "USD"})
	to, all = f.Unreadable(ctx, e.log.addUnreadable(payment, events.StreamPayment))
	wantTold(t, "a payment", to, all, owner)
	to, all = f.Unreadable(ctx, e.log.addUnreadable(e.a, events.StreamUser))
	wantTold(t, "a user stream", to, all)
	if _, all := f.Unreadable(ctx, e.log.addUnreadable(uuid.New(), "poll")); !all {
		t.Fatal("a stream of an unknown type: want everyone told")
	}
}
