package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// ErrUndecodable marks an event this binary cannot read: a type it does not know or a schema version
// newer than its own (written by a newer binary, during a rolling deploy), or a payload that does not
// decode (a damaged row). Reading it again cannot succeed, so a reader must not retry it for ever.
var ErrUndecodable = errors.New("event not readable by this binary")

// UnreadableError is a read of the log that stopped at an event this binary cannot read (it wraps
// ErrUndecodable). Event is that event without its Data; the read returns the events before it along
// with the error, so that a reader that can do without the event may go on past it.
type UnreadableError struct {
	Event Envelope
	Err   error
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("event %s (%s v%d) at %s: %v", e.Event.ID, e.Event.Type, e.Event.SchemaVersion, e.Event.Position, e.Err)
}

func (e *UnreadableError) Unwrap() error { return e.Err }

// Upcaster turns a payload of schema version N into version N+1.
type Upcaster func(payload json.RawMessage) (json.RawMessage, error)

type entry struct {
	version   int
	decode    func(json.RawMessage) (Event, error)
	upcasters map[int]Upcaster // from version -> to version+1
}

// Registry knows every event type: its current schema version, how to decode it and how to upcast its
// older versions. Build it with NewRegistry; it is read-only after start-up and safe for concurrent use.
type Registry struct {
	types map[string]*entry
}

// NewRegistry returns a registry of every Taki event type.
func NewRegistry() *Registry {
	r := &Registry{types: map[string]*entry{}}
	registerUsers(r)
	registerChats(r)
	registerPayments(r)
	return r
}

// register adds event type T at schema version version.
func register[T Event](r *Registry, version int) {
	var zero T
	name := zero.EventType()
	if _, dup := r.types[name]; dup {
		panic(fmt.Sprintf("events: %s registered twice", name))
	}
	r.types[name] = &entry{
		version: version,
		decode: func(raw json.RawMessage) (Event, error) {
			var v T
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, err
			}
			return v, nil
		},
		upcasters: map[int]Upcaster{},
	}
}

// addUpcaster registers how type name's payload moves from schema version from to from+1.
func (r *Registry) addUpcaster(name string, from int, up Upcaster) {
	e, ok := r.types[name]
	if !ok {
		panic(fmt.Sprintf("events: upcaster for unknown type %s", name))
	}
	e.upcasters[from] = up
}

// Version returns the current schema version of type name (0 if unknown).
func (r *Registry) Version(name string) int {
	if e, ok := r.types[name]; ok {
		return e.version
	}
	return 0
}

// Types lists every registered type name, sorted.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.types))
	for n := range r.types {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Known reports whether name is a registered event type.
func (r *Registry) Known(name string) bool { _, ok := r.types[name]; return ok }

// Decode turns a stored payload of schema version version into the current Go type, upcasting first.
func (r *Registry) Decode(name string, version int, payload []byte) (Event, error) {
	e, ok := r.types[name]
	if !ok {
		return nil, fmt.Errorf("decode %s: unknown event type: %w", name, ErrUndecodable)
	}
	if version > e.version {
		return nil, fmt.Errorf("decode %s: schema version %d is newer than this binary's %d: %w", name, version, e.version, ErrUndecodable)
	}
	raw := json.RawMessage(payload)
	for v := version; v < e.version; v++ {
		up, ok := e.upcasters[v]
		if !ok {
			return nil, fmt.Errorf("decode %s: no upcaster from schema version %d: %w", name, v, ErrUndecodable)
		}
		var err error
		if raw, err = up(raw); err != nil {
			return nil, fmt.Errorf("decode %s: upcast from v%d: %w (%w)", name, v, err, ErrUndecodable)
		}
	}
	ev, err := e.decode(raw)
	if err != nil {
		return nil, fmt.Errorf("decode %s v%d: %w (%w)", name, version, err, ErrUndecodable)
	}
	return ev, nil
}
