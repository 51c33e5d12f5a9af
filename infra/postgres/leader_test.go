package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/events"
)

func projectionStatus(t *testing.T, p *runningProjector, name string) string {
	t.Helper()
	sts, err := p.Statuses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == name {
			return s.Status
		}
	}
	t.Fatalf("no status for %s", name)
	return ""
}

// Two instances on one database: one leads each consumer group, the other stands by, answers read-your-
// writes waits from the leader's progress, and takes over when the leader stops; every event is still
// applied exactly once, in order.
func TestProjectorOneLeaderPerGroupAndTakeover(t *testing.T) {
	pool, url := setupProjectorDB(t)
	rec := &recorder{name: "leader-test"}
	first := startProjector(t, pool, url, 100, time.Hour, nil, rec)
	<-first.Started()
	second := startProjector(t, pool, url, 100, time.Hour, nil, rec)
	<-second.Started()
	if got := projectionStatus(t, first, rec.name); got != "running" {
		t.Fatalf("first instance: %q, want running", got)
	}
	if got := projectionStatus(t, second, rec.name); got != "standby" {
		t.Fatalf("second instance: %q, want standby", got)
	}
	if err := second.Running(); err != nil {
		t.Fatalf("a standby instance is ready: %v", err)
	}

	stream := uuid.New()
	ctx := context.Background()
	var positions []events.Position
	for v := int64(1); v <= 5; v++ {
		pos, err := slowAppend(ctx, pool, stream, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		first.notifier.Appended()
		positions = append(positions, pos)
	}
	// The standby sees the leader's progress through the database.
	waitAll(t, second.Projector, rec.name, positions)

	first.stop()
	for v := int64(6); v <= 10; v++ {
		pos, err := slowAppend(ctx, pool, stream, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		second.notifier.Appended()
		positions = append(positions, pos)
	}
	waitAll(t, second.Projector, rec.name, positions)
	if got := projectionStatus(t, second, rec.name); got != "running" {
		t.Fatalf("after the leader stopped, the second instance is %q, want running", got)
	}
	assertExactlyOnceInOrder(t, pool, rec.name, []uuid.UUID{stream}, 10)
}
