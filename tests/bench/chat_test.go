package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/events"
)

// TestMain lets the test binary stand in for the harness's binary when startEchoServer re-executes it.
func TestMain(m *testing.M) {
	if os.Getenv(echoServerEnv) != "" {
		os.Exit(runEchoServer(os.Stdout))
	}
	os.Exit(m.Run())
}

func TestCheckDelivery(t *testing.T) {
	want := []int64{3, 4, 5, 6}
	for _, tc := range []struct {
		name string
		got  []int64
		err  string // "" for none
	}{
		{"exact", []int64{3, 4, 5, 6}, ""},
		{"missing last", []int64{3, 4, 5}, "received 3 of 4 messages; missing seq 6"},
		{"missing first", []int64{4, 5, 6}, "receipt 0 is seq 4, want seq 3"},
		{"none", nil, "received 0 of 4 messages; missing seq 3"},
		{"reordered", []int64{3, 5, 4, 6}, "receipt 1 is seq 5, want seq 4"},
		{"duplicate inside", []int64{3, 4, 4, 5, 6}, "seq 4 received twice (receipts 1 and 2)"},
		{"duplicate at the end", []int64{3, 4, 5, 6, 4}, "seq 4 received twice (receipts 1 and 4)"},
		{"unexpected extra", []int64{3, 4, 5, 6, 7}, "unexpected seq 7"},
		{"foreign seq", []int64{3, 4, 9, 6}, "receipt 2 is seq 9, want seq 5"},
	} {
		err := checkDelivery(want, tc.got)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
	if err := checkDelivery(nil, nil); err != nil {
		t.Errorf("nothing sent, nothing received: %v", err)
	}
}

func TestSlowest(t *testing.T) {
	d := map[int64]time.Duration{1: time.Millisecond, 2: 30 * time.Millisecond, 3: 2 * time.Millisecond, 4: 30 * time.Millisecond}
	if got, want := slowest(d, 3), "seq 2: 30ms, seq 4: 30ms, seq 3: 2ms"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := slowest(nil, 3); got != "" {
		t.Errorf("nothing: %q", got)
	}
}

func TestMessageFrameSeq(t *testing.T) {
	chat := uuid.NewString()
	for _, tc := range []struct {
		frame string
		seq   int64
		ok    bool
		err   bool
	}{
		{`{"type":"message.sent","position":"1.2","chat_id":"` + chat + `","data":{"id":"x","chat_id":"` + chat + `","seq":7}}`, 7, true, false},
		{`{"type":"hello","data":{"user_id":"u"}}`, 0, false, false},
		{`{"type":"message.sent","chat_id":"` + uuid.NewString() + `","data":{"seq":7}}`, 0, false, false},
		{`{"type":"message.edited","chat_id":"` + chat + `","data":{"chat_id":"` + chat + `","seq":7}}`, 0, false, false},
		{`{"type":"message.sent","chat_id":"` + chat + `","data":{}}`, 0, false, true},
		{`not json`, 0, false, true},
	} {
		seq, ok, err := messageFrameSeq([]byte(tc.frame), chat)
		if seq != tc.seq || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%s: got %d, %v, %v", tc.frame, seq, ok, err)
		}
	}
}

