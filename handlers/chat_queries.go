package handlers

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"taki/commands"
	"taki/queries"
)

// ChatsReadModel is what the chats projection serves to queries. Each read answers false when the
// actor is not a member, so existence is not revealed.
type ChatsReadModel interface {
	Chat(ctx context.Context, actor, chatID uuid.UUID) (queries.Chat, bool, error)
	ListChats(ctx context.Context, actor uuid.UUID, after *queries.ChatCursor, limit int) ([]queries.Chat, *queries.ChatCursor, error)
	Messages(ctx context.Context, actor, chatID uuid.UUID, before, after *int64, limit int) (queries.MessagePage, bool, error)
	MessageFor(ctx context.Context, actor, chatID, messageID uuid.UUID) (queries.Message, bool, error)
}

// ChatQueries answers the chat queries from the chats read model.
type ChatQueries struct{ rm ChatsReadModel }

// NewChatQueries refuses a nil read model.
func NewChatQueries(rm ChatsReadModel) (*ChatQueries, error) {
	if rm == nil {
		return nil, errors.New("new chat queries: nil read model")
	}
	return &ChatQueries{rm: rm}, nil
}

// GetChatHandler answers GetChat.
type GetChatHandler struct{ *ChatQueries }

// Handle implements bus.QueryHandler.
func (h GetChatHandler) Handle(ctx context.Context, q queries.GetChat) (queries.Chat, error) {
	c, ok, err := h.rm.Chat(ctx, q.Actor, q.ChatID)
	if err != nil {
		return queries.Chat{}, err
	}
	if !ok {
		return queries.Chat{}, commands.NotFound("chat")
	}
	return c, nil
}

// ListChatsHandler answers ListChats.
type ListChatsHandler struct{ *ChatQueries }

// Handle implements bus.QueryHandler.
func (h ListChatsHandler) Handle(ctx context.Context, q queries.ListChats) (queries.Page[queries.Chat], error) {
	limit := q.Limit
	if limit == 0 {
		limit = queries.DefaultLimit
	}
	var after *queries.ChatCursor
	if q.Cursor != "" {
		after = &queries.ChatCursor{}
		if err := queries.DecodeCursor(q.Cursor, after); err != nil {
			return queries.Page[queries.Chat]{}, q.Validate()
		}
	}
	items, next, err := h.rm.ListChats(ctx, q.Actor, after, limit)
	if err != nil {
		return queries.Page[queries.Chat]{}, err
	}
	page := queries.Page[queries.Chat]{Items: items}
	if page.Items == nil {
		page.Items = []queries.Chat{}
	}
	if next != nil {
		page.NextCursor = queries.EncodeCursor(next)
	}
	return page, nil
}

// ListMessagesHandler answers ListMessages.
type ListMessagesHandler struct{ *ChatQueries }

// Handle implements bus.QueryHandler.
func (h ListMessagesHandler) Handle(ctx context.Context, q queries.ListMessages) (queries.MessagePage, error) {
	limit := q.Limit
	if limit == 0 {
		limit = queries.DefaultLimit
	}
	page, ok, err := h.rm.Messages(ctx, q.Actor, q.ChatID, q.BeforeSeq, q.AfterSeq, limit)
	if err != nil {
		return queries.MessagePage{}, err
	}
	if !ok {
		return queries.MessagePage{}, commands.NotFound("chat")
	}
	if page.Items == nil {
		page.Items = []queries.Message{}
	}
	return page, nil
}

// GetMessageHandler answers GetMessage.
type GetMessageHandler struct{ *ChatQueries }

// Handle implements bus.QueryHandler.
func (h GetMessageHandler) Handle(ctx context.Context, q queries.GetMessage) (queries.Message, error) {
	m, ok, err := h.rm.MessageFor(ctx, q.Actor, q.ChatID, q.MessageID)
	if err != nil {
		return queries.Message{}, err
	}
	if !ok {
		return queries.Message{}, commands.NotFound("message")
	}
	return m, nil
}
