package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"taki/events"
	"taki/handlers"
	"taki/infra/logging"
)

// testEvent is an event for the users it names.
type testEvent struct{ To []uuid.UUID }

func (testEvent) EventType() string { return "test.event" }

// testFeed sends each testEvent to its users (only to one, when only is set).
type testFeed struct{ only uuid.UUID }

// testUnreadable stands for an event the feed cannot build frames of (events.ErrUndecodable), whose
// possible recipients the feed guesses as To, or cannot guess (All).
type testUnreadable struct {
	To  []uuid.UUID
	All bool
	// AtRead: the log's read stops at it (events.UnreadableError) rather than the feed failing on it.
	AtRead bool
}

func (testUnreadable) EventType() string { return "test.unreadable" }

func (f testFeed) Unreadable(_ context.Context, env events.Envelope) ([]uuid.UUID, bool) {
	ev, ok := env.Data.(testUnreadable)
	if !ok {
		return nil, true
	}
	if f.only != uuid.Nil && !ev.All {
		if !slices.Contains(ev.To, f.only) {
			return nil, false
		}
		return []uuid.UUID{f.only}, false
	}
	return ev.To, ev.All
}

func (f testFeed) Frames(_ context.Context, env events.Envelope) ([]handlers.FeedFrame, error) {
	if _, ok := env.Data.(testUnreadable); ok {
		return nil, fmt.Errorf("fold test stream: %w", events.ErrUndecodable)
	}
	ev, ok := env.Data.(testEvent)
	if !ok {
		return nil, nil
	}
	to := ev.To
	if f.only != uuid.Nil {
		if !slices.Contains(to, f.only) {
			return nil, nil
		}
		to = []uuid.UUID{f.only}
	}
	return []handlers.FeedFrame{{Type: "test.event", Data: map[string]int64{"n": env.Version}, To: to}}, nil
}

// memEventLog is an in-memory log with ReadLog's contract. gate, when set, holds the next ReadLog
// until it is closed.
type memEventLog struct {
	mu     sync.Mutex
	evs    []events.Envelope
	gate   chan struct{}
	reads  int
	gated  chan struct{} // closed when a read waits at the gate
	gateMu sync.Mutex
}

func (l *memEventLog) add(data events.Event) events.Envelope {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := int64(len(l.evs) + 1)
	env := events.Envelope{ID: uuid.New(), Type: data.EventType(), Version: n, Position: events.Position{TxID: uint64(n), Offset: n},
		Data: data}
	l.evs = append(l.evs, env)
	return env
}

func (l *memEventLog) ReadLog(ctx context.Context, after events.Position, _ string, limit int) ([]events.Envelope, error) {
	l.gateMu.Lock()
	gate, gated := l.gate, l.gated
	l.gate = nil
	l.gateMu.Unlock()
	if gate != nil {
		close(gated)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	var out []events.Envelope
	for _, e := range l.evs {
		if after.Less(e.Position) && len(out) < limit {
			if u, ok := e.Data.(testUnreadable); ok && u.AtRead {
				return out, &events.UnreadableError{Event: e, Err: events.ErrUndecodable}
			}
			out = append(out, e)
		}
	}
	return out, nil
}

func (l *memEventLog) CountAfter(_ context.Context, after events.Position, limit int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.evs {
		if after.Less(e.Position) && n < limit {
			n++
		}
	}
	return n, nil
}

func (l *memEventLog) LogHead(context.Context) (events.Position, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.evs) == 0 {
		return events.Position{}, nil
	}
	return l.evs[len(l.evs)-1].Position, nil
}

// liveEnv is a hub with recovery on an in-memory log, and a fan-out fed by publish as a tail would.
type liveEnv struct {
	*env
	log    *memEventLog
	fanout *Fanout
	pubMu  sync.Mutex
}

