package events

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Stream type of chat aggregates. A chat's stream holds its membership, its messages (each numbered by
// a gapless per-chat seq) and its members' read cursors.
const StreamChat = "chat"

// Chat types.
const (
	ChatDirect = "direct"
	ChatGroup  = "group"
)

// Member roles in a chat.
const (
	ChatRoleAdmin  = "admin"
	ChatRoleMember = "member"
)

// ChatMember is a member as chat.created lists it.
type ChatMember struct {
	UserID uuid.UUID `json:"user_id"`
	Role   string    `json:"role"`
}

// ChatCreated starts a chat's stream with its first members (the creator first).
type ChatCreated struct {
	ChatID    uuid.UUID    `json:"chat_id"`
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	CreatedBy uuid.UUID    `json:"created_by"`
	Members   []ChatMember `json:"members"`
	CreatedAt time.Time    `json:"created_at"`
}

// EventType implements Event.
func (ChatCreated) EventType() string { return "chat.created" }

// ChatRenamed changes a group's title.
type ChatRenamed struct {
	ChatID    uuid.UUID `json:"chat_id"`
	Title     string    `json:"title"`
	RenamedBy uuid.UUID `json:"renamed_by"`
}

// EventType implements Event.
func (ChatRenamed) EventType() string { return "chat.renamed" }

// ChatMemberAdded adds a member to a group. LastReadSeq starts at the chat's last seq, so joining
// does not make the whole history unread.
type ChatMemberAdded struct {
	ChatID      uuid.UUID `json:"chat_id"`
	UserID      uuid.UUID `json:"user_id"`
	Role        string    `json:"role"`
	AddedBy     uuid.UUID `json:"added_by"`
	LastReadSeq int64     `json:"last_read_seq"`
	At          time.Time `json:"at"`
}

// EventType implements Event.
func (ChatMemberAdded) EventType() string { return "chat.member_added" }

// ChatMemberRemoved removes a member from a group (RemovedBy == UserID when the member left).
type ChatMemberRemoved struct {
	ChatID    uuid.UUID `json:"chat_id"`
	UserID    uuid.UUID `json:"user_id"`
	RemovedBy uuid.UUID `json:"removed_by"`
}

// EventType implements Event.
func (ChatMemberRemoved) EventType() string { return "chat.member_removed" }

// Message text formats. Plain is the only one written so far: text is shown as typed, never parsed for
// markup.
const MessageFormatPlain = "plain"

// MessageSent appends a message to a chat with the next seq.
//
// Schema versions: v1 had no format, and every v1 message is plain text. v2 states the format of Text,
// so that a later format (such as markdown) never has to be guessed from old messages; the upcaster
// fills "plain" into v1 payloads.
type MessageSent struct {
	ChatID      uuid.UUID `json:"chat_id"`
	MessageID   uuid.UUID `json:"message_id"`
	Seq         int64     `json:"seq"`
	SenderID    uuid.UUID `json:"sender_id"`
	Text        string    `json:"text"`
	Format      string    `json:"format"`
	ClientMsgID string    `json:"client_msg_id,omitempty"`
	SentAt      time.Time `json:"sent_at"`
}

// EventType implements Event.
func (MessageSent) EventType() string { return "message.sent" }

// MessageEdited replaces a message's text. It repeats the message's unchanging facts (seq, sender,
// client id, sent time) so that a consumer can show the whole message from this event alone.
type MessageEdited struct {
	ChatID      uuid.UUID `json:"chat_id"`
	MessageID   uuid.UUID `json:"message_id"`
	Seq         int64     `json:"seq"`
	SenderID    uuid.UUID `json:"sender_id"`
	Text        string    `json:"text"`
	ClientMsgID string    `json:"client_msg_id,omitempty"`
	SentAt      time.Time `json:"sent_at"`
	EditedAt    time.Time `json:"edited_at"`
}

// EventType implements Event.
func (MessageEdited) EventType() string { return "message.edited" }

// MessageDeleted tombstones a message: it keeps its seq, loses its text. Like MessageEdited it repeats
// the message's unchanging facts.
type MessageDeleted struct {
	ChatID      uuid.UUID  `json:"chat_id"`
	MessageID   uuid.UUID  `json:"message_id"`
	Seq         int64      `json:"seq"`
	SenderID    uuid.UUID  `json:"sender_id"`
	ClientMsgID string     `json:"client_msg_id,omitempty"`
	SentAt      time.Time  `json:"sent_at"`
	EditedAt    *time.Time `json:"edited_at,omitempty"`
	DeletedBy   uuid.UUID  `json:"deleted_by"`
	DeletedAt   time.Time  `json:"deleted_at"`
}

// EventType implements Event.
func (MessageDeleted) EventType() string { return "message.deleted" }

// ChatRead moves a member's read cursor forward to UpToSeq.
type ChatRead struct {
	ChatID  uuid.UUID `json:"chat_id"`
	UserID  uuid.UUID `json:"user_id"`
	UpToSeq int64     `json:"up_to_seq"`
}

// EventType implements Event.
func (ChatRead) EventType() string { return "chat.read" }

func registerChats(r *Registry) {
	register[ChatCreated](r, 1)
	register[ChatRenamed](r, 1)
	register[ChatMemberAdded](r, 1)
	register[ChatMemberRemoved](r, 1)
	register[MessageSent](r, 2)
	r.addUpcaster("message.sent", 1, upcastMessageSentV1)
	register[MessageEdited](r, 1)
	register[MessageDeleted](r, 1)
	register[ChatRead](r, 1)
}

// upcastMessageSentV1 turns a v1 message.sent into v2: v1 messages were all plain text.
func upcastMessageSentV1(raw json.RawMessage) (json.RawMessage, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("payload is not a JSON object")
	}
	p["format"] = json.RawMessage(`"` + MessageFormatPlain + `"`)
	return json.Marshal(p)
}
