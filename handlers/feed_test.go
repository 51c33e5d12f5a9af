package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/events"
	"taki/queries"
)

// memLog is an in-memory chat log: streams of envelopes, with snapshots, read as LoadUntil reads.
type memLog struct {
	mu        sync.Mutex
	streams   map[uuid.UUID][]events.Envelope
	snapshots map[uuid.UUID]events.Snapshot
	loads     int
	pos       events.Position
	// unreadable are the streams holding, from that version on, an event this binary cannot read.
	unreadable map[uuid.UUID]int64
}

func newMemLog() *memLog {
	return &memLog{streams: map[uuid.UUID][]events.Envelope{}, snapshots: map[uuid.UUID]events.Snapshot{},
		unreadable: map[uuid.UUID]int64{}}
}

// add appends ev to chat's stream and returns its envelope.
func (l *memLog) add(chatID uuid.UUID, ev events.Event) events.Envelope {
	return l.addAt(chatID, ev, time.Time{})
}

// addAt appends ev to a stream with occurred as its envelope's time and returns its envelope.
func (l *memLog) addAt(stream uuid.UUID, ev events.Event, occurred time.Time) events.Envelope {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pos.TxID++
	l.pos.Offset++
	env := events.Envelope{Type: ev.EventType(), StreamID: stream, StreamType: events.StreamChat,
		Version: int64(len(l.streams[stream]) + 1), Position: l.pos, OccurredAt: occurred, Data: ev}
	l.streams[stream] = append(l.streams[stream], env)
	return env
}

// snapshot stores chat's state at its current version, as the write side does every 100 events.
func (l *memLog) snapshot(t *testing.T, chatID uuid.UUID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var st chat
	for _, e := range l.streams[chatID] {
		st = evolveChat(st, e)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	l.snapshots[chatID] = events.Snapshot{Version: int64(len(l.streams[chatID])), SchemaVersion: chats.stateVersion, State: b}
}

func (l *memLog) LoadUntil(_ context.Context, id uuid.UUID, snapshotVersion int, maxVersion int64) (events.Stream, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loads++
	if v, ok := l.unreadable[id]; ok && maxVersion >= v {
		return events.Stream{}, fmt.Errorf("load %s: %w", id, events.ErrUndecodable)
	}
	var out events.Stream
	from := int64(0)
	if s, ok := l.snapshots[id]; ok && s.SchemaVersion == snapshotVersion && s.Version <= maxVersion {
		out.Snapshot = &s
		from = s.Version
	}
	for _, e := range l.streams[id] {
		if e.Version > from && e.Version <= maxVersion {
			out.Events = append(out.Events, e)
		}
	}
	return out, nil
}

func (l *memLog) loadCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loads
}

// memChats answers ChatsFor from the fold of the whole stream (as a caught-up read model would), with
// an unread count that tells the users apart.
type memChats struct {
	log   *memLog
	calls [][]uuid.UUID
}

func (c *memChats) ChatsFor(_ context.Context, chatID uuid.UUID, users []uuid.UUID) (map[uuid.UUID]queries.Chat, error) {
	c.calls = append(c.calls, slices.Clone(users))
	c.log.mu.Lock()
	var state chat
	for _, e := range c.log.streams[chatID] {
		state = evolveChat(state, e)
	}
	c.log.mu.Unlock()
	out := map[uuid.UUID]queries.Chat{}
	for _, u := range users {
		if m, ok := state.Members[u]; ok {
			v := foldView(state)
			v.UnreadCount = state.LastSeq - m.LastRead
			out[u] = v
		}
	}
	return out, nil
}

type waitRecorder struct{ positions []events.Position }

func (w *waitRecorder) WaitFor(_ context.Context, name string, pos events.Position, _ time.Duration) (bool, error) {
	if name != queries.ChatsReadModel {
		return false, nil
	}
	w.positions = append(w.positions, pos)
	return true, nil
}

type feedEnv struct {
	t      *testing.T
	log    *memLog
	views  *memChats
	waiter *waitRecorder
	feed   *Feed
	chatID uuid.UUID
	a, b   uuid.UUID
	c, d   uuid.UUID
	seq    int64
}

