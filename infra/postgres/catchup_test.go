package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/events"
	"taki/infra/logging/logtest"
	. "taki/infra/postgres"
)

// Catching up, then a server's subscriber going on from there, then both at once while slow writers
// commit late: every event is applied exactly once and in order, whoever applies it.
func TestCatchUpBesideARunningSubscriberAppliesEachEventOnce(t *testing.T) {
	pool, url := setupProjectorDB(t)
	rec := &recorder{name: "a"}
	ctx := context.Background()
	early, _, waitEarly := slowWriters(t, pool, 2, 10, time.Millisecond, nil)
	waitEarly()
	if n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{rec}, CatchUpOptions{BatchSize: 3}); err != nil || n != 20 {
		t.Fatalf("catch-up with no subscriber applied %d events (%v), want 20", n, err)
	}
	p := startProjector(t, pool, url, 7, 10*time.Millisecond, nil, rec)
	const writers, perWriter = 6, 30
	streams, writing, wait := slowWriters(t, pool, writers, perWriter, 10*time.Millisecond, nil)
	rounds, applied := 0, int64(0)
	for done := false; !done; rounds++ {
		select {
		case <-writing:
			done = true
		default:
		}
		n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{rec}, CatchUpOptions{BatchSize: 5})
		if err != nil {
			t.Fatal(err)
		}
		applied += n
	}
	last := wait()
	waitAll(t, p.Projector, "a", last)
	assertExactlyOnceInOrder(t, pool, "a", streams, perWriter)
	assertExactlyOnceInOrder(t, pool, "a", early, 10)
	// Who applied what in the last part is up to the scheduler.
	t.Logf("%d catch-ups beside the subscriber applied %d of %d events", rounds, applied, writers*perWriter)
}

