package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"taki/commands"
)

// FuzzDecodeSendMessage feeds arbitrary bodies to the message body decoder: every body is either a
// valid message (text of 1-4000 characters that is not blank, a client_msg_id of 1-64 printable
// characters) or a 4xx problem; nothing panics.
func FuzzDecodeSendMessage(f *testing.F) {
	for _, s := range []string{
		`{"text":"hi","client_msg_id":"a"}`, `{"text":"","client_msg_id":"a"}`, `{"text":"hi"}`,
		`{"text":"\u0000","client_msg_id":"a"}`, `{"text":"\ud800","client_msg_id":"a"}`,
		`{"text":"hi","client_msg_id":"a","seq":1}`, `{"text":["hi"]}`, `[`, ``, `{"TEXT":"x","Client_Msg_Id":"y"}`,
	} {
		f.Add([]byte(s))
	}
	e := gin.New()
	e.Use(BodyLimit())
	e.POST("/x", func(c *gin.Context) {
		cmd, ok := decodeSendMessage(c, uuid.New(), uuid.New())
		if ok {
			c.JSON(http.StatusOK, gin.H{"text": cmd.Text, "client_msg_id": cmd.ClientMsgID})
		}
	})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serve(e, jsonRequest(bytes.NewReader(body), "application/json"))
		if w.Code != http.StatusOK {
			if w.Code < 400 || w.Code >= 500 {
				t.Fatalf("status %d for %q", w.Code, body)
			}
			decodeProblem(t, w)
			return
		}
		var got struct {
			Text        string `json:"text"`
			ClientMsgID string `json:"client_msg_id"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("answer %s: %v", w.Body, err)
		}
		n := utf8.RuneCountInString(got.Text)
		if !utf8.ValidString(got.Text) || n < 1 || n > commands.MaxMessageRunes || strings.TrimSpace(got.Text) == "" {
			t.Fatalf("accepted text %q from %q", got.Text, body)
		}
		if l := len(got.ClientMsgID); l < 1 || l > commands.MaxClientMsgIDLen {
			t.Fatalf("accepted client_msg_id %q from %q", got.ClientMsgID, body)
		}
	})
}
