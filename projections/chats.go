package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/queries"
)

// Chats is the chats projection: chats as each member sees them, their members' read cursors and
// unread counts, and their message histories.
type Chats struct {
	pool *pgxpool.Pool
}

// NewChats returns the chats projection on pool.
func NewChats(pool *pgxpool.Pool) (*Chats, error) {
	if pool == nil {
		return nil, errors.New("new chats projection: nil pool")
	}
	return &Chats{pool: pool}, nil
}

// Name implements postgres.Projection.
func (*Chats) Name() string { return queries.ChatsReadModel }

// Tables implements postgres.Projection.
func (*Chats) Tables() []string { return []string{"chats", "chat_members", "chat_messages"} }

// Apply implements postgres.Projection. Each event is one statement; each is safe to apply twice.
func (*Chats) Apply(b *pgx.Batch, e events.Envelope) error {
	switch ev := e.Data.(type) {
	case events.ChatCreated:
		ids := make([]uuid.UUID, len(ev.Members))
		roles := make([]string, len(ev.Members))
		for i, m := range ev.Members {
			ids[i], roles[i] = m.UserID, m.Role
		}
		b.Queue(`WITH c AS (
				INSERT INTO chats (id, type, title, created_at, last_seq, last_activity_at)
				VALUES ($1, $2, $3, $4, 0, $4) ON CONFLICT (id) DO NOTHING RETURNING id)
			INSERT INTO chat_members (chat_id, user_id, role, last_read_seq, excluded_count)
			SELECT c.id, m.user_id, m.role, 0, 0
			FROM c, unnest($5::uuid[], $6::text[]) AS m (user_id, role)
			ON CONFLICT (chat_id, user_id) DO NOTHING`,
			ev.ChatID, ev.Type, ev.Title, ev.CreatedAt, ids, roles)
	case events.ChatRenamed:
		b.Queue(`UPDATE chats SET title = $2 WHERE id = $1`, ev.ChatID, ev.Title)
	case events.ChatMemberAdded:
		// Unread is what the newcomer's cursor leaves unread: normally nothing, the cursor starts at the
		// chat's last seq. Excluded is whatever above the cursor is not unread (see unreadSQL).
		b.Queue(`INSERT INTO chat_members (chat_id, user_id, role, last_read_seq, excluded_count)
			SELECT c.id, $2, $3, $4, GREATEST(c.last_seq - $4, 0) -
				(SELECT count(*) FROM chat_messages x
					WHERE x.chat_id = c.id AND x.seq > $4 AND x.sender_id <> $2 AND NOT x.deleted)
			FROM chats c WHERE c.id = $1
			ON CONFLICT (chat_id, user_id) DO NOTHING`,
			ev.ChatID, ev.UserID, ev.Role, ev.LastReadSeq)
	case events.ChatMemberRemoved:
		b.Queue(`DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2`, ev.ChatID, ev.UserID)
	case events.MessageSent:
		// The last_seq guard makes a second application a no-op. A message writes its own row, its
		// chat's and its sender's (for whom it is not unread: unreadSQL), whatever the chat's size. The
		// message row needs its chat, as in ApplyAll.
		b.Queue(`WITH msg AS (
				INSERT INTO chat_messages (chat_id, seq, id, sender_id, text, client_msg_id, sent_at, format)
				SELECT $1, $2, $3, $4, $5, NULLIF($6, ''), $7, $8 FROM chats WHERE id = $1 AND last_seq < $2
				ON CONFLICT DO NOTHING),
			c AS (
				UPDATE chats SET last_seq = $2, last_activity_at = GREATEST(last_activity_at, $7)
				WHERE id = $1 AND last_seq < $2 RETURNING id)
			UPDATE chat_members m SET excluded_count = m.excluded_count + 1
			FROM c WHERE m.chat_id = c.id AND m.user_id = $4 AND m.last_read_seq < $2`,
			ev.ChatID, ev.Seq, ev.MessageID, ev.SenderID, ev.Text, ev.ClientMsgID, ev.SentAt, ev.Format)
	case events.MessageEdited:
		b.Queue(`UPDATE chat_messages SET text = $3, edited_at = $4
			WHERE chat_id = $1 AND seq = $2 AND NOT deleted`, ev.ChatID, ev.Seq, ev.Text, ev.EditedAt)
	case events.MessageDeleted:
		// A deleted message no longer counts as unread for the members who had not read it yet (for
		// its sender it never did).
		b.Queue(`WITH d AS (
				UPDATE chat_messages SET deleted = true, text = ''
				WHERE chat_id = $1 AND seq = $2 AND NOT deleted RETURNING sender_id)
			UPDATE chat_members m SET excluded_count = m.excluded_count + 1
			FROM d WHERE m.chat_id = $1 AND m.user_id <> d.sender_id AND m.last_read_seq < $2`,
			ev.ChatID, ev.Seq)
	case events.ChatRead:
		b.Queue(`UPDATE chat_members m SET last_read_seq = $3,
				excluded_count = GREATEST(c.last_seq - $3, 0) - (SELECT count(*) FROM chat_messages x
					WHERE x.chat_id = $1 AND x.seq > $3 AND x.sender_id <> $2 AND NOT x.deleted)
			FROM chats c
			WHERE c.id = $1 AND m.chat_id = $1 AND m.user_id = $2 AND m.last_read_seq < $3`,
			ev.ChatID, ev.UserID, ev.UpToSeq)
	}
	return nil
}

