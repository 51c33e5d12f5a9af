package httpapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

type decodeTarget struct {
	Email   string   `json:"email"`
	Amount  int64    `json:"amount_minor"`
	Members []string `json:"member_ids"`
	Nested  struct {
		Seq int `json:"seq"`
	} `json:"nested"`
}

// decodeEngine answers POST /x by decoding into a decodeTarget and echoing it.
func decodeEngine() *gin.Engine {
	e := gin.New()
	e.Use(BodyLimit())
	e.POST("/x", func(c *gin.Context) {
		var dst decodeTarget
		if !DecodeJSON(c, &dst) {
			return
		}
		c.JSON(http.StatusOK, dst)
	})
	return e
}

// chunked hides the length of r, as a chunked request body does.
func chunked(r io.Reader) io.Reader { return io.MultiReader(r) }

func jsonRequest(body io.Reader, contentType string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/x", body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

func TestDecodeJSONAccepts(t *testing.T) {
	t.Parallel()
	tests := map[string]struct{ contentType, body string }{
		"plain":              {"application/json", `{"email":"a@b.c","amount_minor":5,"member_ids":["x"],"nested":{"seq":2}}`},
		"charset utf-8":      {"application/json; charset=utf-8", `{"email":"a@b.c"}`},
		"charset UTF-8":      {"application/json;charset=UTF-8", `{"email":"a@b.c"}`},
		"trailing space":     {"application/json", "{\"email\":\"a@b.c\"}\n\t "},
		"upper-case type":    {"Application/JSON", `{"email":"a@b.c"}`},
		"empty object":       {"application/json", `{}`},
		"chunked small body": {"application/json", `{"email":"a@b.c"}`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader = strings.NewReader(tt.body)
			if strings.HasPrefix(name, "chunked") {
				body = chunked(body)
			}
			w := serve(decodeEngine(), jsonRequest(body, tt.contentType))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
		})
	}
}

func TestDecodeJSONRejects(t *testing.T) {
	t.Parallel()
	big := `{"email":"` + strings.Repeat("a", maxBodyBytes) + `"}`
	tests := []struct {
		name        string
		contentType string
		body        io.Reader
		status      int
		slug        string
		detailHas   string
	}{
		{"no content type", "", strings.NewReader(`{}`), 415, "unsupported-media-type", "application/json"},
		{"text/plain", "text/plain", strings.NewReader(`{}`), 415, "unsupported-media-type", "application/json"},
		{"form", "application/x-www-form-urlencoded", strings.NewReader(`a=b`), 415, "unsupported-media-type", ""},
		{"json-ish prefix", "application/jsonx", strings.NewReader(`{}`), 415, "unsupported-media-type", ""},
		{"latin1", "application/json; charset=latin1", strings.NewReader(`{}`), 415, "unsupported-media-type", "latin1"},
		{"garbage content type", "application/json; ===", strings.NewReader(`{}`), 415, "unsupported-media-type", ""},
		{"declared too large", "application/json", strings.NewReader(big), 413, "payload-too-large", ""},
		{"chunked too large", "application/json", chunked(strings.NewReader(big)), 413, "payload-too-large", ""},
		{"malformed", "application/json", strings.NewReader(`{"email": x}`), 400, "bad-request", "not valid JSON"},
		{"truncated", "application/json", strings.NewReader(`{"email": "a`), 400, "bad-request", "ends too early"},
		{"empty", "application/json", strings.NewReader(``), 400, "bad-request", "empty"},
		{"only spaces", "application/json", strings.NewReader("  \n"), 400, "bad-request", "empty"},
		{"wrong type", "application/json", strings.NewReader(`{"email": 5}`), 400, "bad-request", `"email" must be a string, not number`},
		{"float for integer", "application/json", strings.NewReader(`{"amount_minor": 1.5}`), 400, "bad-request", `"amount_minor" must be an integer`},
		{"string for integer", "application/json", strings.NewReader(`{"amount_minor": "5"}`), 400, "bad-request", `"amount_minor" must be an integer, not string`},
		{"nested wrong type", "application/json", strings.NewReader(`{"nested": {"seq": true}}`), 400, "bad-request", `"nested.seq" must be an integer, not boolean`},
		{"array element", "application/json", strings.NewReader(`{"member_ids": [1]}`), 400, "bad-request", `"member_ids`},
		{"array for object", "application/json", strings.NewReader(`[]`), 400, "bad-request", "must be a JSON object"},
		{"unknown field", "application/json", strings.NewReader(`{"email":"a@b.c","is_admin":true}`), 400, "bad-request", `unknown field "is_admin"`},
		{"trailing value", "application/json", strings.NewReader(`{"email":"a@b.c"}{"email":"x"}`), 400, "bad-request", "more data"},
		{"trailing garbage", "application/json", strings.NewReader(`{} x`), 400, "bad-request", "more data"},
		{"trailing oversize", "application/json", chunked(strings.NewReader(`{}` + strings.Repeat(" ", maxBodyBytes))), 413, "payload-too-large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := serve(decodeEngine(), jsonRequest(tt.body, tt.contentType))
			p := wantProblem(t, w, tt.status, tt.slug)
			if !strings.Contains(p.Detail, tt.detailHas) {
				t.Errorf("detail %q does not mention %q", p.Detail, tt.detailHas)
			}
		})
	}
}