func newLiveEnv(t *testing.T, edit func(*Config)) *liveEnv {
	t.Helper()
	log := &memEventLog{}
	live := make(chan struct{})
	close(live)
	e := newEnv(t, func(c *Config) {
		c.Recovery = &RecoveryConfig{Log: log, Live: live, BatchSize: 50,
			UserFeed: func(u uuid.UUID) Feed { return testFeed{only: u} }}
		if edit != nil {
			edit(c)
		}
	})
	f, err := NewFanout(e.hub, testFeed{}, logging.Discard(), e.reg)
	if err != nil {
		t.Fatal(err)
	}
	return &liveEnv{env: e, log: log, fanout: f}
}

// publish appends an event for to and delivers it, as the tail does after the commit.
func (e *liveEnv) publish(to ...uuid.UUID) events.Envelope { return e.publishData(testEvent{To: to}) }

func (e *liveEnv) publishData(data events.Event) events.Envelope {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	env := e.log.add(data)
	if err := e.fanout.Deliver(context.Background(), []events.Envelope{env}); err != nil {
		e.t.Error(err)
	}
	return env
}

// readEvents reads frames until it got the event frame at last, and returns the event frames' positions
// (failing on any other frame but those of the types allowed).
func readEvents(t *testing.T, conn *websocket.Conn, last events.Position, allow ...string) []events.Position {
	t.Helper()
	var got []events.Position
	for {
		f := read(t, conn)
		if slices.Contains(allow, f.Type) {
			continue
		}
		if f.Type != "test.event" {
			t.Fatalf("got %+v, want test.event frames", f)
		}
		p, err := events.ParsePosition(f.Position)
		if err != nil {
			t.Fatalf("frame position %q: %v", f.Position, err)
		}
		var d struct{ N int64 }
		if json.Unmarshal(f.Data, &d) != nil || d.N != int64(p.Offset) {
			t.Fatalf("frame at %v has data %s", p, f.Data)
		}
		got = append(got, p)
		if p == last {
			return got
		}
	}
}

// wantExactly checks that got is every position of evs after since, in order, once each.
func wantExactly(t *testing.T, got []events.Position, evs []events.Envelope, since events.Position) {
	t.Helper()
	var want []events.Position
	for _, e := range evs {
		if since.Less(e.Position) {
			want = append(want, e.Position)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d frames, want %d: first difference at %d\n got %v\nwant %v", len(got), len(want), firstDiff(got, want),
			clip(got), clip(want))
	}
}

func firstDiff(a, b []events.Position) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func clip(p []events.Position) string {
	if len(p) > 20 {
		return fmt.Sprint(p[:10], " ... ", p[len(p)-10:])
	}
	return fmt.Sprint(p)
}

func (e *liveEnv) dialSince(id uuid.UUID, tok string, since events.Position) *websocket.Conn {
	e.t.Helper()
	conn, resp, err := e.dial("since=" + since.String() + "&token=" + url.QueryEscape(tok))
	if err != nil {
		e.t.Fatalf("dial: %v (%s)", err, status(resp))
	}
	wantHello(e.t, conn, id)
	return conn
}

// Fan-out: every socket of each recipient gets the event frames, in log order, and nobody else does.
func TestFanoutDeliversToTheRecipientsSocketsInOrder(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, nil)
	alice, tok := e.token()
	a1, a2 := e.dialAs(alice, tok), e.dialAs(alice, tok)
	bob, bobConn := e.dialToken()
	e.waitSockets(3)
	var mine []events.Envelope
	for i := range 100 {
		if i%3 == 0 {
			e.publish(bob)
			continue
		}
		mine = append(mine, e.publish(alice, uuid.New()))
	}
	last := e.publish(bob, alice)
	mine = append(mine, last)
	for _, c := range []*websocket.Conn{a1, a2} {
		wantExactly(t, readEvents(t, c, last.Position), mine, events.Position{})
	}
	// bob got his own only: his first frame is his first event.
	if f := read(t, bobConn); f.Type != "test.event" || f.Position != e.log.evs[0].Position.String() {
		t.Fatalf("bob got %+v first", f)
	}
}

