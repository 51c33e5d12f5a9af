package projections

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
	"taki/queries"
)

// chatsFixture applies events to the chats projection the way the projector does: Apply queues
// statements on a batch that is sent in a transaction.
type chatsFixture struct {
	t     *testing.T
	pool  *pgxpool.Pool
	chats *Chats
	// twice applies every event twice in a row (idempotency).
	twice bool
	seqs  map[uuid.UUID]int64
}

var chatsT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newChatsFixture(t *testing.T, url string) *chatsFixture {
	t.Helper()
	pool := pgtest.NewPool(t, url)
	c, err := NewChats(pool)
	if err != nil {
		t.Fatal(err)
	}
	return &chatsFixture{t: t, pool: pool, chats: c, seqs: map[uuid.UUID]int64{}}
}

func (f *chatsFixture) apply(evs ...events.Event) {
	f.t.Helper()
	ctx := context.Background()
	b := &pgx.Batch{}
	for _, ev := range evs {
		for range 1 + btoi(f.twice) {
			if err := f.chats.Apply(b, events.Envelope{ID: uuid.New(), Type: ev.EventType(), Data: ev}); err != nil {
				f.t.Fatalf("apply %s: %v", ev.EventType(), err)
			}
		}
	}
	if err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		f.t.Fatalf("send batch: %v", err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func at(sec int) time.Time { return chatsT0.Add(time.Duration(sec) * time.Second) }

func group(chatID uuid.UUID, created time.Time, admin uuid.UUID, members ...uuid.UUID) events.ChatCreated {
	ms := []events.ChatMember{{UserID: admin, Role: events.ChatRoleAdmin}}
	for _, m := range members {
		ms = append(ms, events.ChatMember{UserID: m, Role: events.ChatRoleMember})
	}
	return events.ChatCreated{ChatID: chatID, Type: events.ChatGroup, Title: "g", CreatedBy: admin, Members: ms, CreatedAt: created}
}

// send makes the chat's next message.
func (f *chatsFixture) send(chatID, sender uuid.UUID, sent time.Time, text, clientID string) events.MessageSent {
	f.seqs[chatID]++
	return events.MessageSent{ChatID: chatID, MessageID: uuid.New(), Seq: f.seqs[chatID], SenderID: sender,
		Text: text, ClientMsgID: clientID, SentAt: sent}
}

func deleted(m events.MessageSent, by uuid.UUID, when time.Time) events.MessageDeleted {
	return events.MessageDeleted{ChatID: m.ChatID, MessageID: m.MessageID, Seq: m.Seq, SenderID: m.SenderID,
		ClientMsgID: m.ClientMsgID, SentAt: m.SentAt, DeletedBy: by, DeletedAt: when}
}

func edited(m events.MessageSent, text string, when time.Time) events.MessageEdited {
	return events.MessageEdited{ChatID: m.ChatID, MessageID: m.MessageID, Seq: m.Seq, SenderID: m.SenderID,
		Text: text, ClientMsgID: m.ClientMsgID, SentAt: m.SentAt, EditedAt: when}
}

func read(chatID, user uuid.UUID, upTo int64) events.ChatRead {
	return events.ChatRead{ChatID: chatID, UserID: user, UpToSeq: upTo}
}

func (f *chatsFixture) chat(actor, chatID uuid.UUID) queries.Chat {
	f.t.Helper()
	c, ok, err := f.chats.Chat(context.Background(), actor, chatID)
	if err != nil {
		f.t.Fatal(err)
	}
	if !ok {
		f.t.Fatalf("chat %s not visible to %s", chatID, actor)
	}
	return c
}

func (f *chatsFixture) unread(actor, chatID uuid.UUID) int64 {
	f.t.Helper()
	return f.chat(actor, chatID).UnreadCount
}

func (f *chatsFixture) history(actor, chatID uuid.UUID, before, after *int64, limit int) queries.MessagePage {
	f.t.Helper()
	p, ok, err := f.chats.Messages(context.Background(), actor, chatID, before, after, limit)
	if err != nil {
		f.t.Fatal(err)
	}
	if !ok {
		f.t.Fatalf("history of %s not visible to %s", chatID, actor)
	}
	return p
}

func readBys(p queries.MessagePage) []int64 {
	out := make([]int64, len(p.Items))
	for i, m := range p.Items {
		out[i] = m.ReadByCount
	}
	return out
}

func seqsOf(p queries.MessagePage) []int64 {
	out := make([]int64, len(p.Items))
	for i, m := range p.Items {
		out[i] = m.Seq
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestNewChatsRefusesNilPool(t *testing.T) {
	if _, err := NewChats(nil); err == nil {
		t.Fatal("NewChats(nil) succeeded")
	}
}

func TestChatsUnreadReadByAndTombstones(t *testing.T) {
	f := newChatsFixture(t, dbURL)
	ctx := context.Background()
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	g := uuid.New()
	m1 := f.send(g, a, at(1), "one", "c-1")
	m2 := f.send(g, a, at(2), "two", "")
	m3 := f.send(g, a, at(3), "three", "c-3")
	f.apply(group(g, at(0), a, b, c), m1, m2, m3)

	cb := f.chat(b, g)
	if cb.UnreadCount != 3 || cb.LastSeq != 3 || cb.Type != events.ChatGroup || cb.Title != "g" || !cb.CreatedAt.Equal(at(0)) {
		t.Fatalf("B's chat = %+v", cb)
	}
	if cb.LastMessage == nil || cb.LastMessage.Seq != 3 || cb.LastMessage.Text != "three" || cb.LastMessage.ReadByCount != 0 ||
		cb.LastMessage.ClientMsgID == nil || *cb.LastMessage.ClientMsgID != "c-3" || cb.LastMessage.ID != m3.MessageID {
		t.Fatalf("last message = %+v", cb.LastMessage)
	}
	wantMembers := []queries.ChatMember{{UserID: b, Role: "member"}, {UserID: c, Role: "member"}}
	slices.SortFunc(wantMembers, func(x, y queries.ChatMember) int { return bytes.Compare(x.UserID[:], y.UserID[:]) })
	wantMembers = append([]queries.ChatMember{{UserID: a, Role: "admin"}}, wantMembers...)
	if !slices.Equal(cb.Members, wantMembers) {
		t.Fatalf("members = %+v, want %+v", cb.Members, wantMembers)
	}
	if n := f.unread(a, g); n != 0 {
		t.Fatalf("sender's unread = %d", n)
	}

	f.apply(read(g, b, 2))
	if n := f.unread(b, g); n != 1 {
		t.Fatalf("B's unread after reading 2 = %d", n)
	}
	if got := readBys(f.history(a, g, nil, nil, 0)); !slices.Equal(got, []int64{1, 1, 0}) {
		t.Fatalf("read_by = %v", got)
	}
	f.apply(read(g, c, 3))
	if got := readBys(f.history(a, g, nil, nil, 0)); !slices.Equal(got, []int64{2, 2, 1}) {
		t.Fatalf("read_by = %v", got)
	}
	if n := f.unread(c, g); n != 0 {
		t.Fatalf("C's unread = %d", n)
	}

	// Deleting an unread message takes it out of the unread counts of those who had not read it.
	f.apply(deleted(m3, a, at(4)))
	if n := f.unread(b, g); n != 0 {
		t.Fatalf("B's unread after delete = %d", n)
	}
	p := f.history(b, g, nil, nil, 0)
	if last := p.Items[2]; !last.Deleted || last.Text != "" || last.ReadByCount != 1 || *last.ClientMsgID != "c-3" {
		t.Fatalf("tombstone = %+v", last)
	}
	if lm := f.chat(a, g).LastMessage; !lm.Deleted || lm.Text != "" {
		t.Fatalf("last message after delete = %+v", lm)
	}
	if p.Items[1].ClientMsgID != nil {
		t.Fatalf("empty client_msg_id = %q, want nil", *p.Items[1].ClientMsgID)
	}

	// B answers: its own message is not unread for B, it is for A and C.
	m4 := f.send(g, b, at(5), "four", "")
	f.apply(m4)
	for user, want := range map[uuid.UUID]int64{a: 1, b: 0, c: 1} {
		if n := f.unread(user, g); n != want {
			t.Fatalf("unread of %s = %d, want %d", user, n, want)
		}
	}
	f.apply(read(g, a, 4))
	if got := readBys(f.history(c, g, nil, nil, 0)); !slices.Equal(got, []int64{2, 2, 1, 1}) {
		t.Fatalf("read_by = %v", got) // m3: C read it, B not; m4: A read it, B is its sender
	}

	// Edit, then delete, then a late edit that must not resurrect the text.
	f.apply(edited(m2, "two!", at(6)))
	m, ok, err := f.chats.Message(ctx, g, m2.MessageID)
	if err != nil || !ok || m.Text != "two!" || m.EditedAt == nil || !m.EditedAt.Equal(at(6)) || m.Deleted || m.ReadByCount != 2 || m.ClientMsgID != nil {
		t.Fatalf("edited message = %+v, %v, %v", m, ok, err)
	}
	f.apply(deleted(m2, a, at(7)), edited(m2, "again", at(8)))
	m, _, _ = f.chats.Message(ctx, g, m2.MessageID)
	if m.Text != "" || !m.Deleted || m.EditedAt == nil || !m.EditedAt.Equal(at(6)) {
		t.Fatalf("deleted message = %+v", m)
	}
	if n := f.unread(c, g); n != 1 { // m2 was read by C already: its deletion changes nothing
		t.Fatalf("C's unread = %d", n)
	}

	// A read recomputes unread without deleted messages; a read cursor never moves back.
	m5 := f.send(g, a, at(9), "five", "")
	m6 := f.send(g, a, at(10), "six", "")
	f.apply(m5, m6, deleted(m5, a, at(11)))
	if n := f.unread(c, g); n != 2 { // m4, m6
		t.Fatalf("C's unread = %d", n)
	}
	f.apply(read(g, c, 4))
	if n := f.unread(c, g); n != 1 { // m6
		t.Fatalf("C's unread after reading 4 = %d", n)
	}
	f.apply(read(g, c, 2))
	if cc := f.chat(c, g); cc.UnreadCount != 1 || memberOf(cc, c).LastReadSeq != 4 {
		t.Fatalf("after a stale read: %+v", cc)
	}

	// Message by id: within its chat only.
	if _, ok, err := f.chats.Message(ctx, uuid.New(), m1.MessageID); err != nil || ok {
		t.Fatalf("message in another chat: %v, %v", ok, err)
	}
	if m, ok, err := f.chats.MessageFor(ctx, b, g, m1.MessageID); err != nil || !ok || m.Text != "one" || m.ReadByCount != 2 {
		t.Fatalf("MessageFor member = %+v, %v, %v", m, ok, err)
	}

	// A non-member sees nothing.
	if _, ok, err := f.chats.Chat(ctx, d, g); err != nil || ok {
		t.Fatalf("Chat for non-member: %v, %v", ok, err)
	}
	if _, ok, err := f.chats.Messages(ctx, d, g, nil, nil, 10); err != nil || ok {
		t.Fatalf("Messages for non-member: %v, %v", ok, err)
	}
	if _, ok, err := f.chats.MessageFor(ctx, d, g, m1.MessageID); err != nil || ok {
		t.Fatalf("MessageFor non-member: %v, %v", ok, err)
	}
	if _, ok, err := f.chats.Chat(ctx, a, uuid.New()); err != nil || ok {
		t.Fatalf("Chat of a missing chat: %v, %v", ok, err)
	}

	// ChatsFor: each member's own unread count, the same as Chat answers; non-members absent.
	all, err := f.chats.ChatsFor(ctx, g, []uuid.UUID{a, b, c, d})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("ChatsFor has %d chats, want 3", len(all))
	}
	for _, u := range []uuid.UUID{a, b, c} {
		one := f.chat(u, g)
		got := all[u]
		if got.UnreadCount != one.UnreadCount || !slices.Equal(got.Members, one.Members) || got.LastSeq != 6 ||
			got.LastMessage == nil || *got.LastMessage != *one.LastMessage {
			t.Fatalf("ChatsFor[%s] = %+v, Chat = %+v", u, got, one)
		}
	}
	if all[a].UnreadCount != 0 || all[b].UnreadCount != 1 || all[c].UnreadCount != 1 {
		t.Fatalf("unread counts: a %d b %d c %d", all[a].UnreadCount, all[b].UnreadCount, all[c].UnreadCount)
	}
	if m, err := f.chats.ChatsFor(ctx, uuid.New(), []uuid.UUID{a}); err != nil || len(m) != 0 {
		t.Fatalf("ChatsFor a missing chat: %v, %v", m, err)
	}
}

func memberOf(c queries.Chat, user uuid.UUID) queries.ChatMember {
	for _, m := range c.Members {
		if m.UserID == user {
			return m
		}
	}
	return queries.ChatMember{}
}

func TestChatsHistoryPaging(t *testing.T) {
	f := newChatsFixture(t, dbURL)
	a, b := uuid.New(), uuid.New()
	g := uuid.New()
	evs := []events.Event{events.ChatCreated{ChatID: g, Type: events.ChatDirect, CreatedBy: a, CreatedAt: at(0),
		Members: []events.ChatMember{{UserID: a, Role: events.ChatRoleMember}, {UserID: b, Role: events.ChatRoleMember}}}}
	f.apply(evs...)
	if p := f.history(a, g, nil, nil, 5); p.Items == nil || len(p.Items) != 0 || p.HasMore {
		t.Fatalf("empty history = %+v", p)
	}
	for i := range 10 {
		f.apply(f.send(g, a, at(i+1), fmt.Sprint("m", i+1), ""))
	}
	f.apply(read(g, b, 4))
	seqs := func(from, to int64) []int64 {
		var s []int64
		for i := from; i <= to; i++ {
			s = append(s, i)
		}
		return s
	}
	for _, tc := range []struct {
		name          string
		before, after *int64
		limit         int
		want          []int64
		more          bool
	}{
		{"latest", nil, nil, 3, seqs(8, 10), true},
		{"latest, all", nil, nil, 10, seqs(1, 10), false},
		{"latest, more than all", nil, nil, 20, seqs(1, 10), false},
		{"latest, default limit", nil, nil, 0, seqs(1, 10), false},
		{"before 8", ptr[int64](8), nil, 3, seqs(5, 7), true},
		{"before 4, exactly the rest", ptr[int64](4), nil, 3, seqs(1, 3), false},
		{"before 3, fewer than limit", ptr[int64](3), nil, 3, seqs(1, 2), false},
		{"before 1", ptr[int64](1), nil, 3, nil, false},
		{"before past the end", ptr[int64](100), nil, 2, seqs(9, 10), true},
		{"after 0", nil, ptr[int64](0), 4, seqs(1, 4), true},
		{"after 6", nil, ptr[int64](6), 3, seqs(7, 9), true},
		{"after 7, exactly the rest", nil, ptr[int64](7), 3, seqs(8, 10), false},
		{"after 10", nil, ptr[int64](10), 3, nil, false},
		{"between 2 and 9", ptr[int64](9), ptr[int64](2), 3, seqs(3, 5), true},
		{"between 2 and 6", ptr[int64](6), ptr[int64](2), 3, seqs(3, 5), false},
		{"between 2 and 5", ptr[int64](5), ptr[int64](2), 3, seqs(3, 4), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := f.history(b, g, tc.before, tc.after, tc.limit)
			if got := seqsOf(p); !slices.Equal(got, tc.want) || p.HasMore != tc.more {
				t.Fatalf("seqs %v has_more %v, want %v %v", got, p.HasMore, tc.want, tc.more)
			}
			if p.Items == nil {
				t.Fatal("items is nil, want an empty slice")
			}
			for _, m := range p.Items {
				if want := int64(btoi(m.Seq <= 4)); m.ReadByCount != want || m.Text != fmt.Sprint("m", m.Seq) ||
					m.ChatID != g || m.SenderID != a || !m.SentAt.Equal(at(int(m.Seq))) {
					t.Fatalf("message %+v (want read_by %d)", m, want)
				}
			}
		})
	}
	// Paging backwards from the latest page walks the whole history once.
	var all []int64
	p := f.history(a, g, nil, nil, 3)
	for {
		all = append(seqsOf(p), all...)
		if !p.HasMore {
			break
		}
		p = f.history(a, g, &p.Items[0].Seq, nil, 3)
	}
	if !slices.Equal(all, seqs(1, 10)) {
		t.Fatalf("backwards walk = %v", all)
	}
	all = nil
	for after := int64(0); ; {
		p := f.history(a, g, nil, &after, 4)
		all = append(all, seqsOf(p)...)
		if !p.HasMore {
			break
		}
		after = p.Items[len(p.Items)-1].Seq
	}
	if !slices.Equal(all, seqs(1, 10)) {
		t.Fatalf("forwards walk = %v", all)
	}
}

// chatModel is what the list order should be: activity descending, then chat id descending.
type chatModel struct {
	id       uuid.UUID
	activity time.Time
}

func wantOrder(cs []chatModel) []uuid.UUID {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(x, y chatModel) int {
		if c := y.activity.Compare(x.activity); c != 0 {
			return c
		}
		return bytes.Compare(y.id[:], x.id[:])
	})
	out := make([]uuid.UUID, len(cs))
	for i, c := range cs {
		out[i] = c.id
	}
	return out
}

func (f *chatsFixture) listAll(user uuid.UUID, limit int) ([]uuid.UUID, int) {
	f.t.Helper()
	var ids []uuid.UUID
	var after *queries.ChatCursor
	pages := 0
	for {
		items, next, err := f.chats.ListChats(context.Background(), user, after, limit)
		if err != nil {
			f.t.Fatal(err)
		}
		pages++
		if len(items) > limit || (next != nil && len(items) != limit) {
			f.t.Fatalf("page of %d items with limit %d, next %v", len(items), limit, next)
		}
		for _, c := range items {
			ids = append(ids, c.ID)
		}
		if next == nil {
			return ids, pages
		}
		// The cursor goes through its opaque form, as clients see it.
		var decoded queries.ChatCursor
		if err := queries.DecodeCursor(*queries.EncodeCursor(next), &decoded); err != nil {
			f.t.Fatal(err)
		}
		after = &decoded
		if pages > 100 {
			f.t.Fatal("paging does not end")
		}
	}
}

func TestChatsListOrderKeysetPagingAndMembership(t *testing.T) {
	f := newChatsFixture(t, dbURL)
	ctx := context.Background()
	u, v, w := uuid.New(), uuid.New(), uuid.New()
	var model []chatModel
	var evs []events.Event
	// Seven chats created at the same instant (ties broken by chat id), two later.
	for i := range 9 {
		id := uuid.New()
		created := at(0)
		if i >= 7 {
			created = at(i)
		}
		evs = append(evs, group(id, created, v, u))
		model = append(model, chatModel{id, created})
	}
	// Messages move chats up; two get the same sent time.
	for _, i := range []int{2, 5} {
		evs = append(evs, f.send(model[i].id, v, at(20), "hi", ""))
		model[i].activity = at(20)
	}
	evs = append(evs, f.send(model[0].id, u, at(15), "hey", ""))
	model[0].activity = at(15)
	// A chat of others only.
	evs = append(evs, group(uuid.New(), at(30), v, w))
	f.apply(evs...)

	want := wantOrder(model)
	for _, limit := range []int{1, 2, 3, 4, 8, 9, 10, 200} {
		got, pages := f.listAll(u, limit)
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: order\n%v\nwant\n%v", limit, got, want)
		}
		if wantPages := max(1, (len(want)+limit-1)/limit); pages != wantPages {
			t.Fatalf("limit %d: %d pages", limit, pages)
		}
	}
	items, next, err := f.chats.ListChats(ctx, u, nil, 9)
	if err != nil || next != nil || len(items) != 9 {
		t.Fatalf("exact page: %d items, next %v, err %v", len(items), next, err)
	}
	for _, c := range items {
		wantUnread := int64(0)
		if c.ID == model[2].id || c.ID == model[5].id {
			wantUnread = 1
		}
		if c.UnreadCount != wantUnread || len(c.Members) != 2 || (c.LastSeq > 0) != (c.LastMessage != nil) {
			t.Fatalf("listed chat %+v", c)
		}
	}
	if items, next, err := f.chats.ListChats(ctx, uuid.New(), nil, 5); err != nil || len(items) != 0 || items == nil || next != nil {
		t.Fatalf("list of a user without chats: %v, %v, %v", items, next, err)
	}

	// Removal hides the chat from the list, Chat and history; the others still see the member gone.
	gone := model[2].id
	f.apply(events.ChatMemberRemoved{ChatID: gone, UserID: u, RemovedBy: v})
	model = slices.DeleteFunc(model, func(c chatModel) bool { return c.id == gone })
	if got, _ := f.listAll(u, 3); !slices.Equal(got, wantOrder(model)) {
		t.Fatalf("after removal: %v", got)
	}
	if _, ok, err := f.chats.Chat(ctx, u, gone); err != nil || ok {
		t.Fatalf("Chat after removal: %v, %v", ok, err)
	}
	if _, ok, err := f.chats.Messages(ctx, u, gone, nil, nil, 10); err != nil || ok {
		t.Fatalf("Messages after removal: %v, %v", ok, err)
	}
	if c := f.chat(v, gone); len(c.Members) != 1 || c.LastMessage.ReadByCount != 0 {
		t.Fatalf("chat after removal as the admin sees it: %+v", c)
	}

	// Added back with the cursor at the last seq: nothing unread, the chat keeps its activity; newer
	// messages count.
	f.apply(events.ChatMemberAdded{ChatID: gone, UserID: u, Role: events.ChatRoleMember, AddedBy: v, LastReadSeq: 1, At: at(40)})
	if c := f.chat(u, gone); c.UnreadCount != 0 || memberOf(c, u).LastReadSeq != 1 || c.LastMessage.ReadByCount != 1 {
		t.Fatalf("re-added: %+v", c)
	}
	model = append(model, chatModel{gone, at(20)})
	if got, _ := f.listAll(u, 4); !slices.Equal(got, wantOrder(model)) {
		t.Fatalf("after re-adding: %v", got)
	}
	f.apply(f.send(gone, v, at(50), "back", ""))
	model[len(model)-1].activity = at(50)
	if got, _ := f.listAll(u, 2); !slices.Equal(got, wantOrder(model)) || got[0] != gone {
		t.Fatalf("after a new message: %v", got)
	}
	if n := f.unread(u, gone); n != 1 {
		t.Fatalf("unread after re-adding and a message = %d", n)
	}

	// Rename.
	f.apply(events.ChatRenamed{ChatID: gone, Title: "renamed", RenamedBy: v})
	if c := f.chat(u, gone); c.Title != "renamed" {
		t.Fatalf("title = %q", c.Title)
	}
}

