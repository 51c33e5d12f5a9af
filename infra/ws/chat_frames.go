package ws

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/google/uuid"

	"taki/commands"
	"taki/handlers"
	"taki/infra/bus"
	"taki/infra/logging"
)

// Client frame types of the chats (API.md, "Real time"), and the server's answer to message.send.
const (
	TypeMessageSend = "message.send"
	TypeChatRead    = "chat.read"
	TypeAck         = "ack"
)

// ChatFrameHandlers returns the handlers of the chat client frames, for Config.Handlers. Each frame
// is a command on the bus, as the same action over HTTP is:
//
//   - message.send {chat_id, text, client_msg_id} → commands.SendMessage, answered with
//     {"type":"ack","client_msg_id","data":message} (a repeated client_msg_id is acked with the
//     original message and sends nothing);
//   - chat.read {chat_id, up_to_seq} → commands.MarkChatRead; the chat.read event frame follows;
//   - typing {chat_id} → commands.SendTyping, relayed to the chat's other members.
//
// A failure answers an error frame with the command's problem and the frame's client_msg_id.
func ChatFrameHandlers(b *bus.Bus) map[string]FrameHandler {
	return map[string]FrameHandler{
		TypeMessageSend: func(ctx context.Context, c *Client, f ClientFrame) error {
			in, err := decodeChatFrame(f, fieldText)
			if err != nil {
				return err
			}
			sent, _, err := bus.Send[handlers.SentMessage](frameContext(ctx), b, commands.SendMessage{
				Actor: c.UserID(), ChatID: in.ChatID, Text: in.Text, ClientMsgID: in.ClientMsgID})
			if err != nil {
				return err
			}
			return c.SendFrame(ServerFrame{Type: TypeAck, ClientMsgID: f.ClientMsgID, Data: sent.Message})
		},
		TypeChatRead: func(ctx context.Context, c *Client, f ClientFrame) error {
			in, err := decodeChatFrame(f, fieldUpToSeq)
			if err != nil {
				return err
			}
			_, _, err = bus.Send[struct{}](frameContext(ctx), b, commands.MarkChatRead{
				Actor: c.UserID(), ChatID: in.ChatID, UpToSeq: in.UpToSeq})
			return err
		},
		TypeTyping: func(ctx context.Context, c *Client, f ClientFrame) error {
			in, err := decodeChatFrame(f, 0)
			if err != nil {
				return err
			}
			_, _, err = bus.Send[struct{}](frameContext(ctx), b, commands.SendTyping{Actor: c.UserID(), ChatID: in.ChatID})
			return err
		},
	}
}

// frameContext gives a frame's dispatch its own request id, which also correlates what it causes, as
// an HTTP request's does.
func frameContext(ctx context.Context) context.Context {
	id, err := uuid.NewV7()
	if err != nil {
		return ctx
	}
	return logging.WithCorrelationID(logging.WithRequestID(ctx, id.String()), id.String())
}

// Fields a chat frame needs beyond chat_id.
const (
	fieldText = 1 << iota
	fieldUpToSeq
)

// chatFrame holds the fields of a chat client frame.
type chatFrame struct {
	ChatID      uuid.UUID
	Text        string
	ClientMsgID string
	UpToSeq     int64
}

// decodeChatFrame reads chat_id and the fields need names from f; client_msg_id is optional and read
// when text is. Missing fields and fields of the wrong JSON type are a validation error naming each;
// what the values must be beyond their type (text length, ...) the command's validation checks.
func decodeChatFrame(f ClientFrame, need int) (chatFrame, error) {
	var raw struct {
		ChatID      json.RawMessage `json:"chat_id"`
		Text        json.RawMessage `json:"text"`
		ClientMsgID json.RawMessage `json:"client_msg_id"`
		UpToSeq     json.RawMessage `json:"up_to_seq"`
	}
	var out chatFrame
	if err := f.DecodeFields(&raw); err != nil {
		return out, err
	}
	var bad []commands.FieldError
	fail := func(field, msg string) { bad = append(bad, commands.FieldError{Field: field, Message: msg}) }

	var chatID string
	switch {
	case absent(raw.ChatID):
		fail("chat_id", "is required")
	case json.Unmarshal(raw.ChatID, &chatID) != nil:
		fail("chat_id", "must be a chat id (a UUID string)")
	default:
		id, err := uuid.Parse(chatID)
		if err != nil || len(chatID) != 36 {
			fail("chat_id", "must be a chat id (a UUID string)")
		}
		out.ChatID = id
	}
	if need&fieldText != 0 {
		switch {
		case absent(raw.Text):
			fail("text", "is required")
		case json.Unmarshal(raw.Text, &out.Text) != nil:
			fail("text", "must be a string")
		}
		if !absent(raw.ClientMsgID) && json.Unmarshal(raw.ClientMsgID, &out.ClientMsgID) != nil {
			fail("client_msg_id", "must be a string")
		}
	}
	if need&fieldUpToSeq != 0 {
		switch {
		case absent(raw.UpToSeq):
			fail("up_to_seq", "is required")
		case json.Unmarshal(raw.UpToSeq, &out.UpToSeq) != nil:
			fail("up_to_seq", "must be an integer")
		}
	}
	if len(bad) > 0 {
		return chatFrame{}, commands.Invalid(bad)
	}
	return out, nil
}

// absent reports a field that is missing or null.
func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}
