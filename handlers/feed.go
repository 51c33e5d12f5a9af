package handlers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"taki/events"
	"taki/queries"
)

// The feed's domain rule (API.md, "Real time"): a user gets the events of the chats it belongs to, on
// every socket; a frame carries the message or the chat as that user sees it. A payment's events go
// to its owner only, each as a payment.updated frame carrying the payment.

// FeedFrame is one frame an event makes and the users who get it. The transport adds the event's
// type and position; Data is the frame's "data".
type FeedFrame struct {
	Type   string
	ChatID uuid.UUID
	Data   any
	To     []uuid.UUID
}

// ChatReadFrame is the data of a chat.read frame.
type ChatReadFrame struct {
	UserID  uuid.UUID `json:"user_id"`
	UpToSeq int64     `json:"up_to_seq"`
}

// ChatViews reads a chat as each of several users sees it (projections.Chats): unread_count differs
// per user; users who are not members are absent.
type ChatViews interface {
	ChatsFor(ctx context.Context, chatID uuid.UUID, userIDs []uuid.UUID) (map[uuid.UUID]queries.Chat, error)
}

// ReadModelWaiter waits until a read model has applied the log up to a position (the projector).
type ReadModelWaiter interface {
	WaitFor(ctx context.Context, name string, pos events.Position, timeout time.Duration) (bool, error)
}

// StreamReader reads a stream as it was at a version (the event store).
type StreamReader interface {
	LoadUntil(ctx context.Context, streamID uuid.UUID, snapshotVersion int, maxVersion int64) (events.Stream, error)
}

// Defaults of FeedConfig.
const (
	DefaultFeedCacheSize = 10000
	// DefaultFeedChatWait bounds the wait for the chats read model before a chat.* frame is built.
	// These events are rare; a read model that lags longer gets the frame built from what it has.
	DefaultFeedChatWait = 2 * time.Second
)

// FeedConfig configures a Feed.
type FeedConfig struct {
	Log    StreamReader
	Chats  ChatViews
	Waiter ReadModelWaiter
	// CacheSize bounds the chat states kept (default DefaultFeedCacheSize).
	CacheSize int
	// ChatWait bounds the wait for the chats read model (default DefaultFeedChatWait).
	ChatWait time.Duration
	// Present, if set, limits frames to the users it accepts: those with a socket on this instance.
	// The fold still sees every event; only frames nobody here would get are not built (a chat.*
	// frame costs a read-model wait and query).
	Present func(userID uuid.UUID) bool
}

// Feed decides which users get which frame for each event of the log. Fed the log in order, it folds
// every chat's membership and read cursors with evolveChat, so an event goes to the members the chat
// had at that event, whatever happened to the chat since: a removed member gets its removal and
// nothing of the chat afterwards; and every payment with evolvePayment, the write model's own rules.
// It keeps the most recently used states of each (see feedStates). It is safe for concurrent use, but
// frames are meant to be asked for in log order, by one goroutine.
type Feed struct {
	cfg  FeedConfig
	only uuid.UUID // uuid.Nil: every user

	chatStates *feedStates[chat]
	// The payments' states, bounded by the same CacheSize.
	paymentStates *feedStates[payment]
}

// feedStates are the most recently used states of one aggregate's streams (an LRU keyed by stream
// id, with their version); a stream not held at the version just before an event is loaded at that
// version from the log.
type feedStates[S any] struct {
	agg aggregate[S]
	log StreamReader

	mu     sync.Mutex
	states *lru[uuid.UUID, feedState[S]]
	// stuck are the streams holding an event this binary cannot read (Feed.Unreadable): no later
	// event of theirs can be folded, so fold fails at once instead of loading the stream again for each.
	stuck *lru[uuid.UUID, struct{}]
}

type feedState[S any] struct {
	version int64
	state   S
}

func newFeedStates[S any](agg aggregate[S], log StreamReader, size int) *feedStates[S] {
	return &feedStates[S]{agg: agg, log: log, states: newLRU[uuid.UUID, feedState[S]](size),
		stuck: newLRU[uuid.UUID, struct{}](size)}
}

func (c *feedStates[S]) get(id uuid.UUID) (feedState[S], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states.get(id)
}

// peek returns the stream's state as last kept, without making it more recent.
func (c *feedStates[S]) peek(id uuid.UUID) (feedState[S], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states.peek(id)
}

func (c *feedStates[S]) put(id uuid.UUID, version int64, state S) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.states.put(id, feedState[S]{version: version, state: state})
}

// fold returns the stream's state before env and after it, and keeps the latter.
func (c *feedStates[S]) fold(ctx context.Context, env events.Envelope) (before, after S, err error) {
	id := env.StreamID
	c.mu.Lock()
	_, stuck := c.stuck.peek(id)
	c.mu.Unlock()
	if stuck {
		return before, after, fmt.Errorf("%s %s holds an event before version %d that this binary cannot read: %w",
			c.agg.streamType, id, env.Version, events.ErrUndecodable)
	}
	cached, ok := c.get(id)
	if ok && cached.version == env.Version-1 {
		before = cached.state
	} else {
		// First seen, evicted, or a gap (an event not fed, or fed again): load the state just before.
		l, err := c.agg.loadUntil(ctx, c.log, id, env.Version-1)
		if err != nil {
			return before, after, err
		}
		if l.version != env.Version-1 {
			return before, after, fmt.Errorf("%s %s: event version %d follows version %d in the log",
				c.agg.streamType, id, env.Version, l.version)
		}
		before = l.state
	}
	after = c.agg.evolve(before, env)
	c.put(id, env.Version, after)
	return before, after, nil
}