// chatsScenario exercises every event type; applying it twice in a row must change nothing.
func chatsScenario(a, b, c, g uuid.UUID) []events.Event {
	f := &chatsFixture{seqs: map[uuid.UUID]int64{}}
	m1 := f.send(g, a, at(1), "one", "x")
	m2 := f.send(g, b, at(2), "two", "")
	m3 := f.send(g, a, at(3), "three", "")
	return []events.Event{group(g, at(0), a, b), m1, m2, read(g, b, 1), events.ChatRenamed{ChatID: g, Title: "t", RenamedBy: a},
		events.ChatMemberAdded{ChatID: g, UserID: c, Role: events.ChatRoleMember, AddedBy: a, LastReadSeq: 2, At: at(3)},
		m3, edited(m1, "one!", at(4)), deleted(m2, b, at(5)), deleted(m3, a, at(6)), read(g, c, 3),
		events.ChatMemberRemoved{ChatID: g, UserID: b, RemovedBy: b}}
}

func dumpChats(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	return dumpRows(t, pool,
		`SELECT to_jsonb(x)::text FROM chats x ORDER BY id`,
		`SELECT to_jsonb(x)::text FROM chat_members x ORDER BY chat_id, user_id`,
		`SELECT to_jsonb(x)::text FROM chat_messages x ORDER BY chat_id, seq`,
	)
}

