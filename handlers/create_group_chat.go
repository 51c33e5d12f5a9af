package handlers

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
)

// CreateGroupChatHandler creates a group with its creator as admin.
type CreateGroupChatHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h CreateGroupChatHandler) Handle(ctx context.Context, cmd commands.CreateGroupChat) (ChatRef, error) {
	title, err := commands.NewChatTitle(cmd.Title)
	if err != nil {
		return ChatRef{}, cmd.Validate()
	}
	others := make([]uuid.UUID, 0, len(cmd.MemberIDs))
	seen := map[uuid.UUID]bool{cmd.Actor: true}
	for _, id := range cmd.MemberIDs {
		if !seen[id] {
			seen[id] = true
			others = append(others, id)
		}
	}
	missing, ok, err := h.firstMissingUser(ctx, others)
	if err != nil {
		return ChatRef{}, err
	}
	if ok {
		return ChatRef{}, commands.NotFound(fmt.Sprintf("user %s", missing))
	}
	members := make([]events.ChatMember, 0, len(others)+1)
	members = append(members, events.ChatMember{UserID: cmd.Actor, Role: events.ChatRoleAdmin})
	for _, id := range others {
		members = append(members, events.ChatMember{UserID: id, Role: events.ChatRoleMember})
	}
	c := loaded[chat]{id: cmd.ChatID}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatCreated{
		ChatID: cmd.ChatID, Type: events.ChatGroup, Title: title.String(), CreatedBy: cmd.Actor,
		CreatedAt: h.timestamp(), Members: members,
	})
	if err != nil {
		return ChatRef{}, err
	}
	return ChatRef{ChatID: cmd.ChatID, Created: true}, nil
}