func newFeedEnv(t *testing.T, cacheSize int) *feedEnv {
	t.Helper()
	log := newMemLog()
	e := &feedEnv{t: t, log: log, views: &memChats{log: log}, waiter: &waitRecorder{}, chatID: uuid.New(),
		a: uuid.New(), b: uuid.New(), c: uuid.New(), d: uuid.New()}
	f, err := NewFeed(FeedConfig{Log: log, Chats: e.views, Waiter: e.waiter, CacheSize: cacheSize})
	if err != nil {
		t.Fatal(err)
	}
	e.feed = f
	return e
}

func (e *feedEnv) created() events.Envelope {
	return e.log.add(e.chatID, events.ChatCreated{ChatID: e.chatID, Type: events.ChatGroup, Title: "g", CreatedBy: e.a,
		Members: []events.ChatMember{{UserID: e.a, Role: events.ChatRoleAdmin}, {UserID: e.b, Role: events.ChatRoleMember},
			{UserID: e.c, Role: events.ChatRoleMember}}, CreatedAt: time.Now().UTC()})
}

func (e *feedEnv) sent(from uuid.UUID) events.Envelope {
	e.seq++
	return e.log.add(e.chatID, events.MessageSent{ChatID: e.chatID, MessageID: uuid.New(), Seq: e.seq, SenderID: from,
		Text: "hi", ClientMsgID: "c-" + uuid.NewString()[:4], SentAt: time.Now().UTC()})
}

func (e *feedEnv) frames(env events.Envelope) []FeedFrame {
	e.t.Helper()
	fs, err := e.feed.Frames(context.Background(), env)
	if err != nil {
		e.t.Fatal(err)
	}
	return fs
}

func sameUsers(got, want []uuid.UUID) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	less := func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) }
	slices.SortFunc(g, less)
	slices.SortFunc(w, less)
	return slices.Equal(g, w)
}

// wantOne checks that env makes one frame of its type for exactly the users want, and returns its data.
func (e *feedEnv) wantOne(env events.Envelope, want ...uuid.UUID) any {
	e.t.Helper()
	fs := e.frames(env)
	if len(fs) != 1 {
		e.t.Fatalf("%s: %d frames, want 1", env.Type, len(fs))
	}
	if fs[0].Type != env.Type || fs[0].ChatID != e.chatID || !sameUsers(fs[0].To, want) {
		e.t.Fatalf("%s: frame %s of chat %s to %v, want to %v", env.Type, fs[0].Type, fs[0].ChatID, fs[0].To, want)
	}
	return fs[0].Data
}

// wantEach checks that env makes chat frames for exactly want, each user once, and returns the chat
// each one gets (users with equal views may share a frame).
func (e *feedEnv) wantEach(env events.Envelope, want ...uuid.UUID) map[uuid.UUID]queries.Chat {
	e.t.Helper()
	fs := e.frames(env)
	out := map[uuid.UUID]queries.Chat{}
	var to []uuid.UUID
	for _, f := range fs {
		if f.Type != env.Type || f.ChatID != e.chatID || len(f.To) == 0 {
			e.t.Fatalf("%s: frame %+v", env.Type, f)
		}
		for _, u := range f.To {
			if _, dup := out[u]; dup {
				e.t.Fatalf("%s: two frames for %s", env.Type, u)
			}
			out[u] = f.Data.(queries.Chat)
			to = append(to, u)
		}
	}
	if !sameUsers(to, want) {
		e.t.Fatalf("%s: frames for %v, want %v", env.Type, to, want)
	}
	return out
}

