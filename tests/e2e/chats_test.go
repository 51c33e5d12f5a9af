package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"taki/events"
	"taki/tests/testserver"
)

// Chats and messages (API.md): every row of the section through the real router and real PostgreSQL.
// Reads send the last command's consistency token (testserver.Client does), so no test waits on a
// projection any other way.

type chatJSON struct {
	ID          string           `json:"id"`
	Type        string           `json:"type"`
	Title       string           `json:"title"`
	CreatedAt   string           `json:"created_at"`
	Members     []chatMemberJSON `json:"members"`
	LastSeq     int64            `json:"last_seq"`
	UnreadCount int64            `json:"unread_count"`
	LastMessage *messageJSON     `json:"last_message"`
}

type chatMemberJSON struct {
	UserID      string `json:"user_id"`
	Role        string `json:"role"`
	LastReadSeq int64  `json:"last_read_seq"`
}

type messageJSON struct {
	ID          string  `json:"id"`
	ChatID      string  `json:"chat_id"`
	Seq         int64   `json:"seq"`
	SenderID    string  `json:"sender_id"`
	Text        string  `json:"text"`
	ClientMsgID *string `json:"client_msg_id"`
	SentAt      string  `json:"sent_at"`
	EditedAt    *string `json:"edited_at"`
	Deleted     bool    `json:"deleted"`
	ReadByCount int64   `json:"read_by_count"`
}

type messagePageJSON struct {
	Items   []messageJSON `json:"items"`
	HasMore bool          `json:"has_more"`
}

type chatPageJSON struct {
	Items      []chatJSON `json:"items"`
	NextCursor *string    `json:"next_cursor"`
}

var (
	chatKeys    = []string{"created_at", "id", "last_message", "last_seq", "members", "title", "type", "unread_count"}
	messageKeys = []string{"chat_id", "client_msg_id", "deleted", "edited_at", "id", "read_by_count", "sender_id", "sent_at", "seq", "text"}
)

func chatCreateDirect(t testing.TB, c *testserver.Client, memberID string, status int) chatJSON {
	t.Helper()
	r := c.Do(http.MethodPost, "/api/v1/chats", map[string]any{"type": "direct", "member_id": memberID})
	acctWantStatus(t, r, status)
	acctWantKeys(t, "chat", r.Body, chatKeys...)
	var ch chatJSON
	r.JSON(t, &ch)
	return ch
}

func chatCreateGroup(t testing.TB, c *testserver.Client, title string, memberIDs ...string) chatJSON {
	t.Helper()
	if memberIDs == nil {
		memberIDs = []string{}
	}
	r := c.Do(http.MethodPost, "/api/v1/chats", map[string]any{"type": "group", "title": title, "member_ids": memberIDs})
	acctWantStatus(t, r, http.StatusCreated)
	var ch chatJSON
	r.JSON(t, &ch)
	return ch
}

func chatSend(t testing.TB, c *testserver.Client, chatID, text, clientMsgID string, status int) messageJSON {
	t.Helper()
	r := c.Do(http.MethodPost, "/api/v1/chats/"+chatID+"/messages", map[string]any{"text": text, "client_msg_id": clientMsgID})
	acctWantStatus(t, r, status)
	acctWantKeys(t, "message", r.Body, messageKeys...)
	var m messageJSON
	r.JSON(t, &m)
	return m
}

func chatGet(t testing.TB, c *testserver.Client, chatID string) chatJSON {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/chats/"+chatID, nil)
	acctWantStatus(t, r, http.StatusOK)
	var ch chatJSON
	r.JSON(t, &ch)
	return ch
}

func chatHistory(t testing.TB, c *testserver.Client, chatID, query string) messagePageJSON {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/chats/"+chatID+"/messages"+query, nil)
	acctWantStatus(t, r, http.StatusOK)
	var p messagePageJSON
	r.JSON(t, &p)
	return p
}

func chatList(t testing.TB, c *testserver.Client, query string) chatPageJSON {
	t.Helper()
	r := c.Do(http.MethodGet, "/api/v1/chats"+query, nil)
	acctWantStatus(t, r, http.StatusOK)
	var p chatPageJSON
	r.JSON(t, &p)
	return p
}

func chatMember(ch chatJSON, userID string) (chatMemberJSON, bool) {
	for _, m := range ch.Members {
		if m.UserID == userID {
			return m, true
		}
	}
	return chatMemberJSON{}, false
}

