package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/events"
	"taki/handlers"
)

// TypeResyncRequired tells a client that it cannot be served the events it missed: it asked to
// recover from a position too far behind or not of this log, or the log holds an event this binary
// cannot read (Fanout.Unreadable). It reloads its state through the API; live frames follow.
const TypeResyncRequired = "resync_required"

// Defaults of RecoveryConfig.
const (
	// DefaultMaxRecoveryEvents bounds how many events of the log a recovery scans. A client further
	// behind than this is better served by reloading its chats (resync_required) than by replaying
	// the whole log's tail for it.
	DefaultMaxRecoveryEvents = 10000
	// DefaultRecoveryBatch is how many events one read of a recovery returns.
	DefaultRecoveryBatch = 500
	// DefaultMaxRecoveries bounds the recoveries reading the log at once; the others wait (holding
	// their live frames), so a reconnect storm after a restart cannot swamp the database.
	DefaultMaxRecoveries = 16
)

// maxHeldFrames bounds the live frames a recovering socket holds. Past it they are dropped and the
// recovery reads them from the log instead (it goes on reading until it catches up with what it
// holds): memory stays bounded whatever the socket's lag, and nothing is lost.
const maxHeldFrames = 4096

// LogReader reads the event log for recoveries (*postgres.EventStore).
type LogReader interface {
	// ReadLog reads up to limit events after a position, in log order, never skipping one committed
	// late (see postgres.EventStore.ReadLog).
	ReadLog(ctx context.Context, after events.Position, eventType string, limit int) ([]events.Envelope, error)
	// CountAfter counts the events after a position, stopping at limit.
	CountAfter(ctx context.Context, after events.Position, limit int) (int, error)
	// LogHead is the position of the last committed event.
	LogHead(ctx context.Context) (events.Position, error)
}

// Feed says which users get which frame for an event (*handlers.Feed), and who may have had a frame of
// an event this binary cannot read: they are told to resync (Fanout.Unreadable).
type Feed interface {
	Frames(ctx context.Context, env events.Envelope) ([]handlers.FeedFrame, error)
	Unreadable(ctx context.Context, env events.Envelope) (to []uuid.UUID, all bool)
}

// RecoveryConfig configures ?since= recoveries.
type RecoveryConfig struct {
	Log LogReader
	// UserFeed returns a fresh feed of the frames one user gets (handlers.Feed.ForUser): a recovery
	// folds each chat's membership as of each event it replays, not as of now.
	UserFeed func(userID uuid.UUID) Feed
	// Live is closed once the live fan-out's tail has its start position (postgres.Tail.Started).
	// Recoveries wait for it: the seam between the log a recovery reads and the live frames it
	// holds needs the tail's start to be visible to the recovery's reads.
	Live <-chan struct{}
	// MaxEvents: a position with more events than this after it gets resync_required (default
	// DefaultMaxRecoveryEvents).
	MaxEvents     int
	BatchSize     int
	MaxConcurrent int
}

func (r *RecoveryConfig) setDefaults() {
	if r.MaxEvents == 0 {
		r.MaxEvents = DefaultMaxRecoveryEvents
	}
	if r.BatchSize == 0 {
		r.BatchSize = DefaultRecoveryBatch
	}
	if r.MaxConcurrent == 0 {
		r.MaxConcurrent = DefaultMaxRecoveries
	}
}

func (r *RecoveryConfig) validate() error {
	if r.Log == nil || r.UserFeed == nil || r.Live == nil {
		return errors.New("recovery: Log, UserFeed and Live are required")
	}
	if r.MaxEvents < 1 || r.BatchSize < 1 || r.MaxConcurrent < 1 {
		return errors.New("recovery: MaxEvents, BatchSize and MaxConcurrent must be positive")
	}
	return nil
}