// Recovery while events keep coming: the socket gets every event of its user after since, then the
// live ones, each once and in order, whatever the interleaving at the seam.
func TestRecoverySeamHasNoGapAndNoDuplicate(t *testing.T) {
	t.Parallel()
	// The client reads only once the live traffic stopped: its socket must hold that traffic.
	e := newLiveEnv(t, func(c *Config) { c.SendBuffer = 1024 })
	alice, tok := e.token()
	bob := uuid.New()
	for i := range 300 {
		if i%4 == 0 {
			e.publish(bob)
		} else {
			e.publish(alice)
		}
	}
	since := e.log.evs[40].Position
	for round := range 5 {
		done := make(chan struct{})
		go func() {
			// Live traffic while the socket opens and recovers.
			defer close(done)
			for i := range 300 {
				if i%5 == 0 {
					e.publish(bob)
				} else {
					e.publish(alice, bob)
				}
			}
		}()
		conn := e.dialSince(alice, tok, since)
		<-done
		last := e.publish(alice)
		got := readEvents(t, conn, last.Position)
		e.log.mu.Lock()
		var mine []events.Envelope
		for _, ev := range e.log.evs {
			if slices.Contains(ev.Data.(testEvent).To, alice) {
				mine = append(mine, ev)
			}
		}
		e.log.mu.Unlock()
		wantExactly(t, got, mine, since)
		conn.Close()
		// The next round recovers from the middle of what this one got.
		since = got[len(got)/2]
		t.Logf("round %d: %d frames", round, len(got))
	}
}

// Live frames that pile up while a recovery is held back beyond what a socket may hold are dropped
// and read from the log instead: still nothing missing, nothing twice.
//
// The socket's queue is tiny: the recovery sends at the pace the client reads, never so fast that
// the socket is closed as too slow.
func TestRecoveryHoldingTooManyLiveFramesReadsThemFromTheLog(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, func(c *Config) { c.SendBuffer = 8 })
	alice, tok := e.token()
	for range 10 {
		e.publish(alice)
	}
	gate, gated := make(chan struct{}), make(chan struct{})
	e.log.gateMu.Lock()
	e.log.gate, e.log.gated = gate, gated
	e.log.gateMu.Unlock()
	conn := e.dialSince(alice, tok, e.log.evs[4].Position)
	recvWithin(t, gated, "gated recovery read")
	for range maxHeldFrames + 100 {
		e.publish(alice)
	}
	close(gate)
	last := e.publish(alice)
	got := readEvents(t, conn, last.Position)
	wantExactly(t, got, e.log.evs, e.log.evs[4].Position)
}

// A position with more events after it than MaxEvents, or one this log never had, gets
// resync_required, then live frames.
func TestRecoveryTooFarBehindGetsResyncRequired(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, func(c *Config) { c.Recovery.MaxEvents = 20 })
	alice, tok := e.token()
	for range 30 {
		e.publish(alice)
	}
	for _, since := range []events.Position{{}, e.log.evs[5].Position, {TxID: 1 << 40, Offset: 7}} {
		conn := e.dialSince(alice, tok, since)
		if f := read(t, conn); f.Type != TypeResyncRequired || f.Position != "" || f.Data != nil {
			t.Fatalf("since %v: got %+v, want resync_required", since, f)
		}
		last := e.publish(alice)
		if got := readEvents(t, conn, last.Position); len(got) != 1 {
			t.Fatalf("since %v: after resync_required got %v, want the live frame only", since, got)
		}
		conn.Close()
	}
	// Within the bound: recovered.
	conn := e.dialSince(alice, tok, e.log.evs[len(e.log.evs)-5].Position)
	last := e.publish(alice)
	wantExactly(t, readEvents(t, conn, last.Position), e.log.evs, e.log.evs[len(e.log.evs)-6].Position)
}