// Each event reaches the members the chat had at that event: a removed member gets its removal and
// nothing after it, an added member gets its addition and what follows.
func TestFeedSendsEachEventToTheMembersAtThatEvent(t *testing.T) {
	t.Parallel()
	e := newFeedEnv(t, 0)
	views := e.wantEach(e.created(), e.a, e.b, e.c)
	if views[e.b].ID != e.chatID || len(views[e.b].Members) != 3 {
		t.Fatalf("chat.created data %+v", views[e.b])
	}
	m := e.wantOne(e.sent(e.a), e.a, e.b, e.c).(queries.Message)
	if m.Seq != 1 || m.SenderID != e.a || m.Text != "hi" || m.ClientMsgID == nil || m.ReadByCount != 0 {
		t.Fatalf("message.sent data %+v", m)
	}
	removed := e.log.add(e.chatID, events.ChatMemberRemoved{ChatID: e.chatID, UserID: e.c, RemovedBy: e.a})
	views = e.wantEach(removed, e.a, e.b, e.c)
	// The removed member learns it: the chat it gets no longer lists it.
	for _, mem := range views[e.c].Members {
		if mem.UserID == e.c {
			t.Fatalf("the removed member's chat still lists it: %+v", views[e.c])
		}
	}
	e.wantOne(e.sent(e.b), e.a, e.b)
	added := e.log.add(e.chatID, events.ChatMemberAdded{ChatID: e.chatID, UserID: e.d, Role: events.ChatRoleMember,
		AddedBy: e.a, LastReadSeq: e.seq})
	e.wantEach(added, e.a, e.b, e.d)
	e.wantOne(e.sent(e.d), e.a, e.b, e.d)
	renamed := e.log.add(e.chatID, events.ChatRenamed{ChatID: e.chatID, Title: "new", RenamedBy: e.a})
	views = e.wantEach(renamed, e.a, e.b, e.d)
	if views[e.d].Title != "new" || views[e.a].UnreadCount == views[e.d].UnreadCount {
		t.Fatalf("chat.renamed data is not each member's own: %+v / %+v", views[e.a], views[e.d])
	}
	// chat.* frames are built once the read model applied the event.
	if len(e.waiter.positions) != 4 || e.waiter.positions[3] != renamed.Position {
		t.Fatalf("waited for %v", e.waiter.positions)
	}
	if e.log.loadCount() != 0 {
		t.Fatalf("a chat fed from its start was loaded %d times", e.log.loadCount())
	}
}

// read_by_count follows the members' read cursors as of each event; chat.read has its own data;
// an edited message keeps its facts with the new text, a deleted one loses its text.
func TestFeedMessageData(t *testing.T) {
	t.Parallel()
	e := newFeedEnv(t, 0)
	e.frames(e.created())
	first := e.sent(e.a)
	e.frames(first)
	e.frames(e.sent(e.a))
	read := e.log.add(e.chatID, events.ChatRead{ChatID: e.chatID, UserID: e.b, UpToSeq: 2})
	if d := e.wantOne(read, e.a, e.b, e.c).(ChatReadFrame); d.UserID != e.b || d.UpToSeq != 2 {
		t.Fatalf("chat.read data %+v", d)
	}
	b, _ := json.Marshal(ChatReadFrame{UserID: e.b, UpToSeq: 2})
	if string(b) != `{"user_id":"`+e.b.String()+`","up_to_seq":2}` {
		t.Fatalf("chat.read encodes as %s", b)
	}
	sent := first.Data.(events.MessageSent)
	editedAt := time.Now().UTC()
	edited := e.log.add(e.chatID, events.MessageEdited{ChatID: e.chatID, MessageID: sent.MessageID, Seq: 1, SenderID: e.a,
		Text: "better", ClientMsgID: sent.ClientMsgID, SentAt: sent.SentAt, EditedAt: editedAt})
	m := e.wantOne(edited, e.a, e.b, e.c).(queries.Message)
	if m.ID != sent.MessageID || m.Text != "better" || m.EditedAt == nil || !m.EditedAt.Equal(editedAt) ||
		m.ReadByCount != 1 || m.Deleted || *m.ClientMsgID != sent.ClientMsgID {
		t.Fatalf("message.edited data %+v", m)
	}
	deleted := e.log.add(e.chatID, events.MessageDeleted{ChatID: e.chatID, MessageID: sent.MessageID, Seq: 1, SenderID: e.a,
		SentAt: sent.SentAt, EditedAt: &editedAt, DeletedBy: e.a, DeletedAt: time.Now().UTC()})
	m = e.wantOne(deleted, e.a, e.b, e.c).(queries.Message)
	if m.Text != "" || !m.Deleted || m.Seq != 1 || m.ReadByCount != 1 || m.ClientMsgID != nil {
		t.Fatalf("message.deleted data %+v", m)
	}
	// The reader's own message does not count itself.
	m = e.wantOne(e.sent(e.b), e.a, e.b, e.c).(queries.Message)
	if m.ReadByCount != 0 {
		t.Fatalf("new message read by %d", m.ReadByCount)
	}
}

