package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/handlers"
	"taki/infra/bus"
	"taki/queries"
)

// createChatBody is POST /chats: a direct chat names member_id, a group title and member_ids.
type createChatBody struct {
	Type      string      `json:"type"`
	MemberID  *uuid.UUID  `json:"member_id"`
	Title     *string     `json:"title"`
	MemberIDs []uuid.UUID `json:"member_ids"`
}

// command turns the body into the command its type names, or a validation error naming the fields
// that do not belong to that type.
func (b createChatBody) command(actor uuid.UUID) (any, error) {
	var f []commands.FieldError
	not := func(field, typ string) {
		f = append(f, commands.FieldError{Field: field, Message: "is not allowed for a " + typ + " chat"})
	}
	switch b.Type {
	case events.ChatDirect:
		if b.Title != nil {
			not("title", b.Type)
		}
		if b.MemberIDs != nil {
			not("member_ids", b.Type)
		}
		if b.MemberID == nil {
			f = append(f, commands.FieldError{Field: "member_id", Message: "is required"})
		}
		if len(f) > 0 {
			return nil, commands.Invalid(f)
		}
		return commands.CreateDirectChat{Actor: actor, MemberID: *b.MemberID}, nil
	case events.ChatGroup:
		if b.MemberID != nil {
			not("member_id", b.Type)
		}
		if b.Title == nil {
			f = append(f, commands.FieldError{Field: "title", Message: "is required"})
		}
		if len(f) > 0 {
			return nil, commands.Invalid(f)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		return commands.CreateGroupChat{Actor: actor, ChatID: id, Title: *b.Title, MemberIDs: b.MemberIDs}, nil
	default:
		return nil, commands.Invalid([]commands.FieldError{{Field: "type", Message: `must be "direct" or "group"`}})
	}
}

func (a *api) createChat(c *gin.Context) {
	var body createChatBody
	if !DecodeJSON(c, &body) {
		return
	}
	cmd, err := body.command(session(c).UserID)
	if err != nil {
		WriteError(c, err)
		return
	}
	var ref handlers.ChatRef
	var pos events.Position
	switch cmd := cmd.(type) {
	case commands.CreateDirectChat:
		ref, pos, err = bus.Send[handlers.ChatRef](c.Request.Context(), a.Bus, cmd)
	case commands.CreateGroupChat:
		ref, pos, err = bus.Send[handlers.ChatRef](c.Request.Context(), a.Bus, cmd)
	}
	if err != nil {
		WriteError(c, err)
		return
	}
	status := http.StatusOK
	if ref.Created {
		status = http.StatusCreated
		c.Header("Location", "/api/v1/chats/"+ref.ChatID.String())
	}
	a.answerChat(c, status, ref.ChatID, pos)
}

// answerChat answers a chat command with the chat as the read model shows it once it applied the
// command (pos): the caller's unread count and last message are the read model's.
func (a *api) answerChat(c *gin.Context, status int, chatID uuid.UUID, pos events.Position) {
	c.Header(headerConsistencyToken, pos.String())
	ctx, cons := bus.WithConsistency(c.Request.Context(), pos)
	chat, err := bus.Ask[queries.Chat](ctx, a.Bus, queries.GetChat{Actor: session(c).UserID, ChatID: chatID})
	if err != nil && cons.Stale && commands.IsKind(err, commands.KindNotFound) {
		// The command succeeded; only its read model is behind.
		err = &commands.Error{Kind: commands.KindUnavailable, Detail: "the chat is being rebuilt; read it again shortly", RetryAfter: time.Second}
	}
	if err != nil {
		WriteError(c, err)
		return
	}
	if cons.Stale {
		c.Header(headerConsistencyStale, "true")
	}
	c.JSON(status, chat)
}

func (a *api) listChats(c *gin.Context) {
	limit, ok := queryLimit(c)
	if !ok {
		return
	}
	page, ok := ask[queries.Page[queries.Chat]](c, a.Bus, queries.ListChats{Actor: session(c).UserID, Limit: limit, Cursor: c.Query("cursor")})
	if ok {
		c.JSON(http.StatusOK, page)
	}
}

// chatParam reads the chat id of the path; an id that is not a UUID names no chat.
func chatParam(c *gin.Context) (uuid.UUID, bool) {
	return idParam(c, "id", "chat")
}

func idParam(c *gin.Context, name, what string) (uuid.UUID, bool) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil {
		WriteError(c, commands.NotFound(what))
		return uuid.Nil, false
	}
	return id, true
}

func (a *api) getChat(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	chat, ok := ask[queries.Chat](c, a.Bus, queries.GetChat{Actor: session(c).UserID, ChatID: id})
	if ok {
		c.JSON(http.StatusOK, chat)
	}
}