func seqsOf(ms []messageJSON) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestChatsDirectChat(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, a := acctSignUp(t, srv, "Ann")
	bob, b := acctSignUp(t, srv, "Bob")

	ch := chatCreateDirect(t, ann, b.ID, http.StatusCreated)
	if ch.Type != "direct" || ch.Title != "" || len(ch.Members) != 2 || ch.LastSeq != 0 || ch.UnreadCount != 0 || ch.LastMessage != nil {
		t.Fatalf("new direct chat: %+v", ch)
	}
	for _, id := range []string{a.ID, b.ID} {
		if m, ok := chatMember(ch, id); !ok || m.Role != "member" || m.LastReadSeq != 0 {
			t.Fatalf("member %s of the new direct chat: %+v (%v)", id, m, ok)
		}
	}
	// The other side creating it finds the same chat: 200, not a second chat.
	again := chatCreateDirect(t, bob, a.ID, http.StatusOK)
	if again.ID != ch.ID {
		t.Fatalf("bob's direct chat with ann is %s, ann's with bob %s", again.ID, ch.ID)
	}

	m1 := chatSend(t, ann, ch.ID, "hi bob", "ann-1", http.StatusCreated)
	if m1.Seq != 1 || m1.SenderID != a.ID || m1.ChatID != ch.ID || m1.Text != "hi bob" || m1.ClientMsgID == nil ||
		*m1.ClientMsgID != "ann-1" || m1.Deleted || m1.EditedAt != nil || m1.ReadByCount != 0 {
		t.Fatalf("first message: %+v", m1)
	}
	acctWantTime(t, "sent_at", m1.SentAt)
	m2 := chatSend(t, bob, ch.ID, "hi ann", "bob-1", http.StatusCreated)
	if m2.Seq != 2 {
		t.Fatalf("second message seq %d, want 2", m2.Seq)
	}

	// Unread is per caller: messages of others above the caller's cursor.
	chatSync(t, bob, ann)
	if got := chatGet(t, bob, ch.ID); got.UnreadCount != 1 || got.LastSeq != 2 || got.LastMessage == nil || got.LastMessage.ID != m2.ID {
		t.Fatalf("bob's view: %+v", got)
	}
	if got := chatGet(t, ann, ch.ID); got.UnreadCount != 1 {
		t.Fatalf("ann's unread %d, want 1 (bob's message)", got.UnreadCount)
	}

	// Bob reads up to 1: ann's message shows read_by_count 1 (in a direct chat: read).
	acctWantStatus(t, bob.Do(http.MethodPost, "/api/v1/chats/"+ch.ID+"/read", map[string]any{"up_to_seq": 1}), http.StatusNoContent)
	chatSync(t, ann, bob)
	h := chatHistory(t, ann, ch.ID, "")
	if !slices.Equal(seqsOf(h.Items), []int64{1, 2}) || h.HasMore {
		t.Fatalf("history %+v", h)
	}
	if h.Items[0].ReadByCount != 1 || h.Items[1].ReadByCount != 0 {
		t.Fatalf("read_by_count after bob read 1: %d, %d; want 1, 0", h.Items[0].ReadByCount, h.Items[1].ReadByCount)
	}
	if got := chatGet(t, bob, ch.ID); got.UnreadCount != 0 {
		t.Fatalf("bob's unread after reading ann's message: %d", got.UnreadCount)
	}
	// The cursor only moves forward: reading up to 0 afterwards changes nothing.
	acctWantStatus(t, bob.Do(http.MethodPost, "/api/v1/chats/"+ch.ID+"/read", map[string]any{"up_to_seq": 0}), http.StatusNoContent)
	if m, _ := chatMember(chatGet(t, bob, ch.ID), b.ID); m.LastReadSeq != 1 {
		t.Fatalf("bob's cursor moved back to %d", m.LastReadSeq)
	}
	// Past the last message is invalid.
	acctWantFields(t, bob.Do(http.MethodPost, "/api/v1/chats/"+ch.ID+"/read", map[string]any{"up_to_seq": 3}), "up_to_seq")

	// A direct chat has no admins and fixed members.
	acctWantProblem(t, ann.Do(http.MethodPatch, "/api/v1/chats/"+ch.ID, map[string]any{"title": "x"}), http.StatusForbidden, "forbidden")
	acctWantProblem(t, ann.Do(http.MethodPost, "/api/v1/chats/"+ch.ID+"/members", map[string]any{"user_id": b.ID}), http.StatusConflict, "conflict")
	acctWantProblem(t, ann.Do(http.MethodDelete, "/api/v1/chats/"+ch.ID+"/members/"+b.ID, nil), http.StatusConflict, "conflict")
}

