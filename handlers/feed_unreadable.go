package handlers

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"

	"taki/events"
)

// DefaultFeedResyncEvery is how often, at most, the possible recipients of a stream stuck on an event
// this binary cannot read are told to resync again (FeedConfig.ResyncEvery).
const DefaultFeedResyncEvery = 5 * time.Second

// Unreadable returns who may have had a frame of env and must be told to reload: env is an event this
// binary cannot read (events.ErrUndecodable), or one of a stream stuck on such an event (see
// feedStates.stuck), which it now is. all is true when the feed cannot tell who (an unknown stream
// type, a stream it cannot load): then anyone may have.
//
// Chat events go to the chat's members as of the event before (folded here, or loaded up to it), and
// to a member an event adds; payment events to the owner. User streams make no frames, so nobody
// missed one. A stream's recipients are told again only once ResyncEvery has passed, and everyone
// only once per ResyncEvery across streams: the stream's later events cannot be delivered either, and
// clients reloading for each would only load the server.
func (f *Feed) Unreadable(ctx context.Context, env events.Envelope) (to []uuid.UUID, all bool) {
	switch env.StreamType {
	case events.StreamUser:
		return nil, false
	case events.StreamChat:
		if !f.chatStates.markStuck(env.StreamID, f.cfg.ResyncEvery) {
			return nil, false
		}
		c, ok := f.chatStates.before(ctx, env)
		if !ok {
			return f.everyone()
		}
		for id := range c.Members {
			to = append(to, id)
		}
		if added, ok := env.Data.(events.ChatMemberAdded); ok && !slices.Contains(to, added.UserID) {
			to = append(to, added.UserID)
		}
	case events.StreamPayment:
		if !f.paymentStates.markStuck(env.StreamID, f.cfg.ResyncEvery) {
			return nil, false
		}
		p, ok := f.paymentStates.before(ctx, env)
		if !ok || p.Owner == uuid.Nil {
			return f.everyone()
		}
		to = []uuid.UUID{p.Owner}
	default:
		return f.everyone()
	}
	if f.only != uuid.Nil {
		if !slices.Contains(to, f.only) {
			return nil, false
		}
		return []uuid.UUID{f.only}, false
	}
	return to, false
}

// everyone answers Unreadable's "anyone may have": at most once per ResyncEvery.
func (f *Feed) everyone() ([]uuid.UUID, bool) {
	f.allMu.Lock()
	defer f.allMu.Unlock()
	if now := time.Now(); f.allTold.IsZero() || now.Sub(f.allTold) >= f.cfg.ResyncEvery {
		f.allTold = now
		return nil, true
	}
	return nil, false
}

// markStuck records that stream id cannot be folded past an event this binary cannot read, and
// reports whether its recipients are to be told (not told within every).
func (c *feedStates[S]) markStuck(id uuid.UUID, every time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if told, ok := c.stuck.peek(id); ok && now.Sub(told) < every {
		return false
	}
	c.stuck.put(id, now)
	return true
}

// before is the stream's state just before env: as folded here, or loaded from the log up to there.
func (c *feedStates[S]) before(ctx context.Context, env events.Envelope) (S, bool) {
	if st, ok := c.peek(env.StreamID); ok && st.version == env.Version-1 {
		return st.state, true
	}
	l, err := c.agg.loadUntil(ctx, c.log, env.StreamID, env.Version-1)
	if err != nil || l.version != env.Version-1 {
		// The stream holds an earlier event it cannot read, or the log cannot be read now: the state
		// kept, if any, is the last known.
		st, ok := c.peek(env.StreamID)
		return st.state, ok
	}
	// Kept as the last known state for the stream's later events, which cannot be loaded.
	c.put(env.StreamID, l.version, l.state)
	return l.state, true
}
