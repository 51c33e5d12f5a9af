package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// ErrConflict means the stream moved on since the caller loaded it: another writer appended first.
// The bus retries the whole command (load, decide, append) a bounded number of times.
var ErrConflict = errors.New("stream changed concurrently")

// ClaimTakenError means a uniqueness claim (such as an email address) belongs to another stream.
type ClaimTakenError struct {
	Kind  string
	Value string
}

func (e *ClaimTakenError) Error() string {
	return fmt.Sprintf("%s %q is already claimed", e.Kind, e.Value)
}

// Claim reserves a unique value for a stream in the same transaction as its events.
type Claim struct {
	Kind  string
	Value string
}

// Snapshot is an aggregate's state at Version, so loading reads it plus later events only.
type Snapshot struct {
	Version       int64
	SchemaVersion int
	State         json.RawMessage
	// Position is the log position of the event at Version (set when loaded; the log fills it in).
	Position Position
}

// Append is what a command decided for one stream.
type Append struct {
	StreamID        uuid.UUID
	StreamType      string
	ExpectedVersion int64 // the version the decision saw; 0 for a new stream
	Events          []Event
	Claims          []Claim
	Snapshot        *Snapshot // optional: state after these events
}

// Stream is what loading an aggregate reads: its latest snapshot, if any, and the events after it.
type Stream struct {
	Snapshot *Snapshot
	Events   []Envelope
}

// Log is the event log port the write model uses.
type Log interface {
	// Load reads streamID's snapshot (when its schema version is snapshotVersion) and the events after it.
	Load(ctx context.Context, streamID uuid.UUID, snapshotVersion int) (Stream, error)
	// Append writes every append atomically and returns the position of the last event written.
	Append(ctx context.Context, appends ...Append) (Position, error)
}
