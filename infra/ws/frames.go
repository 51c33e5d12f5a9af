package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"taki/commands"
	"taki/infra/http/problem"
)

// Frame types of API.md, "Real time", that the transport itself speaks. The domain's event frames
// (message.sent, chat.read, ...) are built by their publishers with the same ServerFrame.
const (
	TypeHello = "hello"
	TypePing  = "ping"
	TypePong  = "pong"
	TypeError = "error"
)

// MaxFrameBytes is the largest client frame (API.md: frames over 64 KiB close the socket with 1009).
// A frame of exactly this size is accepted. It is the contract's, not a setting.
const MaxFrameBytes = 64 << 10

const (
	// maxFrameTypeLen bounds a frame type; ours are short dotted names.
	maxFrameTypeLen = 64
	// maxClientFields bounds the top-level fields of a client frame. Ours have at most five; the
	// bound keeps the duplicate check cheap on a hostile frame of thousands of fields.
	maxClientFields = 32
	// maxClientMsgIDLen bounds what is echoed back in an error frame.
	maxClientMsgIDLen = 128
)

// ClientFrame is a decoded client frame: its type, its client_msg_id when it has a usable one (so an
// error frame can name the message it answers), and the whole frame for the handler of the type to
// decode its own fields with DecodeFields.
type ClientFrame struct {
	Type        string
	ClientMsgID string
	Raw         []byte
}

// DecodeFields decodes the frame's fields into dst. Fields dst does not name are ignored: clients
// may send more than a given server version reads.
func (f ClientFrame) DecodeFields(dst any) error {
	if err := json.Unmarshal(f.Raw, dst); err != nil {
		return &MalformedFrameError{Reason: "bad field: " + err.Error()}
	}
	return nil
}

// MalformedFrameError is a client frame that cannot be understood at all (not a JSON object,
// duplicate or too many fields). It answers an error frame with a 400 bad-request problem; the
// socket stays open.
type MalformedFrameError struct{ Reason string }

func (e *MalformedFrameError) Error() string { return "malformed frame: " + e.Reason }

func malformed(format string, args ...any) error {
	return &MalformedFrameError{Reason: fmt.Sprintf(format, args...)}
}

// DecodeClientFrame reads a client frame: a JSON object with a "type" that is a lower-case dotted
// name. It is strict where leniency could be abused and lenient where clients legitimately differ:
// unknown fields are allowed, but a frame must be one object with nothing after it, no field twice
// (compared as encoding/json matches names, ignoring case, so a handler decoding Raw cannot see a
// different value than this check did), at most 32 fields and 64 KiB. A frame that is not JSON
// gives a *MalformedFrameError; a missing or bad type gives a validation *commands.Error. On error,
// the returned frame's ClientMsgID is set when the frame had a usable one.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	var f ClientFrame
	if len(b) > MaxFrameBytes {
		return f, malformed("frame exceeds %d bytes", MaxFrameBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return f, malformed("not JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return f, malformed("a frame is a JSON object")
	}
	var typeRaw, msgIDRaw json.RawMessage
	seen := make([]string, 0, 8)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f, malformed("not JSON")
		}
		key, ok := tok.(string)
		if !ok {
			return f, malformed("not JSON")
		}
		if len(seen) == maxClientFields {
			return f, malformed("more than %d fields", maxClientFields)
		}
		for _, k := range seen {
			if strings.EqualFold(k, key) {
				return f, malformed("field %q appears twice", truncate(key, maxFrameTypeLen))
			}
		}
		seen = append(seen, key)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return f, malformed("not JSON")
		}
		switch key {
		case "type":
			typeRaw = raw
		case "client_msg_id":
			msgIDRaw = raw
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return f, malformed("not JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return f, malformed("data after the frame")
	}
	var msgID string
	if msgIDRaw != nil && json.Unmarshal(msgIDRaw, &msgID) == nil && msgID != "" && len(msgID) <= maxClientMsgIDLen {
		f.ClientMsgID = msgID
	}
	if typeRaw == nil {
		return f, invalidType("is required")
	}
	var typ string
	if err := json.Unmarshal(typeRaw, &typ); err != nil {
		return f, invalidType("must be a string")
	}
	if !validFrameType(typ) {
		return f, invalidType("must be a frame type such as \"ping\" or \"message.send\"")
	}
	f.Type = typ
	f.Raw = b
	return f, nil
}

func invalidType(msg string) error {
	return commands.Invalid([]commands.FieldError{{Field: "type", Message: msg}})
}

// validFrameType accepts lower-case dotted names: [a-z][a-z0-9_.]*, at most 64 bytes.
func validFrameType(t string) bool {
	if t == "" || len(t) > maxFrameTypeLen || t[0] < 'a' || t[0] > 'z' {
		return false
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ServerFrame is a frame the server sends: {"type", "position", "chat_id", "client_msg_id", "data",
// "problem"}, each but type only when set (API.md, "Real time").
type ServerFrame struct {
	Type        string    `json:"type"`
	Position    string    `json:"position,omitempty"`
	ChatID      uuid.UUID `json:"chat_id,omitzero"`
	ClientMsgID string    `json:"client_msg_id,omitempty"`
	Data        any       `json:"data,omitempty"`
	Problem     *Problem  `json:"problem,omitempty"`
}

// EncodeFrame returns f as the bytes of one text frame. Encode once and send the same bytes to every
// socket: SendToUsers never copies or changes them.
func EncodeFrame(f ServerFrame) ([]byte, error) {
	if f.Type == "" {
		return nil, errors.New("encode frame: type is empty")
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode %s frame: %w", f.Type, err)
	}
	return b, nil
}

// Problem is the RFC 9457 object of an error frame, the same as the HTTP API's problem bodies.
type Problem = problem.Problem

// ProblemFor returns the problem a client sees for err, and whether err is internal (its details are
// then not in the problem and belong in the log).
func ProblemFor(err error) (p Problem, internal bool) {
	if me, ok := errors.AsType[*MalformedFrameError](err); ok {
		return problem.New(http.StatusBadRequest, problem.SlugBadRequest, me.Reason), false
	}
	if p, ok := problem.OfError(err); ok {
		return p, false
	}
	return problem.Internal(), true
}
