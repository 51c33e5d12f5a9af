package handlers

import (
	"context"

	"taki/commands"
	"taki/events"
)

// RemoveChatMemberHandler removes a member from a group: an admin removing anyone, or a member
// leaving. From then on the chat is not found for that user and no frame of it reaches them.
type RemoveChatMemberHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h RemoveChatMemberHandler) Handle(ctx context.Context, cmd commands.RemoveChatMember) (struct{}, error) {
	c, release, err := h.lockedChat(ctx, cmd.ChatID, cmd.Actor)
	defer release()
	if err != nil {
		return struct{}{}, err
	}
	if c.state.Type != events.ChatGroup {
		return struct{}{}, commands.Conflict("a direct chat's members cannot change")
	}
	if cmd.UserID != cmd.Actor && !c.state.isGroupAdmin(cmd.Actor) {
		return struct{}{}, commands.Forbidden("only a group's admins may remove other members")
	}
	removed, ok := c.state.member(cmd.UserID)
	if !ok {
		return struct{}{}, commands.NotFound("member")
	}
	// API.md has no way to make an admin: a group left without one could never be renamed or
	// managed again.
	if removed.Role == events.ChatRoleAdmin && len(c.state.Members) > 1 && c.state.admins() == 1 {
		return struct{}{}, commands.Conflict("the group's only admin cannot leave while it has other members")
	}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatMemberRemoved{ChatID: cmd.ChatID, UserID: cmd.UserID, RemovedBy: cmd.Actor})
	return struct{}{}, err
}
