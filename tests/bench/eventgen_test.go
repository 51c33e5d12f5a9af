package main

import (
	"testing"

	"github.com/google/uuid"

	"taki/events"
)

func TestLogGenerator(t *testing.T) {
	const total = 10_007
	g := newLogGenerator(total, 42)
	reg := events.NewRegistry()
	next := map[uuid.UUID]int64{}
	seen := map[uuid.UUID]bool{}
	var all []genEvent
	for range total {
		var err error
		before := len(all)
		if all, err = g.Next(all, 333); err != nil {
			t.Fatal(err)
		}
		if len(all) == before {
			break
		}
	}
	if len(all) != total {
		t.Fatalf("generated %d events, want %d", len(all), total)
	}
	counts := map[string]int{}
	var firstHalfRegistrations int
	for i, e := range all {
		if seen[e.EventID] {
			t.Fatalf("event id %s twice", e.EventID)
		}
		seen[e.EventID] = true
		if want := next[e.StreamID] + 1; e.Version != want {
			t.Fatalf("event %d of stream %s has version %d, want %d", i, e.StreamID, e.Version, want)
		}
		next[e.StreamID] = e.Version
		if (e.Version == 1) != (e.Type == "user.registered") {
			t.Fatalf("event %d: version %d is %s", i, e.Version, e.Type)
		}
		if e.Type == "user.registered" && i < total/2 {
			firstHalfRegistrations++
		}
		if i > 0 && e.OccurredAt.Before(all[i-1].OccurredAt) {
			t.Fatalf("event %d goes back in time", i)
		}
		data, err := reg.Decode(e.Type, 1, e.Payload)
		if err != nil {
			t.Fatalf("event %d (%s) does not decode: %v\n%s", i, e.Type, err, e.Payload)
		}
		if data.EventType() != e.Type {
			t.Fatalf("event %d decodes as %s", i, data.EventType())
		}
		counts[e.Type]++
	}
	st := g.Stats()
	if st.Users != total/eventsPerUser || len(next) != st.Users || counts["user.registered"] != st.Users {
		t.Errorf("users: stats %d, streams %d, registrations %d, want %d", st.Users, len(next), counts["user.registered"], total/eventsPerUser)
	}
	if st.Logins != counts["user.logged_in"] || st.ProfileUpdates != counts["user.profile_updated"] || st.Events != total {
		t.Errorf("stats %+v disagree with counts %v", st, counts)
	}
	if st.Logins == 0 || st.ProfileUpdates == 0 || st.Avatars == 0 {
		t.Errorf("want every kind of event, got %+v", st)
	}
	// Streams interleave: registrations do not all come first.
	if firstHalfRegistrations == st.Users {
		t.Error("every registration is in the first half of the log")
	}
}

func TestLogGeneratorFewerEventsThanUsersPerEvent(t *testing.T) {
	g := newLogGenerator(3, 1)
	evs, err := g.Next(nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || g.Stats().Users != 1 {
		t.Fatalf("got %d events of %d users, want 3 of 1", len(evs), g.Stats().Users)
	}
}
