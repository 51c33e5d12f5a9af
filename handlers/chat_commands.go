package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// TypingRelay passes a typing notice to the sockets of a chat's other members, on every instance.
// Typing is never stored.
type TypingRelay interface {
	RelayTyping(ctx context.Context, chatID, from uuid.UUID, to []uuid.UUID) error
}

// ChatCommands holds what the chat command handlers share. Each command has its own handler type
// (CreateDirectChatHandler, SendMessageHandler, ...) embedding it.
type ChatCommands struct {
	store    *Store
	streams  StreamDirectory
	locks    *chatLocks
	messages ChatMessages
	typing   TypingRelay
	now      func() time.Time
}

// NewChatCommands refuses nil dependencies.
func NewChatCommands(store *Store, streams StreamDirectory, messages ChatMessages, typing TypingRelay, now func() time.Time) (*ChatCommands, error) {
	if store == nil || streams == nil || messages == nil || typing == nil || now == nil {
		return nil, fmt.Errorf("new chat commands: %w", errNilDependency)
	}
	return &ChatCommands{store: store, streams: streams, locks: newChatLocks(), messages: messages, typing: typing, now: now}, nil
}

// lockedChat takes chatID's lock (see chatLocks) and loads the chat for a command of actor, who must
// be a member. release is never nil: call it once the command appended, or gave up.
func (h *ChatCommands) lockedChat(ctx context.Context, chatID, actor uuid.UUID) (c loaded[chat], release func(), err error) {
	release, err = h.locks.lock(ctx, chatID)
	if err != nil {
		return c, func() {}, err
	}
	c, err = loadChatAsMember(ctx, h.store, chatID, actor)
	return c, release, err
}

func (h *ChatCommands) timestamp() time.Time { return h.now().UTC().Truncate(time.Microsecond) }

// userExists reports whether id names a registered user.
func (h *ChatCommands) userExists(ctx context.Context, id uuid.UUID) (bool, error) {
	u, err := load(ctx, h.store, users, id)
	if err != nil {
		return false, err
	}
	return u.state.exists(), nil
}

// firstMissingUser returns the first of ids, in their order, that names no registered user, asking
// the log once for all of them. A user exists once its stream does: registering is its first event.
func (h *ChatCommands) firstMissingUser(ctx context.Context, ids []uuid.UUID) (uuid.UUID, bool, error) {
	if len(ids) == 0 {
		return uuid.Nil, false, nil
	}
	found, err := h.streams.ExistingStreams(ctx, events.StreamUser, ids)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("check %d users exist: %w", len(ids), err)
	}
	for _, id := range ids {
		if !found[id] {
			return id, true, nil
		}
	}
	return uuid.Nil, false, nil
}

// lockedMessage is lockedChat and one of the chat's messages as the read model holds it once it
// caught up with that chat state.
//
// It first waits, without the lock, for the read model to reach the chat as it is now: the wait
// under the lock is then only for what was appended meanwhile. A read model that lags (a replay, a
// slow batch) thus delays this command, not every send queued behind the chat's lock.
func (h *ChatCommands) lockedMessage(ctx context.Context, chatID, messageID, actor uuid.UUID) (loaded[chat], queries.Message, func(), error) {
	now, err := loadChatAsMember(ctx, h.store, chatID, actor)
	if err != nil {
		return now, queries.Message{}, func() {}, err
	}
	if _, ok, err := h.messages.Message(ctx, chatID, messageID, now.pos); err != nil || !ok {
		if err == nil {
			err = commands.NotFound("message")
		}
		return now, queries.Message{}, func() {}, err
	}
	c, release, err := h.lockedChat(ctx, chatID, actor)
	if err != nil {
		return c, queries.Message{}, release, err
	}
	m, ok, err := h.messages.Message(ctx, chatID, messageID, c.pos)
	if err == nil && !ok {
		err = commands.NotFound("message")
	}
	return c, m, release, err
}

// invalidField is a validation failure of one field.
func invalidField(field, message string) error {
	return commands.Invalid([]commands.FieldError{{Field: field, Message: message}})
}