// ApplyAll implements postgres.BulkApplier. Most of a messenger's log is message.sent, and a batch
// applies all of its messages with one bulk statement: first the batch's chat creations (a chat's
// first event, which its messages need), then its messages, then every other event in log order, as
// Apply does. Events of different chats touch different rows, and within a chat the other events do
// not depend on which later messages are already there: an edit or a delete needs only its message;
// a read and a join set the cursor and count what is excluded above it from the messages present (the
// sender's own messages later in the log add to that count either way, see unreadSQL); a delete counts
// against the cursors as the reads and joins before it in the log left them.
func (c *Chats) ApplyAll(b *pgx.Batch, evs []events.Envelope) error {
	var created, rest []events.Envelope
	var sent []events.MessageSent
	for _, e := range evs {
		switch ev := e.Data.(type) {
		case events.ChatCreated:
			created = append(created, e)
		case events.MessageSent:
			sent = append(sent, ev)
		default:
			rest = append(rest, e)
		}
	}
	for _, e := range created {
		if err := c.Apply(b, e); err != nil {
			return err
		}
	}
	queueSentRun(b, sent)
	for _, e := range rest {
		if err := c.Apply(b, e); err != nil {
			return err
		}
	}
	return nil
}

// queueSentRun queues a run of message.sent in log order. As with Apply, a message applies to its chat
// and members only past the chat's last_seq, so a second application changes nothing.
func queueSentRun(b *pgx.Batch, run []events.MessageSent) {
	if len(run) == 0 {
		return
	}
	n := len(run)
	// [16]byte rather than uuid.UUID: pgx encodes the former natively, the latter through its
	// driver.Valuer string, which made encoding these arrays cost more than decoding the events.
	chats, ids, senders := make([][16]byte, n), make([][16]byte, n), make([][16]byte, n)
	seqs, texts, clients, sent := make([]int64, n), make([]string, n), make([]string, n), make([]time.Time, n)
	formats := make([]string, n)
	for i, m := range run {
		chats[i], seqs[i], ids[i], senders[i] = m.ChatID, m.Seq, m.MessageID, m.SenderID
		texts[i], clients[i], sent[i], formats[i] = m.Text, m.ClientMsgID, m.SentAt, m.Format
	}
	// A message past its chat's last_seq has not been applied yet: the chat's last_seq moves with its
	// messages in the same transaction. That guard, instead of ON CONFLICT, keeps a re-application a
	// no-op. The chats and the senders' member rows are updated once each, from the inserted rows
	// (RETURNING): all three parts see the snapshot the statement starts with. As in Apply, a sender's
	// message counts as excluded when it is above the sender's cursor.
	b.Queue(`WITH ins AS (
			INSERT INTO chat_messages (chat_id, seq, id, sender_id, text, client_msg_id, sent_at, format)
			SELECT r.chat_id, r.seq, r.id, r.sender_id, r.text, NULLIF(r.client_msg_id, ''), r.sent_at, r.format
			FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
				AS r (chat_id, seq, id, sender_id, text, client_msg_id, sent_at, format)
			JOIN chats c ON c.id = r.chat_id AND r.seq > c.last_seq
			RETURNING chat_id, seq, sender_id, sent_at),
		c AS (
			UPDATE chats c SET last_seq = f.seq, last_activity_at = GREATEST(c.last_activity_at, f.sent_at)
			FROM (SELECT chat_id, max(seq) AS seq, max(sent_at) AS sent_at FROM ins GROUP BY chat_id) f
			WHERE c.id = f.chat_id)
		UPDATE chat_members m SET excluded_count = m.excluded_count +
			(SELECT count(*) FROM unnest(u.seqs) AS s (seq) WHERE s.seq > m.last_read_seq)
		FROM (SELECT chat_id, sender_id, array_agg(seq) AS seqs FROM ins GROUP BY chat_id, sender_id) u
		WHERE m.chat_id = u.chat_id AND m.user_id = u.sender_id`, chats, seqs, ids, senders, texts, clients, sent, formats)
}

