package handlers

import (
	"context"

	"github.com/google/uuid"

	"taki/commands"
)

// SendTypingHandler relays a typing notice to a chat's other members. Nothing is appended.
type SendTypingHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h SendTypingHandler) Handle(ctx context.Context, cmd commands.SendTyping) (struct{}, error) {
	c, err := loadChatAsMember(ctx, h.store, cmd.ChatID, cmd.Actor)
	if err != nil {
		return struct{}{}, err
	}
	to := make([]uuid.UUID, 0, len(c.state.Members)-1)
	for id := range c.state.Members {
		if id != cmd.Actor {
			to = append(to, id)
		}
	}
	return struct{}{}, h.typing.RelayTyping(ctx, cmd.ChatID, cmd.Actor, to)
}
