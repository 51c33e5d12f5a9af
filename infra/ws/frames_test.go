package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"taki/commands"
	"taki/infra/http/problem"
)

func TestDecodeClientFrame(t *testing.T) {
	t.Parallel()
	manyFields := `{"type":"ping"`
	for i := range maxClientFields - 1 {
		manyFields += `,"f` + strconv.Itoa(i) + `":1`
	}
	manyFields += "}"
	ok := []struct {
		in, typ, msgID string
	}{
		{`{"type":"ping"}`, "ping", ""},
		{` {"type" : "ping"} `, "ping", ""},
		{"{\"type\":\"ping\"}\n", "ping", ""},
		{`{"client_msg_id":"m-1","type":"message.send","chat_id":"x","text":"héllo"}`, "message.send", "m-1"},
		{`{"type":"chat.read","up_to_seq":12,"extra":{"deep":[1,{"a":null}]}}`, "chat.read", ""},
		{`{"type":"typing","client_msg_id":5}`, "typing", ""},
		{`{"type":"typing","client_msg_id":"` + strings.Repeat("m", maxClientMsgIDLen+1) + `"}`, "typing", ""},
		{manyFields, "ping", ""},
	}
	for _, tc := range ok {
		f, err := DecodeClientFrame([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if f.Type != tc.typ || f.ClientMsgID != tc.msgID || !bytes.Equal(f.Raw, []byte(tc.in)) {
			t.Errorf("%s: got %+v", tc.in, f)
		}
	}

	bad := []struct {
		in        string
		malformed bool // else a validation error on "type"
		msgID     string
	}{
		{``, true, ""},
		{`   `, true, ""},
		{`null`, true, ""},
		{`"ping"`, true, ""},
		{`[{"type":"ping"}]`, true, ""},
		{`{"type":"ping"`, true, ""},
		{`{"type":"ping",}`, true, ""},
		{`{"type":"ping"}}`, true, ""},
		{`{"type":"ping"}x`, true, ""},
		{`{"type":"ping"}{"type":"ping"}`, true, ""},
		{`{"type":"ping","type":"ping"}`, true, ""},
		{`{"type":"ping","Type":"message.send"}`, true, ""},
		{`{"type":"ping","a":1,"A":2}`, true, ""},
		{`{"type":"ping","a":tru}`, true, ""},
		{`{"type":"ping","a":"\x"}`, true, ""},
		{manyFields[:len(manyFields)-1] + `,"zz":1}`, true, ""},
		{`{"type":"ping","pad":"` + strings.Repeat("a", MaxFrameBytes) + `"}`, true, ""},
		{`{}`, false, ""},
		{`{"client_msg_id":"m"}`, false, "m"},
		{`{"type":null}`, false, ""},
		{`{"type":""}`, false, ""},
		{`{"type":1,"client_msg_id":"m"}`, false, "m"},
		{`{"type":["ping"]}`, false, ""},
		{`{"type":"Ping"}`, false, ""},
		{`{"type":"1ping"}`, false, ""},
		{`{"type":".ping"}`, false, ""},
		{`{"type":"pi ng"}`, false, ""},
		{`{"type":"pïng"}`, false, ""},
		{`{"type":"` + strings.Repeat("a", maxFrameTypeLen+1) + `"}`, false, ""},
	}
	for _, tc := range bad {
		f, err := DecodeClientFrame([]byte(tc.in))
		if err == nil {
			t.Errorf("%.80s: accepted as %+v", tc.in, f)
			continue
		}
		_, isMalformed := errors.AsType[*MalformedFrameError](err)
		if isMalformed != tc.malformed {
			t.Errorf("%.80s: error %v, want malformed=%v", tc.in, err, tc.malformed)
		}
		if !tc.malformed && !commands.IsKind(err, commands.KindValidation) {
			t.Errorf("%.80s: error %v, want a validation error", tc.in, err)
		}
		if f.ClientMsgID != tc.msgID || f.Type != "" || f.Raw != nil {
			t.Errorf("%.80s: frame %+v with the error", tc.in, f)
		}
	}
}

func TestEncodeFrame(t *testing.T) {
	t.Parallel()
	chat := uuid.MustParse("0195f0b8-7c1e-7000-8000-000000000001")
	cases := []struct {
		f    ServerFrame
		want string
	}{
		{ServerFrame{Type: TypePong}, `{"type":"pong"}`},
		{ServerFrame{Type: TypeHello, Data: helloData{UserID: chat}}, `{"type":"hello","data":{"user_id":"` + chat.String() + `"}}`},
		{ServerFrame{Type: "message.sent", Position: "p1", ChatID: chat, Data: json.RawMessage(`{"seq":1}`)},
			`{"type":"message.sent","position":"p1","chat_id":"` + chat.String() + `","data":{"seq":1}}`},
		{ServerFrame{Type: TypeError, ClientMsgID: "m", Problem: &Problem{Type: "t", Title: "T", Status: 404}},
			`{"type":"error","client_msg_id":"m","problem":{"type":"t","title":"T","status":404}}`},
	}
	for _, tc := range cases {
		b, err := EncodeFrame(tc.f)
		if err != nil || string(b) != tc.want {
			t.Errorf("got %s, %v\nwant %s", b, err, tc.want)
		}
	}
	if _, err := EncodeFrame(ServerFrame{}); err == nil {
		t.Error("a frame without a type was encoded")
	}
	if _, err := EncodeFrame(ServerFrame{Type: "x", Data: func() {}}); err == nil {
		t.Error("unencodable data was encoded")
	}
}

func TestProblemFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err      error
		status   int
		slug     string
		internal bool
	}{
		{&MalformedFrameError{Reason: "x"}, 400, "bad-request", false},
		{commands.Invalid([]commands.FieldError{{Field: "text", Message: "empty"}}), 422, "validation", false},
		{commands.NotFound("chat"), 404, "not-found", false},
		{commands.Forbidden("no"), 403, "forbidden", false},
		{&commands.Error{Kind: commands.KindRateLimited}, 429, "rate-limited", false},
		{&commands.Error{Kind: "made-up"}, 500, "internal", true},
		{errors.New("SQLSTATE 23505 pgx"), 500, "internal", true},
	}
	for _, tc := range cases {
		p, internal := ProblemFor(tc.err)
		if p.Status != tc.status || p.Type != problem.TypeBase+tc.slug || p.Title == "" || internal != tc.internal {
			t.Errorf("%v: got %+v internal=%v", tc.err, p, internal)
		}
		if internal && p.Detail != problem.InternalDetail {
			t.Errorf("%v: internal detail leaked: %q", tc.err, p.Detail)
		}
	}
	p, _ := ProblemFor(commands.Invalid([]commands.FieldError{{Field: "text", Message: "empty"}}))
	if len(p.Errors) != 1 || p.Errors[0].Field != "text" {
		t.Errorf("validation problem without its fields: %+v", p)
	}
}

