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
	members := []events.ChatMember{{UserID: cmd.Actor, Role: events.ChatRoleAdmin}}
	seen := map[uuid.UUID]bool{cmd.Actor: true}
	for _, id := range cmd.MemberIDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		ok, err := h.userExists(ctx, id)
		if err != nil {
			return ChatRef{}, err
		}
		if !ok {
			return ChatRef{}, commands.NotFound(fmt.Sprintf("user %s", id))
		}
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