// unreadSQL is member m's unread count in chat c: the messages above its cursor (seqs are gapless)
// less those that are not unread for it, its own and others' deleted ones, which the projection counts
// in excluded_count as they come. A message thus writes no other member's row.
const unreadSQL = `c.last_seq - m.last_read_seq - m.excluded_count`

// chatColumns and chatJoins read chats (alias c) with their members, as parallel arrays, and their
// last message (alias lm, NULL columns before the first message). scanChat reads them.
const (
	chatColumns = `c.id, c.type, c.title, c.created_at, c.last_seq,
		mem.user_ids, mem.roles, mem.read_seqs, mem.unreads,
		lm.id, lm.seq, lm.sender_id, lm.text, lm.client_msg_id, lm.sent_at, lm.edited_at, lm.deleted`
	chatJoins = ` CROSS JOIN LATERAL (
			SELECT array_agg(m.user_id) AS user_ids, array_agg(m.role) AS roles,
				array_agg(m.last_read_seq) AS read_seqs, array_agg(` + unreadSQL + `) AS unreads
			FROM chat_members m WHERE m.chat_id = c.id) mem
		LEFT JOIN chat_messages lm ON lm.chat_id = c.id AND lm.seq = c.last_seq`
	messageColumns = `id, chat_id, seq, sender_id, text, client_msg_id, sent_at, edited_at, deleted`
)

// chatSQL reads one chat (by id) with its members and last message.
const chatSQL = `SELECT ` + chatColumns + ` FROM chats c` + chatJoins + ` WHERE c.id = $1`

// listChatsSQL reads the first page of a user's chats, most recent activity first; listChatsAfterSQL
// the page after a (last_activity_at, chat_id). The user's memberships come from chat_members_by_user
// and are ordered by their chats' activity: a page costs the same whatever its number, in proportion
// to the user's count of chats. Keeping the activity on every member row instead would let one index
// range answer, but would cost every message an indexed write per member (a thousand for a group of a
// thousand).
const (
	listChatsSQL      = listChatsHead + listChatsTail
	listChatsAfterSQL = listChatsHead + ` AND (c0.last_activity_at, c0.id) < ($3, $4)` + listChatsTail
	// OFFSET 0 keeps the planner from turning the per-membership key lookup into a scan of all chats.
	listChatsHead = `WITH page AS (
			SELECT c0.id AS chat_id, c0.last_activity_at FROM chat_members m0
			CROSS JOIN LATERAL (SELECT id, last_activity_at FROM chats WHERE id = m0.chat_id OFFSET 0) c0
			WHERE m0.user_id = $1`
	listChatsTail = `
			ORDER BY c0.last_activity_at DESC, c0.id DESC LIMIT $2)
		SELECT p.last_activity_at, ` + chatColumns + `
		FROM page p JOIN chats c ON c.id = p.chat_id` + chatJoins + `
		ORDER BY p.last_activity_at DESC, p.chat_id DESC`
)