func TestChatsApplyTwiceChangesNothing(t *testing.T) {
	a, b, c, g := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	evs := chatsScenario(a, b, c, g)
	once := newChatsFixture(t, pgtest.NewDatabase(t))
	once.apply(evs...)
	twice := newChatsFixture(t, pgtest.NewDatabase(t))
	twice.twice = true
	twice.apply(evs...)
	d1, d2 := dumpChats(t, once.pool), dumpChats(t, twice.pool)
	if d1 != d2 {
		t.Fatalf("once:\n%s\ntwice:\n%s", d1, d2)
	}
	if cc := once.chat(c, g); cc.UnreadCount != 0 || cc.Title != "t" || len(cc.Members) != 2 {
		t.Fatalf("scenario end: %+v", cc)
	}
	if ca := once.chat(a, g); ca.UnreadCount != 0 { // m2 deleted
		t.Fatalf("scenario end: %+v", ca)
	}
}

// TestChatsQueriesUseIndexes checks the plans of the list and history queries on tables with enough
// rows for the planner's choice to mean something.
func TestChatsQueriesUseIndexes(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t, pgtest.NewDatabase(t))
	// 20,000 chats of 5 members among 1,000 users (100 chats each), 5 messages per chat but 5,000 in c7.
	for _, q := range []string{
		`INSERT INTO chats (id, type, title, created_at, last_seq, last_activity_at)
			SELECT md5('c' || i)::uuid, 'group', 'g' || i, now(), CASE i WHEN 7 THEN 5000 ELSE 5 END,
				now() - i * interval '1 minute'
			FROM generate_series(0, 19999) i`,
		`INSERT INTO chat_members (chat_id, user_id, role, last_read_seq, excluded_count)
			SELECT md5('c' || i)::uuid, md5('u' || ((i + j * 200) % 1000))::uuid, 'member', j, 0
			FROM generate_series(0, 19999) i, generate_series(0, 4) j`,
		`INSERT INTO chat_messages (chat_id, seq, id, sender_id, text, sent_at, format)
			SELECT md5('c' || i)::uuid, s, gen_random_uuid(), md5('u' || (i % 1000))::uuid, repeat('x', 40),
				now() - i * interval '1 minute', 'plain'
			FROM generate_series(0, 19999) i, generate_series(1, CASE i WHEN 7 THEN 5000 ELSE 5 END) s`,
		`ANALYZE chats`, `ANALYZE chat_members`, `ANALYZE chat_messages`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var user uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT md5('u7')::uuid`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	var chat uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT md5('c7')::uuid`).Scan(&chat); err != nil {
		t.Fatal(err)
	}
	var activity time.Time
	if err := pool.QueryRow(ctx, `SELECT last_activity_at FROM chats WHERE id = $1`, chat).Scan(&activity); err != nil {
		t.Fatal(err)
	}
	f := &chatsFixture{t: t, pool: pool}
	f.chats, _ = NewChats(pool)
	if items, next, err := f.chats.ListChats(ctx, user, nil, 50); err != nil || len(items) != 50 || next == nil {
		t.Fatalf("list on the bulk data: %d items, next %v, err %v", len(items), next, err)
	}

	for _, tc := range []struct {
		name, sql string
		args      []any
		index     string
		table     string
	}{
		{"chat list, first page", listChatsSQL, []any{user, 51}, "chat_members_by_user", "chat_members"},
		{"chat list, next page", listChatsAfterSQL, []any{user, 51, activity, chat}, "chat_members_by_user", "chat_members"},
		{"latest messages", latestMessagesSQL, []any{chat, 51}, "chat_messages_pkey", "chat_messages"},
		{"messages before", beforeMessagesSQL, []any{chat, 11, int64(3000)}, "chat_messages_pkey", "chat_messages"},
		{"messages after", afterMessagesSQL, []any{chat, 11, int64(2000)}, "chat_messages_pkey", "chat_messages"},
		{"messages between", betweenMessagesSQL, []any{chat, 11, int64(2000), int64(3000)}, "chat_messages_pkey", "chat_messages"},
		{"message by id", messageByIDSQL, []any{chat, uuid.New()}, "chat_messages_id", "chat_messages"},
		{"one chat", chatSQL, []any{chat}, "chats_pkey", "chats"},
	} {
		// pgx prepares statements, so after a few runs PostgreSQL may switch to a generic plan: check both.
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				plan := explain(t, pool, mode, tc.sql, tc.args...)
				if testing.Verbose() {
					t.Logf("plan:\n%s", plan)
				}
				if !strings.Contains(plan, "using "+tc.index) && !strings.Contains(plan, "Index Scan on "+tc.index) ||
					strings.Contains(plan, "Seq Scan") {
					t.Fatalf("plan does not use %s:\n%s", tc.index, plan)
				}
				// A user's memberships are one range of the index, each joined to its chat by key.
				if strings.HasPrefix(tc.name, "chat list") && !strings.Contains(plan, "using chats_pkey") {
					t.Fatalf("chat list does not join the user's chats by key:\n%s", plan)
				}
			})
		}
	}
}