// eventStream orders a socket's event frames. Live frames arrive in log order from the fan-out; a
// recovering socket also gets frames from its recovery, read from the log. The seam between the two
// is kept gap and duplicate free thus:
//
//   - from before the socket is indexed (so before any live frame can reach it), live frames are
//     held, not sent;
//   - the recovery replays the log after ?since= until a read comes back short: it has then sent
//     every event visible at that read. Every event the fan-out handled before the socket was
//     indexed was visible then (the tail saw it, and visibility only grows), so it was replayed;
//     every event the fan-out handled since is held;
//   - the held frames are then sent, skipping any at or below the last position sent (replayed
//     already), and the socket turns live under the same lock;
//   - later live frames at or below the last position sent are skipped too (a tail behind the
//     recovery's reads).
//
// Frames without a position (typing, pong, ack, error) do not pass through here.
type eventStream struct {
	mu         sync.Mutex
	last       events.Position // last event frame sent
	recovering bool
	overflowed bool // held frames were dropped: the recovery reads on
	held       []heldFrame
}

type heldFrame struct {
	pos   events.Position
	frame []byte
}

func (s *eventStream) beginRecovery(since events.Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recovering = true
	s.last = since
}

var errAlreadySent = errors.New("event frame already sent")

// sendEvent is the live path of one event frame.
func (c *Client) sendEvent(pos events.Position, frame []byte) error {
	s := &c.stream
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recovering {
		switch {
		case s.overflowed:
		case len(s.held) == maxHeldFrames:
			clear(s.held)
			s.held = nil
			s.overflowed = true
		default:
			s.held = append(s.held, heldFrame{pos: pos, frame: frame})
		}
		return nil
	}
	if !s.last.Less(pos) {
		return errAlreadySent
	}
	s.last = pos // sent, or the socket is closing: either way nothing is sent at pos again
	return c.Send(frame)
}

// sendReplayed is the recovery's path of one event frame.
func (c *Client) sendReplayed(pos events.Position, frame []byte) error {
	s := &c.stream
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.Less(pos) {
		return nil
	}
	s.last = pos
	return c.Send(frame)
}

// releaseHeld sends the held live frames, in chunks the socket can take, and turns the socket live
// once none is left. It reports false when held frames were dropped meanwhile: the recovery must read
// the log on.
func (c *Client) releaseHeld(ctx context.Context) (live bool, err error) {
	s := &c.stream
	chunk := max(1, int(c.hub.maxPending/2))
	for {
		if err := c.waitForRoom(ctx); err != nil {
			return false, err
		}
		s.mu.Lock()
		if s.overflowed {
			s.overflowed = false
			s.mu.Unlock()
			return false, nil
		}
		if len(s.held) == 0 {
			s.recovering = false
			s.held = nil
			s.mu.Unlock()
			return true, nil
		}
		n := min(chunk, len(s.held))
		for _, f := range s.held[:n] {
			if !s.last.Less(f.pos) {
				continue
			}
			s.last = f.pos
			if err := c.Send(f.frame); err != nil {
				s.mu.Unlock()
				return false, err
			}
		}
		clear(s.held[:n])
		s.held = s.held[n:]
		s.mu.Unlock()
	}
}

