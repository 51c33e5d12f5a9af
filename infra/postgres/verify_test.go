package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/logging"
	. "taki/infra/postgres"
)

// latest is a test projection keeping each stream's last applied version.
type latest struct{}

func (latest) Name() string     { return "latest" }
func (latest) Tables() []string { return []string{"test_latest"} }
func (latest) Apply(b *pgx.Batch, e events.Envelope) error {
	b.Queue(`INSERT INTO test_latest (stream_id, version) VALUES ($1, $2)
		ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version`, e.StreamID, e.Version)
	return nil
}

// setupVerifyDB is a database for the latest projection, with an event store on it.
func setupVerifyDB(t *testing.T) (*pgxpool.Pool, string, *EventStore) {
	t.Helper()
	pool, url := setupProjectorDB(t)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE test_latest (stream_id uuid PRIMARY KEY, version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	store, err := NewEventStore(pool, events.NewRegistry(), nil, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return pool, url, store
}

func TestVerifyProjectionRebuildsUpToTheCheckpointAndDiffs(t *testing.T) {
	pool, url, store := setupVerifyDB(t)
	ctx := context.Background()
	streams := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	var positions []events.Position
	for v := int64(1); v <= 5; v++ {
		for _, s := range streams {
			p, err := slowAppend(ctx, pool, s, v, 0)
			if err != nil {
				t.Fatal(err)
			}
			positions = append(positions, p)
		}
	}
	rp := startProjector(t, pool, url, 4, 10*time.Millisecond, nil, latest{})
	waitAll(t, rp.Projector, "latest", positions)
	rp.stop()
	// Events after the checkpoint are not part of the comparison.
	for _, s := range streams {
		if _, err := slowAppend(ctx, pool, s, 6, 0); err != nil {
			t.Fatal(err)
		}
	}

	var progressed int64
	res, err := VerifyProjection(ctx, pool, store, latest{}, VerifyOptions{BatchSize: 4, Progress: func(n int64) { progressed = n }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Diffs) != 0 || res.Events != 15 || progressed != 15 || res.Checkpoint != positions[len(positions)-1] {
		t.Fatalf("consistent read model: %+v (progress %d), want no diff over 15 events up to %s", res, progressed, positions[len(positions)-1])
	}

	if _, err := pool.Exec(ctx, `UPDATE test_latest SET version = 42 WHERE stream_id = $1`, streams[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM test_latest WHERE stream_id = $1`, streams[1]); err != nil {
		t.Fatal(err)
	}
	res, err = VerifyProjection(ctx, pool, store, latest{}, VerifyOptions{Sample: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Diffs) != 1 {
		t.Fatalf("diffs %+v, want one table", res.Diffs)
	}
	d := res.Diffs[0]
	if d.Table != "test_latest" || d.OnlyLiveCount != 1 || d.OnlyRebuildCount != 2 || len(d.OnlyRebuild) != 1 || len(d.OnlyLive) != 1 {
		t.Fatalf("diff %+v", d)
	}
	if !strings.Contains(d.OnlyLive[0], streams[0].String()) || !strings.Contains(d.OnlyLive[0], `"version": 42`) {
		t.Errorf("only in live: %v", d.OnlyLive)
	}
	assertNoScratchLeft(t, pool)
}

// assertNoScratchLeft checks that no temporary copy of a read-model table outlived its verify.
func assertNoScratchLeft(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var left int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relname = 'test_latest'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d scratch tables left", left)
	}
}

// Verify while the live projection keeps applying new events: the rebuild meets it in a snapshot, or,
// when it never does (one attempt allowed here), under the group's lock; either way no difference.
func TestVerifyProjectionWhileTheLiveProjectionMoves(t *testing.T) {
	for _, attempts := range []int{20, 1} {
		t.Run(fmt.Sprint(attempts, " attempts"), func(t *testing.T) {
			SetVerifyAttempts(t, attempts)
			pool, url, store := setupVerifyDB(t)
			ctx := context.Background()
			rp := startProjector(t, pool, url, 4, time.Millisecond, nil, latest{})
			_, writing, wait := slowWriters(t, pool, 4, 40, 2*time.Millisecond, rp.notifier.Appended)
			verified := 0
			for done := false; !done; {
				select {
				case <-writing:
					done = true
				default:
				}
				res, err := VerifyProjection(ctx, pool, store, latest{}, VerifyOptions{BatchSize: 7})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Diffs) != 0 {
					t.Fatalf("verify of a consistent read model found %+v", res.Diffs)
				}
				verified++
			}
			wait()
			assertNoScratchLeft(t, pool)
			t.Logf("%d verifies while 160 events were appended and applied", verified)
		})
	}
}

// A projection reset while it is verified (a replay) is not compared half rebuilt: verify says so.
func TestVerifyProjectionRefusesAProjectionResetMeanwhile(t *testing.T) {
	pool, _, store := setupVerifyDB(t)
	ctx := context.Background()
	stream := uuid.New()
	for v := int64(1); v <= 12; v++ {
		if _, err := slowAppend(ctx, pool, stream, v, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := CatchUp(ctx, pool, events.NewRegistry(), []Projection{latest{}}, CatchUpOptions{}); err != nil || n != 12 {
		t.Fatalf("catch-up: %d events, %v", n, err)
	}
	reset := false
	_, err := VerifyProjection(ctx, pool, store, latest{}, VerifyOptions{BatchSize: 4, Progress: func(int64) {
		if !reset {
			reset = true
			if err := ResetProjection(ctx, pool, latest{}); err != nil {
				t.Error(err)
			}
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "was reset while it was verified") {
		t.Fatalf("verify across a reset: %v, want the reset reported", err)
	}
	assertNoScratchLeft(t, pool)
}
