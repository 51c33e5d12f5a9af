package handlers

import (
	"github.com/google/uuid"

	"taki/events"
)

// Unreadable returns who may have had a frame of env, an event this binary cannot read
// (events.ErrUndecodable), so that they can be told to reload: the chat's members as the feed last
// folded them, a payment's owner, the user of a user stream. all is true when the feed cannot tell
// (a chat or payment it does not hold): then anyone may have.
//
// The chat's fold stays as it was before env: members the unread event added or removed are not
// known here, but the fold still names the likely audience of the chat's later events, whose folds
// fail in turn (they cannot be built past env).
func (f *Feed) Unreadable(env events.Envelope) (to []uuid.UUID, all bool) {
	switch env.StreamType {
	case events.StreamUser:
		return []uuid.UUID{env.StreamID}, false
	case events.StreamChat:
		c, ok := f.chatStates.peek(env.StreamID)
		if !ok {
			return nil, true
		}
		to = make([]uuid.UUID, 0, len(c.state.Members))
		for id := range c.state.Members {
			to = append(to, id)
		}
		return to, false
	case events.StreamPayment:
		p, ok := f.paymentStates.peek(env.StreamID)
		if !ok || p.state.Owner == uuid.Nil {
			return nil, true
		}
		return []uuid.UUID{p.state.Owner}, false
	default:
		return nil, true
	}
}