func TestChatsGroupChat(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, a := acctSignUp(t, srv, "Ann")
	bob, b := acctSignUp(t, srv, "Bob")
	cat, c := acctSignUp(t, srv, "Cat")

	g := chatCreateGroup(t, ann, "  Plans  ", b.ID, b.ID, a.ID)
	if g.Type != "group" || g.Title != "Plans" || len(g.Members) != 2 {
		t.Fatalf("new group: %+v", g)
	}
	if m, _ := chatMember(g, a.ID); m.Role != "admin" {
		t.Fatalf("creator's role %q, want admin", m.Role)
	}
	if m, _ := chatMember(g, b.ID); m.Role != "member" {
		t.Fatalf("member's role %q, want member", m.Role)
	}
	chatSend(t, ann, g.ID, "one", "a1", http.StatusCreated)
	m2 := chatSend(t, bob, g.ID, "two", "b1", http.StatusCreated)

	// Renaming: admins only.
	acctWantProblem(t, bob.Do(http.MethodPatch, "/api/v1/chats/"+g.ID, map[string]any{"title": "Mine"}), http.StatusForbidden, "forbidden")
	r := ann.Do(http.MethodPatch, "/api/v1/chats/"+g.ID, map[string]any{"title": "Weekend"})
	acctWantStatus(t, r, http.StatusOK)
	var renamed chatJSON
	r.JSON(t, &renamed)
	if renamed.Title != "Weekend" || renamed.LastSeq != 2 {
		t.Fatalf("renamed: %+v", renamed)
	}
	acctWantFields(t, ann.Do(http.MethodPatch, "/api/v1/chats/"+g.ID, map[string]any{"title": " "}), "title")

	// Adding: admins only; the new member's cursor starts at the chat's last message.
	acctWantProblem(t, bob.Do(http.MethodPost, "/api/v1/chats/"+g.ID+"/members", map[string]any{"user_id": c.ID}), http.StatusForbidden, "forbidden")
	acctWantStatus(t, ann.Do(http.MethodPost, "/api/v1/chats/"+g.ID+"/members", map[string]any{"user_id": c.ID}), http.StatusNoContent)
	acctWantStatus(t, ann.Do(http.MethodPost, "/api/v1/chats/"+g.ID+"/members", map[string]any{"user_id": c.ID}), http.StatusNoContent)
	acctWantProblem(t, ann.Do(http.MethodPost, "/api/v1/chats/"+g.ID+"/members", map[string]any{"user_id": "0190b1c2-0000-7000-8000-000000000000"}), http.StatusNotFound, "not-found")
	chatSync(t, cat, ann)
	cv := chatGet(t, cat, g.ID)
	if m, ok := chatMember(cv, c.ID); !ok || m.Role != "member" || m.LastReadSeq != 2 || cv.UnreadCount != 0 {
		t.Fatalf("cat's view after joining: %+v", cv)
	}

	// Editing: the sender only; deleting: the sender or an admin.
	acctWantProblem(t, ann.Do(http.MethodPatch, "/api/v1/chats/"+g.ID+"/messages/"+m2.ID, map[string]any{"text": "not mine"}), http.StatusForbidden, "forbidden")
	r = bob.Do(http.MethodPatch, "/api/v1/chats/"+g.ID+"/messages/"+m2.ID, map[string]any{"text": "two, edited"})
	acctWantStatus(t, r, http.StatusOK)
	var edited messageJSON
	r.JSON(t, &edited)
	if edited.Text != "two, edited" || edited.EditedAt == nil || edited.Seq != 2 || edited.ID != m2.ID || edited.SentAt != m2.SentAt {
		t.Fatalf("edited: %+v", edited)
	}
	acctWantProblem(t, cat.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/messages/"+m2.ID, nil), http.StatusForbidden, "forbidden")
	acctWantStatus(t, ann.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/messages/"+m2.ID, nil), http.StatusNoContent)
	acctWantStatus(t, bob.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/messages/"+m2.ID, nil), http.StatusNoContent)
	acctWantProblem(t, bob.Do(http.MethodPatch, "/api/v1/chats/"+g.ID+"/messages/"+m2.ID, map[string]any{"text": "back"}), http.StatusConflict, "conflict")
	chatSync(t, bob, ann)
	h := chatHistory(t, bob, g.ID, "")
	if len(h.Items) != 2 || !h.Items[1].Deleted || h.Items[1].Text != "" || h.Items[1].Seq != 2 {
		t.Fatalf("history after delete: %+v", h)
	}

	// Removing: admins remove anyone, members leave; the removed lose the chat entirely.
	acctWantProblem(t, bob.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/members/"+c.ID, nil), http.StatusForbidden, "forbidden")
	acctWantStatus(t, cat.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/members/"+c.ID, nil), http.StatusNoContent)
	// The only admin cannot leave while others remain: nobody could manage the group again.
	acctWantProblem(t, ann.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/members/"+a.ID, nil), http.StatusConflict, "conflict")
	acctWantStatus(t, ann.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/members/"+b.ID, nil), http.StatusNoContent)
	chatSync(t, bob, ann)
	acctWantProblem(t, bob.Do(http.MethodGet, "/api/v1/chats/"+g.ID, nil), http.StatusNotFound, "not-found")
	acctWantProblem(t, bob.Do(http.MethodGet, "/api/v1/chats/"+g.ID+"/messages", nil), http.StatusNotFound, "not-found")
	if l := chatList(t, bob, ""); len(l.Items) != 0 {
		t.Fatalf("bob still lists %+v after his removal", l.Items)
	}
	acctWantProblem(t, ann.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/members/"+b.ID, nil), http.StatusNotFound, "not-found")
	if got := chatGet(t, ann, g.ID); len(got.Members) != 1 {
		t.Fatalf("members after removals: %+v", got.Members)
	}
	// Alone, the admin may leave.
	acctWantStatus(t, ann.Do(http.MethodDelete, "/api/v1/chats/"+g.ID+"/members/"+a.ID, nil), http.StatusNoContent)
}

// The authorization matrix: a non-member gets 404 for everything of the chat, exactly as for a chat
// that does not exist, and changes nothing.
func TestChatsNonMemberGetsNotFound(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, _ := acctSignUp(t, srv, "Ann")
	_, b := acctSignUp(t, srv, "Bob")
	eve, e := acctSignUp(t, srv, "Eve")
	g := chatCreateGroup(t, ann, "Secret", b.ID)
	d := chatCreateDirect(t, ann, b.ID, http.StatusCreated)
	m := chatSend(t, ann, g.ID, "the plan", "p1", http.StatusCreated)
	dm := chatSend(t, ann, d.ID, "psst", "p2", http.StatusCreated)
	chatSync(t, eve, ann)
	missing := "0190b1c2-0000-7000-8000-000000000001"
	for _, tc := range []struct{ chat, msg string }{{g.ID, m.ID}, {d.ID, dm.ID}, {missing, m.ID}, {"not-a-uuid", "nor-this"}} {
		base := "/api/v1/chats/" + tc.chat
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, base, nil},
			{http.MethodGet, base + "/messages", nil},
			{http.MethodPost, base + "/messages", map[string]any{"text": "let me in", "client_msg_id": "e1"}},
			{http.MethodPatch, base + "/messages/" + tc.msg, map[string]any{"text": "mine now"}},
			{http.MethodDelete, base + "/messages/" + tc.msg, nil},
			{http.MethodPost, base + "/read", map[string]any{"up_to_seq": 1}},
			{http.MethodPatch, base, map[string]any{"title": "Owned"}},
			{http.MethodPost, base + "/members", map[string]any{"user_id": e.ID}},
			{http.MethodDelete, base + "/members/" + b.ID, nil},
		} {
			acctWantProblem(t, eve.Do(req.method, req.path, req.body), http.StatusNotFound, "not-found")
		}
	}
	if l := chatList(t, eve, ""); len(l.Items) != 0 {
		t.Fatalf("eve lists %+v", l.Items)
	}
	chatSync(t, ann, eve)
	got := chatGet(t, ann, g.ID)
	if got.Title != "Secret" || got.LastSeq != 1 || len(got.Members) != 2 {
		t.Fatalf("the group changed: %+v", got)
	}
	if h := chatHistory(t, ann, g.ID, ""); len(h.Items) != 1 || h.Items[0].Text != "the plan" {
		t.Fatalf("the history changed: %+v", h)
	}
}

func TestChatsBadInput(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, a := acctSignUp(t, srv, "Ann")
	_, b := acctSignUp(t, srv, "Bob")
	post := func(body any) testserver.Response { return ann.Do(http.MethodPost, "/api/v1/chats", body) }
	acctWantFields(t, post(map[string]any{"type": "channel"}), "type")
	acctWantFields(t, post(map[string]any{"type": "direct"}), "member_id")
	acctWantFields(t, post(map[string]any{"type": "direct", "member_id": a.ID}), "member_id")
	acctWantFields(t, post(map[string]any{"type": "direct", "member_id": b.ID, "title": "x"}), "title")
	acctWantFields(t, post(map[string]any{"type": "group", "member_ids": []string{b.ID}}), "title")
	acctWantFields(t, post(map[string]any{"type": "group", "title": strings.Repeat("t", 129)}), "title")
	acctWantProblem(t, post(map[string]any{"type": "direct", "member_id": "0190b1c2-0000-7000-8000-000000000002"}), http.StatusNotFound, "not-found")
	acctWantProblem(t, post(map[string]any{"type": "direct", "member_id": b.ID, "extra": 1}), http.StatusBadRequest, "")
	acctWantProblem(t, post(map[string]any{"type": "direct", "member_id": "bob"}), http.StatusBadRequest, "")

	d := chatCreateDirect(t, ann, b.ID, http.StatusCreated)
	send := func(body any) testserver.Response {
		return ann.Do(http.MethodPost, "/api/v1/chats/"+d.ID+"/messages", body)
	}
	acctWantFields(t, send(map[string]any{"text": "", "client_msg_id": "x"}), "text")
	acctWantFields(t, send(map[string]any{"text": "   \n", "client_msg_id": "x"}), "text")
	acctWantFields(t, send(map[string]any{"text": strings.Repeat("é", 4001), "client_msg_id": "x"}), "text")
	acctWantFields(t, send(map[string]any{"text": "hi"}), "client_msg_id")
	acctWantFields(t, send(map[string]any{"text": "hi", "client_msg_id": strings.Repeat("x", 65)}), "client_msg_id")
	acctWantFields(t, send(map[string]any{"text": "a\x00b", "client_msg_id": "x"}), "text")
	acctWantProblem(t, send(map[string]any{"text": "hi", "client_msg_id": "x", "seq": 7}), http.StatusBadRequest, "")
	acctWantProblem(t, ann.Do(http.MethodPost, "/api/v1/chats/"+d.ID+"/messages", "text=hi", "Content-Type", "application/x-www-form-urlencoded"), http.StatusUnsupportedMediaType, "")
	// 4000 characters (not bytes) is the limit.
	chatSend(t, ann, d.ID, strings.Repeat("é", 4000), "long", http.StatusCreated)

	acctWantFields(t, ann.Do(http.MethodGet, "/api/v1/chats/"+d.ID+"/messages?before_seq=x", nil), "before_seq")
	acctWantFields(t, ann.Do(http.MethodGet, "/api/v1/chats/"+d.ID+"/messages?limit=201", nil), "limit")
	acctWantFields(t, ann.Do(http.MethodGet, "/api/v1/chats?cursor=nope", nil), "cursor")
	acctWantFields(t, ann.Do(http.MethodPost, "/api/v1/chats/"+d.ID+"/read", map[string]any{}), "up_to_seq")
	acctWantFields(t, ann.Do(http.MethodPost, "/api/v1/chats/"+d.ID+"/read", map[string]any{"up_to_seq": -1}), "up_to_seq")
	if h := chatHistory(t, ann, d.ID, ""); len(h.Items) != 1 {
		t.Fatalf("bad input changed the history: %+v", h)
	}
}

func TestChatsHistoryPaging(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, _ := acctSignUp(t, srv, "Ann")
	_, b := acctSignUp(t, srv, "Bob")
	d := chatCreateDirect(t, ann, b.ID, http.StatusCreated)
	for i := 1; i <= 12; i++ {
		chatSend(t, ann, d.ID, fmt.Sprintf("m%d", i), fmt.Sprintf("c%d", i), http.StatusCreated)
	}
	for _, tc := range []struct {
		query string
		want  []int64
		more  bool
	}{
		{"?limit=5", seqRange(8, 12), true},
		{"?limit=5&before_seq=8", seqRange(3, 7), true},
		{"?limit=5&before_seq=3", seqRange(1, 2), false},
		{"?limit=5&after_seq=0", seqRange(1, 5), true},
		{"?limit=5&after_seq=9", seqRange(10, 12), false},
		{"?after_seq=3&before_seq=7", seqRange(4, 6), false},
		{"", seqRange(1, 12), false},
	} {
		h := chatHistory(t, ann, d.ID, tc.query)
		if !slices.Equal(seqsOf(h.Items), tc.want) || h.HasMore != tc.more {
			t.Errorf("%s: seqs %v has_more %v, want %v %v", tc.query, seqsOf(h.Items), h.HasMore, tc.want, tc.more)
		}
	}
}

func TestChatsListByActivityWithCursor(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, _ := acctSignUp(t, srv, "Ann")
	var ids []string
	for i := range 5 {
		_, u := acctSignUp(t, srv, fmt.Sprintf("Peer %d", i))
		ids = append(ids, chatCreateDirect(t, ann, u.ID, http.StatusCreated).ID)
	}
	// Activity order: the chat written to last comes first.
	chatSend(t, ann, ids[1], "bump", "b1", http.StatusCreated)
	chatSend(t, ann, ids[3], "bump", "b3", http.StatusCreated)
	want := []string{ids[3], ids[1], ids[4], ids[2], ids[0]}
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		p := chatList(t, ann, "?limit=2"+cursor)
		for _, ch := range p.Items {
			got = append(got, ch.ID)
		}
		if p.NextCursor == nil {
			break
		}
		if page > 5 {
			t.Fatal("the list does not end")
		}
		cursor = "&cursor=" + *p.NextCursor
	}
	if !slices.Equal(got, want) {
		t.Fatalf("chat list order %v, want %v", got, want)
	}
}

// 64 concurrent senders in one chat: seq stays gapless, nobody sees a 5xx or a conflict.
func TestChatsSeqGaplessUnderConcurrentSenders(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	owner, _ := acctSignUp(t, srv, "Owner")
	const users, senders, each = 8, 64, 4
	clients := make([]*testserver.Client, users)
	ids := make([]string, users)
	for i := range users {
		var u acctUser
		clients[i], u = acctSignUp(t, srv, fmt.Sprintf("Sender %d", i))
		ids[i] = u.ID
	}
	g := chatCreateGroup(t, owner, "Busy", ids...)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := map[int64]string{}
	var failures []string
	forks := make([]*testserver.Client, senders)
	for s := range senders {
		forks[s] = clients[s%users].Fork()
	}
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := forks[s]
			for i := range each {
				cid := fmt.Sprintf("s%d-%d", s, i)
				r := c.Do(http.MethodPost, "/api/v1/chats/"+g.ID+"/messages", map[string]any{"text": cid, "client_msg_id": cid})
				mu.Lock()
				if r.StatusCode != http.StatusCreated {
					failures = append(failures, fmt.Sprintf("%s: %d %s", cid, r.StatusCode, r.Body))
				} else {
					var m messageJSON
					if err := json.Unmarshal(r.Body, &m); err != nil {
						failures = append(failures, err.Error())
					} else if prev, dup := seqs[m.Seq]; dup {
						failures = append(failures, fmt.Sprintf("seq %d given to %s and %s", m.Seq, prev, cid))
					} else {
						seqs[m.Seq] = cid
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d sends failed, first: %s", len(failures), failures[0])
	}
	for s := int64(1); s <= senders*each; s++ {
		if _, ok := seqs[s]; !ok {
			t.Fatalf("seq %d missing: seqs are not gapless", s)
		}
	}
	owner.Token = latestToken(t, forks...)
	var all []int64
	for after := int64(0); ; {
		h := chatHistory(t, owner, g.ID, fmt.Sprintf("?limit=200&after_seq=%d", after))
		all = append(all, seqsOf(h.Items)...)
		if !h.HasMore {
			break
		}
		after = h.Items[len(h.Items)-1].Seq
	}
	if !slices.Equal(all, seqRange(1, senders*each)) {
		t.Fatalf("history seqs are not 1..%d: %v", senders*each, all)
	}
}

// chatSync gives every client the latest consistency token any of them holds, so that each one's
// next read shows every write the others made.
func chatSync(t testing.TB, clients ...*testserver.Client) {
	t.Helper()
	tok := latestToken(t, clients...)
	for _, c := range clients {
		c.Token = tok
	}
}

// latestToken is the consistency token, of those the clients hold, furthest along the log.
func latestToken(t testing.TB, clients ...*testserver.Client) string {
	t.Helper()
	var best events.Position
	for _, c := range clients {
		if c.Token == "" {
			continue
		}
		p, err := events.ParsePosition(c.Token)
		if err != nil {
			t.Fatalf("token %q: %v", c.Token, err)
		}
		if best.Less(p) {
			best = p
		}
	}
	return best.String()
}

// The same client_msg_id sent again, also by racing requests, makes one message; the repeats answer
// 200 with the original.
func TestChatsClientMsgIDReplays(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, _ := acctSignUp(t, srv, "Ann")
	bob, b := acctSignUp(t, srv, "Bob")
	d := chatCreateDirect(t, ann, b.ID, http.StatusCreated)

	first := chatSend(t, ann, d.ID, "once", "same", http.StatusCreated)
	again := chatSend(t, ann, d.ID, "twice?", "same", http.StatusOK)
	if again.ID != first.ID || again.Seq != first.Seq || again.Text != "once" {
		t.Fatalf("replay %+v, want the original %+v", again, first)
	}
	// Another sender's same client_msg_id is another message.
	other := chatSend(t, bob, d.ID, "mine", "same", http.StatusCreated)
	if other.ID == first.ID || other.Seq != 2 {
		t.Fatalf("bob's message %+v collides with ann's %+v", other, first)
	}

	const racers = 8
	var wg sync.WaitGroup
	results := make([]testserver.Response, racers)
	forks := make([]*testserver.Client, racers)
	for i := range forks {
		forks[i] = ann.Fork()
	}
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = forks[i].Do(http.MethodPost, "/api/v1/chats/"+d.ID+"/messages", map[string]any{"text": "race", "client_msg_id": "race"})
		}()
	}
	wg.Wait()
	created := 0
	var id string
	for _, r := range results {
		switch r.StatusCode {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Fatalf("racing send: %d %s", r.StatusCode, r.Body)
		}
		var m messageJSON
		r.JSON(t, &m)
		if id != "" && m.ID != id {
			t.Fatalf("racing sends answered messages %s and %s", id, m.ID)
		}
		id = m.ID
	}
	if created != 1 {
		t.Fatalf("%d racing sends created a message, want 1", created)
	}
	// The history read waits for every write: bob's and the racers' (their tokens are the forks').
	chatSync(t, append(forks, ann, bob)...)
	h := chatHistory(t, ann, d.ID, "")
	if !slices.Equal(seqsOf(h.Items), []int64{1, 2, 3}) {
		t.Fatalf("history seqs %v, want 1 2 3", seqsOf(h.Items))
	}
}

// Both users creating their direct chat at once get one chat.
func TestChatsDirectChatRace(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, dbURL)
	ann, a := acctSignUp(t, srv, "Ann")
	bob, b := acctSignUp(t, srv, "Bob")
	const racers = 8
	var wg sync.WaitGroup
	results := make([]testserver.Response, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				results[i] = ann.Fork().Do(http.MethodPost, "/api/v1/chats", map[string]any{"type": "direct", "member_id": b.ID})
			} else {
				results[i] = bob.Fork().Do(http.MethodPost, "/api/v1/chats", map[string]any{"type": "direct", "member_id": a.ID})
			}
		}()
	}
	wg.Wait()
	created := 0
	var id string
	for _, r := range results {
		if r.StatusCode == http.StatusCreated {
			created++
		} else if r.StatusCode != http.StatusOK {
			t.Fatalf("racing create: %d %s", r.StatusCode, r.Body)
		}
		var ch chatJSON
		r.JSON(t, &ch)
		if id != "" && ch.ID != id {
			t.Fatalf("racing creates answered chats %s and %s", id, ch.ID)
		}
		id = ch.ID
	}
	if created != 1 {
		t.Fatalf("%d racing creates answered 201, want 1", created)
	}
}