// FuzzDecodeClientFrame: no input panics, an accepted frame is a JSON object whose "type" field is the
// returned type, and decoding is deterministic.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`,
		`{"type":"message.send","chat_id":"0195f0b8-7c1e-7000-8000-000000000001","text":"hi","client_msg_id":"m1"}`,
		`{"type":"chat.read","chat_id":"x","up_to_seq":9007199254740993}`,
		`{"type":"typing","chat_id":"x","nested":{"a":[1,2,{"b":null}]}}`,
		`{"type":"chat.read","chat_id":"0195f0b8-7c1e-7000-8000-000000000001","up_to_seq":-1}`,
		`{"type":"message.send","chat_id":"0195F0B8-7C1E-7000-8000-000000000001","text":null,"client_msg_id":["a"]}`,
		`{"type":"typing","chat_id":"urn:uuid:0195f0b8-7c1e-7000-8000-000000000001"}`,
		`{"type":"ping","TYPE":"x"}`,
		`{"type":"\u0070ing"}`,
		`{"type":"ping"}{}`,
		`[[[[[[[[[[`,
		`{"a":` + strings.Repeat(`[`, 200) + strings.Repeat(`]`, 200) + `,"type":"ping"}`,
		"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}",
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClientFrame(b)
		again, err2 := DecodeClientFrame(b)
		if (err == nil) != (err2 == nil) || fr.Type != again.Type || fr.ClientMsgID != again.ClientMsgID {
			t.Fatalf("not deterministic: %+v %v / %+v %v", fr, err, again, err2)
		}
		if len(fr.ClientMsgID) > maxClientMsgIDLen {
			t.Fatalf("client_msg_id of %d bytes", len(fr.ClientMsgID))
		}
		if err != nil {
			if fr.Type != "" || fr.Raw != nil {
				t.Fatalf("frame %+v returned with error %v", fr, err)
			}
			return
		}
		if !validFrameType(fr.Type) || !bytes.Equal(fr.Raw, b) || len(b) > MaxFrameBytes {
			t.Fatalf("accepted %q as %+v", b, fr)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", b, err)
		}
		var typ string
		if err := json.Unmarshal(obj["type"], &typ); err != nil || typ != fr.Type {
			t.Fatalf("accepted %q with type %q, encoding/json reads %q", b, fr.Type, typ)
		}
		var st struct {
			Type string `json:"type"`
		}
		if err := fr.DecodeFields(&st); err != nil || st.Type != fr.Type {
			t.Fatalf("a handler decoding %q would see type %q, not %q (%v)", b, st.Type, fr.Type, err)
		}
		// The chat frames' fields: a value or a validation error naming fields, never anything else.
		for _, need := range []int{0, fieldText, fieldUpToSeq} {
			cf, err := decodeChatFrame(fr, need)
			if err != nil {
				ce, ok := commands.AsError(err)
				if !ok || ce.Kind != commands.KindValidation || len(ce.Fields) == 0 || cf != (chatFrame{}) {
					t.Fatalf("chat fields of %q: %+v, %v", b, cf, err)
				}
				continue
			}
			if cf.ChatID == uuid.Nil && !strings.Contains(strings.ToLower(string(b)), "0000-0000") {
				t.Fatalf("chat fields of %q: no chat id", b)
			}
		}
	})
}

