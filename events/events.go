// Package events holds Taki's domain event types, their dotted names and schema versions, the envelope
// that carries an event's metadata through the log, and the registry that decodes stored payloads,
// upcasting old schema versions on read (stored events are never rewritten).
package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Event is a domain event payload. Its type name is the same everywhere: log, CLI, admin API, WebSocket.
type Event interface {
	EventType() string
}

// Envelope is an event with the metadata the log keeps for it.
type Envelope struct {
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	StreamID      uuid.UUID
	StreamType    string
	Version       int64
	OccurredAt    time.Time
	CorrelationID string
	CausationID   string
	ActorID       string
	Position      Position
	Data          Event
}

// Position is a place in the log in consumption order: (writer transaction id, offset). Consumers read
// in this order and never see a row before every older transaction has finished, so no event committed
// late is skipped.
type Position struct {
	TxID   uint64
	Offset int64
}

// IsZero reports whether p is the position before the first event.
func (p Position) IsZero() bool { return p.TxID == 0 && p.Offset == 0 }

// Less reports whether p comes before q in the log.
func (p Position) Less(q Position) bool {
	if p.TxID != q.TxID {
		return p.TxID < q.TxID
	}
	return p.Offset < q.Offset
}

// String is the opaque form clients see (consistency tokens, WebSocket positions, `events tail --after`).
func (p Position) String() string {
	return strconv.FormatUint(p.TxID, 10) + "." + strconv.FormatInt(p.Offset, 10)
}

// ParsePosition reads a Position written by String.
func ParsePosition(s string) (Position, error) {
	tx, off, ok := strings.Cut(s, ".")
	if !ok {
		return Position{}, fmt.Errorf("position %q: want TX.OFFSET", s)
	}
	t, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: bad transaction id", s)
	}
	o, err := strconv.ParseInt(off, 10, 64)
	if err != nil || o < 0 {
		return Position{}, fmt.Errorf("position %q: bad offset", s)
	}
	return Position{TxID: t, Offset: o}, nil
}

// MarshalJSON writes a position as its opaque string.
func (p Position) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }
