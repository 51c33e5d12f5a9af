package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/logging"
	"taki/infra/logging/logtest"
	. "taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

// recorder is a test projection that logs every event it applies, in apply order.
type recorder struct {
	name string
	// failOnce, when set, makes the first apply of that version write and then fail.
	failOnce atomic.Int64
	// refuse, while set, makes every Apply of that version return an error (nothing queued).
	refuse  atomic.Int64
	refused atomic.Int64 // how many times it refused
	// before, when set (before the projector starts), runs first in every Apply.
	before func(events.Envelope)
}

func (r *recorder) Name() string     { return r.name }
func (r *recorder) Tables() []string { return []string{"test_applied"} }
func (r *recorder) Apply(b *pgx.Batch, e events.Envelope) error {
	if r.before != nil {
		r.before(e)
	}
	if v := r.refuse.Load(); v != 0 && v == e.Version {
		r.refused.Add(1)
		return fmt.Errorf("refusing version %d", v)
	}
	b.Queue(`INSERT INTO test_applied (projection, stream_id, version) VALUES ($1, $2, $3)`, r.name, e.StreamID, e.Version)
	if v := r.failOnce.Load(); v != 0 && v == e.Version && r.failOnce.CompareAndSwap(v, 0) {
		b.Queue(`SELECT 1/0`)
	}
	return nil
}

func setupProjectorDB(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool := pgtest.NewPool(t, url)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE test_applied (
		seq bigserial PRIMARY KEY, projection text NOT NULL, stream_id uuid NOT NULL, version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return pool, url
}

type runningProjector struct {
	*Projector
	notifier *Notifier
	cancel   context.CancelFunc
	done     chan error
}

func startProjector(t *testing.T, pool *pgxpool.Pool, url string, batch int, poll time.Duration, hook func(*Projector), projs ...Projection) *runningProjector {
	t.Helper()
	return startProjectorLogged(t, pool, url, batch, poll, logging.Discard(), hook, projs...)
}

func startProjectorLogged(t *testing.T, pool *pgxpool.Pool, url string, batch int, poll time.Duration, logger *slog.Logger,
	hook func(*Projector), projs ...Projection) *runningProjector {
	t.Helper()
	return startProjectorConfig(t, pool, url, ProjectorConfig{BatchSize: batch, PollInterval: poll, ResendInterval: time.Millisecond, Logger: logger},
		hook, projs...)
}

func startProjectorConfig(t *testing.T, pool *pgxpool.Pool, url string, cfg ProjectorConfig, hook func(*Projector), projs ...Projection) *runningProjector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := NewNotifier(url, logging.Discard())
	go n.Run(ctx)
	p, err := NewProjector(pool, events.NewRegistry(), n, cfg, projs...)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(p)
	}
	rp := &runningProjector{Projector: p, notifier: n, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx) }()
	t.Cleanup(rp.stop)
	return rp
}

func (rp *runningProjector) stop() {
	rp.cancel()
	<-rp.done
	rp.done <- nil // later stops return at once
}

// slowAppend writes one event in a transaction that takes its transaction id first and commits after a
// pause, so later writers commit before it: the case where a naive offset-ordered reader skips rows.
func slowAppend(ctx context.Context, pool *pgxpool.Pool, stream uuid.UUID, version int64, pause time.Duration) (events.Position, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return events.Position{}, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		return events.Position{}, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, pause.Seconds()); err != nil {
		return events.Position{}, err
	}
	var xid string
	var off int64
	err = tx.QueryRow(ctx, `INSERT INTO events (transaction_id, event_id, stream_id, stream_type, version, event_type, schema_version, occurred_at, payload, metadata)
		VALUES (pg_current_xact_id(), $1, $2, 'user', $3, 'user.logged_in', 1, now(), $4, '{}')
		RETURNING transaction_id::text, "offset"`,
		uuid.Must(uuid.NewV7()), stream, version, fmt.Sprintf(`{"user_id":%q,"at":"2026-01-01T00:00:00Z"}`, stream)).Scan(&xid, &off)
	if err != nil {
		return events.Position{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return events.Position{}, err
	}
	x, _ := strconv.ParseUint(xid, 10, 64)
	return events.Position{TxID: x, Offset: off}, nil
}

// appendVersions appends versions from to to of stream, one transaction each, and returns the last
// one's position.
func appendVersions(t *testing.T, pool *pgxpool.Pool, stream uuid.UUID, from, to int64) events.Position {
	t.Helper()
	var last events.Position
	for v := from; v <= to; v++ {
		pos, err := slowAppend(context.Background(), pool, stream, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		last = pos
	}
	return last
}

// assertExactlyOnceInOrder checks that projection applied versions 1..n of every stream exactly once,
// in version order.
func assertExactlyOnceInOrder(t *testing.T, pool *pgxpool.Pool, projection string, streams []uuid.UUID, n int64) {
	t.Helper()
	for _, s := range streams {
		rows, err := pool.Query(context.Background(), `SELECT version FROM test_applied WHERE projection = $1 AND stream_id = $2 ORDER BY seq`, projection, s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != n {
			t.Fatalf("stream %s: applied %d events, want %d: %v", s, len(got), n, got)
		}
		for i, v := range got {
			if v != int64(i+1) {
				t.Fatalf("stream %s: apply order %v, want 1..%d once each", s, got, n)
			}
		}
	}
}

// slowWriters appends versions 1..perWriter of one new stream per writer, the writers side by side,
// each event in a transaction that pauses up to maxPause before it commits (slowAppend), calling
// appended after each. done closes when they have all finished; wait waits for that, fails the test
// on an append that failed and returns every appended position.
func slowWriters(t *testing.T, pool *pgxpool.Pool, writers int, perWriter int64, maxPause time.Duration, appended func()) (streams []uuid.UUID, done <-chan struct{}, wait func() []events.Position) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var last []events.Position
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		stream := uuid.Must(uuid.NewV7())
		streams = append(streams, stream)
		wg.Go(func() {
			for v := int64(1); v <= perWriter; v++ {
				pos, err := slowAppend(ctx, pool, stream, v, time.Duration(rand.Int64N(int64(maxPause))))
				if err != nil {
					errs <- err
					return
				}
				if appended != nil {
					appended()
				}
				mu.Lock()
				last = append(last, pos)
				mu.Unlock()
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	return streams, finished, func() []events.Position {
		t.Helper()
		<-finished
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return last
	}
}

func waitAll(t *testing.T, p *Projector, name string, positions []events.Position) {
	t.Helper()
	for _, pos := range positions {
		ok, err := p.WaitFor(context.Background(), name, pos, 60*time.Second)
		if err != nil || !ok {
			t.Fatalf("projection %s never applied %v (err %v)", name, pos, err)
		}
	}
}

func TestProjectorSlowConcurrentWritersExactlyOnceInOrder(t *testing.T) {
	pool, url := setupProjectorDB(t)
	// A one-hour poll interval: only NOTIFY wake-ups can make this test pass in time. The writers
	// announce their appends as another instance would, through a notifier of their own.
	p := startProjector(t, pool, url, 7, time.Hour, nil, &recorder{name: "a"}, &recorder{name: "b"})
	ctx := context.Background()
	other := NewNotifier(url, logging.Discard())
	otherCtx, stopOther := context.WithCancel(ctx)
	defer stopOther()
	go other.Run(otherCtx)
	const writers, perWriter = 8, 25
	streams, _, wait := slowWriters(t, pool, writers, perWriter, 15*time.Millisecond, other.Appended)
	last := wait()
	waitAll(t, p.Projector, "a", last)
	waitAll(t, p.Projector, "b", last)
	assertExactlyOnceInOrder(t, pool, "a", streams, perWriter)
	assertExactlyOnceInOrder(t, pool, "b", streams, perWriter)
}

func TestProjectorFailedMessageWritesAreUndone(t *testing.T) {
	pool, url := setupProjectorDB(t)
	rec := &recorder{name: "a"}
	rec.failOnce.Store(5)
	stream := uuid.Must(uuid.NewV7())
	last := appendVersions(t, pool, stream, 1, 10)
	var logs logtest.Buffer
	p := startProjectorLogged(t, pool, url, 100, time.Hour, slog.New(slog.NewJSONHandler(&logs, nil)), nil, rec)
	waitAll(t, p.Projector, "a", []events.Position{last})
	if rec.failOnce.Load() != 0 {
		t.Fatal("the failure was never injected")
	}
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 10)
	// The failure is said, with why: a projection standing still must show in the logs.
	said := false
	for _, l := range logs.Lines(t) {
		if l["level"] == "ERROR" && l["projection"] == "a" && strings.Contains(fmt.Sprint(l["err"]), "division by zero") {
			said = true
		}
	}
	if !said {
		t.Fatalf("no error line for the failed message in:\n%s", logs.String())
	}
}

func TestProjectorCrashBetweenWriteAndAckLosesNothing(t *testing.T) {
	pool, url := setupProjectorDB(t)
	stream := uuid.Must(uuid.NewV7())
	last := appendVersions(t, pool, stream, 1, 40)

	// First life: the connection dies right after event 12's writes, before its ack (a crash as the
	// database sees it). The projector must reconnect and re-deliver from the last commit.
	var killed atomic.Bool
	p1 := startProjector(t, pool, url, 5, time.Hour, func(p *Projector) {
		SetAfterWrite(p, func(ctx context.Context, tx pgx.Tx, env events.Envelope) {
			if env.Version == 12 && killed.CompareAndSwap(false, true) {
				_, _ = tx.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
			}
		})
	}, &recorder{name: "a"})
	mid := events.Position{}
	waitAll(t, p1.Projector, "a", []events.Position{last})
	if !killed.Load() {
		t.Fatal("the crash was never injected")
	}
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 40)
	p1.stop()

	// Second life: the process stops between event 45's writes and its ack; a new process takes over.
	for v := int64(41); v <= 60; v++ {
		pos, err := slowAppend(context.Background(), pool, stream, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		last = pos
		if v == 45 {
			mid = pos
		}
	}
	stopped := make(chan struct{})
	die := make(chan context.CancelFunc, 1)
	var once sync.Once
	p2 := startProjector(t, pool, url, 50, time.Hour, func(p *Projector) {
		SetAfterWrite(p, func(ctx context.Context, tx pgx.Tx, env events.Envelope) {
			if env.Version == 45 {
				once.Do(func() {
					(<-die)() // the process dies: nothing after this may commit
					close(stopped)
				})
			}
		})
	}, &recorder{name: "a"})
	die <- p2.cancel
	<-stopped
	p2.stop()
	cp, err := p2.Checkpoint(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if !cp.Less(mid) {
		t.Fatalf("checkpoint %v passed event 45 (%v) that was never acked", cp, mid)
	}
	p3 := startProjector(t, pool, url, 50, time.Hour, nil, &recorder{name: "a"})
	waitAll(t, p3.Projector, "a", []events.Position{last})
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 60)
}

// A message its projection cannot apply must not hold its batch transaction open: that transaction's
// id would hide every event committed after it from every reader of the log. The batch ends before the
// message, another projection sees new events at once, and the failing one applies the message once
// the cause is gone.
func TestProjectorRefusedMessageDoesNotStallOtherReaders(t *testing.T) {
	pool, url := setupProjectorDB(t)
	stream := uuid.Must(uuid.NewV7())
	last := appendVersions(t, pool, stream, 1, 10)
	bad := &recorder{name: "a"}
	bad.refuse.Store(8)
	p := startProjector(t, pool, url, 100, 20*time.Millisecond, nil, bad, &recorder{name: "b"})
	waitAll(t, p.Projector, "b", []events.Position{last})
	// Events committed while "a" keeps failing on version 8 must still reach "b".
	deadline := time.Now().Add(30 * time.Second)
	for bad.refused.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("projection a never retried the refused event")
		}
		time.Sleep(time.Millisecond) // waiting for the retry, bounded above
	}
	last = appendVersions(t, pool, stream, 11, 20)
	p.notifier.Appended()
	waitAll(t, p.Projector, "b", []events.Position{last})
	cp, err := p.Checkpoint(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Offset == 0 {
		t.Fatal("the events before the failing one were not committed")
	}
	bad.refuse.Store(0)
	waitAll(t, p.Projector, "a", []events.Position{last})
	assertExactlyOnceInOrder(t, pool, "a", []uuid.UUID{stream}, 20)
	assertExactlyOnceInOrder(t, pool, "b", []uuid.UUID{stream}, 20)
}
