package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/gin-gonic/gin"

	"taki/infra/logging"
	"taki/infra/logging/logtest"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode) // silences gin's route dump
	os.Exit(m.Run())
}

// logBuffer collects JSON log lines written concurrently by handlers.
type logBuffer = logtest.Buffer

// find returns the first line whose msg is msg.
func findLine(t *testing.T, b *logBuffer, msg string) map[string]any {
	t.Helper()
	for _, l := range b.Lines(t) {
		if l["msg"] == msg {
			return l
		}
	}
	t.Fatalf("no log line %q in:\n%s", msg, b.String())
	return nil
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return logging.New(buf, "json", slog.LevelDebug), buf
}

func serve(e *gin.Engine, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.ServeHTTP(w, req)
	return w
}

func decodeProblem(t *testing.T, w *httptest.ResponseRecorder) Problem {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (body %s)", ct, w.Body)
	}
	var p Problem
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem body %q: %v", w.Body, err)
	}
	if p.Status != w.Code {
		t.Errorf("problem status %d, response status %d", p.Status, w.Code)
	}
	if p.Title == "" {
		t.Errorf("problem without title: %s", w.Body)
	}
	return p
}

func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, slug string) Problem {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d (body %s)", w.Code, status, w.Body)
	}
	p := decodeProblem(t, w)
	if want := "https://taki.dev/problems/" + slug; p.Type != want {
		t.Errorf("type = %q, want %q", p.Type, want)
	}
	return p
}

func mustRead(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