// explain returns the plan of sql with args under plan_cache_mode mode. It goes through PREPARE and
// EXPLAIN EXECUTE: an EXPLAIN with bound parameters is always planned for their values.
func explain(t *testing.T, pool *pgxpool.Pool, mode, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT set_config('plan_cache_mode', $1, false)`, mode); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(ctx, `RESET plan_cache_mode`) }()
	if _, err := conn.Exec(ctx, `PREPARE taki_explain AS `+sql); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(ctx, `DEALLOCATE taki_explain`) }()
	lits := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case uuid.UUID:
			lits[i] = "'" + v.String() + "'"
		case time.Time:
			lits[i] = "'" + v.Format(time.RFC3339Nano) + "'"
		default:
			lits[i] = fmt.Sprint(v)
		}
	}
	rows, err := conn.Query(ctx, "EXPLAIN EXECUTE taki_explain("+strings.Join(lits, ", ")+")")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// TestChatsThroughProjector runs the projection in the real projector on events appended to the log,
// then replays it from scratch.
func TestChatsThroughProjector(t *testing.T) {
	ctx := context.Background()
	pool, store := newLogDatabase(t)
	chats, err := NewChats(pool)
	if err != nil {
		t.Fatal(err)
	}
	proj := runProjector(t, pool, store, chats)

	f := &chatsFixture{t: t, pool: pool, chats: chats, seqs: map[uuid.UUID]int64{}}
	a, b, g := uuid.New(), uuid.New(), uuid.New()
	evs := []events.Event{group(g, at(0), a, b)}
	for i := range 5 {
		evs = append(evs, f.send(g, a, at(i+1), fmt.Sprint("m", i), fmt.Sprint("c", i)))
	}
	evs = append(evs, read(g, b, 3))
	pos, err := store.Append(ctx, events.Append{StreamID: g, StreamType: events.StreamChat, Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		if ok, err := proj.WaitFor(ctx, chats.Name(), pos, 10*time.Second); err != nil || !ok {
			t.Fatalf("projection did not catch up: %v, %v", ok, err)
		}
		c := f.chat(b, g)
		if c.UnreadCount != 2 || c.LastSeq != 5 || *c.LastMessage.ClientMsgID != "c4" {
			t.Fatalf("chat = %+v", c)
		}
		if got := readBys(f.history(a, g, nil, nil, 0)); !slices.Equal(got, []int64{1, 1, 1, 0, 0}) {
			t.Fatalf("read_by = %v", got)
		}
	}
	check()
	if ok, err := proj.Replay(ctx, chats.Name()); err != nil || !ok {
		t.Fatalf("replay: %v, %v", ok, err)
	}
	check()
}

// TestChatsReplayALogHoldingMessageSentV1 writes message.sent rows at schema version 1 (no format) into
// the log as an older binary did, beside a v2 one appended today, then checks that the event store
// loads the chat's stream upcast, without rewriting the stored rows, and that the chats read model
// rebuilt from scratch (reset, then a projector run) shows every message.
func TestChatsReplayALogHoldingMessageSentV1(t *testing.T) {
	ctx := context.Background()
	pool, store := newLogDatabase(t)
	chats, err := NewChats(pool)
	if err != nil {
		t.Fatal(err)
	}
	a, b, g := uuid.New(), uuid.New(), uuid.New()
	if _, err := store.Append(ctx, events.Append{StreamID: g, StreamType: events.StreamChat,
		Events: []events.Event{group(g, at(0), a, b)}}); err != nil {
		t.Fatal(err)
	}
	// Versions 2..4: v1 payloads, as the v1 binary marshalled them.
	v1 := make([]uuid.UUID, 3)
	for i := range v1 {
		v1[i] = uuid.New()
		payload := fmt.Sprintf(`{"chat_id":%q,"message_id":%q,"seq":%d,"sender_id":%q,"text":%q,"client_msg_id":%q,"sent_at":%q}`,
			g, v1[i], i+1, a, fmt.Sprint("old ", i+1), fmt.Sprint("c", i+1), at(i+1).Format(time.RFC3339Nano))
		if _, err := pool.Exec(ctx, `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version, event_type,
				schema_version, occurred_at, payload, metadata)
			VALUES (pg_current_xact_id(), $1, $2, 'chat', $3, 'message.sent', 1, $4, $5, '{}')`,
			uuid.Must(uuid.NewV7()), g, i+2, at(i+1), payload); err != nil {
			t.Fatal(err)
		}
	}
	// Versions 5..7: today's binary appends a v2 message, an edit of a v1 message and a read cursor.
	f := &chatsFixture{t: t, pool: pool, chats: chats, seqs: map[uuid.UUID]int64{g: 3}}
	m4 := f.send(g, b, at(4), "new 4", "c4")
	m4.Format = events.MessageFormatPlain
	old2 := events.MessageSent{ChatID: g, MessageID: v1[1], Seq: 2, SenderID: a, ClientMsgID: "c2", SentAt: at(2)}
	pos, err := store.Append(ctx, events.Append{StreamID: g, StreamType: events.StreamChat, ExpectedVersion: 4,
		Events: []events.Event{m4, edited(old2, "old 2, edited", at(5)), read(g, b, 2)}})
	if err != nil {
		t.Fatal(err)
	}

	// The write side's read: every message.sent comes back as the current type, v1 ones as plain text.
	stream, err := store.Load(ctx, g, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(stream.Events) != 7 {
		t.Fatalf("loaded %d events, want 7", len(stream.Events))
	}
	for i, e := range stream.Events[1:5] {
		ev, ok := e.Data.(events.MessageSent)
		if !ok || ev.Seq != int64(i+1) || ev.Format != events.MessageFormatPlain || e.Version != int64(i+2) {
			t.Fatalf("event %d: %s v%d %+v", e.Version, e.Type, e.SchemaVersion, e.Data)
		}
		want := 1 // the three rows written directly
		if i == 3 {
			want = 2 // appended by this binary
		}
		if e.SchemaVersion != want {
			t.Fatalf("event %d loaded with schema version %d", e.Version, e.SchemaVersion)
		}
	}
	if ev := stream.Events[1].Data.(events.MessageSent); ev.Text != "old 1" || ev.ClientMsgID != "c1" ||
		ev.SenderID != a || !ev.SentAt.Equal(at(1)) || ev.MessageID != v1[0] {
		t.Fatalf("v1 message.sent loaded as %+v", ev)
	}
	// Upcast on read, never rewritten: the stored rows keep their v1 version and payload.
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE event_type = 'message.sent' AND schema_version = 1
		AND NOT payload::jsonb ? 'format'`).Scan(&stored); err != nil || stored != 3 {
		t.Fatalf("%d v1 rows left as written (%v), want 3", stored, err)
	}

	check := func(proj *postgres.Projector) {
		t.Helper()
		if ok, err := proj.WaitFor(ctx, chats.Name(), pos, 10*time.Second); err != nil || !ok {
			t.Fatalf("projection did not catch up: %v, %v", ok, err)
		}
		page := f.history(a, g, nil, nil, 0)
		var got []string
		for _, m := range page.Items {
			got = append(got, fmt.Sprintf("%d %s %s %v", m.Seq, m.Text, *m.ClientMsgID, m.EditedAt != nil))
		}
		want := []string{"1 old 1 c1 false", "2 old 2, edited c2 true", "3 old 3 c3 false", "4 new 4 c4 false"}
		if !slices.Equal(got, want) {
			t.Fatalf("history = %q, want %q", got, want)
		}
		if page.Items[0].ID != v1[0] || !page.Items[0].SentAt.Equal(at(1)) || page.Items[0].SenderID != a {
			t.Fatalf("first message = %+v", page.Items[0])
		}
		if c := f.chat(b, g); c.LastSeq != 4 || c.UnreadCount != 1 || c.LastMessage.Text != "new 4" {
			t.Fatalf("chat as b = %+v", c)
		}
	}

	// A projector catches up from an empty read model, stops; the projection is reset and rebuilt from
	// scratch by a fresh projector.
	first, stop := startProjector(t, pool, chats)
	check(first)
	stop()
	if err := postgres.ResetProjection(ctx, pool, chats); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM chat_messages`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("after reset %d messages left (%v)", left, err)
	}
	second, _ := startProjector(t, pool, chats)
	check(second)
}