// An event whose frames cannot be built because this binary cannot read it (a newer binary's, or a
// damaged one) does not stop the fan-out: its possible recipients get resync_required at its position,
// in order with the event frames, everyone when the feed cannot tell who; and delivery goes on.
func TestFanoutTellsThePossibleRecipientsOfAnUnreadableEventToResync(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, nil)
	alice, aliceConn := e.dialToken()
	bob, bobConn := e.dialToken()
	carol, carolConn := e.dialToken()
	e.waitSockets(3)
	e1 := e.publish(alice)
	e2 := e.publishData(testUnreadable{To: []uuid.UUID{alice, bob}})
	e3 := e.publish(alice, carol)
	e4 := e.publishData(testUnreadable{All: true})
	e5 := e.publish(bob, carol)
	event, resync := "test.event", TypeResyncRequired
	for _, tc := range []struct {
		name string
		conn *websocket.Conn
		want []events.Envelope
	}{
		{"alice", aliceConn, []events.Envelope{e1, e2, e3, e4}},
		// Both, though no event frame came between: bob may have reloaded after the first.
		{"bob", bobConn, []events.Envelope{e2, e4, e5}},
		{"carol", carolConn, []events.Envelope{e3, e4, e5}},
	} {
		for _, want := range tc.want {
			wantType := event
			if _, ok := want.Data.(testUnreadable); ok {
				wantType = resync
			}
			if f := read(t, tc.conn); f.Type != wantType || f.Position != want.Position.String() {
				t.Fatalf("%s got %s at %s, want %s at %s", tc.name, f.Type, f.Position, wantType, want.Position)
			}
		}
	}
}

// A recovery that meets an event this binary cannot read, which may concern its user, cannot say what
// the client missed: it sends what it read before it, then resync_required, then live frames, each
// once. One that cannot concern its user is read past. Both as the log's read stops at the event and
// as the feed fails on it.
func TestRecoveryMeetingAnUnreadableEvent(t *testing.T) {
	t.Parallel()
	for _, atRead := range []bool{false, true} {
		t.Run(fmt.Sprint("at read ", atRead), func(t *testing.T) {
			t.Parallel()
			e := newLiveEnv(t, nil)
			alice, tok := e.token()
			bob := uuid.New()
			e0 := e.publish(alice)
			e1 := e.publish(alice)
			e.publishData(testUnreadable{To: []uuid.UUID{bob}, AtRead: atRead}) // not alice's
			e3 := e.publish(alice)
			e.publishData(testUnreadable{To: []uuid.UUID{alice, bob}, AtRead: atRead})
			e.publish(alice)
			conn := e.dialSince(alice, tok, e0.Position)
			for _, want := range []events.Envelope{e1, e3} {
				if f := read(t, conn); f.Type != "test.event" || f.Position != want.Position.String() {
					t.Fatalf("got %+v, want the event at %s", f, want.Position)
				}
			}
			if f := read(t, conn); f.Type != TypeResyncRequired || f.Position != "" {
				t.Fatalf("got %+v, want resync_required", f)
			}
			last := e.publish(alice)
			if got := readEvents(t, conn, last.Position); len(got) != 1 {
				t.Fatalf("after resync_required got %v, want the live frame only", got)
			}
		})
	}
}

func TestMalformedSinceIsRefused(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, nil)
	_, tok := e.token()
	for _, q := range []string{"since=abc", "since=", "since=1", "since=1.-2", "since=1.2&since=1.3", "since=-1.2"} {
		conn, resp, err := e.dial(q + "&token=" + url.QueryEscape(tok))
		if conn != nil {
			t.Fatalf("%s: handshake succeeded", q)
		}
		wantRefused(t, resp, err, 400, "bad-request")
	}
	// Credentials are checked first.
	conn, resp, err := e.dial("since=abc")
	if conn != nil {
		t.Fatal("handshake succeeded")
	}
	wantRefused(t, resp, err, 401, "unauthenticated")
}

// A hub without recovery answers ?since= with resync_required.
func TestSinceWithoutRecoveryGetsResyncRequired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id, tok := e.token()
	conn, resp, err := e.dial("since=1.1&token=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, status(resp))
	}
	wantHello(t, conn, id)
	if f := read(t, conn); f.Type != TypeResyncRequired {
		t.Fatalf("got %+v, want resync_required", f)
	}
	e.hub.SendEvent([]uuid.UUID{id}, events.Position{TxID: 1, Offset: 1}, []byte(`{"type":"test.live"}`))
	if f := read(t, conn); f.Type != "test.live" {
		t.Fatalf("got %+v, want the live frame", f)
	}
}

