package handlers

import (
	"context"

	"taki/commands"
	"taki/events"
)

// DeleteMessageHandler tombstones a message: the sender may delete their own, a group's admins any.
// Deleting a deleted message changes nothing.
type DeleteMessageHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h DeleteMessageHandler) Handle(ctx context.Context, cmd commands.DeleteMessage) (struct{}, error) {
	c, m, release, err := h.lockedMessage(ctx, cmd.ChatID, cmd.MessageID, cmd.Actor)
	defer release()
	if err != nil {
		return struct{}{}, err
	}
	if m.SenderID != cmd.Actor && !c.state.isGroupAdmin(cmd.Actor) {
		return struct{}{}, commands.Forbidden("only a message's sender or a group admin may delete it")
	}
	if m.Deleted {
		return struct{}{}, nil
	}
	ev := events.MessageDeleted{
		ChatID: cmd.ChatID, MessageID: m.ID, Seq: m.Seq, SenderID: m.SenderID, SentAt: m.SentAt,
		EditedAt: m.EditedAt, DeletedBy: cmd.Actor, DeletedAt: h.timestamp(),
	}
	if m.ClientMsgID != nil {
		ev.ClientMsgID = *m.ClientMsgID
	}
	_, err = save(ctx, h.store, chats, c, nil, ev)
	return struct{}{}, err
}