func TestDecodeChatFrame(t *testing.T) {
	t.Parallel()
	chat := "0195f0b8-7c1e-7000-8000-000000000001"
	ok := []struct {
		in   string
		need int
		want chatFrame
	}{
		{`{"type":"typing","chat_id":"` + chat + `"}`, 0, chatFrame{ChatID: uuid.MustParse(chat)}},
		{`{"type":"typing","chat_id":"` + chat + `","text":5}`, 0, chatFrame{ChatID: uuid.MustParse(chat)}},
		{`{"type":"message.send","chat_id":"` + chat + `","text":"hi","client_msg_id":"m1"}`, fieldText,
			chatFrame{ChatID: uuid.MustParse(chat), Text: "hi", ClientMsgID: "m1"}},
		{`{"type":"message.send","chat_id":"` + chat + `","text":"","client_msg_id":null}`, fieldText,
			chatFrame{ChatID: uuid.MustParse(chat)}},
		{`{"type":"chat.read","chat_id":"` + chat + `","up_to_seq":12}`, fieldUpToSeq,
			chatFrame{ChatID: uuid.MustParse(chat), UpToSeq: 12}},
	}
	for _, tc := range ok {
		f, err := DecodeClientFrame([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeChatFrame(f, tc.need)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v", tc.in, got, err)
		}
	}
	bad := []struct {
		in     string
		need   int
		fields []string
	}{
		{`{"type":"typing"}`, 0, []string{"chat_id"}},
		{`{"type":"typing","chat_id":null}`, 0, []string{"chat_id"}},
		{`{"type":"typing","chat_id":7}`, 0, []string{"chat_id"}},
		{`{"type":"typing","chat_id":"nope"}`, 0, []string{"chat_id"}},
		{`{"type":"typing","chat_id":"{` + chat + `}"}`, 0, []string{"chat_id"}},
		{`{"type":"message.send"}`, fieldText, []string{"chat_id", "text"}},
		{`{"type":"message.send","chat_id":"` + chat + `","text":["hi"],"client_msg_id":5}`, fieldText, []string{"text", "client_msg_id"}},
		{`{"type":"chat.read","chat_id":"` + chat + `"}`, fieldUpToSeq, []string{"up_to_seq"}},
		{`{"type":"chat.read","chat_id":"` + chat + `","up_to_seq":"3"}`, fieldUpToSeq, []string{"up_to_seq"}},
		{`{"type":"chat.read","chat_id":"` + chat + `","up_to_seq":1.5}`, fieldUpToSeq, []string{"up_to_seq"}},
		{`{"type":"chat.read","chat_id":"` + chat + `","up_to_seq":1e30}`, fieldUpToSeq, []string{"up_to_seq"}},
	}
	for _, tc := range bad {
		f, err := DecodeClientFrame([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		_, err = decodeChatFrame(f, tc.need)
		ce, ok := commands.AsError(err)
		if !ok || ce.Kind != commands.KindValidation {
			t.Errorf("%s: %v, want a validation error", tc.in, err)
			continue
		}
		var fields []string
		for _, fe := range ce.Fields {
			fields = append(fields, fe.Field)
		}
		if strings.Join(fields, ",") != strings.Join(tc.fields, ",") {
			t.Errorf("%s: bad fields %v, want %v", tc.in, fields, tc.fields)
		}
	}
}