// membersSQL reads a chat's read cursors, for read_by_count and the membership check.
const membersSQL = `SELECT user_id, last_read_seq FROM chat_members WHERE chat_id = $1`

// History pages: primary-key range scans on (chat_id, seq). Each reads one row past the limit to
// answer has_more.
const (
	latestMessagesSQL  = `SELECT ` + messageColumns + ` FROM chat_messages WHERE chat_id = $1 ORDER BY seq DESC LIMIT $2`
	beforeMessagesSQL  = `SELECT ` + messageColumns + ` FROM chat_messages WHERE chat_id = $1 AND seq < $3 ORDER BY seq DESC LIMIT $2`
	afterMessagesSQL   = `SELECT ` + messageColumns + ` FROM chat_messages WHERE chat_id = $1 AND seq > $3 ORDER BY seq LIMIT $2`
	betweenMessagesSQL = `SELECT ` + messageColumns + ` FROM chat_messages WHERE chat_id = $1 AND seq > $3 AND seq < $4 ORDER BY seq LIMIT $2`
	messageByIDSQL     = `SELECT ` + messageColumns + ` FROM chat_messages WHERE id = $2 AND chat_id = $1`
)

// chatRow is a chat with all its members, before it is shown to one of them.
type chatRow struct {
	chat   queries.Chat // Members sorted; UnreadCount unset
	unread map[uuid.UUID]int64
}

// scanChat reads chatColumns (after any leading destinations).
func scanChat(row pgx.Row, lead ...any) (chatRow, error) {
	var (
		r                  chatRow
		ids                []uuid.UUID
		roles              []string
		reads, unreads     []int64
		lmID, lmSender     *uuid.UUID
		lmSeq              *int64
		lmText, lmClient   *string
		lmSentAt, lmEdited *time.Time
		lmDeleted          *bool
	)
	c := &r.chat
	dst := append(lead, &c.ID, &c.Type, &c.Title, &c.CreatedAt, &c.LastSeq, &ids, &roles, &reads, &unreads,
		&lmID, &lmSeq, &lmSender, &lmText, &lmClient, &lmSentAt, &lmEdited, &lmDeleted)
	if err := row.Scan(dst...); err != nil {
		return r, err
	}
	if len(roles) != len(ids) || len(reads) != len(ids) || len(unreads) != len(ids) {
		return r, fmt.Errorf("chat %s: member arrays of different lengths", c.ID)
	}
	c.Members = make([]queries.ChatMember, len(ids))
	r.unread = make(map[uuid.UUID]int64, len(ids))
	for i, id := range ids {
		c.Members[i] = queries.ChatMember{UserID: id, Role: roles[i], LastReadSeq: reads[i]}
		r.unread[id] = unreads[i]
	}
	// Admins first ("admin" < "member"), then by user id: the same order on every read.
	slices.SortFunc(c.Members, func(a, b queries.ChatMember) int {
		if n := cmp.Compare(a.Role, b.Role); n != 0 {
			return n
		}
		return slices.Compare(a.UserID[:], b.UserID[:])
	})
	if lmID != nil {
		m := &queries.Message{
			ID: *lmID, ChatID: c.ID, Seq: *lmSeq, SenderID: *lmSender, Text: *lmText,
			ClientMsgID: clientMsgID(lmClient), SentAt: *lmSentAt, EditedAt: lmEdited, Deleted: *lmDeleted,
		}
		m.ReadByCount = cursorsOf(c.Members).ReadByCount(m.Seq, m.SenderID)
		c.LastMessage = m
	}
	return r, nil
}

