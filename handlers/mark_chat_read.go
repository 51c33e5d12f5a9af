package handlers

import (
	"context"
	"fmt"

	"taki/commands"
	"taki/events"
)

// MarkChatReadHandler moves the actor's read cursor forward; a cursor at or past UpToSeq stays.
type MarkChatReadHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h MarkChatReadHandler) Handle(ctx context.Context, cmd commands.MarkChatRead) (struct{}, error) {
	c, release, err := h.lockedChat(ctx, cmd.ChatID, cmd.Actor)
	defer release()
	if err != nil {
		return struct{}{}, err
	}
	if cmd.UpToSeq > c.state.LastSeq {
		return struct{}{}, invalidField("up_to_seq", fmt.Sprintf("is past the chat's last message (seq %d)", c.state.LastSeq))
	}
	if m, _ := c.state.member(cmd.Actor); cmd.UpToSeq <= m.LastRead {
		return struct{}{}, nil
	}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatRead{ChatID: cmd.ChatID, UserID: cmd.Actor, UpToSeq: cmd.UpToSeq})
	return struct{}{}, err
}
