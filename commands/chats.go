package commands

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits of the messenger.
const (
	MaxMessageRunes   = 4000
	MaxChatTitleRunes = 128
	MaxClientMsgIDLen = 64
	// MaxGroupMembers bounds a group, so that one message's fan-out and a chat's state stay bounded.
	MaxGroupMembers = 10000
	// MaxInitialMembers bounds member_ids of one create request.
	MaxInitialMembers = 1000
)

// ChatTitle is a group's name: 1 to 128 characters, trimmed, with no control characters.
type ChatTitle struct{ v string }

// NewChatTitle validates and trims s.
func NewChatTitle(s string) (ChatTitle, error) {
	s = strings.TrimSpace(s)
	if err := CheckPlainText(s); err != nil {
		return ChatTitle{}, err
	}
	switch n := utf8.RuneCountInString(s); {
	case n < 1:
		return ChatTitle{}, errors.New("must not be empty")
	case n > MaxChatTitleRunes:
		return ChatTitle{}, fmt.Errorf("must be at most %d characters", MaxChatTitleRunes)
	}
	return ChatTitle{s}, nil
}

func (t ChatTitle) String() string { return t.v }

// MessageText is a message's body: 1 to 4000 characters, kept as written (line breaks and leading
// spaces are content), but not blank and with no control characters other than tab and line breaks.
type MessageText struct{ v string }

// NewMessageText validates s.
func NewMessageText(s string) (MessageText, error) {
	if !utf8.ValidString(s) {
		return MessageText{}, errors.New("must be valid UTF-8")
	}
	if strings.TrimSpace(s) == "" {
		return MessageText{}, errors.New("must not be empty")
	}
	if utf8.RuneCountInString(s) > MaxMessageRunes {
		return MessageText{}, fmt.Errorf("must be at most %d characters", MaxMessageRunes)
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return MessageText{}, errors.New("must not contain control characters")
		}
	}
	return MessageText{s}, nil
}

func (t MessageText) String() string { return t.v }

// ClientMsgID is the sender's own id of a message, which makes sending it idempotent: 1 to 64
// printable ASCII characters.
type ClientMsgID struct{ v string }

// NewClientMsgID validates s.
func NewClientMsgID(s string) (ClientMsgID, error) {
	if s == "" {
		return ClientMsgID{}, errors.New("is required")
	}
	if len(s) > MaxClientMsgIDLen {
		return ClientMsgID{}, fmt.Errorf("must be at most %d characters", MaxClientMsgIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return ClientMsgID{}, errors.New("must be printable ASCII without spaces")
		}
	}
	return ClientMsgID{s}, nil
}

func (c ClientMsgID) String() string { return c.v }

// CreateDirectChat opens the one direct chat between the actor and MemberID (or finds it).
type CreateDirectChat struct {
	Actor    uuid.UUID
	MemberID uuid.UUID
}

// Validate implements bus.Validatable.
func (c CreateDirectChat) Validate() error {
	var f fields
	switch c.MemberID {
	case uuid.Nil:
		f.check("member_id", errors.New("is required"))
	case c.Actor:
		f.check("member_id", errors.New("must be another user"))
	}
	return Invalid(f)
}

// CreateGroupChat creates a group with the actor as its admin and MemberIDs as members.
type CreateGroupChat struct {
	Actor     uuid.UUID
	ChatID    uuid.UUID
	Title     string
	MemberIDs []uuid.UUID
}

// Validate implements bus.Validatable.
func (c CreateGroupChat) Validate() error {
	var f fields
	_, err := NewChatTitle(c.Title)
	f.check("title", err)
	if len(c.MemberIDs) > MaxInitialMembers {
		f.check("member_ids", fmt.Errorf("must list at most %d users", MaxInitialMembers))
	}
	for _, id := range c.MemberIDs {
		if id == uuid.Nil {
			f.check("member_ids", errors.New("must not contain the nil id"))
			break
		}
	}
	return Invalid(f)
}

// RenameChat changes a group's title (group admins only).
type RenameChat struct {
	Actor  uuid.UUID
	ChatID uuid.UUID
	Title  string
}

// Validate implements bus.Validatable.
func (c RenameChat) Validate() error {
	var f fields
	_, err := NewChatTitle(c.Title)
	f.check("title", err)
	return Invalid(f)
}

// AddChatMember adds UserID to a group (group admins only).
type AddChatMember struct {
	Actor  uuid.UUID
	ChatID uuid.UUID
	UserID uuid.UUID
}

// Validate implements bus.Validatable.
func (c AddChatMember) Validate() error {
	var f fields
	if c.UserID == uuid.Nil {
		f.check("user_id", errors.New("is required"))
	}
	return Invalid(f)
}

// RemoveChatMember removes UserID from a group: a group admin removing anyone, or a member leaving.
type RemoveChatMember struct {
	Actor  uuid.UUID
	ChatID uuid.UUID
	UserID uuid.UUID
}

// SendMessage appends a message to a chat the actor belongs to.
type SendMessage struct {
	Actor       uuid.UUID
	ChatID      uuid.UUID
	Text        string
	ClientMsgID string
}

// Validate implements bus.Validatable.
func (c SendMessage) Validate() error {
	var f fields
	_, err := NewMessageText(c.Text)
	f.check("text", err)
	_, err = NewClientMsgID(c.ClientMsgID)
	f.check("client_msg_id", err)
	return Invalid(f)
}

// EditMessage replaces the text of the actor's own message.
type EditMessage struct {
	Actor     uuid.UUID
	ChatID    uuid.UUID
	MessageID uuid.UUID
	Text      string
}

// Validate implements bus.Validatable.
func (c EditMessage) Validate() error {
	var f fields
	_, err := NewMessageText(c.Text)
	f.check("text", err)
	return Invalid(f)
}

// DeleteMessage tombstones a message: its sender's, or any in a group the actor administers.
type DeleteMessage struct {
	Actor     uuid.UUID
	ChatID    uuid.UUID
	MessageID uuid.UUID
}

// MarkChatRead moves the actor's read cursor in a chat forward to UpToSeq.
type MarkChatRead struct {
	Actor   uuid.UUID
	ChatID  uuid.UUID
	UpToSeq int64
}

// Validate implements bus.Validatable.
func (c MarkChatRead) Validate() error {
	var f fields
	if c.UpToSeq < 0 {
		f.check("up_to_seq", errors.New("must not be negative"))
	}
	return Invalid(f)
}

// SendTyping tells a chat's other members that the actor is typing. Nothing is stored.
type SendTyping struct {
	Actor  uuid.UUID
	ChatID uuid.UUID
}