func (a *api) renameChat(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	var body struct {
		Title *string `json:"title"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	if body.Title == nil {
		WriteError(c, commands.Invalid([]commands.FieldError{{Field: "title", Message: "is required"}}))
		return
	}
	ref, pos, err := bus.Send[handlers.ChatRef](c.Request.Context(), a.Bus, commands.RenameChat{Actor: session(c).UserID, ChatID: id, Title: *body.Title})
	if err != nil {
		WriteError(c, err)
		return
	}
	a.answerChat(c, http.StatusOK, ref.ChatID, pos)
}

func (a *api) addChatMember(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	var body struct {
		UserID uuid.UUID `json:"user_id"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	if _, ok := send[struct{}](c, a.Bus, commands.AddChatMember{Actor: session(c).UserID, ChatID: id, UserID: body.UserID}); ok {
		c.Status(http.StatusNoContent)
	}
}

func (a *api) removeChatMember(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	userID, ok := idParam(c, "user_id", "member")
	if !ok {
		return
	}
	if _, ok := send[struct{}](c, a.Bus, commands.RemoveChatMember{Actor: session(c).UserID, ChatID: id, UserID: userID}); ok {
		c.Status(http.StatusNoContent)
	}
}

// sendMessageBody is POST /chats/{id}/messages (and the fields of the message.send frame).
type sendMessageBody struct {
	Text        string `json:"text"`
	ClientMsgID string `json:"client_msg_id"`
}

// decodeSendMessage reads and validates a message body; on failure it has answered the problem.
func decodeSendMessage(c *gin.Context, actor, chatID uuid.UUID) (commands.SendMessage, bool) {
	var body sendMessageBody
	if !DecodeJSON(c, &body) {
		return commands.SendMessage{}, false
	}
	cmd := commands.SendMessage{Actor: actor, ChatID: chatID, Text: body.Text, ClientMsgID: body.ClientMsgID}
	if err := cmd.Validate(); err != nil {
		WriteError(c, err)
		return cmd, false
	}
	return cmd, true
}

func (a *api) sendMessage(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	cmd, ok := decodeSendMessage(c, session(c).UserID, id)
	if !ok {
		return
	}
	sent, ok := send[handlers.SentMessage](c, a.Bus, cmd)
	if !ok {
		return
	}
	if sent.Replayed {
		c.JSON(http.StatusOK, sent.Message)
		return
	}
	c.JSON(http.StatusCreated, sent.Message)
}

func (a *api) listMessages(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	limit, ok := queryLimit(c)
	if !ok {
		return
	}
	before, ok := querySeq(c, "before_seq")
	if !ok {
		return
	}
	after, ok := querySeq(c, "after_seq")
	if !ok {
		return
	}
	page, ok := ask[queries.MessagePage](c, a.Bus, queries.ListMessages{Actor: session(c).UserID, ChatID: id, BeforeSeq: before, AfterSeq: after, Limit: limit})
	if ok {
		c.JSON(http.StatusOK, page)
	}
}

// querySeq reads an optional non-negative seq from the query string.
func querySeq(c *gin.Context, name string) (*int64, bool) {
	s, present := c.GetQuery(name)
	if !present {
		return nil, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		WriteError(c, commands.Invalid([]commands.FieldError{{Field: name, Message: "must be a non-negative integer"}}))
		return nil, false
	}
	return &n, true
}

func (a *api) editMessage(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	msgID, ok := idParam(c, "message_id", "message")
	if !ok {
		return
	}
	var body struct {
		Text string `json:"text"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	m, ok := send[queries.Message](c, a.Bus, commands.EditMessage{Actor: session(c).UserID, ChatID: id, MessageID: msgID, Text: body.Text})
	if ok {
		c.JSON(http.StatusOK, m)
	}
}

func (a *api) deleteMessage(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	msgID, ok := idParam(c, "message_id", "message")
	if !ok {
		return
	}
	if _, ok := send[struct{}](c, a.Bus, commands.DeleteMessage{Actor: session(c).UserID, ChatID: id, MessageID: msgID}); ok {
		c.Status(http.StatusNoContent)
	}
}

func (a *api) markChatRead(c *gin.Context) {
	id, ok := chatParam(c)
	if !ok {
		return
	}
	var body struct {
		UpToSeq *int64 `json:"up_to_seq"`
	}
	if !DecodeJSON(c, &body) {
		return
	}
	if body.UpToSeq == nil {
		WriteError(c, commands.Invalid([]commands.FieldError{{Field: "up_to_seq", Message: "is required"}}))
		return
	}
	if _, ok := send[struct{}](c, a.Bus, commands.MarkChatRead{Actor: session(c).UserID, ChatID: id, UpToSeq: *body.UpToSeq}); ok {
		c.Status(http.StatusNoContent)
	}
}