// A chat first seen mid-stream is loaded as it was just before the event (from a snapshot only when
// that is not newer); a gap (an event never fed) reloads; an evicted chat is loaded again.
func TestFeedLoadsChatsItDoesNotHold(t *testing.T) {
	t.Parallel()
	e := newFeedEnv(t, 1)
	e.created()
	e.sent(e.a)
	e.log.add(e.chatID, events.ChatMemberRemoved{ChatID: e.chatID, UserID: e.c, RemovedBy: e.a})
	e.log.snapshot(t, e.chatID) // at version 3, without c
	msg := e.sent(e.b)
	// Fed from version 4: the snapshot is usable.
	e.wantOne(msg, e.a, e.b)
	if e.log.loadCount() != 1 {
		t.Fatalf("%d loads, want 1", e.log.loadCount())
	}
	// A fresh feed replaying from version 2 cannot use the snapshot (it is newer): it folds from the
	// start, and c is still a member then.
	replay := e.feed.ForUser(e.c, 10)
	fs, err := replay.Frames(context.Background(), e.log.streams[e.chatID][1])
	if err != nil || len(fs) != 1 || !sameUsers(fs[0].To, []uuid.UUID{e.c}) {
		t.Fatalf("replay of version 2 for c: %+v, %v", fs, err)
	}
	fs, err = replay.Frames(context.Background(), e.log.streams[e.chatID][2])
	if err != nil || len(fs) != 1 || !sameUsers(fs[0].To, []uuid.UUID{e.c}) {
		t.Fatalf("replay of c's removal for c: %+v, %v", fs, err)
	}
	fs, err = replay.Frames(context.Background(), msg)
	if err != nil || len(fs) != 0 {
		t.Fatalf("replay after c's removal gives c %+v, %v", fs, err)
	}
	if len(e.views.calls) == 0 || !sameUsers(e.views.calls[len(e.views.calls)-1], []uuid.UUID{e.c}) {
		t.Fatalf("a one-user feed asked the read model for %v", e.views.calls)
	}

	// A gap: version 5 is never fed, version 6 reloads and still sees d added at 5.
	before := e.log.loadCount()
	e.log.add(e.chatID, events.ChatMemberAdded{ChatID: e.chatID, UserID: e.d, Role: events.ChatRoleMember, AddedBy: e.a})
	e.wantOne(e.sent(e.a), e.a, e.b, e.d)
	if e.log.loadCount() != before+1 {
		t.Fatalf("a gap made %d loads, want 1", e.log.loadCount()-before)
	}
	// Another chat evicts this one (cache of 1): the next event of this one loads it again.
	other := uuid.New()
	e.feed.Frames(context.Background(), e.log.add(other, events.ChatCreated{ChatID: other, Type: events.ChatDirect,
		Members: []events.ChatMember{{UserID: e.a, Role: events.ChatRoleMember}}}))
	before = e.log.loadCount()
	e.wantOne(e.sent(e.a), e.a, e.b, e.d)
	if e.log.loadCount() != before+1 {
		t.Fatalf("an evicted chat made %d loads, want 1", e.log.loadCount()-before)
	}
	members, err := e.feed.Members(context.Background(), e.chatID)
	if err != nil || !sameUsers(members, []uuid.UUID{e.a, e.b, e.d}) {
		t.Fatalf("members %v, %v", members, err)
	}
	members, err = e.feed.Members(context.Background(), uuid.New())
	if err != nil || len(members) != 0 {
		t.Fatalf("members of no chat: %v, %v", members, err)
	}
}

