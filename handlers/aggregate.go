// Package handlers is the write model: per aggregate its state, evolve(state, event) and the command
// handlers that load it, decide new events and append them; and the query handlers over read models.
package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
)

// aggregate describes how one kind of stream folds into state S.
type aggregate[S any] struct {
	streamType string
	evolve     func(S, events.Envelope) S
	// snapshotEvery writes a snapshot whenever a stream's version crosses a multiple of it, so loading
	// costs the snapshot plus fewer than snapshotEvery events however long the stream grows.
	snapshotEvery int64
	// stateVersion changes when S's JSON shape or what evolve makes of the events changes; older
	// snapshots are then ignored.
	stateVersion int
}

// loaded is an aggregate's state at a version, and the log position of the event at that version
// (what a command answering from this state reflects).
type loaded[S any] struct {
	id      uuid.UUID
	state   S
	version int64
	pos     events.Position
}

func (a aggregate[S]) load(ctx context.Context, log events.Log, id uuid.UUID) (loaded[S], error) {
	stream, err := log.Load(ctx, id, a.stateVersion)
	if errors.Is(err, events.ErrUndecodable) {
		// Most likely a newer binary wrote it during a rolling deploy: once this instance is replaced
		// the command succeeds, so clients are told to retry rather than shown an internal error.
		// events.ErrUndecodable stays in the chain for callers that tell it apart.
		return loaded[S]{id: id}, fmt.Errorf("load %s %s: %w (%w)", a.streamType, id, err, &commands.Error{
			Kind:       commands.KindUnavailable,
			Detail:     fmt.Sprintf("this %s holds events a newer version of the service wrote; retry shortly", a.streamType),
			RetryAfter: unreadableRetryAfter,
		})
	}
	if err != nil {
		return loaded[S]{id: id}, fmt.Errorf("load %s %s: %w", a.streamType, id, err)
	}
	return a.fold(id, stream)
}

// unreadableRetryAfter is how long a client waits before retrying a command on a stream holding
// events this binary cannot read: about the time a rolling deploy takes to replace an instance.
const unreadableRetryAfter = 5 * time.Second

// fold is the state a stream read from the log leads to.
func (a aggregate[S]) fold(id uuid.UUID, stream events.Stream) (loaded[S], error) {
	out := loaded[S]{id: id}
	if stream.Snapshot != nil {
		if err := json.Unmarshal(stream.Snapshot.State, &out.state); err != nil {
			return out, fmt.Errorf("load %s %s: snapshot: %w", a.streamType, id, err)
		}
		out.version = stream.Snapshot.Version
		out.pos = stream.Snapshot.Position
	}
	for _, e := range stream.Events {
		out.state = a.evolve(out.state, e)
		out.version = e.Version
		out.pos = e.Position
	}
	return out, nil
}

// append writes evs after l's version and returns the state they lead to. claims reserve unique values
// in the same transaction.
func (a aggregate[S]) append(ctx context.Context, log events.Log, l loaded[S], claims []events.Claim, evs ...events.Event) (loaded[S], error) {
	next := l
	now := time.Now().UTC()
	for i, ev := range evs {
		next.version = l.version + int64(i) + 1
		next.state = a.evolve(next.state, events.Envelope{
			Type: ev.EventType(), StreamID: l.id, StreamType: a.streamType, Version: next.version, OccurredAt: now, Data: ev,
		})
	}
	app := events.Append{StreamID: l.id, StreamType: a.streamType, ExpectedVersion: l.version, Events: evs, Claims: claims}
	if a.snapshotEvery > 0 && next.version/a.snapshotEvery > l.version/a.snapshotEvery {
		state, err := json.Marshal(next.state)
		if err != nil {
			return l, fmt.Errorf("snapshot %s %s: %w", a.streamType, l.id, err)
		}
		app.Snapshot = &events.Snapshot{Version: next.version, SchemaVersion: a.stateVersion, State: state}
	}
	pos, err := log.Append(ctx, app)
	if err != nil {
		return l, err
	}
	next.pos = pos
	return next, nil
}
