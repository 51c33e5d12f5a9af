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
}
