package events

import "encoding/json"

// redactor is implemented by events that carry secrets (password hashes): operators reading the log
// through the CLI or the admin API see the event without them.
type redactor interface {
	redacted() Event
}

const redactedValue = "[redacted]"

func (e UserRegistered) redacted() Event      { e.PasswordHash = redactedValue; return e }
func (e UserPasswordChanged) redacted() Event { e.PasswordHash = redactedValue; return e }

// PublicJSON encodes an event for operators, with its secrets redacted.
func PublicJSON(e Event) (json.RawMessage, error) {
	if r, ok := e.(redactor); ok {
		e = r.redacted()
	}
	return json.Marshal(e)
}
