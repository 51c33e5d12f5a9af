package handlers

import (
	"context"
	"slices"

	"github.com/google/uuid"

	"taki/events"
)

// Unreadable returns who may have had a frame of env and must be told to reload: env is an event this
// binary cannot read (events.ErrUndecodable), or one of a stream stuck on such an event (see
// feedStates.stuck), which it now is. all is true when the feed cannot tell who (an unknown stream
// type, a stream it cannot load, one whose first event is the unreadable one): then anyone may have.
//
// Chat events go to the chat's members as of the event before (folded here, or loaded up to it), and
// to those a readable event adds, who stay in the chat's kept state for its later events; payment
// events go to the owner. User streams make no frames, so nobody missed one. Every such event is
// told: a client may have reloaded since the last resync_required, so none may be skipped.
func (f *Feed) Unreadable(ctx context.Context, env events.Envelope) (to []uuid.UUID, all bool) {
	switch env.StreamType {
	case events.StreamUser:
		return nil, false
	case events.StreamChat:
		f.chatStates.markStuck(env.StreamID)
		before, ok := f.chatStates.before(ctx, env)
		if !ok {
			return nil, true
		}
		// A readable event of a stuck chat still says who joins or leaves it: kept, so that a member
		// it adds is told of the chat's later events too.
		after := evolveChat(before, env)
		f.chatStates.keep(env.StreamID, after)
		for id := range after.Members {
			to = append(to, id)
		}
		for id := range before.Members {
			if _, still := after.Members[id]; !still {
				to = append(to, id)
			}
		}
	case events.StreamPayment:
		f.paymentStates.markStuck(env.StreamID)
		p, ok := f.paymentStates.before(ctx, env)
		if !ok || p.Owner == uuid.Nil {
			return nil, true
		}
		to = []uuid.UUID{p.Owner}
	default:
		return nil, true
	}
	if f.only != uuid.Nil {
		if !slices.Contains(to, f.only) {
			return nil, false
		}
		return []uuid.UUID{f.only}, false
	}
	return to, false
}

// markStuck records that stream id cannot be folded past an event this binary cannot read.
func (c *feedStates[S]) markStuck(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stuck.put(id, struct{}{})
}

// keep replaces the state kept for a stuck stream, at the version it was kept.
func (c *feedStates[S]) keep(id uuid.UUID, state S) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, _ := c.states.peek(id)
	c.states.put(id, feedState[S]{version: st.version, state: state})
}

// before is the stream's state just before env: as folded here, or loaded from the log up to there.
// false when it is not known: the stream cannot be read up to there, or env is its first event.
func (c *feedStates[S]) before(ctx context.Context, env events.Envelope) (S, bool) {
	if st, ok := c.peek(env.StreamID); ok && st.version == env.Version-1 {
		return st.state, true
	}
	l, err := c.agg.loadUntil(ctx, c.log, env.StreamID, env.Version-1)
	if err != nil || l.version != env.Version-1 || l.version == 0 {
		// The stream holds an earlier event it cannot read, or the log cannot be read now: the state
		// kept, if any, is the last known.
		st, ok := c.peek(env.StreamID)
		return st.state, ok
	}
	// Kept as the last known state for the stream's later events, which cannot be loaded.
	c.put(env.StreamID, l.version, l.state)
	return l.state, true
}
