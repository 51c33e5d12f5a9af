package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// messageSentV1 is a message.sent payload as schema version 1 wrote it: no format.
const messageSentV1 = `{"chat_id":"0195b0a8-0000-7000-8000-000000000001","message_id":"0195b0a8-0000-7000-8000-000000000002",` +
	`"seq":7,"sender_id":"0195b0a8-0000-7000-8000-000000000003","text":"hi <b>there</b>","client_msg_id":"c-7",` +
	`"sent_at":"2025-03-01T12:00:00Z"}`

func wantMessageSent() MessageSent {
	return MessageSent{
		ChatID:    uuid.MustParse("0195b0a8-0000-7000-8000-000000000001"),
		MessageID: uuid.MustParse("0195b0a8-0000-7000-8000-000000000002"),
		Seq:       7, SenderID: uuid.MustParse("0195b0a8-0000-7000-8000-000000000003"),
		Text: "hi <b>there</b>", Format: MessageFormatPlain, ClientMsgID: "c-7",
		SentAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

func TestMessageSentIsAppendedAtSchemaVersion2(t *testing.T) {
	if v := NewRegistry().Version("message.sent"); v != 2 {
		t.Fatalf("message.sent is written at schema version %d, want 2", v)
	}
}

func TestMessageSentV1DecodesAsPlainText(t *testing.T) {
	ev, err := NewRegistry().Decode("message.sent", 1, []byte(messageSentV1))
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.(MessageSent); got != wantMessageSent() {
		t.Fatalf("v1 decoded to %+v, want %+v", got, wantMessageSent())
	}
}

func TestMessageSentV2DecodesAsWritten(t *testing.T) {
	want := wantMessageSent()
	want.Format = "markdown" // a v2 payload's format is taken as written, never overwritten by the upcaster
	raw, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"format":"markdown"`) {
		t.Fatalf("v2 payload %s has no format", raw)
	}
	ev, err := NewRegistry().Decode("message.sent", 2, raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.(MessageSent); got != want {
		t.Fatalf("v2 decoded to %+v, want %+v", got, want)
	}
}

func TestMessageSentNewerThanTheBinaryIsRefused(t *testing.T) {
	_, err := NewRegistry().Decode("message.sent", 3, []byte(`{"text":"from the future","format":"plain"}`))
	if err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("a v3 message.sent decoded: %v", err)
	}
}

func TestMessageSentV1UpcasterRefusesANonObject(t *testing.T) {
	for _, p := range []string{`null`, `[]`, `"text"`, `{`} {
		if _, err := NewRegistry().Decode("message.sent", 1, []byte(p)); err == nil {
			t.Errorf("v1 payload %s decoded", p)
		}
	}
}