// A group rewound while a catch-up runs (a replay started elsewhere) is caught up again from the
// start: the catch-up reads again from the rewound checkpoint instead of going on from where it was.
func TestCatchUpStartsOverWhenTheGroupIsRewound(t *testing.T) {
	pool, _ := setupProjectorDB(t)
	rec := &recorder{name: "a"}
	ctx := context.Background()
	streams := []uuid.UUID{uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())}
	for v := int64(1); v <= 20; v++ {
		for _, s := range streams {
			if _, err := slowAppend(ctx, pool, s, v, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	rewound := false
	var progress []events.Position
	n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{rec}, CatchUpOptions{BatchSize: 8,
		Progress: func(reached events.Position, _ int64) {
			progress = append(progress, reached)
			if len(progress) == 2 && !rewound {
				rewound = true
				if err := ResetProjection(ctx, pool, rec); err != nil {
					t.Error(err)
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !rewound || n != 40+16 {
		t.Fatalf("rewound %v, applied %d events; want a rewind after 16 of 40 and 56 applied", rewound, n)
	}
	assertExactlyOnceInOrder(t, pool, "a", streams, 20)
	cp, err := ProjectionStatus(ctx, pool, "a")
	if err != nil || cp.LagEvents != 0 {
		t.Fatalf("status after catch-up: %+v, %v", cp, err)
	}
}

// Replay through the projector empties the read model and brings it back in the background, also on
// an instance whose subscriber stands by: the catch-up, not the subscriber, does the work.
func TestProjectorReplayCatchesUpInTheBackground(t *testing.T) {
	pool, url := setupProjectorDB(t)
	rec := &recorder{name: "a"}
	ctx := context.Background()
	streams := []uuid.UUID{uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())}
	var last []events.Position
	for v := int64(1); v <= 15; v++ {
		for _, s := range streams {
			pos, err := slowAppend(ctx, pool, s, v, 0)
			if err != nil {
				t.Fatal(err)
			}
			last = append(last, pos)
		}
	}
	if _, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{rec}, CatchUpOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another "instance" leads the group and never applies anything.
	leader, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Release()
	if _, err := leader.Exec(ctx, `SELECT pg_advisory_lock($1)`, GroupLockKey("a")); err != nil {
		t.Fatal(err)
	}
	p := startProjector(t, pool, url, 7, time.Hour, nil, rec)
	select {
	case <-p.Started():
	case <-time.After(30 * time.Second):
		t.Fatal("projector did not start")
	}
	if st := projectionStatus(t, p, "a"); st != "standby" {
		t.Fatalf("status %q, want standby", st)
	}

	// A second replay while the first one's catch-up runs (or finishes): the read model is emptied
	// again and still rebuilt, by the running catch-up or by another after it.
	for range 2 {
		if ok, err := p.Replay(ctx, "a"); !ok || err != nil {
			t.Fatalf("replay: %v, %v", ok, err)
		}
	}
	waitAll(t, p.Projector, "a", last)
	assertExactlyOnceInOrder(t, pool, "a", streams, 15)
	if _, err := leader.Exec(ctx, `SELECT pg_advisory_unlock($1)`, GroupLockKey("a")); err != nil {
		t.Fatal(err)
	}
}

// A catch-up vacuums and analyzes the read model's tables each time the events it applied have doubled
// (an emptied table has no statistics), beside its writes, and returns once the last of them is done.
func TestCatchUpVacuumsAsTheReadModelGrows(t *testing.T) {
	pool, _ := setupProjectorDB(t)
	ctx := context.Background()
	appendVersions(t, pool, uuid.Must(uuid.NewV7()), 1, 30)
	// Batches of 5: the upkeep runs after 5, 10 and 20 events.
	if n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{&recorder{name: "a"}}, CatchUpOptions{BatchSize: 5}); err != nil || n != 30 {
		t.Fatalf("catch-up applied %d events (%v), want 30", n, err)
	}
	var vacuums, analyzes int
	if err := pool.QueryRow(ctx, `SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'test_applied'`).
		Scan(&vacuums, &analyzes); err != nil {
		t.Fatal(err)
	}
	if vacuums != 3 || analyzes != 3 {
		t.Fatalf("test_applied vacuumed %d and analyzed %d times, want 3 and 3", vacuums, analyzes)
	}
}

// The upkeep runs beside the writes: while the vacuum after the first batch waits, the next batch is
// applied; the catch-up returns once its vacuums are done.
func TestCatchUpVacuumsBesideItsWrites(t *testing.T) {
	pool, _ := setupProjectorDB(t)
	ctx := context.Background()
	appendVersions(t, pool, uuid.Must(uuid.NewV7()), 1, 30)
	// The lock a vacuum takes, and writes do not wait for.
	hold, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `LOCK TABLE test_applied IN SHARE UPDATE EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		n   int64
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		// Batches of 10: the upkeep starts after 10 events and is due again after 20.
		n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{&recorder{name: "a"}}, CatchUpOptions{BatchSize: 10})
		done <- outcome{n, err}
	}()
	deadline := time.After(30 * time.Second)
	for waiting, applied := false, 0; !waiting || applied < 20; {
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND query LIKE 'VACUUM%' AND wait_event_type = 'Lock'),
			(SELECT count(*) FROM test_applied)`).Scan(&waiting, &applied); err != nil {
			t.Fatal(err)
		}
		select {
		case o := <-done:
			t.Fatalf("the catch-up returned (%d events, %v) while its vacuum waited", o.n, o.err)
		case <-deadline:
			t.Fatalf("never saw the second batch applied while the first vacuum waits: vacuum waiting %v, %d events applied", waiting, applied)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if o := <-done; o.err != nil || o.n != 30 {
		t.Fatalf("catch-up applied %d events (%v), want 30", o.n, o.err)
	}
	// Both vacuums are done by the time it returns: vacuum counts are reported as a vacuum ends.
	var vacuums int
	if err := pool.QueryRow(ctx, `SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'test_applied'`).Scan(&vacuums); err != nil || vacuums != 2 {
		t.Fatalf("vacuumed %d times (%v) by the time the catch-up returned, want 2", vacuums, err)
	}
}

// A projection that takes the lead of its group CatchUpLag or more events behind first catches up by
// the batched path, counted ready and reported "catching up" meanwhile; less far behind, its subscriber
// alone goes on. Either way every event is applied once, in order.
func TestProjectorFarBehindCatchesUpByTheBatchedPath(t *testing.T) {
	pool, url := setupProjectorDB(t)
	ctx := context.Background()
	stream := uuid.Must(uuid.NewV7())
	caughtUp := func(logs *logtest.Buffer) []string {
		var said []string
		for _, l := range logs.Lines(t) {
			if l["msg"] == "projection caught up by the batched path" && l["projection"] == "a" {
				said = append(said, fmt.Sprint(l["events"]))
			}
		}
		return said
	}
	config := func(logs *logtest.Buffer) ProjectorConfig {
		return ProjectorConfig{BatchSize: 7, PollInterval: time.Hour, ResendInterval: time.Millisecond, CatchUpLag: 31,
			Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	}

	// 30 events behind: the subscriber's.
	last := appendVersions(t, pool, stream, 1, 30)
	var logs1 logtest.Buffer
	p := startProjectorConfig(t, pool, url, config(&logs1), nil, &recorder{name: "a"})
	waitAll(t, p.Projector, "a", []events.Position{last})
	p.stop()
	if said := caughtUp(&logs1); len(said) != 0 {
		t.Fatalf("caught up by the batched path 30 events behind (threshold 31): %v", said)
	}

	// 60 behind: the batched path's, held at event 45 to look at the projection meanwhile.
	last = appendVersions(t, pool, stream, 31, 90)
	held, release := make(chan struct{}), make(chan struct{})
	rec := &recorder{name: "a", before: func(e events.Envelope) {
		if e.Version == 45 {
			close(held)
			<-release
		}
	}}
	var logs2 logtest.Buffer
	p = startProjectorConfig(t, pool, url, config(&logs2), nil, rec)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("event 45 was never applied")
	}
	if st := projectionStatus(t, p, "a"); st != "catching up" {
		t.Errorf("status %q during the catch-up, want catching up", st)
	}
	if err := p.Running(); err != nil {
		t.Errorf("not ready during the catch-up: %v", err)
	}
	close(release)
	waitAll(t, p.Projector, "a", []events.Position{last})
	// The checkpoint shows before the catch-up has returned; the subscriber starts after it.
	for st := ""; st != "running"; {
		st = projectionStatus(t, p, "a")
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
		if st != "catching up" && st != "running" {
			t.Fatalf("status %q after the catch-up, want running", st)
		}
	}
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 90)
	if said := caughtUp(&logs2); len(said) != 1 || said[0] != "60" {
		t.Fatalf("batched catch-ups said %v, want one of 60 events", said)
	}
}

// While an older transaction of the cluster hides committed events, the catch-up says it waits, and
// OldestWriter names a transaction; once it ends, the events are applied.
func TestCatchUpReportsAStall(t *testing.T) {
	pool, _ := setupProjectorDB(t)
	rec := &recorder{name: "a"}
	ctx := context.Background()
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	stream := uuid.Must(uuid.NewV7())
	for v := int64(1); v <= 3; v++ {
		if _, err := slowAppend(ctx, pool, stream, v, 0); err != nil {
			t.Fatal(err)
		}
	}
	stalled := make(chan time.Duration, 1)
	done := make(chan error, 1)
	var applied int64
	go func() {
		var err error
		applied, err = CatchUp(ctx, pool, events.NewRegistry(), []Projection{rec}, CatchUpOptions{
			StallEvery: 20 * time.Millisecond,
			Stalled: func(waited time.Duration) {
				select {
				case stalled <- waited:
				default:
				}
			},
		})
		done <- err
	}()
	select {
	case <-stalled:
	case err := <-done:
		t.Fatalf("catch-up returned (%v) while the events were invisible", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no stall reported")
	}
	oldest, err := OldestWriter(ctx, pool)
	if err != nil || !strings.HasPrefix(oldest, "pid ") {
		t.Fatalf("oldest writer %q, %v", oldest, err)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || applied != 3 {
			t.Fatalf("catch-up after the blocker ended: %d events, %v", applied, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("catch-up did not finish once the blocker ended")
	}
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 3)
}
