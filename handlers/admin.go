package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// Projections is what operators may ask of the projection runtime.
type Projections interface {
	Statuses(ctx context.Context) ([]queries.ProjectionStatus, error)
	// Replay empties name's read model and resets its offset under its consumer group's lock;
	// it returns false for an unknown projection.
	Replay(ctx context.Context, name string) (bool, error)
	// Verify rebuilds name's read model into scratch tables up to its checkpoint and diffs them against
	// the live ones, changing nothing; it returns false for an unknown projection.
	Verify(ctx context.Context, name string) (queries.VerifiedProjection, bool, error)
	// Names lists the projections in the order "all" takes them.
	Names() []string
}

// LogReader pages the event log in consumption order.
type LogReader interface {
	ReadLog(ctx context.Context, after events.Position, eventType string, limit int) ([]events.Envelope, error)
}

// AdminHandlers serves operators' commands and queries.
type AdminHandlers struct {
	projections Projections
	log         LogReader
}

// NewAdminHandlers refuses nil dependencies.
func NewAdminHandlers(p Projections, log LogReader) (*AdminHandlers, error) {
	if p == nil || log == nil {
		return nil, errors.New("new admin handlers: nil dependency")
	}
	return &AdminHandlers{projections: p, log: log}, nil
}

// ListProjectionsHandler answers ListProjections.
type ListProjectionsHandler struct{ *AdminHandlers }

// Handle implements bus.QueryHandler.
func (h ListProjectionsHandler) Handle(ctx context.Context, _ queries.ListProjections) ([]queries.ProjectionStatus, error) {
	return h.projections.Statuses(ctx)
}

// ReplayProjectionHandler handles ReplayProjection.
type ReplayProjectionHandler struct{ *AdminHandlers }

// Handle implements bus.CommandHandler.
func (h ReplayProjectionHandler) Handle(ctx context.Context, cmd commands.ReplayProjection) (struct{}, error) {
	ok, err := h.projections.Replay(ctx, cmd.Name)
	if err != nil {
		return struct{}{}, err
	}
	if !ok {
		return struct{}{}, commands.NotFound("projection " + cmd.Name)
	}
	return struct{}{}, nil
}

// VerifyProjectionHandler answers VerifyProjection.
type VerifyProjectionHandler struct{ *AdminHandlers }

// Handle implements bus.QueryHandler.
func (h VerifyProjectionHandler) Handle(ctx context.Context, q queries.VerifyProjection) (queries.ProjectionVerification, error) {
	names := []string{q.Name}
	if q.Name == "all" {
		names = h.projections.Names()
	}
	out := queries.ProjectionVerification{Name: q.Name, Equal: true, Projections: make([]queries.VerifiedProjection, 0, len(names))}
	for _, name := range names {
		v, ok, err := h.projections.Verify(ctx, name)
		if err != nil {
			return out, fmt.Errorf("verify %s: %w", name, err)
		}
		if !ok {
			return out, commands.NotFound("projection " + name)
		}
		out.Equal = out.Equal && v.Equal
		out.Projections = append(out.Projections, v)
	}
	return out, nil
}

// ListEventsHandler answers ListEvents.
type ListEventsHandler struct{ *AdminHandlers }

// Handle implements bus.QueryHandler.
func (h ListEventsHandler) Handle(ctx context.Context, q queries.ListEvents) (queries.Page[queries.LoggedEvent], error) {
	var page queries.Page[queries.LoggedEvent]
	after := events.Position{}
	if q.After != "" {
		p, err := events.ParsePosition(q.After)
		if err != nil {
			return page, commands.Invalid([]commands.FieldError{{Field: "after", Message: "is not a log position"}})
		}
		after = p
	}
	limit := q.Limit
	if limit == 0 {
		limit = queries.DefaultLimit
	}
	envs, unreadable, err := ReadLogPast(ctx, h.log, after, q.Type, limit+1)
	if err != nil {
		return page, err
	}
	more := len(envs) > limit
	if more {
		envs = envs[:limit]
	}
	if page.Items, err = LoggedEventsOf(envs, unreadable); err != nil {
		return page, err
	}
	if more {
		next := envs[len(envs)-1].Position.String()
		page.NextCursor = &next
	}
	return page, nil
}

// ReadLogPast reads up to limit events of log as ReadLog does, but reads on past each event this
// binary cannot read (events.UnreadableError): it is returned in its place, without data, and
// unreadable maps its position to why. Operators' readers of the log use it, so that such an event
// (a newer binary's, during a rolling deploy) is shown rather than stopping them.
func ReadLogPast(ctx context.Context, log LogReader, after events.Position, eventType string, limit int) (
	envs []events.Envelope, unreadable map[events.Position]string, err error) {
	for len(envs) < limit {
		batch, err := log.ReadLog(ctx, after, eventType, limit-len(envs))
		var u *events.UnreadableError
		if !errors.As(err, &u) {
			if err != nil {
				return nil, nil, err
			}
			return append(envs, batch...), unreadable, nil
		}
		if unreadable == nil {
			unreadable = map[events.Position]string{}
		}
		unreadable[u.Event.Position] = u.Err.Error()
		envs = append(append(envs, batch...), u.Event)
		after = u.Event.Position
	}
	return envs, unreadable, nil
}

// LoggedEventsOf renders envelopes for operators (LoggedEventOf); those at a position of unreadable
// (ReadLogPast) carry its reason.
func LoggedEventsOf(envs []events.Envelope, unreadable map[events.Position]string) ([]queries.LoggedEvent, error) {
	out := make([]queries.LoggedEvent, 0, len(envs))
	for _, e := range envs {
		le, err := LoggedEventOf(e)
		if err != nil {
			return nil, err
		}
		le.Unreadable = unreadable[e.Position]
		out = append(out, le)
	}
	return out, nil
}

// LoggedEventOf renders an envelope for operators, secrets redacted. An envelope without data (an
// event this binary cannot read) has data null.
func LoggedEventOf(e events.Envelope) (queries.LoggedEvent, error) {
	data := json.RawMessage("null")
	if e.Data != nil {
		var err error
		if data, err = events.PublicJSON(e.Data); err != nil {
			return queries.LoggedEvent{}, fmt.Errorf("encode event %s: %w", e.ID, err)
		}
	}
	return queries.LoggedEvent{
		Position: e.Position.String(), ID: e.ID.String(), Type: e.Type, SchemaVersion: e.SchemaVersion,
		StreamID: e.StreamID.String(), StreamType: e.StreamType, Version: e.Version, OccurredAt: e.OccurredAt,
		CorrelationID: e.CorrelationID, CausationID: e.CausationID, UserID: e.ActorID, Data: data,
	}, nil
}
