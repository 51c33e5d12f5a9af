package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/logging"
	. "taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

const tailWait = 15 * time.Second

// tailEnv is a database with a running notifier and an event store that announces its appends.
type tailEnv struct {
	url      string
	pool     *pgxpool.Pool
	notifier *Notifier
	store    *EventStore
}

func newTailEnv(t *testing.T) *tailEnv {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool := pgtest.NewPool(t, url)
	n := NewNotifier(url, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	s, err := NewEventStore(pool, events.NewRegistry(), n, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &tailEnv{url: url, pool: pool, notifier: n, store: s}
}

// received collects what a tail delivers.
type received struct {
	mu      sync.Mutex
	events  []events.Envelope
	batches int
	changed chan struct{}
}

func newReceived() *received { return &received{changed: make(chan struct{}, 1)} }

func (r *received) deliver(_ context.Context, batch []events.Envelope) error {
	r.mu.Lock()
	r.events = append(r.events, batch...)
	r.batches++
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

// count counts the events arrived that match (all of them when match is nil).
func (r *received) count(match func(events.Envelope) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, env := range r.events {
		if match == nil || match(env) {
			n++
		}
	}
	return n
}

// waitFor waits until n events that match (nil: any) arrived, and returns every event arrived.
func (r *received) waitFor(t *testing.T, n int, match func(events.Envelope) bool) []events.Envelope {
	t.Helper()
	deadline := time.After(tailWait)
	for r.count(match) < n {
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("tail delivered %d matching events, want %d", r.count(match), n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Envelope(nil), r.events...)
}

func runTail(t *testing.T, e *tailEnv, cfg TailConfig, r *received) *Tail {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	if cfg.Unreadable == nil {
		cfg.Unreadable = func(_ context.Context, env events.Envelope, err error) {
			t.Errorf("tail found %s at %v unreadable: %v", env.Type, env.Position, err)
		}
	}
	tail, err := NewTail(e.store, e.notifier, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tail.Run(ctx, r.deliver); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-tail.Started():
	case <-time.After(tailWait):
		t.Fatal("tail never started")
	}
	return tail
}

// olderWriter begins a transaction that holds a transaction id: until it ends, the events committed
// after it are hidden from log readers. It is rolled back at the test's end if still open.
func olderWriter(t *testing.T, e *tailEnv) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	return tx
}

func appendLogins(t *testing.T, s *EventStore, id uuid.UUID, from int64, n int) events.Position {
	t.Helper()
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = loginEvent(id)
	}
	pos, err := s.Append(context.Background(), events.Append{StreamID: id, StreamType: events.StreamUser, ExpectedVersion: from, Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// The tail starts at the visible head: what was there before is not delivered, everything appended
// afterwards (by concurrent writers, in more batches than one read holds) is, once each, in log order.
func TestTailDeliversEveryLaterEventInLogOrder(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	before := uuid.Must(uuid.NewV7())
	head := appendLogins(t, e.store, before, 0, 3)
	r := newReceived()
	tail := runTail(t, e, TailConfig{BatchSize: 7, PollInterval: time.Hour}, r)
	// The head is the visible one: a transaction elsewhere in the cluster may keep the last append
	// invisible for a moment, and then the tail starts before it (and delivers it).
	start := tail.Position()
	if head.Less(start) {
		t.Fatalf("tail starts at %v, past the head %v", start, head)
	}

	const writers, perWriter = 6, 25
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uuid.Must(uuid.NewV7())
			for v := range perWriter {
				appendLogins(t, e.store, id, int64(v), 1)
			}
		}()
	}
	wg.Wait()
	// Events of the stream written before the start may come too (see above): they do not count.
	got := r.waitFor(t, writers*perWriter, func(env events.Envelope) bool { return env.StreamID != before })
	seen := map[uuid.UUID]bool{}
	versions := map[uuid.UUID]int64{}
	var mine []events.Envelope
	for _, env := range got {
		if !start.Less(env.Position) {
			t.Fatalf("event at %v delivered, at or before the start %v", env.Position, start)
		}
		if env.StreamID != before {
			mine = append(mine, env)
		}
	}
	if len(mine) != writers*perWriter {
		t.Fatalf("delivered %d events of the writers, want %d", len(mine), writers*perWriter)
	}
	for i, env := range got {
		if seen[env.ID] {
			t.Fatalf("event %s delivered twice", env.ID)
		}
		seen[env.ID] = true
		if i > 0 && !got[i-1].Position.Less(env.Position) {
			t.Fatalf("event %d at %v after %v: not in log order", i, env.Position, got[i-1].Position)
		}
		if env.Version != versions[env.StreamID]+1 {
			t.Fatalf("stream %s: version %d after %d", env.StreamID, env.Version, versions[env.StreamID])
		}
		versions[env.StreamID] = env.Version
	}
	// The tail moves its position once the delivery callback returned, just after the test saw it.
	last := got[len(got)-1].Position
	for deadline := time.Now().Add(tailWait); tail.Position() != last; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tail position %v, last delivered %v", tail.Position(), last)
		}
	}
}

// An event committed while an older transaction still runs stays invisible; once that transaction
// ends (appending nothing, so announcing nothing) the tail delivers the event without waiting for its
// safety-net poll.
//
// Not parallel: the open transaction holds back what every log reader of the cluster sees.
func TestTailDeliversLateVisibleEventsWithoutAWakeUp(t *testing.T) {
	e := newTailEnv(t)
	r := newReceived()
	runTail(t, e, TailConfig{PollInterval: time.Hour}, r)

	ctx := context.Background()
	older := olderWriter(t, e)
	pos := appendLogins(t, e.store, uuid.Must(uuid.NewV7()), 0, 2)
	// Visible to nobody while the older transaction runs: the log readers' rule.
	got, err := e.store.ReadLog(ctx, events.Position{}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("ReadLog shows %d events while an older writer runs", len(got))
	}
	if n := r.count(nil); n != 0 {
		t.Fatalf("the tail delivered %d events while an older writer runs", n)
	}
	if err := older.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	evs := r.waitFor(t, 2, nil)
	if evs[1].Position != pos {
		t.Fatalf("delivered up to %v, want %v", evs[1].Position, pos)
	}
}

// A failed delivery is offered again; nothing is skipped.
func TestTailRetriesAFailedDelivery(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	r := newReceived()
	var mu sync.Mutex
	fails := 2
	tail, err := NewTail(e.store, e.notifier, TailConfig{Logger: logging.Discard(),
		Unreadable: func(context.Context, events.Envelope, error) { t.Error("unreadable event") }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_ = tail.Run(ctx, func(ctx context.Context, b []events.Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			if fails > 0 {
				fails--
				return context.DeadlineExceeded
			}
			return r.deliver(ctx, b)
		})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	<-tail.Started()
	id := uuid.Must(uuid.NewV7())
	appendLogins(t, e.store, id, 0, 3)
	got := r.waitFor(t, 3, nil)
	for i, env := range got {
		if env.Version != int64(i+1) {
			t.Fatalf("event %d has version %d", i, env.Version)
		}
	}
}

func TestVisibleHeadLogHeadAndCountAfter(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	ctx := context.Background()
	for _, f := range []func(context.Context) (events.Position, error){e.store.VisibleHead, e.store.LogHead} {
		if p, err := f(ctx); err != nil || !p.IsZero() {
			t.Fatalf("empty log: head %v, %v", p, err)
		}
	}
	first := appendLogins(t, e.store, uuid.Must(uuid.NewV7()), 0, 1)
	last := appendLogins(t, e.store, uuid.Must(uuid.NewV7()), 0, 4)
	if p, err := e.store.LogHead(ctx); err != nil || p != last {
		t.Fatalf("log head %v, %v; want %v", p, err, last)
	}
	// The visible head may lag for as long as a transaction elsewhere in the cluster runs.
	deadline := time.Now().Add(tailWait)
	for {
		p, err := e.store.VisibleHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p == last {
			break
		}
		if last.Less(p) || time.Now().After(deadline) {
			t.Fatalf("visible head %v, want %v", p, last)
		}
		time.Sleep(time.Millisecond) // bounded above; the condition is what is awaited
	}
	cases := []struct {
		after events.Position
		limit int
		want  int
	}{
		{events.Position{}, 100, 5},
		{events.Position{}, 3, 3},
		{first, 100, 4},
		{last, 100, 0},
	}
	for _, tc := range cases {
		if n, err := e.store.CountAfter(ctx, tc.after, tc.limit); err != nil || n != tc.want {
			t.Errorf("CountAfter(%v, %d) = %d, %v; want %d", tc.after, tc.limit, n, err, tc.want)
		}
	}
}

// LoadUntil gives a stream as it was at a version: from the snapshot when it is not newer, else from
// the start.
func TestLoadUntil(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	appendLogins(t, e.store, id, 0, 3)
	state, _ := json.Marshal(map[string]int{"logins": 4})
	_, err := e.store.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, ExpectedVersion: 3,
		Events:   []events.Event{loginEvent(id)},
		Snapshot: &events.Snapshot{Version: 4, SchemaVersion: 1, State: state}})
	if err != nil {
		t.Fatal(err)
	}
	appendLogins(t, e.store, id, 4, 3)

	cases := []struct {
		max      int64
		snapshot int64 // 0: none
		first    int64 // first event version (0: none)
		n        int
	}{
		{0, 0, 0, 0},
		{2, 0, 1, 2},
		{3, 0, 1, 3},
		{4, 4, 0, 0},
		{6, 4, 5, 2},
		{100, 4, 5, 3},
	}
	for _, tc := range cases {
		st, err := e.store.LoadUntil(ctx, id, 1, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		snap := int64(0)
		if st.Snapshot != nil {
			snap = st.Snapshot.Version
		}
		first := int64(0)
		if len(st.Events) > 0 {
			first = st.Events[0].Version
		}
		if snap != tc.snapshot || first != tc.first || len(st.Events) != tc.n {
			t.Errorf("LoadUntil(%d): snapshot %d, first %d, %d events; want %d, %d, %d", tc.max, snap, first, len(st.Events),
				tc.snapshot, tc.first, tc.n)
		}
		for i, ev := range st.Events {
			if ev.Version != first+int64(i) {
				t.Errorf("LoadUntil(%d): event %d has version %d", tc.max, i, ev.Version)
			}
		}
	}
	// A snapshot of another schema version is not used.
	st, err := e.store.LoadUntil(ctx, id, 2, 100)
	if err != nil || st.Snapshot != nil || len(st.Events) != 7 {
		t.Fatalf("other schema version: snapshot %v, %d events, %v", st.Snapshot, len(st.Events), err)
	}
}

// Transaction ids are compared as numbers: 10 comes after 9 although "10" < "9" as text (a head query
// that sorted its text output column once put transaction 99999 after 100000).
func TestLogHeadOrdersTransactionsAsNumbers(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	ctx := context.Background()
	stream := uuid.Must(uuid.NewV7())
	for i, tx := range []string{"9", "10"} {
		if _, err := e.pool.Exec(ctx, `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version,
				event_type, schema_version, occurred_at, payload, metadata)
			VALUES ($1::text::xid8, $2, $3, 'user', $4, 'user.logged_in', 1, now(), '{}', '{}')`,
			tx, uuid.Must(uuid.NewV7()), stream, i+1); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []func(context.Context) (events.Position, error){e.store.VisibleHead, e.store.LogHead} {
		p, err := f(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.TxID != 10 {
			t.Fatalf("head %v, want the event of transaction 10", p)
		}
	}
}

// An event this binary cannot read (a newer binary's type or schema version, or a damaged payload)
// does not stop the tail: it goes to Unreadable in its place in the order, and the events after it
// are delivered.
func TestTailHandsUnreadableEventsOverAndReadsOn(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	r := newReceived()
	var (
		mu         sync.Mutex
		unreadable []events.Envelope
	)
	// BatchSize 2 puts the unreadable events at a batch's start, middle and end.
	runTail(t, e, TailConfig{BatchSize: 2, Unreadable: func(_ context.Context, env events.Envelope, err error) {
		if !errors.Is(err, events.ErrUndecodable) {
			t.Errorf("unreadable %s: %v is not ErrUndecodable", env.Type, err)
		}
		mu.Lock()
		unreadable = append(unreadable, env)
		mu.Unlock()
		// In its place in the order: every readable event before it was delivered already.
		r.deliver(context.Background(), []events.Envelope{env})
	}}, r)

	ctx := context.Background()
	stream := uuid.Must(uuid.NewV7())
	appendLogins(t, e.store, stream, 0, 1)
	bad := []struct{ eventType, payload string }{
		{"user.nickname_set", `{}`},                                  // a type of a newer binary
		{"user.logged_in", `{"user_id": 7}`},                         // a damaged payload
		{"user.logged_in", `{"user_id": "` + stream.String() + `"}`}, // schema version 99, below
	}
	for i, b := range bad {
		version := 99
		if i < 2 {
			version = 1
		}
		if _, err := e.pool.Exec(ctx, `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version,
				event_type, schema_version, occurred_at, payload, metadata)
			VALUES (pg_current_xact_id(), $1, $2, 'user', $3, $4, $5, now(), $6, '{}')`,
			uuid.Must(uuid.NewV7()), stream, 2+2*i, b.eventType, version, b.payload); err != nil {
			t.Fatal(err)
		}
		appendLogins(t, e.store, stream, int64(2+2*i), 1)
	}

	got := r.waitFor(t, 7, nil)
	if len(got) != 7 {
		t.Fatalf("got %d events, want 7", len(got))
	}
	for i, env := range got {
		if env.Version != int64(i+1) {
			t.Fatalf("event %d has version %d: not in log order", i, env.Version)
		}
		wantUnreadable := i%2 == 1
		if (env.Data == nil) != wantUnreadable {
			t.Fatalf("event %d (%s): data %v", i, env.Type, env.Data)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(unreadable) != 3 || unreadable[0].Type != "user.nickname_set" || unreadable[2].SchemaVersion != 99 ||
		unreadable[1].StreamID != stream || unreadable[1].Position.IsZero() {
		t.Fatalf("unreadable events: %+v", unreadable)
	}
}

func appendRegistration(t *testing.T, s *EventStore, id uuid.UUID) events.Position {
	t.Helper()
	pos, err := s.Append(context.Background(), events.Append{StreamID: id, StreamType: events.StreamUser,
		Events: []events.Event{events.UserRegistered{UserID: id, Email: id.String() + "@example.com", DisplayName: "T",
			Role: "member", RegisteredAt: time.Now().UTC()}}})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// waitVisible waits until log readers see the event at pos: a transaction elsewhere in the cluster
// may hide it for a moment.
func waitVisible(t *testing.T, e *tailEnv, pos events.Position) {
	t.Helper()
	for deadline := time.Now().Add(tailWait); ; time.Sleep(time.Millisecond) { // bounded; the condition is what is awaited
		head, err := e.store.VisibleHead(context.Background())
		if err != nil {
			t.Error(err)
			return
		}
		if !head.Less(pos) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the event at %v stayed hidden", pos)
			return
		}
	}
}

// onceTail returns a tail that stops by itself (StopAtHead or StopOnError), with a notifier only if
// it follows the log.
func onceTail(t *testing.T, e *tailEnv, cfg TailConfig) *Tail {
	t.Helper()
	cfg.Logger = logging.Discard()
	if cfg.Unreadable == nil {
		cfg.Unreadable = func(_ context.Context, env events.Envelope, err error) {
			t.Errorf("tail found %s at %v unreadable: %v", env.Type, env.Position, err)
		}
	}
	var notifier *Notifier
	if !cfg.StopAtHead {
		notifier = e.notifier
	}
	tail, err := NewTail(e.store, notifier, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tail
}

// runOnce runs onceTail(cfg) to its end and returns what Run returned.
func runOnce(t *testing.T, e *tailEnv, cfg TailConfig, deliver func(context.Context, []events.Envelope) error) error {
	t.Helper()
	tail := onceTail(t, e, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), tailWait)
	defer cancel()
	err := tail.Run(ctx, deliver)
	if ctx.Err() != nil {
		t.Fatalf("tail still running after %v (%v)", tailWait, err)
	}
	return err
}

// A start position and a type: the tail delivers the events of that type after it, those committed
// before Run as well as those committed while it follows.
func TestTailStartsAfterAPositionAndDeliversOneType(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	first := uuid.Must(uuid.NewV7())
	from := appendRegistration(t, e.store, first)
	appendLogins(t, e.store, first, 1, 2)
	second := uuid.Must(uuid.NewV7())
	appendRegistration(t, e.store, second)

	r := newReceived()
	runTail(t, e, TailConfig{After: &from, EventType: "user.registered", BatchSize: 1, PollInterval: time.Hour}, r)
	third := uuid.Must(uuid.NewV7())
	appendLogins(t, e.store, second, 1, 1)
	appendRegistration(t, e.store, third)
	appendLogins(t, e.store, third, 1, 1)
	last := uuid.Must(uuid.NewV7())
	appendRegistration(t, e.store, last)

	got := r.waitFor(t, 1, func(env events.Envelope) bool { return env.StreamID == last })
	var streams []uuid.UUID
	for _, env := range got {
		if env.Type != "user.registered" {
			t.Fatalf("delivered %s at %v, want only user.registered", env.Type, env.Position)
		}
		streams = append(streams, env.StreamID)
	}
	if want := []uuid.UUID{second, third, last}; len(streams) != len(want) || streams[0] != want[0] ||
		streams[1] != want[1] || streams[2] != want[2] {
		t.Fatalf("delivered the registrations of %v, want those after the start %v", streams, want)
	}
}

// With StopAtHead the tail delivers what was committed before Run and returns: not what commits
// while it runs, and not waiting for more when the last events are not of its type.
func TestTailStopsAtTheHeadOfItsStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		eventType string
		batch     int
		want      []int64 // the versions delivered
	}{
		{"all in batches", "", 3, []int64{1, 2, 3, 4}}, // the second read finds the append of the first delivery
		{"all at once", "", 1000, []int64{1, 2, 3, 4}},
		{"a type not last", "user.registered", 1, []int64{1}},
		{"a type last", "user.logged_in", 2, []int64{2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTailEnv(t)
			user := uuid.Must(uuid.NewV7())
			appendRegistration(t, e.store, user)
			appendLogins(t, e.store, user, 1, 3)
			var got []int64
			err := runOnce(t, e, TailConfig{After: &events.Position{}, EventType: tc.eventType, StopAtHead: true, BatchSize: tc.batch},
				func(_ context.Context, batch []events.Envelope) error {
					if len(got) == 0 {
						// Committed after Run started: not this run's to deliver. Visible to the
						// next read, which must leave it out.
						waitVisible(t, e, appendLogins(t, e.store, user, 4, 1))
					}
					for _, env := range batch {
						if tc.eventType != "" && env.Type != tc.eventType {
							t.Errorf("delivered %s, want only %s", env.Type, tc.eventType)
						}
						got = append(got, env.Version)
					}
					return nil
				})
			if err != nil {
				t.Fatalf("Run returned %v at the head, want nil", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("delivered versions %v, want %v: those committed before Run", got, tc.want)
			}
		})
	}
}

// With StopAtHead, events committed before Run but hidden by an older running transaction are waited
// for, not left out; Hidden hears of the wait, naming the last of them, and Run returns once they
// were delivered.
//
// Not parallel: the open transaction holds back what every log reader of the cluster sees.
func TestTailStopAtHeadWaitsForHiddenEventsAndSaysSo(t *testing.T) {
	e := newTailEnv(t)
	ctx := context.Background()
	appendLogins(t, e.store, uuid.Must(uuid.NewV7()), 0, 1)
	older := olderWriter(t, e)
	head := appendLogins(t, e.store, uuid.Must(uuid.NewV7()), 0, 2)

	hidden := make(chan events.Position, 1)
	r := newReceived()
	tail := onceTail(t, e, TailConfig{After: &events.Position{}, StopAtHead: true, HiddenAfter: time.Millisecond,
		Hidden: func(_ context.Context, upTo events.Position) {
			select {
			case hidden <- upTo:
			default:
			}
		}})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tail.Run(runCtx, r.deliver) }()
	select {
	case upTo := <-hidden:
		if upTo != head {
			t.Errorf("Hidden names %v, want the log head %v", upTo, head)
		}
	case err := <-done:
		t.Fatalf("Run returned %v while events were hidden, after delivering %d", err, r.count(nil))
	case <-time.After(tailWait):
		t.Fatal("Hidden was not told of the wait")
	}
	// Transactions of other tests in the cluster may hide the first event for a moment too.
	if n := len(r.waitFor(t, 1, nil)); n != 1 {
		t.Fatalf("delivered %d events while the later ones are hidden, want 1", n)
	}
	if err := older.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(tailWait):
		t.Fatal("Run did not return once the hidden events were visible")
	}
	if got := r.waitFor(t, 3, nil); len(got) != 3 || got[2].Position != head {
		t.Fatalf("delivered %d events up to %v, want 3 up to %v", len(got), got[len(got)-1].Position, head)
	}
}

// With StopOnError a failed delivery ends Run with that failure instead of being offered again.
func TestTailStopOnErrorReturnsAFailedDelivery(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	appendLogins(t, e.store, uuid.Must(uuid.NewV7()), 0, 2)
	boom := errors.New("boom")
	calls := 0
	err := runOnce(t, e, TailConfig{After: &events.Position{}, StopOnError: true}, func(context.Context, []events.Envelope) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("Run returned %v after %d deliveries, want the delivery's failure after 1", err, calls)
	}
}

func TestNewTailChecksItsConfig(t *testing.T) {
	t.Parallel()
	e := newTailEnv(t)
	u := func(context.Context, events.Envelope, error) {}
	for _, tc := range []struct {
		name     string
		notifier *Notifier
		cfg      TailConfig
		ok       bool
	}{
		{"following", e.notifier, TailConfig{Unreadable: u}, true},
		{"following without a notifier", nil, TailConfig{Unreadable: u}, false},
		{"stopping at the head without a notifier", nil, TailConfig{StopAtHead: true, Unreadable: u}, true},
		{"a known type", e.notifier, TailConfig{EventType: "user.registered", Unreadable: u}, true},
		{"an unknown type", e.notifier, TailConfig{EventType: "user.exploded", Unreadable: u}, false},
		{"a negative batch size", e.notifier, TailConfig{BatchSize: -1, Unreadable: u}, false},
		{"a negative hidden-after", e.notifier, TailConfig{HiddenAfter: -time.Second, Unreadable: u}, false},
		{"no Unreadable", e.notifier, TailConfig{Unreadable: nil}, false},
	} {
		cfg := tc.cfg
		cfg.Logger = logging.Discard()
		if _, err := NewTail(e.store, tc.notifier, cfg); (err == nil) != tc.ok {
			t.Errorf("%s: NewTail returned %v", tc.name, err)
		}
	}
}
