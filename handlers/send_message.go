package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
)

// SendMessageHandler appends a message with the chat's next seq. Sends to one chat queue on the
// chat's lock, so seq stays gapless without conflict retries. The message's id is derived from its
// chat, sender and client_msg_id, and claimed in the same transaction as the message: a repeat (also
// a racing one) finds the claim taken and answers the original message instead of sending a second.
type SendMessageHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h SendMessageHandler) Handle(ctx context.Context, cmd commands.SendMessage) (SentMessage, error) {
	text, err := commands.NewMessageText(cmd.Text)
	if err != nil {
		return SentMessage{}, cmd.Validate()
	}
	clientID, err := commands.NewClientMsgID(cmd.ClientMsgID)
	if err != nil {
		return SentMessage{}, cmd.Validate()
	}
	c, release, err := h.lockedChat(ctx, cmd.ChatID, cmd.Actor)
	defer release()
	if err != nil {
		return SentMessage{}, err
	}
	id := clientMessageID(cmd.ChatID, cmd.Actor, clientID.String())
	claims := []events.Claim{{Kind: messageClaim, Value: id.String()}}
	ev := events.MessageSent{
		ChatID: cmd.ChatID, MessageID: id, Seq: c.state.LastSeq + 1, SenderID: cmd.Actor,
		Text: text.String(), Format: events.MessageFormatPlain, ClientMsgID: clientID.String(), SentAt: h.timestamp(),
	}
	_, err = save(ctx, h.store, chats, c, claims, ev)
	var taken *events.ClaimTakenError
	if errors.As(err, &taken) {
		return h.replay(ctx, cmd.ChatID, id)
	}
	if err != nil {
		return SentMessage{}, err
	}
	return SentMessage{Message: sentView(ev)}, nil
}

// replay answers the message an earlier send with the same client_msg_id made. That send committed
// before our claim failed, so once the read model caught up with the chat as the log holds it now,
// it has the message.
func (h SendMessageHandler) replay(ctx context.Context, chatID, id uuid.UUID) (SentMessage, error) {
	h.store.evict(chatID)
	c, err := load(ctx, h.store, chats, chatID)
	if err != nil {
		return SentMessage{}, err
	}
	m, ok, err := h.messages.Message(ctx, chatID, id, c.pos)
	if err != nil {
		return SentMessage{}, err
	}
	if !ok {
		return SentMessage{}, fmt.Errorf("replay message %s of chat %s: claimed but not in the read model", id, chatID)
	}
	return SentMessage{Message: m, Replayed: true}, nil
}