// as returns the chat as member user sees it, false if user is not a member. The views of one row
// share its Members and LastMessage: a group's thousand views must not cost a million member copies.
func (r chatRow) as(user uuid.UUID) (queries.Chat, bool) {
	unread, ok := r.unread[user]
	if !ok {
		return queries.Chat{}, false
	}
	c := r.chat
	c.UnreadCount = unread
	return c, true
}

// Chat reads a chat as actor sees it; false if it does not exist or actor is not a member.
func (p *Chats) Chat(ctx context.Context, actor, chatID uuid.UUID) (queries.Chat, bool, error) {
	m, err := p.ChatsFor(ctx, chatID, []uuid.UUID{actor})
	if err != nil {
		return queries.Chat{}, false, err
	}
	c, ok := m[actor]
	return c, ok, nil
}

// ChatsFor reads a chat as each of userIDs sees it, in one query whatever their number. Users who are
// not members are absent from the map. The chats share their Members and LastMessage: read-only.
func (p *Chats) ChatsFor(ctx context.Context, chatID uuid.UUID, userIDs []uuid.UUID) (map[uuid.UUID]queries.Chat, error) {
	out := make(map[uuid.UUID]queries.Chat, len(userIDs))
	r, err := scanChat(p.pool.QueryRow(ctx, chatSQL, chatID))
	if errors.Is(err, pgx.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read chat %s: %w", chatID, err)
	}
	for _, u := range userIDs {
		if c, ok := r.as(u); ok {
			out[u] = c
		}
	}
	return out, nil
}

// ListChats lists actor's chats, most recent activity first (ties by chat id, descending), keyset-paged
// after the given position, in one query. The cursor is nil on the last page.
func (p *Chats) ListChats(ctx context.Context, actor uuid.UUID, after *queries.ChatCursor, limit int) ([]queries.Chat, *queries.ChatCursor, error) {
	limit = clampLimit(limit)
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = p.pool.Query(ctx, listChatsSQL, actor, limit+1)
	} else {
		rows, err = p.pool.Query(ctx, listChatsAfterSQL, actor, limit+1, after.Activity, after.ID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list chats of %s: %w", actor, err)
	}
	defer rows.Close()
	out := make([]queries.Chat, 0, limit)
	var last queries.ChatCursor
	more := false
	for rows.Next() {
		if len(out) == limit {
			more = true
			break
		}
		var activity time.Time
		r, err := scanChat(rows, &activity)
		if err != nil {
			return nil, nil, fmt.Errorf("list chats of %s: %w", actor, err)
		}
		c, ok := r.as(actor)
		if !ok { // cannot happen: the page comes from actor's member rows in the same snapshot
			continue
		}
		out = append(out, c)
		last = queries.ChatCursor{Activity: activity, ID: c.ID}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list chats of %s: %w", actor, err)
	}
	if !more {
		return out, nil, nil
	}
	return out, &last, nil
}

// Messages reads a page of a chat's history for actor; false if actor is not a member. Without bounds
// it answers the latest limit messages; with before, the limit messages just below it; with after, the
// limit just above it; with both, the first limit between them. Items are in ascending seq; HasMore
// says whether more messages lie beyond the page in the direction it was read (older ones without
// bounds or with only before, newer ones otherwise).
func (p *Chats) Messages(ctx context.Context, actor, chatID uuid.UUID, before, after *int64, limit int) (queries.MessagePage, bool, error) {
	limit = clampLimit(limit)
	var sql string
	args := []any{chatID, limit + 1}
	descending := false
	switch {
	case before == nil && after == nil:
		sql, descending = latestMessagesSQL, true
	case after == nil:
		sql, descending = beforeMessagesSQL, true
		args = append(args, *before)
	case before == nil:
		sql = afterMessagesSQL
		args = append(args, *after)
	default:
		sql = betweenMessagesSQL
		args = append(args, *after, *before)
	}
	page := queries.MessagePage{Items: make([]queries.Message, 0, limit)}
	var cur queries.ReadCursors
	b := &pgx.Batch{}
	b.Queue(membersSQL, chatID).Query(func(rows pgx.Rows) error {
		var err error
		cur, err = scanCursors(rows)
		return err
	})
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		var err error
		page.Items, err = scanMessages(rows, page.Items)
		return err
	})
	if err := p.pool.SendBatch(ctx, b).Close(); err != nil {
		return queries.MessagePage{}, false, fmt.Errorf("read messages of chat %s: %w", chatID, err)
	}
	if !cur.Has(actor) {
		return queries.MessagePage{}, false, nil
	}
	if len(page.Items) > limit {
		page.HasMore = true
		page.Items = page.Items[:limit]
	}
	if descending {
		slices.Reverse(page.Items)
	}
	for i := range page.Items {
		m := &page.Items[i]
		m.ReadByCount = cur.ReadByCount(m.Seq, m.SenderID)
	}
	return page, true, nil
}