// waitForRoom waits until the socket's queue is at most half full: a recovery sends as fast as the
// client reads, never so fast that the socket is closed as a slow consumer.
func (c *Client) waitForRoom(ctx context.Context) error {
	for c.pending.Load() > c.hub.maxPending/2 {
		select {
		case <-c.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// recover serves ?since= for c. A failure closes the socket with 1011, and its client reconnects with
// the last position it got: no frame is lost silently.
func (h *Hub) recover(c *Client, since events.Position) {
	defer h.recoveries.Done()
	err := h.replay(c, since)
	if err == nil || c.ctx.Err() != nil || errors.Is(err, ErrSocketClosed) || errors.Is(err, ErrSlowConsumer) {
		return
	}
	h.log.ErrorContext(c.ctx, "websocket recovery failed", slog.String("since", since.String()), slog.String("error", err.Error()))
	c.closeWith(websocket.CloseInternalServerErr, "recovery failed: reconnect with ?since=")
}

func (h *Hub) replay(c *Client, since events.Position) error {
	ctx := c.ctx
	r := h.cfg.Recovery
	if r == nil {
		return c.resync(ctx, true)
	}
	select {
	case <-r.Live:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case h.recoverySlots <- struct{}{}:
		defer func() { <-h.recoverySlots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	head, err := r.Log.LogHead(ctx)
	if err != nil {
		return err
	}
	if head.Less(since) {
		// Not a position of this log (another database, or made up).
		return c.resync(ctx, true)
	}
	n, err := r.Log.CountAfter(ctx, since, r.MaxEvents+1)
	if err != nil {
		return err
	}
	if n > r.MaxEvents {
		return c.resync(ctx, true)
	}
	feed := r.UserFeed(c.userID)
	cursor := since
	replayed := 0
	for {
		batch, err := r.Log.ReadLog(ctx, cursor, "", r.BatchSize)
		// At an event this binary cannot read, the events before it come along: replay them, then
		// decide on it.
		var unreadable *events.UnreadableError
		if errors.As(err, &unreadable) {
			err = nil
		}
		if err != nil {
			return err
		}
		for _, env := range batch {
			frames, err := feed.Frames(ctx, env)
			if errors.Is(err, events.ErrUndecodable) {
				// Its chat is stuck on an event this binary cannot read (see Fanout.Unreadable).
				if concerns(ctx, feed, env) {
					return c.resync(ctx, false)
				}
				cursor = env.Position
				continue
			}
			if err != nil {
				return err
			}
			for _, f := range frames {
				if !slices.Contains(f.To, c.userID) {
					continue
				}
				b, err := encodeEvent(env, f)
				if err != nil {
					return err
				}
				if err := c.waitForRoom(ctx); err != nil {
					return err
				}
				if err := c.sendReplayed(env.Position, b); err != nil {
					return err
				}
				replayed++
			}
			cursor = env.Position
		}
		if unreadable != nil {
			// What the client missed cannot be told: it reloads, if the event could concern it.
			if concerns(ctx, feed, unreadable.Event) {
				return c.resync(ctx, false)
			}
			cursor = unreadable.Event.Position
			continue
		}
		if len(batch) == r.BatchSize {
			continue
		}
		live, err := c.releaseHeld(ctx)
		if err != nil {
			return err
		}
		if live {
			h.log.DebugContext(ctx, "websocket recovered", slog.String("since", since.String()),
				slog.String("until", cursor.String()), slog.Int("frames", replayed))
			return nil
		}
	}
}

// concerns reports whether env, which a user's feed cannot build frames of, may have made one for the
// user.
func concerns(ctx context.Context, feed Feed, env events.Envelope) bool {
	to, all := feed.Unreadable(ctx, env)
	return all || len(to) > 0
}

// resync sends resync_required and turns the socket live with the frames it holds. fromScratch forgets
// the position the socket is at, for a since that this log cannot serve (it may be no position of it
// at all); a resync in the middle of a replay keeps it, so that no held frame goes out twice.
func (c *Client) resync(ctx context.Context, fromScratch bool) error {
	if fromScratch {
		c.stream.mu.Lock()
		c.stream.last = events.Position{}
		c.stream.mu.Unlock()
	}
	for {
		if err := c.SendFrame(ServerFrame{Type: TypeResyncRequired}); err != nil {
			return err
		}
		live, err := c.releaseHeld(ctx)
		if err != nil || live {
			return err
		}
		// Held frames were dropped while the client was slow to take the others: it must resync
		// again.
	}
}

// encodeEvent encodes an event frame: {"type", "position", "chat_id", "data"}.
func encodeEvent(env events.Envelope, f handlers.FeedFrame) ([]byte, error) {
	b, err := EncodeFrame(ServerFrame{Type: f.Type, Position: env.Position.String(), ChatID: f.ChatID, Data: f.Data})
	if err != nil {
		return nil, fmt.Errorf("event %s at %s: %w", env.ID, env.Position, err)
	}
	return b, nil
}