// Events of other aggregates make no frames.
func TestFeedIgnoresOtherEvents(t *testing.T) {
	t.Parallel()
	e := newFeedEnv(t, 0)
	id := uuid.New()
	env := events.Envelope{Type: "user.registered", StreamID: id, StreamType: events.StreamUser, Version: 1,
		Data: events.UserRegistered{UserID: id}}
	if fs := e.frames(env); len(fs) != 0 {
		t.Fatalf("user.registered made %+v", fs)
	}
	if e.log.loadCount() != 0 {
		t.Fatal("an event of another aggregate loaded something")
	}
}

// With Present set, frames go only to the users it accepts, and a chat.* event nobody present gets
// neither waits for the read model nor reads it; the fold still follows every event.
func TestFeedPresentLimitsFrames(t *testing.T) {
	t.Parallel()
	e := newFeedEnv(t, 0)
	present := map[uuid.UUID]bool{}
	e.feed.cfg.Present = func(id uuid.UUID) bool { return present[id] }
	if fs := e.frames(e.created()); len(fs) != 0 || len(e.views.calls) != 0 || len(e.waiter.positions) != 0 {
		t.Fatalf("chat.created with nobody present: %+v, %d reads, %d waits", fs, len(e.views.calls), len(e.waiter.positions))
	}
	present[e.b] = true
	e.wantOne(e.sent(e.a), e.b)
	e.frames(e.log.add(e.chatID, events.ChatMemberRemoved{ChatID: e.chatID, UserID: e.b, RemovedBy: e.a}))
	present[e.c] = true
	e.wantOne(e.sent(e.a), e.c)
	if e.log.loadCount() != 0 {
		t.Fatalf("%d loads: the fold missed events", e.log.loadCount())
	}
	// A one-user feed ignores Present.
	fs, err := e.feed.ForUser(e.a, 0).Frames(context.Background(), e.log.streams[e.chatID][0])
	if err != nil || len(fs) != 1 || !sameUsers(fs[0].To, []uuid.UUID{e.a}) {
		t.Fatalf("one-user feed: %+v, %v", fs, err)
	}
}

