package postgres_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/events"
	. "taki/infra/postgres"
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

// A replay started elsewhere (taki projections replay) rewinds the group's checkpoint: an instance
// standing by must not answer read-your-writes from what it saw before, while the rebuild has not
// reached the token yet.
func TestProjectorStandbySeesARewind(t *testing.T) {
	pool, url := setupProjectorDB(t)
	rec := &recorder{name: "rewind-test"}
	hold := make(chan struct{})
	var holding atomic.Bool
	leader := startProjector(t, pool, url, 100, time.Hour, func(p *Projector) {
		SetAfterWrite(p, func(ctx context.Context, _ pgx.Tx, _ events.Envelope) {
			if holding.Load() {
				select {
				case <-hold:
				case <-ctx.Done():
				}
			}
		})
	}, rec)
	<-leader.Started()
	standby := startProjector(t, pool, url, 100, time.Hour, nil, rec)
	<-standby.Started()

	ctx := context.Background()
	stream := uuid.New()
	var last events.Position
	for v := int64(1); v <= 3; v++ {
		pos, err := slowAppend(ctx, pool, stream, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		last = pos
	}
	leader.notifier.Appended()
	waitAll(t, standby.Projector, rec.name, []events.Position{last})

	// Rewind from outside, with the leader's rebuild held before its first commit.
	holding.Store(true)
	if err := ResetProjection(ctx, pool, rec); err != nil {
		t.Fatal(err)
	}
	leader.notifier.Appended()
	if ok, err := standby.WaitFor(ctx, rec.name, last, 50*time.Millisecond); err != nil || ok {
		t.Fatalf("standby answered applied=%v (%v) for a token the rewound group has not reached", ok, err)
	}
	close(hold)
	waitAll(t, standby.Projector, rec.name, []events.Position{last})
}
