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
	if _, ok := c.state.member(cmd.UserID); !ok {
		return struct{}{}, commands.NotFound("member")
	}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatMemberRemoved{ChatID: cmd.ChatID, UserID: cmd.UserID, RemovedBy: cmd.Actor})
	return struct{}{}, err
}
