package crash

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// user is a logged-in account. Its http.Client (and cookie jar) is safe for concurrent use, so the
// workers acting as one user share it. Cookies are kept per host, not per port, so the session
// survives the server moving to another port in its next life.
type user struct {
	id   string
	csrf string
	http *http.Client
}

// call sends one JSON request. err is a transport failure (the server is gone or going); otherwise it
// returns the status and body, whatever the status.
func (u *user) call(base, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != http.MethodGet && u.csrf != "" {
		req.Header.Set("X-CSRF-Token", u.csrf)
	}
	resp, err := u.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// mustCall is call for the set-up, where the server is up and anything but want fails the test.
func (u *user) mustCall(t *testing.T, base, method, path string, body any, want int, out any) {
	t.Helper()
	status, b, err := u.call(base, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// signUp registers an account and logs it in.
func signUp(t *testing.T, base string, n int) *user {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	u := &user{http: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
	email, password := fmt.Sprintf("crash-%d@example.com", n), "correct horse battery staple"
	var reg struct {
		ID string `json:"id"`
	}
	u.mustCall(t, base, http.MethodPost, "/api/v1/users",
		map[string]string{"email": email, "password": password, "display_name": fmt.Sprintf("Crash %d", n)}, http.StatusCreated, &reg)
	var sess struct {
		CSRF string `json:"csrf_token"`
	}
	u.mustCall(t, base, http.MethodPost, "/api/v1/sessions", map[string]string{"email": email, "password": password}, http.StatusOK, &sess)
	u.id, u.csrf = reg.ID, sess.CSRF
	return u
}

// createChat creates a group chat of creator and members and returns its id.
func createChat(t *testing.T, base string, creator *user, title string, members ...*user) string {
	t.Helper()
	ids := []string{}
	for _, m := range members {
		ids = append(ids, m.id)
	}
	var chat struct {
		ID string `json:"id"`
	}
	creator.mustCall(t, base, http.MethodPost, "/api/v1/chats",
		map[string]any{"type": "group", "title": title, "member_ids": ids}, http.StatusCreated, &chat)
	return chat.ID
}

// ackedMessage is a message send the server acknowledged (201, or 200 replaying an earlier send).
type ackedMessage struct {
	ID, ChatID, SenderID, ClientMsgID string
	Seq                               int64
	Replayed                          bool
}

// ledger records what the server acknowledged, and how the load went, across all workers.
type ledger struct {
	mu       sync.Mutex
	messages []ackedMessage
	profiles []string // display names of acknowledged profile updates, each sent once
	problems []string // answers no crash explains, each a test failure

	acks            atomic.Int64
	transportErrors atomic.Int64
	retries         atomic.Int64
	progress        chan struct{} // nudged after every acknowledgement
}

func newLedger() *ledger { return &ledger{progress: make(chan struct{}, 1)} }

func (l *ledger) ack() {
	l.acks.Add(1)
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

func (l *ledger) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 20 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// waitAcks blocks until at least n commands have been acknowledged in all, failing after timeout.
func (l *ledger) waitAcks(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for l.acks.Load() < n {
		select {
		case <-l.progress:
		case <-deadline.C:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("only %d of %d commands acknowledged after %s; unexpected answers: %q", l.acks.Load(), n, timeout, l.problems)
		}
	}
}

// worker sends commands as one user until ctx ends: messages to one chat, and every profileEvery-th
// command a profile update. A send that failed in transport (the server died under it) is retried with
// the same client_msg_id once the next life is up; a profile update never is, so each display name is
// sent at most once and may appear at most once in the log.
type worker struct {
	n      int
	u      *user
	chatID string
	srv    *takiServer
	led    *ledger
}

const profileEvery = 5

func (w *worker) run(ctx context.Context) {
	var pending string // client_msg_id of a send whose outcome is unknown
	for i := 0; ctx.Err() == nil; i++ {
		base, up := w.srv.current()
		select {
		case <-up:
		case <-ctx.Done():
			return
		}
		if pending == "" && i%profileEvery == profileEvery-1 {
			w.updateProfile(base, fmt.Sprintf("w%d-n%d", w.n, i))
			continue
		}
		retry := pending != ""
		if !retry {
			pending = fmt.Sprintf("crash-w%d-m%d", w.n, i)
		} else {
			w.led.retries.Add(1)
		}
		if w.send(base, pending, retry) {
			pending = ""
		}
	}
}

// send posts one message and reports whether its outcome is settled (acknowledged or refused).
func (w *worker) send(base, clientMsgID string, retry bool) bool {
	status, body, err := w.u.call(base, http.MethodPost, "/api/v1/chats/"+w.chatID+"/messages",
		map[string]string{"text": "load " + clientMsgID, "client_msg_id": clientMsgID})
	if err != nil {
		w.led.transportErrors.Add(1)
		return false
	}
	switch {
	case status == http.StatusCreated, status == http.StatusOK && retry:
	case status == http.StatusOK:
		w.led.problem("first send of %s answered 200 (a replay of what?): %s", clientMsgID, body)
		return true
	default:
		w.led.problem("send %s: %d %s", clientMsgID, status, body)
		return true
	}
	var m struct {
		ID          string `json:"id"`
		ChatID      string `json:"chat_id"`
		SenderID    string `json:"sender_id"`
		ClientMsgID string `json:"client_msg_id"`
		Seq         int64  `json:"seq"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.ID == "" || m.ClientMsgID != clientMsgID || m.ChatID != w.chatID || m.SenderID != w.u.id {
		w.led.problem("send %s: %d answered a message that is not it: %s", clientMsgID, status, body)
		return true
	}
	w.led.mu.Lock()
	w.led.messages = append(w.led.messages, ackedMessage{
		ID: m.ID, ChatID: m.ChatID, SenderID: m.SenderID, ClientMsgID: clientMsgID, Seq: m.Seq, Replayed: status == http.StatusOK,
	})
	w.led.mu.Unlock()
	w.led.ack()
	return true
}

func (w *worker) updateProfile(base, name string) {
	status, body, err := w.u.call(base, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": name})
	if err != nil {
		w.led.transportErrors.Add(1)
		return
	}
	if status != http.StatusOK {
		w.led.problem("profile update %s: %d %s", name, status, body)
		return
	}
	w.led.mu.Lock()
	w.led.profiles = append(w.led.profiles, name)
	w.led.mu.Unlock()
	w.led.ack()
}