// Message reads one message of a chat by id, with its read_by_count. It does not check membership:
// the caller did.
func (p *Chats) Message(ctx context.Context, chatID, messageID uuid.UUID) (queries.Message, bool, error) {
	m, _, ok, err := p.message(ctx, chatID, messageID)
	return m, ok, err
}

// MessageFor reads one message of a chat by id for actor; false if actor is not a member or the
// chat has no such message.
func (p *Chats) MessageFor(ctx context.Context, actor, chatID, messageID uuid.UUID) (queries.Message, bool, error) {
	m, cur, ok, err := p.message(ctx, chatID, messageID)
	if err != nil || !ok || !cur.Has(actor) {
		return queries.Message{}, false, err
	}
	return m, true, nil
}

func (p *Chats) message(ctx context.Context, chatID, messageID uuid.UUID) (queries.Message, queries.ReadCursors, bool, error) {
	var cur queries.ReadCursors
	var found []queries.Message
	b := &pgx.Batch{}
	b.Queue(membersSQL, chatID).Query(func(rows pgx.Rows) error {
		var err error
		cur, err = scanCursors(rows)
		return err
	})
	b.Queue(messageByIDSQL, chatID, messageID).Query(func(rows pgx.Rows) error {
		var err error
		found, err = scanMessages(rows, nil)
		return err
	})
	if err := p.pool.SendBatch(ctx, b).Close(); err != nil {
		return queries.Message{}, cur, false, fmt.Errorf("read message %s of chat %s: %w", messageID, chatID, err)
	}
	if len(found) == 0 {
		return queries.Message{}, cur, false, nil
	}
	m := found[0]
	m.ReadByCount = cur.ReadByCount(m.Seq, m.SenderID)
	return m, cur, true, nil
}

// scanMessages appends the rows of messageColumns to dst.
func scanMessages(rows pgx.Rows, dst []queries.Message) ([]queries.Message, error) {
	defer rows.Close()
	for rows.Next() {
		var m queries.Message
		var client *string
		if err := rows.Scan(&m.ID, &m.ChatID, &m.Seq, &m.SenderID, &m.Text, &client, &m.SentAt, &m.EditedAt, &m.Deleted); err != nil {
			return dst, err
		}
		m.ClientMsgID = clientMsgID(client)
		dst = append(dst, m)
	}
	return dst, rows.Err()
}

func clientMsgID(s *string) *string {
	if s == nil || *s == "" {
		return nil
	}
	v := *s
	return &v
}

// scanCursors reads the rows of membersSQL.
func scanCursors(rows pgx.Rows) (queries.ReadCursors, error) {
	defer rows.Close()
	byUser := map[uuid.UUID]int64{}
	for rows.Next() {
		var id uuid.UUID
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return queries.ReadCursors{}, err
		}
		byUser[id] = seq
	}
	return queries.NewReadCursors(byUser), rows.Err()
}

func cursorsOf(members []queries.ChatMember) queries.ReadCursors {
	byUser := make(map[uuid.UUID]int64, len(members))
	for _, m := range members {
		byUser[m.UserID] = m.LastReadSeq
	}
	return queries.NewReadCursors(byUser)
}

func clampLimit(limit int) int {
	if limit <= 0 {
		return queries.DefaultLimit
	}
	return min(limit, queries.MaxLimit)
}