// Without BodyLimit in front, DecodeJSON still enforces the limit on its own.
func TestDecodeJSONLimitsWithoutMiddleware(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.POST("/x", func(c *gin.Context) {
		var dst map[string]any
		if DecodeJSON(c, &dst) {
			c.Status(http.StatusNoContent)
		}
	})
	body := chunked(strings.NewReader(`{"a":"` + strings.Repeat("a", maxBodyBytes) + `"}`))
	wantProblem(t, serve(e, jsonRequest(body, "application/json")), 413, "payload-too-large")
	body = strings.NewReader(`{"a":"` + strings.Repeat("a", maxBodyBytes) + `"}`)
	wantProblem(t, serve(e, jsonRequest(body, "application/json")), 413, "payload-too-large")
}

func TestDecodeJSONBadDestinationIsOurBug(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.POST("/x", func(c *gin.Context) {
		var dst decodeTarget
		DecodeJSON(c, dst) // not a pointer
	})
	wantProblem(t, serve(e, jsonRequest(strings.NewReader(`{}`), "application/json")), 500, "internal")
}

func TestBodyLimitOnRoutesThatDoNotRead(t *testing.T) {
	t.Parallel()
	var ran bool
	e := gin.New()
	e.Use(BodyLimit())
	e.POST("/ignore", func(c *gin.Context) {
		ran = true
		c.Status(http.StatusNoContent)
	})
	big := bytes.Repeat([]byte("a"), maxBodyBytes+1)

	w := serve(e, httptest.NewRequest(http.MethodPost, "/ignore", bytes.NewReader(big)))
	wantProblem(t, w, 413, "payload-too-large")
	if ran {
		t.Error("the handler ran for a declared oversized body")
	}

	w = serve(e, httptest.NewRequest(http.MethodPost, "/ignore", chunked(bytes.NewReader(big))))
	wantProblem(t, w, 413, "payload-too-large")
	if ran {
		t.Error("the handler ran for a chunked oversized body")
	}

	// Exactly at the limit is allowed.
	w = serve(e, httptest.NewRequest(http.MethodPost, "/ignore", chunked(bytes.NewReader(big[:maxBodyBytes]))))
	if w.Code != http.StatusNoContent || !ran {
		t.Errorf("a body of exactly 1 MiB got %d", w.Code)
	}
}

// A declared length is checked before anything is read: the body here would fail if it were.
func TestBodyLimitRefusesDeclaredLengthUnread(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.Use(BodyLimit())
	e.POST("/x", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	req := httptest.NewRequest(http.MethodPost, "/x", failingReader{})
	req.ContentLength = maxBodyBytes + 1
	wantProblem(t, serve(e, req), 413, "payload-too-large")
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestBodyLimitKeepsChunkedBodyIntact(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.Use(BodyLimit())
	var got []byte
	var length int64
	e.POST("/x", func(c *gin.Context) {
		got = mustRead(t, c.Request.Body)
		length = c.Request.ContentLength
		c.Status(http.StatusNoContent)
	})
	w := serve(e, httptest.NewRequest(http.MethodPost, "/x", chunked(strings.NewReader("hello"))))
	if w.Code != http.StatusNoContent || string(got) != "hello" || length != 5 {
		t.Errorf("got %d %q (length %d)", w.Code, got, length)
	}
}

func TestBodyLimitBrokenChunkedBody(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.Use(BodyLimit())
	e.POST("/x", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	req := httptest.NewRequest(http.MethodPost, "/x", chunked(failingReader{}))
	wantProblem(t, serve(e, req), 400, "bad-request")
}

func TestBodyLimitPassesBodylessRequests(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.Use(BodyLimit())
	e.GET("/x", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	if w := serve(e, httptest.NewRequest(http.MethodGet, "/x", nil)); w.Code != http.StatusNoContent {
		t.Errorf("status %d", w.Code)
	}
}

func TestReadBody(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.POST("/hook", func(c *gin.Context) {
		body, ok := ReadBody(c)
		if !ok {
			return
		}
		c.Data(http.StatusOK, "text/plain", body)
	})
	w := serve(e, httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(`{"event_id":"1"}`)))
	if w.Code != 200 || w.Body.String() != `{"event_id":"1"}` {
		t.Errorf("got %d %q", w.Code, w.Body)
	}
	big := chunked(bytes.NewReader(bytes.Repeat([]byte("a"), maxBodyBytes+1)))
	wantProblem(t, serve(e, httptest.NewRequest(http.MethodPost, "/hook", big)), 413, "payload-too-large")
	big = bytes.NewReader(bytes.Repeat([]byte("a"), maxBodyBytes+1))
	wantProblem(t, serve(e, httptest.NewRequest(http.MethodPost, "/hook", big)), 413, "payload-too-large")
}

// FuzzDecodeJSON holds DecodeJSON to its contract for any body: a 200 or a 4xx problem, never a panic
// or a 5xx.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"email":"a"}`, `{"nested":{"seq":1}}`, `[`, `{"member_ids":[null]}`, "\x00", `{"email":"\ud800"}`} {
		f.Add([]byte(s))
	}
	e := decodeEngine()
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serve(e, jsonRequest(bytes.NewReader(body), "application/json"))
		if w.Code == http.StatusOK {
			return
		}
		if w.Code < 400 || w.Code >= 500 {
			t.Fatalf("status %d for %q", w.Code, body)
		}
		decodeProblem(t, w)
	})
}