// NewFeed returns a feed; Log and Chats are required, Waiter may be nil (no wait).
func NewFeed(cfg FeedConfig) (*Feed, error) {
	if cfg.Log == nil || cfg.Chats == nil {
		return nil, fmt.Errorf("new feed: %w", errNilDependency)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultFeedCacheSize
	}
	if cfg.ChatWait == 0 {
		cfg.ChatWait = DefaultFeedChatWait
	}
	if cfg.CacheSize < 1 || cfg.ChatWait < 0 {
		return nil, errors.New("new feed: cache size and chat wait must be positive")
	}
	return newFeed(cfg, uuid.Nil), nil
}

// ForUser returns a fresh feed with the same dependencies whose frames go to user only, holding up to
// cacheSize chats: what replaying a stretch of the log for one user's socket needs.
func (f *Feed) ForUser(user uuid.UUID, cacheSize int) *Feed {
	cfg := f.cfg
	if cacheSize > 0 {
		cfg.CacheSize = cacheSize
	}
	cfg.Present = nil
	return newFeed(cfg, user)
}

// Frames returns the frames env makes, each with its recipients; none for events no user is pushed.
func (f *Feed) Frames(ctx context.Context, env events.Envelope) ([]FeedFrame, error) {
	switch env.Data.(type) {
	case events.ChatCreated, events.ChatRenamed, events.ChatMemberAdded, events.ChatMemberRemoved,
		events.MessageSent, events.MessageEdited, events.MessageDeleted, events.ChatRead:
		return f.chatFrames(ctx, env)
	case events.PaymentRequested, events.PaymentPending, events.PaymentCompleted, events.PaymentFailed,
		events.RefundRequested, events.RefundCompleted, events.RefundFailed:
		return f.paymentFrames(ctx, env)
	default:
		return nil, nil
	}
}

func (f *Feed) chatFrames(ctx context.Context, env events.Envelope) ([]FeedFrame, error) {
	before, after, err := f.chatStates.fold(ctx, env)
	if err != nil {
		return nil, err
	}
	to := f.recipients(before, after)
	if len(to) == 0 {
		return nil, nil
	}
	chatID := env.StreamID
	one := func(data any) []FeedFrame {
		return []FeedFrame{{Type: env.Type, ChatID: chatID, Data: data, To: to}}
	}
	switch ev := env.Data.(type) {
	case events.MessageSent:
		m := sentView(ev)
		m.ReadByCount = after.readBy(ev.Seq, ev.SenderID)
		return one(m), nil
	case events.MessageEdited:
		m := queries.Message{ID: ev.MessageID, ChatID: ev.ChatID, Seq: ev.Seq, SenderID: ev.SenderID, Text: ev.Text,
			ClientMsgID: feedOptional(ev.ClientMsgID), SentAt: ev.SentAt, EditedAt: &ev.EditedAt,
			ReadByCount: after.readBy(ev.Seq, ev.SenderID)}
		return one(m), nil
	case events.MessageDeleted:
		m := queries.Message{ID: ev.MessageID, ChatID: ev.ChatID, Seq: ev.Seq, SenderID: ev.SenderID, Text: "",
			ClientMsgID: feedOptional(ev.ClientMsgID), SentAt: ev.SentAt, EditedAt: ev.EditedAt, Deleted: true,
			ReadByCount: after.readBy(ev.Seq, ev.SenderID)}
		return one(m), nil
	case events.ChatRead:
		return one(ChatReadFrame{UserID: ev.UserID, UpToSeq: ev.UpToSeq}), nil
	default:
		return f.chatViewFrames(ctx, env, after, to)
	}
}

