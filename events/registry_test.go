package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// renamed is a test event whose schema v1 had "name", v2 "first"/"last", and v3 adds "full".
type renamed struct {
	First string `json:"first"`
	Last  string `json:"last"`
	Full  string `json:"full"`
}

func (renamed) EventType() string { return "test.renamed" }

func testRegistry(t *testing.T) *Registry {
	t.Helper()
	r := &Registry{types: map[string]*entry{}}
	register[renamed](r, 3)
	r.addUpcaster("test.renamed", 1, func(raw json.RawMessage) (json.RawMessage, error) {
		var v1 struct{ Name string }
		if err := json.Unmarshal(raw, &v1); err != nil {
			return nil, err
		}
		first, last, _ := strings.Cut(v1.Name, " ")
		return json.Marshal(map[string]string{"first": first, "last": last})
	})
	r.addUpcaster("test.renamed", 2, func(raw json.RawMessage) (json.RawMessage, error) {
		var v2 map[string]string
		if err := json.Unmarshal(raw, &v2); err != nil {
			return nil, err
		}
		v2["full"] = v2["first"] + " " + v2["last"]
		return json.Marshal(v2)
	})
	return r
}

func TestDecodeUpcastsOldSchemaVersionsInOrder(t *testing.T) {
	r := testRegistry(t)
	for _, tc := range []struct {
		version int
		payload string
	}{
		{1, `{"name":"Ada Lovelace"}`},
		{2, `{"first":"Ada","last":"Lovelace"}`},
		{3, `{"first":"Ada","last":"Lovelace","full":"Ada Lovelace"}`},
	} {
		ev, err := r.Decode("test.renamed", tc.version, []byte(tc.payload))
		if err != nil {
			t.Fatalf("v%d: %v", tc.version, err)
		}
		if got := ev.(renamed); got != (renamed{First: "Ada", Last: "Lovelace", Full: "Ada Lovelace"}) {
			t.Fatalf("v%d decoded to %+v", tc.version, got)
		}
	}
}

func TestDecodeRefusesUnknownAndFutureVersionsAsUndecodable(t *testing.T) {
	r := testRegistry(t)
	for _, tc := range []struct {
		what, name string
		version    int
		payload    string
	}{
		{"an unknown type", "test.nope", 1, `{}`},
		{"a schema version newer than the binary", "test.renamed", 4, `{}`},
		{"a version with no upcaster", "test.renamed", 0, `{}`},
		{"a payload that is not JSON", "test.renamed", 3, `{"first":`},
		{"a payload of the wrong shape", "test.renamed", 3, `{"first": 7}`},
	} {
		_, err := r.Decode(tc.name, tc.version, []byte(tc.payload))
		if err == nil {
			t.Fatalf("%s decoded", tc.what)
		}
		// Readers skip such events rather than retrying them for ever: the mark must survive wrapping.
		if !errors.Is(fmt.Errorf("read log: %w", err), ErrUndecodable) {
			t.Fatalf("%s: %v is not ErrUndecodable", tc.what, err)
		}
	}
}

func TestEveryRegisteredTypeRoundTrips(t *testing.T) {
	r := NewRegistry()
	for _, name := range r.Types() {
		e := r.types[name]
		ev, err := e.decode(json.RawMessage(`{}`))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ev.EventType() != name {
			t.Fatalf("%s decodes to a %s", name, ev.EventType())
		}
	}
}

func TestPublicJSONRedactsPasswordHashes(t *testing.T) {
	for _, ev := range []Event{UserRegistered{PasswordHash: "$argon2id$secret"}, UserPasswordChanged{PasswordHash: "$argon2id$secret"}} {
		b, err := PublicJSON(ev)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "secret") || !strings.Contains(string(b), redactedValue) {
			t.Fatalf("%s not redacted: %s", ev.EventType(), b)
		}
	}
}

func TestPositionRoundTripAndOrder(t *testing.T) {
	p := Position{TxID: 42, Offset: 7}
	q, err := ParsePosition(p.String())
	if err != nil || q != p {
		t.Fatalf("round trip %v -> %q -> %v (%v)", p, p.String(), q, err)
	}
	if !(Position{1, 9}).Less(Position{2, 1}) || (Position{2, 1}).Less(Position{1, 9}) || !(Position{2, 1}).Less(Position{2, 2}) {
		t.Fatal("positions order by transaction id, then offset")
	}
	for _, bad := range []string{"", "1", "a.1", "1.b", "1.-1", "-1.1"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Fatalf("%q parsed", bad)
		}
	}
}
