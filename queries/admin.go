package queries

import (
	"encoding/json"
	"time"

	"taki/commands"
)

// ListProjections answers every projection's checkpoint, lag and state (admins).
type ListProjections struct{}

// ProjectionStatus is one projection as operators see it.
type ProjectionStatus struct {
	Name       string `json:"name"`
	Checkpoint string `json:"checkpoint"`
	LagEvents  int64  `json:"lag_events"`
	Status     string `json:"status"`
}

// VerifyProjection rebuilds a projection's read model, or every projection's (Name "all"), into scratch
// tables up to its checkpoint and diffs them against the live tables (admins, like `taki projections
// verify`). It changes nothing.
type VerifyProjection struct {
	Name string
}

// Validate implements bus.Validatable.
func (q VerifyProjection) Validate() error {
	var f []commands.FieldError
	if q.Name == "" || len(q.Name) > 100 {
		f = append(f, commands.FieldError{Field: "name", Message: "must name a projection or be all"})
	}
	return commands.Invalid(f)
}

// ProjectionVerification answers VerifyProjection: Equal when every verified projection is.
type ProjectionVerification struct {
	Name        string               `json:"name"`
	Equal       bool                 `json:"equal"`
	Projections []VerifiedProjection `json:"projections"`
}

// VerifiedProjection is how one projection's live read model compares with a rebuild of Events events
// up to Checkpoint.
type VerifiedProjection struct {
	Name       string `json:"name"`
	Checkpoint string `json:"checkpoint"`
	Events     int64  `json:"events"`
	ElapsedMS  int64  `json:"elapsed_ms"`
	Equal      bool   `json:"equal"`
	// Differences lists only the tables that differ; empty when Equal.
	Differences []TableDifference `json:"differences"`
}

// TableDifference is one table's rows found on one side only (EXCEPT ALL both ways): a sample of them as
// JSON objects, and how many there are in all.
type TableDifference struct {
	Table            string            `json:"table"`
	OnlyLive         []json.RawMessage `json:"only_live"`
	OnlyLiveCount    int64             `json:"only_live_count"`
	OnlyRebuild      []json.RawMessage `json:"only_rebuild"`
	OnlyRebuildCount int64             `json:"only_rebuild_count"`
}

// ListEvents pages the event log in consumption order (admins, `taki events tail`).
type ListEvents struct {
	After string // opaque position; "" from the start
	Type  string // only events of this type; "" all
	Limit int
}

// Validate implements bus.Validatable.
func (q ListEvents) Validate() error {
	var f []commands.FieldError
	if q.Limit < 0 || q.Limit > MaxLimit {
		f = append(f, commands.FieldError{Field: "limit", Message: "must be between 1 and 200"})
	}
	if len(q.Type) > 100 {
		f = append(f, commands.FieldError{Field: "type", Message: "must be at most 100 characters"})
	}
	return commands.Invalid(f)
}

// LoggedEvent is one event of the log with its metadata; secrets in its data are redacted.
type LoggedEvent struct {
	Position      string          `json:"position"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	StreamID      string          `json:"stream_id"`
	StreamType    string          `json:"stream_type"`
	Version       int64           `json:"version"`
	OccurredAt    time.Time       `json:"occurred_at"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	UserID        string          `json:"user_id,omitempty"`
	Data          json.RawMessage `json:"data"`
	// Unreadable says why this binary cannot read the event (a newer binary's type or schema
	// version, or a damaged payload); its data is then null.
	Unreadable string `json:"unreadable,omitempty"`
}