// Typing notices reach the other members' sockets on this instance at once and on others through the
// published notice; a notice too big for NOTIFY leaves the recipients to be looked up.
func TestTypingRelay(t *testing.T) {
	t.Parallel()
	here, there := newEnv(t, nil), newEnv(t, nil)
	chat := uuid.New()
	typist, typistConn := here.dialToken()
	local, localConn := here.dialToken()
	remote, remoteConn := there.dialToken()
	members := func(context.Context, uuid.UUID) ([]uuid.UUID, error) {
		return []uuid.UUID{typist, local, remote}, nil
	}
	var relays [2]*TypingRelay
	var sizes []int
	var mu sync.Mutex
	publish := func(ctx context.Context, payload string) error {
		mu.Lock()
		sizes = append(sizes, len(payload))
		mu.Unlock()
		for _, r := range relays {
			r.Received(ctx, payload) // NOTIFY reaches every listener, the sender's own too
		}
		return nil
	}
	for i, h := range []*Hub{here.hub, there.hub} {
		r, err := NewTypingRelay(TypingRelayConfig{Publish: publish, Members: members, Logger: logging.Discard(), MinInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		r.Attach(h)
		relays[i] = r
	}
	check := func(conn *websocket.Conn) {
		t.Helper()
		f := read(t, conn)
		var d struct {
			UserID uuid.UUID `json:"user_id"`
		}
		if f.Type != TypeTyping || f.ChatID != chat.String() || f.Position != "" || json.Unmarshal(f.Data, &d) != nil || d.UserID != typist {
			t.Fatalf("got %+v %s, want typing of %s", f, f.Data, typist)
		}
	}
	if err := relays[0].RelayTyping(context.Background(), chat, typist, []uuid.UUID{local, remote}); err != nil {
		t.Fatal(err)
	}
	check(localConn)
	check(remoteConn)
	// Many recipients: the notice carries none, the other instance looks the members up.
	many := []uuid.UUID{local, remote}
	for range 400 {
		many = append(many, uuid.New())
	}
	if err := relays[0].RelayTyping(context.Background(), chat, typist, many); err != nil {
		t.Fatal(err)
	}
	check(localConn)
	check(remoteConn)
	// The typist got none of it: its next frame answers its ping.
	write(t, typistConn, `{"type":"ping"}`)
	if f := read(t, typistConn); f.Type != TypePong {
		t.Fatalf("the typist got %+v", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[1] > maxNoticeBytes {
		t.Fatalf("notices of %v bytes", sizes)
	}
	// Garbage on the channel is ignored.
	relays[1].Received(context.Background(), "{nope")
	relays[1].Received(context.Background(), `{"c":"`+uuid.Nil.String()+`"}`)
}

// A typist's repeated notices in one chat within MinInterval are relayed once.
func TestTypingRelayThrottlesRepeats(t *testing.T) {
	t.Parallel()
	published := 0
	r, err := NewTypingRelay(TypingRelayConfig{Logger: logging.Discard(), MinInterval: time.Hour,
		Publish: func(context.Context, string) error { published++; return nil },
		Members: func(context.Context, uuid.UUID) ([]uuid.UUID, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	chat, other, typist := uuid.New(), uuid.New(), uuid.New()
	to := []uuid.UUID{uuid.New()}
	for range 100 {
		if err := r.RelayTyping(context.Background(), chat, typist, to); err != nil {
			t.Fatal(err)
		}
	}
	if published != 1 {
		t.Fatalf("%d notices published, want 1", published)
	}
	// Another chat, another typist: their own notices.
	_ = r.RelayTyping(context.Background(), other, typist, to)
	_ = r.RelayTyping(context.Background(), chat, uuid.New(), to)
	if published != 3 {
		t.Fatalf("%d notices published, want 3", published)
	}
}
