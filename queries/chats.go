package queries

import (
	"iter"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"

	"taki/commands"
)

// ChatsReadModel is the projection that serves chat and message queries.
const ChatsReadModel = "chats"

// ChatMember is a member as a chat shows it.
type ChatMember struct {
	UserID      uuid.UUID `json:"user_id"`
	Role        string    `json:"role"`
	LastReadSeq int64     `json:"last_read_seq"`
}

// Chat is API.md's chat object as one member (the caller) sees it: UnreadCount is the caller's.
type Chat struct {
	ID          uuid.UUID    `json:"id"`
	Type        string       `json:"type"`
	Title       string       `json:"title"`
	CreatedAt   time.Time    `json:"created_at"`
	Members     []ChatMember `json:"members"`
	LastSeq     int64        `json:"last_seq"`
	UnreadCount int64        `json:"unread_count"`
	LastMessage *Message     `json:"last_message"`
}

// Message is API.md's message object.
type Message struct {
	ID          uuid.UUID  `json:"id"`
	ChatID      uuid.UUID  `json:"chat_id"`
	Seq         int64      `json:"seq"`
	SenderID    uuid.UUID  `json:"sender_id"`
	Text        string     `json:"text"`
	ClientMsgID *string    `json:"client_msg_id"`
	SentAt      time.Time  `json:"sent_at"`
	EditedAt    *time.Time `json:"edited_at"`
	Deleted     bool       `json:"deleted"`
	ReadByCount int64      `json:"read_by_count"`
}

// CountReadBy is the definition of a message's read_by_count (API.md): among cursors, each member's
// last_read_seq, the members other than its sender whose cursor reached seq. It walks the cursors
// once, so the write side and the feed, which count one message at a time over a chat state's
// members, pay nothing beyond the walk. It stays small enough to inline: a caller's iterator literal
// then stays on the stack, and counting allocates nothing.
func CountReadBy(cursors iter.Seq2[uuid.UUID, int64], seq int64, sender uuid.UUID) int64 {
	var n int64
	for user, cursor := range cursors {
		if user != sender && hasRead(cursor, seq) {
			n++
		}
	}
	return n
}

// hasRead is the one test of whether a read cursor reached message seq: CountReadBy and
// ReadCursors' binary search both rest on it.
func hasRead(cursor, seq int64) bool { return cursor >= seq }

// ReadCursors are a chat's members' read cursors, ready to count read_by_count for a page of its
// messages faster than CountReadBy's walk per message; their counts must be equal.
type ReadCursors struct {
	byUser map[uuid.UUID]int64
	// sorted are the cursors ascending: a message's count is a binary search, not a walk over a big
	// group's every member for each message of a page.
	sorted []int64
}

// NewReadCursors takes each member's last_read_seq; it keeps byUser, which must not change after.
func NewReadCursors(byUser map[uuid.UUID]int64) ReadCursors {
	c := ReadCursors{byUser: byUser, sorted: make([]int64, 0, len(byUser))}
	for _, seq := range byUser {
		c.sorted = append(c.sorted, seq)
	}
	slices.Sort(c.sorted)
	return c
}

// Has reports whether user is a member.
func (c ReadCursors) Has(user uuid.UUID) bool {
	_, ok := c.byUser[user]
	return ok
}

// ReadByCount is CountReadBy(maps.All(byUser), seq, sender), found by binary search: the cursors that
// reached seq are a suffix of sorted, less the sender's own if it is among them.
func (c ReadCursors) ReadByCount(seq int64, sender uuid.UUID) int64 {
	n := int64(len(c.sorted) - sort.Search(len(c.sorted), func(i int) bool { return hasRead(c.sorted[i], seq) }))
	if s, ok := c.byUser[sender]; ok && hasRead(s, seq) {
		n--
	}
	return n
}

// MessagePage is a slice of a chat's history in ascending seq.
type MessagePage struct {
	Items   []Message `json:"items"`
	HasMore bool      `json:"has_more"`
}

// GetChat answers one chat to one of its members; anyone else gets not-found.
type GetChat struct {
	Actor  uuid.UUID
	ChatID uuid.UUID
}

// ReadModel implements bus.ReadModelQuery.
func (GetChat) ReadModel() string { return ChatsReadModel }

// ListChats lists the actor's chats, most recent activity first.
type ListChats struct {
	Actor  uuid.UUID
	Limit  int
	Cursor string
}

// ReadModel implements bus.ReadModelQuery.
func (ListChats) ReadModel() string { return ChatsReadModel }

// Validate implements bus.Validatable.
func (q ListChats) Validate() error {
	var f []commands.FieldError
	if q.Limit < 0 || q.Limit > MaxLimit {
		f = append(f, commands.FieldError{Field: "limit", Message: "must be between 1 and 200"})
	}
	if q.Cursor != "" {
		var c ChatCursor
		if err := DecodeCursor(q.Cursor, &c); err != nil {
			f = append(f, commands.FieldError{Field: "cursor", Message: err.Error()})
		}
	}
	return commands.Invalid(f)
}

// ChatCursor is the keyset position of a chat list: the last activity time and chat id after which
// the next page starts.
type ChatCursor struct {
	Activity time.Time `json:"a"`
	ID       uuid.UUID `json:"i"`
}

// ListMessages pages a chat's history for one of its members. With neither bound it answers the
// latest page; BeforeSeq pages backwards, AfterSeq forwards; items are always in ascending seq.
type ListMessages struct {
	Actor     uuid.UUID
	ChatID    uuid.UUID
	BeforeSeq *int64
	AfterSeq  *int64
	Limit     int
}

// ReadModel implements bus.ReadModelQuery.
func (ListMessages) ReadModel() string { return ChatsReadModel }

// Validate implements bus.Validatable.
func (q ListMessages) Validate() error {
	var f []commands.FieldError
	if q.Limit < 0 || q.Limit > MaxLimit {
		f = append(f, commands.FieldError{Field: "limit", Message: "must be between 1 and 200"})
	}
	if q.BeforeSeq != nil && *q.BeforeSeq < 1 {
		f = append(f, commands.FieldError{Field: "before_seq", Message: "must be at least 1"})
	}
	if q.AfterSeq != nil && *q.AfterSeq < 0 {
		f = append(f, commands.FieldError{Field: "after_seq", Message: "must not be negative"})
	}
	if q.BeforeSeq != nil && q.AfterSeq != nil && *q.AfterSeq >= *q.BeforeSeq {
		f = append(f, commands.FieldError{Field: "after_seq", Message: "must be below before_seq"})
	}
	return commands.Invalid(f)
}

// GetMessage answers one message of a chat to one of its members.
type GetMessage struct {
	Actor     uuid.UUID
	ChatID    uuid.UUID
	MessageID uuid.UUID
}

// ReadModel implements bus.ReadModelQuery.
func (GetMessage) ReadModel() string { return ChatsReadModel }