// chatViewFrames builds chat.* frames: the chat as each recipient sees it, read from the chats read
// model once it has applied env (waited for, within ChatWait). A recipient the read model does not
// show the chat to (the member just removed, or a read model that lags) gets it as the fold knows it:
// members and cursors as of env, no unread count, no last message.
func (f *Feed) chatViewFrames(ctx context.Context, env events.Envelope, after chat, to []uuid.UUID) ([]FeedFrame, error) {
	if f.cfg.Waiter != nil {
		if _, err := f.cfg.Waiter.WaitFor(ctx, queries.ChatsReadModel, env.Position, f.cfg.ChatWait); err != nil && ctx.Err() != nil {
			return nil, err
		}
		// Not applied in time, or the wait failed: build from what the read model has.
	}
	views, err := f.cfg.Chats.ChatsFor(ctx, env.StreamID, to)
	if err != nil {
		return nil, fmt.Errorf("%s frame of chat %s: %w", env.Type, env.StreamID, err)
	}
	// The views differ only in unread_count: recipients with equal views share one frame, so a big
	// group's chat.* event is encoded a few times, not once per member.
	var out []FeedFrame
	byUnread := map[int64]int{} // unread count → index in out
	fallback := -1
	for _, u := range to {
		v, ok := views[u]
		if !ok {
			if fallback < 0 {
				fallback = len(out)
				out = append(out, FeedFrame{Type: env.Type, ChatID: env.StreamID, Data: foldView(after)})
			}
			out[fallback].To = append(out[fallback].To, u)
			continue
		}
		i, seen := byUnread[v.UnreadCount]
		if !seen {
			i = len(out)
			byUnread[v.UnreadCount] = i
			out = append(out, FeedFrame{Type: env.Type, ChatID: env.StreamID, Data: v})
		}
		out[i].To = append(out[i].To, u)
	}
	return out, nil
}

// recipients are the members before the event and after it: everyone who belongs to the chat at
// that event, a member removed by it included, a member added by it too.
func (f *Feed) recipients(before, after chat) []uuid.UUID {
	if f.only != uuid.Nil {
		_, was := before.Members[f.only]
		_, is := after.Members[f.only]
		if was || is {
			return []uuid.UUID{f.only}
		}
		return nil
	}
	present := f.cfg.Present
	if present == nil {
		present = func(uuid.UUID) bool { return true }
	}
	var to []uuid.UUID
	for id := range after.Members {
		if present(id) {
			to = append(to, id)
		}
	}
	for id := range before.Members {
		if _, ok := after.Members[id]; !ok && present(id) {
			to = append(to, id)
		}
	}
	return to
}

// Members returns a chat's members as this feed last folded them, or as the log holds them now when
// the feed does not hold the chat; nil for a chat that does not exist.
func (f *Feed) Members(ctx context.Context, chatID uuid.UUID) ([]uuid.UUID, error) {
	c, ok := f.chatStates.get(chatID)
	if !ok {
		l, err := chats.loadUntil(ctx, f.cfg.Log, chatID, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		c.state = l.state
	}
	out := make([]uuid.UUID, 0, len(c.state.Members))
	for id := range c.state.Members {
		out = append(out, id)
	}
	return out, nil
}

func newFeed(cfg FeedConfig, only uuid.UUID) *Feed {
	return &Feed{cfg: cfg, only: only, chatStates: newFeedStates(chats, cfg.Log, cfg.CacheSize),
		paymentStates: newFeedStates(payments, cfg.Log, cfg.CacheSize)}
}

// loadUntil folds stream id up to maxVersion: from a snapshot no newer than that, else from the start.
func (a aggregate[S]) loadUntil(ctx context.Context, r StreamReader, id uuid.UUID, maxVersion int64) (loaded[S], error) {
	if maxVersion < 1 {
		return loaded[S]{id: id}, nil
	}
	stream, err := r.LoadUntil(ctx, id, a.stateVersion, maxVersion)
	if err != nil {
		return loaded[S]{id: id}, fmt.Errorf("load %s %s at version %d: %w", a.streamType, id, maxVersion, err)
	}
	return a.fold(id, stream)
}

// foldView is a chat as the fold knows it: no unread count (it needs every message's sender) and no
// last message.
func foldView(c chat) queries.Chat {
	v := queries.Chat{ID: c.ID, Type: c.Type, Title: c.Title, CreatedAt: c.CreatedAt, LastSeq: c.LastSeq,
		Members: make([]queries.ChatMember, 0, len(c.Members))}
	for id, m := range c.Members {
		v.Members = append(v.Members, queries.ChatMember{UserID: id, Role: m.Role, LastReadSeq: m.LastRead})
	}
	slices.SortFunc(v.Members, func(a, b queries.ChatMember) int { return cmp.Compare(a.UserID.String(), b.UserID.String()) })
	return v
}

func feedOptional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// PaymentUpdatedFrame is the type of every frame a payment or refund event makes (API.md, "Real
// time"): its data is the payment object, and only the payment's owner gets it.
const PaymentUpdatedFrame = "payment.updated"

// paymentFrames builds the payment.updated frame of a payment or refund event: the payment as it
// stands after the event, folded here (no read-model wait holds up the fan-out) by the rules the read
// model follows too, so it shows what GET /payments/{id} shows once the read model applied the event;
// to its owner only.
func (f *Feed) paymentFrames(ctx context.Context, env events.Envelope) ([]FeedFrame, error) {
	_, after, err := f.paymentStates.fold(ctx, env)
	if err != nil {
		return nil, err
	}
	owner := after.Owner
	switch {
	case owner == uuid.Nil:
		return nil, nil
	case f.only != uuid.Nil && f.only != owner:
		return nil, nil
	case f.only == uuid.Nil && f.cfg.Present != nil && !f.cfg.Present(owner):
		return nil, nil
	}
	return []FeedFrame{{Type: PaymentUpdatedFrame, Data: after.view(), To: []uuid.UUID{owner}}}, nil
}
