package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

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

// progressLog records the totals a catch-up reports after each batch. A batch may be short of the
// batch size (a log read sees only events older than every transaction open on the cluster, and other
// packages' tests run beside this one), which moves the upkeep's thresholds; vacuums computes them.
type progressLog struct {
	mu     sync.Mutex
	totals []int64
}

func (l *progressLog) record(_ events.Position, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.totals = append(l.totals, total)
}

// vacuums is how many times the upkeep ran, by its rule: first once first events are applied, then
// each time the total has doubled since; and the total it first ran at (0 if it did not).
func (l *progressLog) vacuums(first int64) (n int, at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := first
	for _, total := range l.totals {
		if total >= next {
			if n == 0 {
				at = total
			}
			n++
			next = 2 * total
		}
	}
	return n, at
}

func vacuumCount(t *testing.T, pool *pgxpool.Pool) (vacuums, analyzes int) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'test_applied'`).
		Scan(&vacuums, &analyzes); err != nil {
		t.Fatal(err)
	}
	return vacuums, analyzes
}

// A catch-up onto emptied tables vacuums and analyzes them each time the events it applied have
// doubled (an emptied table has no statistics); onto tables that already hold more rows than it
// applies, it leaves them to autovacuum.
func TestCatchUpVacuumsAsTheReadModelGrows(t *testing.T) {
	pool, _ := setupProjectorDB(t)
	ctx := context.Background()
	stream := uuid.Must(uuid.NewV7())
	appendVersions(t, pool, stream, 1, 30)
	var progress progressLog
	if n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{&recorder{name: "a"}},
		CatchUpOptions{BatchSize: 5, Progress: progress.record}); err != nil || n != 30 {
		t.Fatalf("catch-up applied %d events (%v), want 30", n, err)
	}
	want, _ := progress.vacuums(5)
	if vacuums, analyzes := vacuumCount(t, pool); want < 1 || vacuums != want || analyzes != want {
		t.Fatalf("test_applied vacuumed %d and analyzed %d times, want %d (totals %v)", vacuums, analyzes, want, progress.totals)
	}
	// The last upkeep analyzed the table with at least 20 rows: 15 more events are no reason for more.
	appendVersions(t, pool, stream, 31, 45)
	if n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{&recorder{name: "a"}}, CatchUpOptions{BatchSize: 5}); err != nil || n != 15 {
		t.Fatalf("second catch-up applied %d events (%v), want 15", n, err)
	}
	if vacuums, _ := vacuumCount(t, pool); vacuums != want {
		t.Fatalf("test_applied vacuumed %d times after a catch-up of 15 events onto its 30 rows, want still %d", vacuums, want)
	}
}

// The upkeep runs beside the writes: while the first vacuum waits, the next batches are applied; the
// catch-up returns once its vacuums are done.
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
	var progress progressLog
	go func() {
		n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{&recorder{name: "a"}},
			CatchUpOptions{BatchSize: 10, Progress: progress.record})
		done <- outcome{n, err}
	}()
	deadline := time.After(30 * time.Second)
	for waiting, applied, first := false, int64(0), int64(0); !waiting || first == 0 || applied <= first; {
		_, first = progress.vacuums(10)
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND query LIKE 'VACUUM%' AND wait_event_type = 'Lock'),
			(SELECT count(*) FROM test_applied)`).Scan(&waiting, &applied); err != nil {
			t.Fatal(err)
		}
		select {
		case o := <-done:
			t.Fatalf("the catch-up returned (%d events, %v) while its vacuum waited", o.n, o.err)
		case <-deadline:
			t.Fatalf("never saw a batch applied while the first vacuum (after %d events) waits: vacuum waiting %v, %d events applied",
				first, waiting, applied)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if o := <-done; o.err != nil || o.n != 30 {
		t.Fatalf("catch-up applied %d events (%v), want 30", o.n, o.err)
	}
	// Every vacuum is done by the time it returns: vacuum counts are reported as a vacuum ends.
	want, _ := progress.vacuums(10)
	if vacuums, _ := vacuumCount(t, pool); vacuums != want {
		t.Fatalf("vacuumed %d times by the time the catch-up returned, want %d (totals %v)", vacuums, want, progress.totals)
	}
}

// A projection that takes the lead of its group CatchUpLag or more events behind first catches up by
// the batched path, counted ready and reported "catching up" meanwhile; less far behind, its subscriber
// alone goes on. Either way every event is applied once, in order.
func TestProjectorFarBehindCatchesUpByTheBatchedPath(t *testing.T) {
	pool, url := setupProjectorDB(t)
	stream := uuid.Must(uuid.NewV7())
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
	if said := caughtUp(t, &logs1); len(said) != 0 {
		t.Fatalf("caught up by the batched path 30 events behind (threshold 31): %v", said)
	}

	// 60 behind: the batched path's, held at event 45 to look at the projection meanwhile.
	last = appendVersions(t, pool, stream, 31, 90)
	rec, held, release := holdAt(t, 45)
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
	release()
	waitAll(t, p.Projector, "a", []events.Position{last})
	// The checkpoint shows before the catch-up has returned; the subscriber starts after it.
	deadline := time.After(30 * time.Second)
	for st := ""; st != "running"; {
		st = projectionStatus(t, p, "a")
		if st != "catching up" && st != "running" {
			t.Fatalf("status %q after the catch-up, want running", st)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("status %q long after the catch-up, want running", st)
		}
	}
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 90)
	if said := caughtUp(t, &logs2); len(said) != 1 || said[0] != "60" {
		t.Fatalf("batched catch-ups said %v, want one of 60 events", said)
	}
}

