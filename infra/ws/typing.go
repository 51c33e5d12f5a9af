package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// TypeTyping is the frame of a typing notice: {"type":"typing","chat_id":...,"data":{"user_id":...}}.
const TypeTyping = "typing"

// maxNoticeBytes keeps a typing notice under PostgreSQL's NOTIFY payload limit (8000 bytes) with room
// to spare. A notice for more recipients than fit leaves them out, and each instance looks the chat's
// members up instead.
const maxNoticeBytes = 7500

// TypingRelayConfig configures a TypingRelay.
type TypingRelayConfig struct {
	// Publish sends a notice to every instance (NOTIFY on the typing channel), this one included.
	Publish func(ctx context.Context, payload string) error
	// Members returns a chat's members, for notices too big to carry their recipients
	// (handlers.Feed.Members).
	Members func(ctx context.Context, chatID uuid.UUID) ([]uuid.UUID, error)
	Logger  *slog.Logger
	// MinInterval: notices of one typist in one chat closer together than this are not relayed
	// again (default DefaultTypingInterval; negative: all are). A client repeats "typing" every few
	// seconds while its user types; one that sends thousands a second costs a map lookup each, not
	// a NOTIFY each.
	MinInterval time.Duration
}

// DefaultTypingInterval is TypingRelayConfig.MinInterval's default.
const DefaultTypingInterval = time.Second

// maxTypists bounds the throttle's memory: past it, entries older than MinInterval are forgotten.
const maxTypists = 10000

// TypingRelay implements handlers.TypingRelay across instances: the notice reaches the sockets of the
// chat's other members on this instance at once, and those on the others through a notification
// (Received) carrying the chat, the typist and, when they fit, the recipients. Nothing is stored; a
// notice lost while an instance's listening connection is down is not worth recovering.
type TypingRelay struct {
	cfg      TypingRelayConfig
	instance string
	hub      atomic.Pointer[Hub]

	mu   sync.Mutex
	last map[typist]time.Time
}

type typist struct{ chat, user uuid.UUID }

// typingNotice is the notification payload. To is absent when the recipients did not fit.
type typingNotice struct {
	Instance string      `json:"i"`
	ChatID   uuid.UUID   `json:"c"`
	From     uuid.UUID   `json:"f"`
	To       []uuid.UUID `json:"t,omitempty"`
}

// NewTypingRelay returns a relay; it delivers to sockets once a hub is attached.
func NewTypingRelay(cfg TypingRelayConfig) (*TypingRelay, error) {
	if cfg.Publish == nil || cfg.Members == nil || cfg.Logger == nil {
		return nil, errors.New("new typing relay: Publish, Members and Logger are required")
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = DefaultTypingInterval
	}
	return &TypingRelay{cfg: cfg, instance: uuid.NewString(), last: map[typist]time.Time{}}, nil
}

// Attach makes the relay deliver to hub's sockets. The hub is built after the command handlers that
// use the relay, hence the late binding.
func (r *TypingRelay) Attach(h *Hub) { r.hub.Store(h) }

// RelayTyping implements handlers.TypingRelay.
func (r *TypingRelay) RelayTyping(ctx context.Context, chatID, from uuid.UUID, to []uuid.UUID) error {
	if len(to) == 0 || !r.due(chatID, from) {
		return nil
	}
	r.deliver(chatID, from, to)
	n := typingNotice{Instance: r.instance, ChatID: chatID, From: from, To: to}
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("typing notice: %w", err)
	}
	if len(b) > maxNoticeBytes {
		n.To = nil
		if b, err = json.Marshal(n); err != nil {
			return fmt.Errorf("typing notice: %w", err)
		}
	}
	if err := r.cfg.Publish(ctx, string(b)); err != nil {
		return fmt.Errorf("relay typing: %w", err)
	}
	return nil
}

// due reports whether a notice of from in chatID is to be relayed now, and notes it if so.
func (r *TypingRelay) due(chatID, from uuid.UUID) bool {
	if r.cfg.MinInterval < 0 {
		return true
	}
	now := time.Now()
	k := typist{chat: chatID, user: from}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.last[k]; ok && now.Sub(t) < r.cfg.MinInterval {
		return false
	}
	if len(r.last) >= maxTypists {
		for k, t := range r.last {
			if now.Sub(t) >= r.cfg.MinInterval {
				delete(r.last, k)
			}
		}
		if len(r.last) >= maxTypists {
			clear(r.last) // that many typing at once: forget, rather than grow
		}
	}
	r.last[k] = now
	return true
}

// Received delivers a notice another instance published to this one's sockets.
func (r *TypingRelay) Received(ctx context.Context, payload string) {
	var n typingNotice
	if err := json.Unmarshal([]byte(payload), &n); err != nil || n.ChatID == uuid.Nil || n.From == uuid.Nil {
		r.cfg.Logger.WarnContext(ctx, "typing notice ignored: malformed", slog.Int("bytes", len(payload)))
		return
	}
	if n.Instance == r.instance {
		return // delivered here already
	}
	to := n.To
	if to == nil {
		members, err := r.cfg.Members(ctx, n.ChatID)
		if err != nil {
			r.cfg.Logger.WarnContext(ctx, "typing notice dropped: members unknown", slog.String("error", err.Error()))
			return
		}
		to = slices.DeleteFunc(members, func(id uuid.UUID) bool { return id == n.From })
	}
	r.deliver(n.ChatID, n.From, to)
}

func (r *TypingRelay) deliver(chatID, from uuid.UUID, to []uuid.UUID) {
	h := r.hub.Load()
	if h == nil {
		return
	}
	b, err := EncodeFrame(ServerFrame{Type: TypeTyping, ChatID: chatID, Data: typingData{UserID: from}})
	if err != nil {
		return
	}
	h.SendToUsers(to, b)
}

type typingData struct {
	UserID uuid.UUID `json:"user_id"`
}