func TestCheckPage(t *testing.T) {
	chat := uuid.New()
	page := func(from, to int64, more bool) messagePage {
		var p messagePage
		for s := from; s <= to; s++ {
			p.Items = append(p.Items, struct {
				ID     uuid.UUID `json:"id"`
				ChatID uuid.UUID `json:"chat_id"`
				Seq    int64     `json:"seq"`
				Text   string    `json:"text"`
			}{ChatID: chat, Seq: s})
		}
		p.HasMore = more
		return p
	}
	if err := checkPage(page(51, 100, true), chat, 101, 50); err != nil {
		t.Error(err)
	}
	if err := checkPage(page(1, 50, false), chat, 51, 50); err != nil {
		t.Error(err)
	}
	if err := checkPage(page(1, 10, false), chat, 11, 50); err != nil {
		t.Errorf("a short first page: %v", err)
	}
	for name, bad := range map[string]error{
		"short":              checkPage(page(52, 100, true), chat, 101, 50),
		"shifted":            checkPage(page(50, 99, true), chat, 101, 50),
		"has_more wrong":     checkPage(page(51, 100, false), chat, 101, 50),
		"has_more on page 1": checkPage(page(1, 50, true), chat, 51, 50),
		"other chat":         checkPage(page(51, 100, true), uuid.New(), 101, 50),
	} {
		if bad == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p := page(51, 100, true)
	p.Items[10], p.Items[11] = p.Items[11], p.Items[10]
	if checkPage(p, chat, 101, 50) == nil {
		t.Error("descending items accepted")
	}
}

func TestCompareMessageCounts(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	ok := map[uuid.UUID][4]int64{a: {5, 5, 1, 5}}
	if err := compareMessageCounts(map[uuid.UUID]int{a: 5, b: 0}, ok); err != nil {
		t.Error(err)
	}
	for name, got := range map[string][4]int64{
		"lost":       {4, 4, 1, 4},
		"doubled":    {6, 5, 1, 5},
		"gap":        {5, 5, 1, 6},
		"not from 1": {5, 5, 2, 6},
	} {
		if compareMessageCounts(map[uuid.UUID]int{a: 5}, map[uuid.UUID][4]int64{a: got}) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if compareMessageCounts(map[uuid.UUID]int{b: 0}, map[uuid.UUID][4]int64{b: {1, 1, 1, 1}}) == nil {
		t.Error("a message in a chat with no acknowledged send was accepted")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\ttaki\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n"
	if n, err := parseVmRSS(status); n != 12345 || err != nil {
		t.Errorf("got %d, %v", n, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n"} {
		if _, err := parseVmRSS(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if n, err := readRSS(os.Getpid()); n <= 0 || err != nil {
		t.Errorf("own RSS: %d, %v", n, err)
	}
}

func TestPromValues(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 20042\n" +
		"go_memstats_heap_inuse_bytes 1.2345e+08\nhttp_requests_total{code=\"200\"} 5\ngo_gc_duration_seconds{quantile=\"0\"} 1e-05\n"
	got := promValues(text, "go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
	if len(got) != 2 || got["go_goroutines"] != 20042 || got["go_memstats_heap_inuse_bytes"] != 1.2345e8 {
		t.Errorf("got %v", got)
	}
}

func TestForEach(t *testing.T) {
	var seen [100]atomic.Int32
	if err := forEach(context.Background(), 100, 7, func(_ context.Context, i int) error {
		seen[i].Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if seen[i].Load() != 1 {
			t.Fatalf("item %d ran %d times", i, seen[i].Load())
		}
	}
	var ran atomic.Int32
	boom := errors.New("boom")
	err := forEach(context.Background(), 10_000, 4, func(_ context.Context, i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "item 3") {
		t.Errorf("err = %v", err)
	}
	if ran.Load() > 1000 {
		t.Errorf("%d items ran after the error", ran.Load())
	}
	if err := forEach(context.Background(), 0, 4, func(context.Context, int) error { return boom }); err != nil {
		t.Errorf("no items: %v", err)
	}
}

func TestMergeStats(t *testing.T) {
	var a, b LoadStats
	a.Ops, a.Window = 10, time.Second
	a.Latencies.Add(time.Millisecond)
	b.Ops, b.Window = 30, time.Second
	b.Latencies.Add(3 * time.Millisecond)
	m := mergeStats(a, b)
	if m.Ops != 40 || m.Window != 2*time.Second || m.Latencies.Len() != 2 || m.Rate() != 20 {
		t.Errorf("merged %+v", m)
	}
}

func TestEncodeEventDecodes(t *testing.T) {
	chat, sender := uuid.New(), uuid.New()
	ev := events.MessageSent{ChatID: chat, MessageID: uuid.New(), Seq: 3, SenderID: sender, Text: "a <b> & c",
		ClientMsgID: "x", SentAt: time.Now().UTC().Truncate(time.Microsecond)}
	payload, err := encodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(payload, `\u003c`) || strings.HasSuffix(payload, "\n") {
		t.Errorf("payload is not encoded as the server does: %s", payload)
	}
	got, err := logRegistry.Decode(ev.EventType(), logRegistry.Version(ev.EventType()), []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	if got != ev {
		t.Errorf("decoded %+v, want %+v", got, ev)
	}
}

func TestValidateChatFlags(t *testing.T) {
	ok := Config{Duration: time.Second, Clients: 1, Events: 1, CatchUpTimeout: time.Second, LongChatMessages: 0,
		FanoutMembers: 2, FanoutMessages: 1, FanoutInterval: time.Millisecond, HistoryMessages: historyPage,
		HistoryRequests: 1, IdleSockets: 1, IdleSocketsPerUser: 1, PaymentsTimeout: time.Second}
	if err := validateConfig(ok); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"fanout members": func(c *Config) { c.FanoutMembers = 1 },
		"fanout msgs":    func(c *Config) { c.FanoutMessages = 0 },
		"interval":       func(c *Config) { c.FanoutInterval = 0 },
		"history":        func(c *Config) { c.HistoryMessages = historyPage - 1 },
		"requests":       func(c *Config) { c.HistoryRequests = 0 },
		"sockets":        func(c *Config) { c.IdleSockets = 0 },
		"per user":       func(c *Config) { c.IdleSocketsPerUser = 0 },
		"long chat":      func(c *Config) { c.LongChatMessages = -1 },
		"payments wait":  func(c *Config) { c.PaymentsTimeout = 0 },
	} {
		c := ok
		mutate(&c)
		if validateConfig(c) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRaiseFileLimit(t *testing.T) {
	if err := raiseFileLimit(16); err != nil {
		t.Fatal(err)
	}
	if err := raiseFileLimit(1 << 62); err == nil || !strings.Contains(err.Error(), "hard limit") {
		t.Errorf("an impossible need: %v", err)
	}
}

// wsTestServer upgrades every request and runs serve on the socket.
func wsTestServer(t *testing.T, serve func(c *websocket.Conn)) string {
	t.Helper()
	up := &websocket.Upgrader{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func TestReadGroupFrames(t *testing.T) {
	chat := uuid.NewString()
	frame := func(typ, chatID string, seq int) string {
		return fmt.Sprintf(`{"type":%q,"position":"p","chat_id":%q,"data":{"chat_id":%q,"seq":%d}}`, typ, chatID, chatID, seq)
	}
	release := make(chan struct{})
	base := wsTestServer(t, func(c *websocket.Conn) {
		for _, f := range []string{
			`{"type":"hello","data":{"user_id":"u"}}`,
			frame("message.sent", chat, 1),
			frame("message.sent", uuid.NewString(), 1),
			frame("typing", chat, 0),
			frame("message.sent", chat, 2),
		} {
			if err := c.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
				return
			}
		}
		<-release
	})
	defer close(release)
	c, err := dialWS(context.Background(), base, "t")
	if err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	done := make(chan socketLog)
	go func() { done <- readGroupFrames(c, chat, 2, &received) }()
	for received.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	l := <-done
	if err := checkDelivery([]int64{1, 2}, l.seqs); err != nil || l.err != nil || len(l.at) != 2 {
		t.Errorf("log %+v, check %v", l, err)
	}

	// A socket the server ends early says why.
	early := wsTestServer(t, func(c *websocket.Conn) {
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello"}`))
		_ = c.WriteMessage(websocket.TextMessage, []byte(frame("message.sent", chat, 1)))
		_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "slow"))
	})
	c2, err := dialWS(context.Background(), early, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	l = readGroupFrames(c2, chat, 2, &received)
	if len(l.seqs) != 1 || l.err == nil {
		t.Errorf("early end: %+v", l)
	}
}

func TestDialWSWantsHelloFirst(t *testing.T) {
	base := wsTestServer(t, func(c *websocket.Conn) {
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message.sent"}`))
		time.Sleep(100 * time.Millisecond)
	})
	if _, err := dialWS(context.Background(), base, "t"); err == nil || !strings.Contains(err.Error(), "want hello") {
		t.Errorf("got %v", err)
	}
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer refusing.Close()
	if _, err := dialWS(context.Background(), refusing.URL, "t"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("got %v", err)
	}
}

func TestMeasureSocketsOnEchoServer(t *testing.T) {
	env := &Env{Config: Config{Log: io.Discard}}
	echo, err := startEchoServer(env)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	dialed := 0
	before, after, err := measureSockets(context.Background(), env, 50, 10*time.Millisecond, rssSampler(echo.pid),
		func(ctx context.Context, _ int) (*websocket.Conn, error) {
			mu.Lock()
			dialed++
			mu.Unlock()
			c, _, err := wsDialer.DialContext(ctx, "ws://"+echo.addr+"/", nil)
			return c, err
		})
	if stopErr := echo.stop(); stopErr != nil {
		t.Error(stopErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if dialed != 50 || before.RSS <= 0 || after.RSS <= 0 {
		t.Errorf("dialed %d, RSS %d -> %d KiB", dialed, before.RSS, after.RSS)
	}

	// A socket that the server closes while idle fails the measurement.
	base := wsTestServer(t, func(c *websocket.Conn) {})
	_, _, err = measureSockets(context.Background(), env, 3, 200*time.Millisecond, rssSampler(os.Getpid()),
		func(ctx context.Context, _ int) (*websocket.Conn, error) {
			c, _, err := wsDialer.DialContext(ctx, "ws"+strings.TrimPrefix(base, "http"), nil)
			return c, err
		})
	if err == nil || !strings.Contains(err.Error(), "ended before") {
		t.Errorf("closed sockets: %v", err)
	}
}
