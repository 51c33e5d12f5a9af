package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"taki/queries"
)

// ProjectionAdmin is the projection runtime as operators drive it (handlers.Projections): the Projector's
// statuses and replay, and verify, which rebuilds from the event store into scratch tables.
type ProjectionAdmin struct {
	*Projector
	store *EventStore
}

// NewProjectionAdmin refuses nil dependencies.
func NewProjectionAdmin(projector *Projector, store *EventStore) (*ProjectionAdmin, error) {
	if projector == nil || store == nil {
		return nil, errors.New("new projection admin: projector and store are required")
	}
	return &ProjectionAdmin{Projector: projector, store: store}, nil
}

// Names lists the projections in the order the Projector runs them.
func (a *ProjectionAdmin) Names() []string {
	names := make([]string, len(a.order))
	for i, proj := range a.order {
		names[i] = proj.Name()
	}
	return names
}

// Verify rebuilds the projection called name up to its checkpoint and diffs it against its live tables
// (VerifyProjection: nothing is left behind); it returns false for an unknown projection.
func (a *ProjectionAdmin) Verify(ctx context.Context, name string) (queries.VerifiedProjection, bool, error) {
	for _, proj := range a.order {
		if proj.Name() != name {
			continue
		}
		res, err := VerifyProjection(ctx, a.pool, a.store, proj, VerifyOptions{})
		if err != nil {
			return queries.VerifiedProjection{}, true, err
		}
		return verifiedProjection(res), true, nil
	}
	return queries.VerifiedProjection{}, false, nil
}

// verifiedProjection renders res for operators.
func verifiedProjection(res VerifyResult) queries.VerifiedProjection {
	v := queries.VerifiedProjection{
		Name: res.Name, Checkpoint: res.Checkpoint.String(), Events: res.Events,
		ElapsedMS: res.Elapsed.Milliseconds(), Equal: len(res.Diffs) == 0,
		Differences: make([]queries.TableDifference, 0, len(res.Diffs)),
	}
	for _, d := range res.Diffs {
		v.Differences = append(v.Differences, queries.TableDifference{
			Table:    d.Table,
			OnlyLive: jsonRows(d.OnlyLive), OnlyLiveCount: d.OnlyLiveCount,
			OnlyRebuild: jsonRows(d.OnlyRebuild), OnlyRebuildCount: d.OnlyRebuildCount,
		})
	}
	return v
}

// jsonRows passes rows PostgreSQL rendered with to_jsonb through as JSON objects; never nil, so an empty
// side encodes as [].
func jsonRows(rows []string) []json.RawMessage {
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		out[i] = json.RawMessage(r)
	}
	return out
}
