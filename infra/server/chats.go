package server

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/handlers"
	"taki/infra/bus"
	"taki/infra/postgres"
	"taki/projections"
	"taki/queries"
)

// chatMessages lets the chat commands read a message from the chats read model once it caught up
// with the chat state they decide on (handlers.ChatMessages).
type chatMessages struct {
	rm      *projections.Chats
	waiter  *postgres.Projector
	timeout time.Duration
}

func (m chatMessages) Message(ctx context.Context, chatID, messageID uuid.UUID, atLeast events.Position) (queries.Message, bool, error) {
	if !atLeast.IsZero() {
		applied, err := m.waiter.WaitFor(ctx, queries.ChatsReadModel, atLeast, m.timeout)
		if err != nil {
			return queries.Message{}, false, err
		}
		if !applied {
			return queries.Message{}, false, fmt.Errorf("read message %s: %w", messageID, &commands.Error{
				Kind: commands.KindUnavailable, Detail: "messages are being rebuilt; try again shortly", RetryAfter: time.Second})
		}
	}
	return m.rm.Message(ctx, chatID, messageID)
}

// registerChats registers the chat commands and queries on b.
func registerChats(b *bus.Bus, aggregates *handlers.Store, streams handlers.StreamDirectory, rm *projections.Chats,
	projector *postgres.Projector, typing handlers.TypingRelay, wait time.Duration, now func() time.Time) error {
	cmds, err := handlers.NewChatCommands(aggregates, streams, chatMessages{rm: rm, waiter: projector, timeout: wait}, typing, now)
	if err != nil {
		return err
	}
	qs, err := handlers.NewChatQueries(rm)
	if err != nil {
		return err
	}
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.CreateDirectChatHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.CreateGroupChatHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.RenameChatHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.AddChatMemberHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.RemoveChatMemberHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.SendMessageHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.EditMessageHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.DeleteMessageHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.MarkChatReadHandler{ChatCommands: cmds}))
	bus.RegisterCommand(b, handlers.RedecideFresh(handlers.SendTypingHandler{ChatCommands: cmds}))
	bus.RegisterQuery(b, handlers.GetChatHandler{ChatQueries: qs})
	bus.RegisterQuery(b, handlers.ListChatsHandler{ChatQueries: qs})
	bus.RegisterQuery(b, handlers.ListMessagesHandler{ChatQueries: qs})
	bus.RegisterQuery(b, handlers.GetMessageHandler{ChatQueries: qs})
	return nil
}
