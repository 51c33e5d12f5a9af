package handlers

import (
	"context"

	"taki/commands"
	"taki/events"
)

// RenameChatHandler changes a group's title (its admins only).
type RenameChatHandler struct{ *ChatCommands }

// Handle implements bus.CommandHandler.
func (h RenameChatHandler) Handle(ctx context.Context, cmd commands.RenameChat) (ChatRef, error) {
	title, err := commands.NewChatTitle(cmd.Title)
	if err != nil {
		return ChatRef{}, cmd.Validate()
	}
	c, release, err := h.lockedChat(ctx, cmd.ChatID, cmd.Actor)
	defer release()
	if err != nil {
		return ChatRef{}, err
	}
	if !c.state.isGroupAdmin(cmd.Actor) {
		return ChatRef{}, commands.Forbidden("only a group's admins may rename it")
	}
	if c.state.Title == title.String() {
		return ChatRef{ChatID: cmd.ChatID}, nil
	}
	_, err = save(ctx, h.store, chats, c, nil, events.ChatRenamed{ChatID: cmd.ChatID, Title: title.String(), RenamedBy: cmd.Actor})
	return ChatRef{ChatID: cmd.ChatID}, err
}
