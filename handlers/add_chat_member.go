package handlers

import (
	"context"
	"fmt"

	"taki/commands"
	"taki/events"
)

// AddChatMemberHandler adds a user to a group (its admins only). Adding a member twice changes nothing.
type AddChatMemberHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h AddChatMemberHandler) Handle(ctx context.Context, cmd commands.AddChatMember) (struct{}, error) {
	c, release, err := h.lockedChat(ctx, cmd.ChatID, cmd.Actor)
	defer release()
	if err != nil {
		return struct{}{}, err
	}
	if c.state.Type != events.ChatGroup {
		return struct{}{}, commands.Conflict("a direct chat's members cannot change")
	}
	if !c.state.isGroupAdmin(cmd.Actor) {
		return struct{}{}, commands.Forbidden("only a group's admins may add members")
	}
	if _, ok := c.state.member(cmd.UserID); ok {
		return struct{}{}, nil
	}
	if len(c.state.Members) >= commands.MaxGroupMembers {
		return struct{}{}, commands.Conflict(fmt.Sprintf("a group has at most %d members", commands.MaxGroupMembers))
	}
	ok, err := h.userExists(ctx, cmd.UserID)
	if err != nil {
		return struct{}{}, err
	}
	if !ok {
		return struct{}{}, notFoundUser
	}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatMemberAdded{
		ChatID: cmd.ChatID, UserID: cmd.UserID, Role: events.ChatRoleMember, AddedBy: cmd.Actor,
		LastReadSeq: c.state.LastSeq, At: h.timestamp(),
	})
	return struct{}{}, err
}
