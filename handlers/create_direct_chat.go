package handlers

import (
	"context"

	"taki/commands"
	"taki/events"
)

// CreateDirectChatHandler opens the direct chat of two users, or finds the one they have. The chat's
// id is derived from the pair, so two users creating it at once append to one stream: one wins, the
// other conflicts, and its retry finds the chat.
type CreateDirectChatHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h CreateDirectChatHandler) Handle(ctx context.Context, cmd commands.CreateDirectChat) (ChatRef, error) {
	ok, err := h.userExists(ctx, cmd.MemberID)
	if err != nil {
		return ChatRef{}, err
	}
	if !ok {
		return ChatRef{}, notFoundUser
	}
	id := DirectChatID(cmd.Actor, cmd.MemberID)
	c, err := load(ctx, h.store, chats, id)
	if err != nil {
		return ChatRef{}, err
	}
	if c.state.exists() {
		return ChatRef{ChatID: id}, nil
	}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatCreated{
		ChatID: id, Type: events.ChatDirect, CreatedBy: cmd.Actor, CreatedAt: h.timestamp(),
		Members: []events.ChatMember{
			{UserID: cmd.Actor, Role: events.ChatRoleMember},
			{UserID: cmd.MemberID, Role: events.ChatRoleMember},
		},
	})
	if err != nil {
		return ChatRef{}, err
	}
	return ChatRef{ChatID: id, Created: true}, nil
}
