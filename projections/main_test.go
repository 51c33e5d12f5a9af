package projections

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
	"taki/infra/logging"
	"taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

// dbURL is this package's test database, migrated from the template.
var dbURL string

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m, &dbURL)) }

// newLogDatabase returns a pool on a database of its own and an event store on it.
func newLogDatabase(t *testing.T) (*pgxpool.Pool, *postgres.EventStore) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool := pgtest.NewPool(t, url)
	store, err := postgres.NewEventStore(pool, events.NewRegistry(), nil, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return pool, store
}

// runProjector runs projs in a real projector on pool until the test ends. The store of
// newLogDatabase sends no wake-ups, so the projector polls, every 10 ms.
func runProjector(t *testing.T, pool *pgxpool.Pool, store *postgres.EventStore, projs ...postgres.Projection) *postgres.Projector {
	t.Helper()
	proj, _ := startProjector(t, pool, projs...)
	return proj
}

// startProjector runs projs in a real projector on pool until stop is called or the test ends.
func startProjector(t *testing.T, pool *pgxpool.Pool, projs ...postgres.Projection) (proj *postgres.Projector, stop func()) {
	t.Helper()
	url := pool.Config().ConnString()
	notifier := postgres.NewNotifier(url, logging.Discard())
	proj, err := postgres.NewProjector(pool, events.NewRegistry(), notifier,
		postgres.ProjectorConfig{BatchSize: 100, PollInterval: 10 * time.Millisecond, Logger: logging.Discard()}, projs...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go notifier.Run(ctx)
	go func() { done <- proj.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return proj, stop
}

// dumpRows runs each query (rows of one text column, in a fixed order) and joins every row, so two
// states of a read model compare as strings.
func dumpRows(t *testing.T, pool *pgxpool.Pool, queries ...string) string {
	t.Helper()
	var out []string
	for _, q := range queries {
		rows, err := pool.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		s, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s...)
	}
	return strings.Join(out, "\n")
}
