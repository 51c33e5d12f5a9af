package handlers

import (
	"context"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// EditMessageHandler replaces the text of the sender's own message.
type EditMessageHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h EditMessageHandler) Handle(ctx context.Context, cmd commands.EditMessage) (queries.Message, error) {
	text, err := commands.NewMessageText(cmd.Text)
	if err != nil {
		return queries.Message{}, cmd.Validate()
	}
	c, m, release, err := h.lockedMessage(ctx, cmd.ChatID, cmd.MessageID, cmd.Actor)
	defer release()
	if err != nil {
		return queries.Message{}, err
	}
	if m.SenderID != cmd.Actor {
		return queries.Message{}, commands.Forbidden("only a message's sender may edit it")
	}
	if m.Deleted {
		return queries.Message{}, commands.Conflict("the message was deleted")
	}
	if m.Text == text.String() {
		return m, nil
	}
	ev := events.MessageEdited{
		ChatID: cmd.ChatID, MessageID: m.ID, Seq: m.Seq, SenderID: m.SenderID, Text: text.String(),
		SentAt: m.SentAt, EditedAt: h.timestamp(),
	}
	if m.ClientMsgID != nil {
		ev.ClientMsgID = *m.ClientMsgID
	}
	next, err := save(ctx, h.store, chats, c, nil, ev)
	if err != nil {
		return queries.Message{}, err
	}
	m.Text, m.EditedAt = ev.Text, &ev.EditedAt
	m.ReadByCount = next.state.readBy(m.Seq, m.SenderID)
	return m, nil
}