// paymentFeed is a feed over a memLog with a Present filter the test controls.
func paymentFeed(t *testing.T, log *memLog, cacheSize int, present map[uuid.UUID]bool) *Feed {
	t.Helper()
	cfg := FeedConfig{Log: log, Chats: &memChats{log: log}, CacheSize: cacheSize}
	if present != nil {
		cfg.Present = func(id uuid.UUID) bool { return present[id] }
	}
	f, err := NewFeed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// wantPaymentFrame checks that env makes exactly one payment.updated frame, to owner only, and
// returns its payment.
func wantPaymentFrame(t *testing.T, f *Feed, env events.Envelope, owner uuid.UUID) queries.Payment {
	t.Helper()
	fs, err := f.Frames(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].Type != PaymentUpdatedFrame || fs[0].ChatID != uuid.Nil || !slices.Equal(fs[0].To, []uuid.UUID{owner}) {
		t.Fatalf("%s: frames %+v, want one payment.updated to %s", env.Type, fs, owner)
	}
	p, ok := fs[0].Data.(queries.Payment)
	if !ok {
		t.Fatalf("%s: data %T, want queries.Payment", env.Type, fs[0].Data)
	}
	return p
}

func noFrames(t *testing.T, f *Feed, env events.Envelope) {
	t.Helper()
	fs, err := f.Frames(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 0 {
		t.Fatalf("%s: frames %+v, want none", env.Type, fs)
	}
}

func TestFeedPaymentUpdatedToOwnerOnly(t *testing.T) {
	log := newMemLog()
	owner, other := uuid.New(), uuid.New()
	pay, r1, r2, r3 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	t0 := time.Date(2025, 5, 1, 10, 0, 0, 123456789, time.UTC)
	tt := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ts := func(s int) time.Time { return tt(s).Truncate(time.Microsecond) }
	f := paymentFeed(t, log, 0, nil)
	mine, theirs := f.ForUser(owner, 10), f.ForUser(other, 10)

	type step struct {
		ev       events.Event
		status   string
		refunded int64
		updated  time.Time
	}
	steps := []step{
		{events.PaymentRequested{PaymentID: pay, UserID: owner, AmountMinor: 1000, Currency: "USD", SourceID: "cnon:card-nonce-pending",
			Description: "coffee", IdempotencyKey: "k", RequestHash: "h", RequestedAt: tt(0)}, queries.PaymentPending, 0, ts(0)},
		{events.PaymentPending{PaymentID: pay, ProviderPaymentID: "sq-1", At: tt(1)}, queries.PaymentPending, 0, ts(1)},
		{events.PaymentCompleted{PaymentID: pay, ProviderPaymentID: "sq-1", At: tt(2)}, queries.PaymentCompleted, 0, ts(2)},
		// A late outcome never moves the payment back: the frame shows it unchanged.
		{events.PaymentFailed{PaymentID: pay, FailureCode: "GENERIC_DECLINE", At: tt(3)}, queries.PaymentCompleted, 0, ts(2)},
		{events.RefundRequested{PaymentID: pay, RefundID: r1, UserID: owner, AmountMinor: 300, RequestedAt: tt(4)}, queries.PaymentCompleted, 0, ts(4)},
		{events.RefundCompleted{PaymentID: pay, RefundID: r1, ProviderRefundID: "rf", At: tt(5)}, queries.PaymentPartiallyRefunded, 300, ts(5)},
		{events.RefundCompleted{PaymentID: pay, RefundID: r1, ProviderRefundID: "rf", At: tt(6)}, queries.PaymentPartiallyRefunded, 300, ts(5)},
		{events.RefundRequested{PaymentID: pay, RefundID: r2, UserID: owner, AmountMinor: 700, RequestedAt: tt(7)}, queries.PaymentPartiallyRefunded, 300, ts(7)},
		{events.RefundFailed{PaymentID: pay, RefundID: r2, FailureCode: "X", At: tt(8)}, queries.PaymentPartiallyRefunded, 300, ts(8)},
		{events.RefundRequested{PaymentID: pay, RefundID: r3, UserID: owner, AmountMinor: 700, RequestedAt: tt(9)}, queries.PaymentPartiallyRefunded, 300, ts(9)},
		{events.RefundCompleted{PaymentID: pay, RefundID: r3, At: tt(10)}, queries.PaymentRefunded, 1000, ts(10)},
	}
	for i, s := range steps {
		env := log.add(pay, s.ev)
		p := wantPaymentFrame(t, f, env, owner)
		if p.ID != pay || p.Status != s.status || p.RefundedMinor != s.refunded || !p.UpdatedAt.Equal(s.updated) ||
			!p.CreatedAt.Equal(ts(0)) || p.AmountMinor != 1000 || p.Currency != "USD" || p.Description != "coffee" || p.FailureCode != nil {
			t.Fatalf("step %d (%s): payment %+v, want status %s, refunded %d, updated %s", i, env.Type, p, s.status, s.refunded, s.updated)
		}
		if i > 0 && (p.ProviderPaymentID == nil || *p.ProviderPaymentID != "sq-1") {
			t.Fatalf("step %d: provider id %v", i, p.ProviderPaymentID)
		}
		// A user's own feed (recovery) gets the same frame; another user's gets nothing.
		if q := wantPaymentFrame(t, mine, env, owner); q.Status != p.Status || q.RefundedMinor != p.RefundedMinor {
			t.Fatalf("step %d: recovery frame %+v, live %+v", i, q, p)
		}
		noFrames(t, theirs, env)
	}

	// The frame's data is API.md's payment object, no more and no less.
	fs, err := f.Frames(context.Background(), log.add(pay, events.RefundFailed{PaymentID: pay, RefundID: r3, At: tt(11)}))
	if err != nil || len(fs) != 1 {
		t.Fatalf("frames %+v, %v", fs, err)
	}
	b, err := json.Marshal(fs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(obj))
	want := []string{"amount_minor", "created_at", "currency", "description", "failure_code", "id", "provider_payment_id",
		"refunded_minor", "status", "updated_at"}
	if !slices.Equal(keys, want) {
		t.Fatalf("payment.updated data keys %v, want %v", keys, want)
	}
	if obj["status"] != "refunded" || obj["failure_code"] != nil || obj["provider_payment_id"] != "sq-1" {
		t.Fatalf("payment.updated data %s", b)
	}
}

func TestFeedPaymentFailedAndPresence(t *testing.T) {
	log := newMemLog()
	owner := uuid.New()
	pay := uuid.New()
	present := map[uuid.UUID]bool{}
	f := paymentFeed(t, log, 0, present)
	at := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	// Nobody of the owner's is connected: no frame, but the fold goes on.
	noFrames(t, f, log.add(pay, events.PaymentRequested{PaymentID: pay, UserID: owner, AmountMinor: 5, Currency: "EUR", RequestedAt: at}))
	present[owner] = true
	p := wantPaymentFrame(t, f, log.add(pay, events.PaymentFailed{PaymentID: pay, ProviderPaymentID: "sq-9", FailureCode: "CVV_FAILURE", At: at.Add(time.Second)}), owner)
	if p.Status != queries.PaymentFailed || p.FailureCode == nil || *p.FailureCode != "CVV_FAILURE" || *p.ProviderPaymentID != "sq-9" {
		t.Fatalf("failed payment %+v", p)
	}
	p = wantPaymentFrame(t, f, log.add(pay, events.PaymentCompleted{PaymentID: pay, At: at.Add(2 * time.Second)}), owner)
	if p.Status != queries.PaymentFailed || !p.UpdatedAt.Equal(at.Add(time.Second)) {
		t.Fatalf("a failed payment completed: %+v", p)
	}
	// An outcome of a payment the log has no request for goes to nobody.
	ghost := uuid.New()
	noFrames(t, f, log.add(ghost, events.PaymentCompleted{PaymentID: ghost, At: at}))
}

func TestFeedPaymentLoadsWhatItDoesNotHold(t *testing.T) {
	log := newMemLog()
	a, b := uuid.New(), uuid.New()
	pa, pb := uuid.New(), uuid.New()
	at := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	f := paymentFeed(t, log, 1, nil) // holds one payment: interleaving evicts
	wantPaymentFrame(t, f, log.add(pa, events.PaymentRequested{PaymentID: pa, UserID: a, AmountMinor: 10, Currency: "USD", RequestedAt: at}), a)
	wantPaymentFrame(t, f, log.add(pb, events.PaymentRequested{PaymentID: pb, UserID: b, AmountMinor: 20, Currency: "USD", RequestedAt: at}), b)
	loads := log.loadCount()
	p := wantPaymentFrame(t, f, log.add(pa, events.PaymentCompleted{PaymentID: pa, At: at.Add(time.Second)}), a)
	if p.Status != queries.PaymentCompleted || p.AmountMinor != 10 || log.loadCount() != loads+1 {
		t.Fatalf("after reload: %+v (loads %d → %d)", p, loads, log.loadCount())
	}
	// Held at the version before: no load.
	r := uuid.New()
	wantPaymentFrame(t, f, log.add(pa, events.RefundRequested{PaymentID: pa, RefundID: r, UserID: a, AmountMinor: 4, RequestedAt: at}), a)
	p = wantPaymentFrame(t, f, log.add(pa, events.RefundCompleted{PaymentID: pa, RefundID: r, At: at.Add(2 * time.Second)}), a)
	if p.Status != queries.PaymentPartiallyRefunded || p.RefundedMinor != 4 || log.loadCount() != loads+1 {
		t.Fatalf("held payment: %+v (loads %d)", p, log.loadCount())
	}
	// A gap (an event fed twice) reloads the state before it instead of folding it twice.
	env := log.streams[pa][len(log.streams[pa])-1]
	if p := wantPaymentFrame(t, f, env, a); p.RefundedMinor != 4 {
		t.Fatalf("event fed twice: %+v", p)
	}
}
