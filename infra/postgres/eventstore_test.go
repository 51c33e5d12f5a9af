package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/events"
	"taki/infra/logging"
	. "taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

func newStore(t *testing.T) *EventStore {
	t.Helper()
	pool := pgtest.NewPool(t, pgtest.NewDatabase(t))
	s, err := NewEventStore(pool, events.NewRegistry(), nil, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func loginEvent(id uuid.UUID) events.Event {
	return events.UserLoggedIn{UserID: id, At: time.Now().UTC()}
}

func TestAppendAndLoadRoundTrip(t *testing.T) {
	s := newStore(t)
	ctx := logging.WithCorrelationID(logging.WithUserID(context.Background(), "actor-1"), "corr-1")
	id := uuid.Must(uuid.NewV7())
	reg := events.UserRegistered{UserID: id, Email: "a@example.com", DisplayName: "A <b>", Role: "member", RegisteredAt: time.Now().UTC().Truncate(time.Microsecond)}
	p1, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, Events: []events.Event{reg, loginEvent(id)}})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, ExpectedVersion: 2, Events: []events.Event{loginEvent(id)}})
	if err != nil {
		t.Fatal(err)
	}
	if !p1.Less(p2) {
		t.Fatalf("positions not increasing: %v then %v", p1, p2)
	}
	st, err := s.Load(ctx, id, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Events) != 3 {
		t.Fatalf("loaded %d events, want 3", len(st.Events))
	}
	for i, e := range st.Events {
		if e.Version != int64(i+1) || e.StreamID != id || e.StreamType != events.StreamUser {
			t.Fatalf("event %d: %+v", i, e)
		}
		if e.CorrelationID != "corr-1" || e.ActorID != "actor-1" || e.SchemaVersion != 1 || e.ID == uuid.Nil {
			t.Fatalf("event %d metadata: %+v", i, e)
		}
	}
	got, ok := st.Events[0].Data.(events.UserRegistered)
	if !ok || got != reg {
		t.Fatalf("payload round trip: got %#v want %#v", st.Events[0].Data, reg)
	}
}

func TestAppendConflictOnStaleVersion(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	if _, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, Events: []events.Event{loginEvent(id)}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, ExpectedVersion: 0, Events: []events.Event{loginEvent(id)}})
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale append: got %v, want ErrConflict", err)
	}
	// Nothing of the failed append is visible.
	st, err := s.Load(ctx, id, 1)
	if err != nil || len(st.Events) != 1 {
		t.Fatalf("after conflict: %d events, err %v", len(st.Events), err)
	}
}

func TestConcurrentWritersOneWins(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, Events: []events.Event{loginEvent(id)}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, events.ErrConflict):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want exactly 1", wins)
	}
}

func TestClaimsAreUniqueAndAtomic(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	claim := []events.Claim{{Kind: "user.email", Value: "x@example.com"}}
	a, b := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if _, err := s.Append(ctx, events.Append{StreamID: a, StreamType: events.StreamUser, Events: []events.Event{loginEvent(a)}, Claims: claim}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(ctx, events.Append{StreamID: b, StreamType: events.StreamUser, Events: []events.Event{loginEvent(b)}, Claims: claim})
	var taken *events.ClaimTakenError
	if !errors.As(err, &taken) {
		t.Fatalf("second claim: got %v, want ClaimTakenError", err)
	}
	// The loser's events were not written either.
	st, err := s.Load(ctx, b, 1)
	if err != nil || len(st.Events) != 0 {
		t.Fatalf("loser stream has %d events (err %v), want 0", len(st.Events), err)
	}
	owner, ok, err := s.ClaimOwner(ctx, "user.email", "x@example.com")
	if err != nil || !ok || owner != a {
		t.Fatalf("owner = %v %v %v, want %v", owner, ok, err, a)
	}
}

func TestLoadReadsSnapshotPlusLaterEvents(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	evs := []events.Event{loginEvent(id), loginEvent(id), loginEvent(id)}
	if _, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, Events: evs,
		Snapshot: &events.Snapshot{Version: 3, SchemaVersion: 7, State: []byte(`{"n":3}`)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, ExpectedVersion: 3, Events: []events.Event{loginEvent(id)}}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx, id, 7)
	if err != nil {
		t.Fatal(err)
	}
	if st.Snapshot == nil || st.Snapshot.Version != 3 || string(st.Snapshot.State) != `{"n": 3}` && string(st.Snapshot.State) != `{"n":3}` {
		t.Fatalf("snapshot = %+v", st.Snapshot)
	}
	if len(st.Events) != 1 || st.Events[0].Version != 4 {
		t.Fatalf("events after snapshot = %+v, want only version 4", st.Events)
	}
	// A snapshot of another state schema version is ignored: the whole stream is read.
	st, err = s.Load(ctx, id, 8)
	if err != nil || st.Snapshot != nil || len(st.Events) != 4 {
		t.Fatalf("old-schema snapshot: %+v, %d events, err %v", st.Snapshot, len(st.Events), err)
	}
}

// ExistingStreams names the ids with a stream of the type asked, whatever the stream's length, and
// neither streams of another type nor ids without a stream.
func TestExistingStreamsNamesStreamsOfOneType(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	ann, bob, chat, nobody := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{ann, bob} {
		reg := events.UserRegistered{UserID: id, Email: id.String() + "@example.com", DisplayName: "u", Role: "member", RegisteredAt: time.Now().UTC()}
		if _, err := s.Append(ctx, events.Append{StreamID: id, StreamType: events.StreamUser, Events: []events.Event{reg, loginEvent(id), loginEvent(id)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, events.Append{StreamID: chat, StreamType: events.StreamChat, Events: []events.Event{
		events.ChatCreated{ChatID: chat, Type: events.ChatGroup, Title: "g", CreatedBy: ann, CreatedAt: time.Now().UTC(),
			Members: []events.ChatMember{{UserID: ann, Role: events.ChatRoleAdmin}}},
	}}); err != nil {
		t.Fatal(err)
	}

	got, err := s.ExistingStreams(ctx, events.StreamUser, []uuid.UUID{nobody, bob, chat, ann})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[ann] || !got[bob] {
		t.Fatalf("existing user streams %v, want exactly %s and %s", got, ann, bob)
	}
	if got, err = s.ExistingStreams(ctx, events.StreamUser, nil); err != nil || len(got) != 0 {
		t.Fatalf("no ids: got %v, %v", got, err)
	}
}
