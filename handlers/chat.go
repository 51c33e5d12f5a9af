package handlers

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// chat is the chat aggregate's state: what deciding a chat command needs, and no more. Messages are
// not kept here (a chat may hold millions); their unchanging facts are read from the chats read model
// once it has caught up with this state (see ChatMessages). Fields are exported only for snapshots.
type chat struct {
	ID        uuid.UUID `json:"id"`
	Type      string    `json:"type"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
	// Members is shared between successive states: evolve copies it before changing it.
	Members map[uuid.UUID]chatMember `json:"members"`
	LastSeq int64                    `json:"last_seq"`
}

type chatMember struct {
	Role     string `json:"role"`
	LastRead int64  `json:"last_read"`
}

func (c chat) exists() bool { return c.ID != uuid.Nil }

func (c chat) member(id uuid.UUID) (chatMember, bool) {
	m, ok := c.Members[id]
	return m, ok
}

func (c chat) isGroupAdmin(id uuid.UUID) bool {
	m, ok := c.Members[id]
	return ok && c.Type == events.ChatGroup && m.Role == events.ChatRoleAdmin
}

// admins counts the group's admins.
func (c chat) admins() int {
	n := 0
	for _, m := range c.Members {
		if m.Role == events.ChatRoleAdmin {
			n++
		}
	}
	return n
}

// readBy is the read_by_count of message seq of sender as the chat's read cursors stand. It runs for
// every message frame the feed fans out, so it walks the members in place rather than building
// queries.ReadCursors, whose map and sort only pay off over a page of messages.
func (c chat) readBy(seq int64, sender uuid.UUID) int64 {
	return queries.CountReadBy(func(yield func(uuid.UUID, int64) bool) {
		for id, m := range c.Members {
			if !yield(id, m.LastRead) {
				return
			}
		}
	}, seq, sender)
}

var chats = aggregate[chat]{
	streamType:    events.StreamChat,
	evolve:        evolveChat,
	snapshotEvery: 100,
	stateVersion:  1,
}

func evolveChat(c chat, e events.Envelope) chat {
	switch ev := e.Data.(type) {
	case events.ChatCreated:
		c = chat{ID: ev.ChatID, Type: ev.Type, Title: ev.Title, CreatedAt: ev.CreatedAt,
			Members: make(map[uuid.UUID]chatMember, len(ev.Members))}
		for _, m := range ev.Members {
			c.Members[m.UserID] = chatMember{Role: m.Role}
		}
	case events.ChatRenamed:
		c.Title = ev.Title
	case events.ChatMemberAdded:
		c.Members = maps.Clone(c.Members)
		c.Members[ev.UserID] = chatMember{Role: ev.Role, LastRead: ev.LastReadSeq}
	case events.ChatMemberRemoved:
		c.Members = maps.Clone(c.Members)
		delete(c.Members, ev.UserID)
	case events.MessageSent:
		c.LastSeq = ev.Seq
	case events.ChatRead:
		if m, ok := c.Members[ev.UserID]; ok && ev.UpToSeq > m.LastRead {
			c.Members = maps.Clone(c.Members)
			m.LastRead = ev.UpToSeq
			c.Members[ev.UserID] = m
		}
	}
	return c
}

// notFoundChat answers a chat that does not exist and a chat the caller is not a member of alike:
// existence is not revealed.
var notFoundChat = commands.NotFound("chat")

// loadChatAsMember loads a chat for a command of actor, who must be a member.
func loadChatAsMember(ctx context.Context, s *Store, chatID, actor uuid.UUID) (loaded[chat], error) {
	c, err := load(ctx, s, chats, chatID)
	if err != nil {
		return c, err
	}
	if _, ok := c.state.member(actor); !ok {
		return c, notFoundChat
	}
	return c, nil
}

// ChatMessages reads messages from the chats read model once it has applied the log up to a
// position. A message's id, seq, sender, client id and sent time never change, so once the read model
// holds the chat state a command decided on, they are safe to decide with; an append based on an
// outdated read fails with a conflict, because the chat stream moved on meanwhile.
type ChatMessages interface {
	Message(ctx context.Context, chatID, messageID uuid.UUID, atLeast events.Position) (queries.Message, bool, error)
}

// chatLocks serialises commands on one chat within this process, so that concurrent senders queue
// for the next seq instead of burning conflict retries (another instance's writes still conflict and
// are retried by the bus).
type chatLocks struct {
	mu    sync.Mutex
	locks map[uuid.UUID]*chatLock
}

// chatLock is a one-slot semaphore: unlike a sync.Mutex, waiting for it can end with the context.
type chatLock struct {
	slot chan struct{}
	refs int // guarded by chatLocks.mu
}

func newChatLocks() *chatLocks { return &chatLocks{locks: map[uuid.UUID]*chatLock{}} }

// lock waits for chatID's lock (or ctx) and returns its release.
func (l *chatLocks) lock(ctx context.Context, chatID uuid.UUID) (func(), error) {
	l.mu.Lock()
	cl := l.locks[chatID]
	if cl == nil {
		cl = &chatLock{slot: make(chan struct{}, 1)}
		l.locks[chatID] = cl
	}
	cl.refs++
	l.mu.Unlock()
	forget := func() {
		l.mu.Lock()
		if cl.refs--; cl.refs == 0 {
			delete(l.locks, chatID)
		}
		l.mu.Unlock()
	}
	select {
	case cl.slot <- struct{}{}:
		return func() { <-cl.slot; forget() }, nil
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// errNilDependency is returned by constructors given a nil dependency.
var errNilDependency = errors.New("nil dependency")

// directChatNamespace derives a direct chat's id from its two members, so that both creating it at
// once write the same stream and the log's unique (stream, version) keeps one of them.
var directChatNamespace = uuid.MustParse("6f0c2a7e-3f55-4c5e-9a0b-1d7c2f1e8a41")

// DirectChatID is the id of the direct chat between a and b (in either order).
func DirectChatID(a, b uuid.UUID) uuid.UUID {
	if string(a[:]) > string(b[:]) {
		a, b = b, a
	}
	return uuid.NewSHA1(directChatNamespace, append(a[:], b[:]...))
}

// messageIDNamespace derives a message's id from its chat, sender and client_msg_id, so a repeated
// send names the same message and its claim collides.
var messageIDNamespace = uuid.MustParse("0b3f7f5c-9d6e-4a61-8d2c-6c4e5b7a9f12")

func clientMessageID(chatID, sender uuid.UUID, clientMsgID string) uuid.UUID {
	name := make([]byte, 0, 32+len(clientMsgID))
	name = append(name, chatID[:]...)
	name = append(name, sender[:]...)
	return uuid.NewSHA1(messageIDNamespace, append(name, clientMsgID...))
}

// messageClaim is the unique-claim kind that makes a client_msg_id send one message.
const messageClaim = "message.client_msg_id"

// ChatRef names a chat a command created or found.
type ChatRef struct {
	ChatID  uuid.UUID
	Created bool
}

// SentMessage is what sending answers: the message, and whether it was an earlier send replayed.
type SentMessage struct {
	Message  queries.Message
	Replayed bool
}

func sentView(ev events.MessageSent) queries.Message {
	m := queries.Message{ID: ev.MessageID, ChatID: ev.ChatID, Seq: ev.Seq, SenderID: ev.SenderID, Text: ev.Text, SentAt: ev.SentAt}
	if ev.ClientMsgID != "" {
		id := ev.ClientMsgID
		m.ClientMsgID = &id
	}
	return m
}