// caughtUp lists the events counts of projection a's "caught up by the batched path" log lines.
func caughtUp(t *testing.T, logs *logtest.Buffer) []string {
	var said []string
	for _, l := range logs.Lines(t) {
		if l["msg"] == "projection caught up by the batched path" && l["projection"] == "a" {
			said = append(said, fmt.Sprint(l["events"]))
		}
	}
	return said
}

// holdAt returns a recorder for projection "a" whose Apply of the given version waits until release is
// called (at the latest when the test ends, before the projector stops), and a channel closed when it
// waits.
func holdAt(t *testing.T, version int64) (rec *recorder, held <-chan struct{}, release func()) {
	h, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(r) }) }
	rec = &recorder{name: "a", before: func(e events.Envelope) {
		if e.Version == version {
			select {
			case <-h:
			default:
				close(h)
			}
			<-r
		}
	}}
	// Registered before the projector's stop, so it runs after it would block: cleanups run last first.
	// Hence the projector must be started after holdAt.
	t.Cleanup(release)
	return rec, h, release
}

// A leader that loses its consumer group's lock while it catches up stops the catch-up and campaigns
// again; whoever leads then finishes, and every event is applied once.
func TestProjectorLosingItsLockStopsTheCatchUp(t *testing.T) {
	pool, url := setupProjectorDB(t)
	stream := uuid.Must(uuid.NewV7())
	last := appendVersions(t, pool, stream, 1, 60)
	rec, held, release := holdAt(t, 20)
	var logs logtest.Buffer
	p := startProjectorConfig(t, pool, url, ProjectorConfig{BatchSize: 7, PollInterval: time.Hour, ResendInterval: time.Millisecond,
		CatchUpLag: 31, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, nil, rec)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("event 20 was never applied")
	}
	// The session holding the group's advisory lock ends, as when its connection breaks.
	endLockSessions(t, pool)
	deadline := time.After(30 * time.Second)
	for said := false; !said; {
		for _, l := range logs.Lines(t) {
			said = said || l["msg"] == "projection lost its consumer group's lock"
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the lost lock was never noticed:\n%s", logs.String())
		}
	}
	release()
	waitAll(t, p.Projector, "a", []events.Position{last})
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 60)
	// The stopped catch-up committed nothing from event 20 on (it may have committed a short batch
	// before it); the one after the new campaign applied the rest.
	for deadline := time.After(30 * time.Second); len(caughtUp(t, &logs)) == 0; {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no catch-up after the new campaign:\n%s", logs.String())
		}
	}
	said := caughtUp(t, &logs)
	if n, err := strconv.Atoi(said[0]); len(said) != 1 || err != nil || n < 41 || n > 60 {
		t.Fatalf("batched catch-ups said %v, want one of 41 to 60 events", said)
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

// A leader whose lock's session ends while its subscriber runs stops the subscriber and campaigns
// again, and events appended afterwards are still applied once.
func TestProjectorLosingItsLockWhileSubscribedLeadsAgain(t *testing.T) {
	pool, url := setupProjectorDB(t)
	var logs logtest.Buffer
	p := startProjectorConfig(t, pool, url, ProjectorConfig{BatchSize: 7, PollInterval: 20 * time.Millisecond, ResendInterval: time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, nil, &recorder{name: "a"})
	said := func(msg string) int {
		n := 0
		for _, l := range logs.Lines(t) {
			if l["msg"] == msg && l["projection"] == "a" {
				n++
			}
		}
		return n
	}
	waitSaid := func(msg string, n int) {
		t.Helper()
		for deadline := time.After(30 * time.Second); said(msg) < n; {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-deadline:
				t.Fatalf("never said %q %d times:\n%s", msg, n, logs.String())
			}
		}
	}
	waitSaid("projection leads its consumer group", 1)
	endLockSessions(t, pool)
	waitSaid("projection lost its consumer group's lock", 1)
	waitSaid("projection leads its consumer group", 2)
	stream := uuid.Must(uuid.NewV7())
	last := appendVersions(t, pool, stream, 1, 5)
	waitAll(t, p.Projector, "a", []events.Position{last})
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 5)
}

// endLockSessions ends the sessions holding advisory locks in the test's database, as when their
// connections break.
func endLockSessions(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var ended bool
	if err := pool.QueryRow(context.Background(), `SELECT bool_and(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&ended); err != nil || !ended {
		t.Fatalf("end the lock's session: %v, %v", ended, err)
	}
}
