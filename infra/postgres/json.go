package postgres

import (
	"bytes"
	"encoding/json"
)

// marshalEvent encodes an event payload without HTML escaping: payloads are data, not markup, and the
// log should store "<" as written.
func marshalEvent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
