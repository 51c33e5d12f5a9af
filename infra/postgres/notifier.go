package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Notifier wakes the event log's consumers within milliseconds of an append instead of letting them
// sleep out a poll interval. Appends in this process wake local consumers at once (Appended); other
// instances learn of them by a NOTIFY that this process sends outside the append's transaction,
// coalesced to at most one in flight. (A NOTIFY inside the appending transaction would take a
// database-wide lock at commit and hold it through the WAL flush, serialising every append.) While the
// listening connection is down, consumers fall back to their poll interval.
type Notifier struct {
	databaseURL string
	logger      *slog.Logger
	instance    string
	pending     chan struct{}

	mu  sync.Mutex
	gen uint64
	ch  chan struct{} // closed and replaced at every wake-up
}

// NewNotifier returns a notifier that listens and sends on databaseURL once Run is called.
func NewNotifier(databaseURL string, logger *slog.Logger) *Notifier {
	return &Notifier{
		databaseURL: databaseURL,
		logger:      logger,
		instance:    uuid.NewString(),
		pending:     make(chan struct{}, 1),
		ch:          make(chan struct{}),
	}
}

// channel is the NOTIFY channel appends are announced on.
const channel = "taki_events"

// Appended announces a committed append: local consumers wake now, other instances shortly.
func (n *Notifier) Appended() {
	n.broadcast()
	select {
	case n.pending <- struct{}{}:
	default: // a NOTIFY is already due; it covers this append too
	}
}

// AnnounceNow tells every listening instance that events were appended, at once, on pool. Tools that
// append without running the notifier (the CLI) call it before they exit.
func AnnounceNow(ctx context.Context, pool interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}) error {
	if _, err := pool.Exec(ctx, `SELECT pg_notify($1, '')`, channel); err != nil {
		return fmt.Errorf("announce appended events: %w", err)
	}
	return nil
}

// Run listens and sends until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.send(ctx)
	}()
	Listen(ctx, n.databaseURL, channel, Listener{
		// Whatever was committed while we were not listening must still be picked up.
		Connected: n.broadcast,
		Notified: func(payload string) {
			if payload != n.instance { // our own appends woke local consumers already
				n.broadcast()
			}
		},
	}, n.logger)
	wg.Wait()
}

// send announces appends on a connection of its own on which commits do not wait for the WAL flush:
// a NOTIFY needs a transaction, and waiting for each of them to reach disk would add a flush to the
// log's busiest moments for a message that carries no data.
func (n *Notifier) send(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.pending:
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, n.databaseURL)
			if err == nil {
				_, err = c.Exec(ctx, `SET synchronous_commit = off`)
			}
			if err != nil {
				if ctx.Err() == nil {
					n.logger.WarnContext(ctx, "could not announce appended events", slog.String("err", err.Error()))
				}
				continue // the next append tries again; other instances poll meanwhile
			}
			conn = c
		}
		if _, err := conn.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, n.instance); err != nil {
			if ctx.Err() == nil {
				n.logger.WarnContext(ctx, "could not announce appended events", slog.String("err", err.Error()))
			}
			conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
	}
}

func (n *Notifier) broadcast() {
	n.mu.Lock()
	n.gen++
	close(n.ch)
	n.ch = make(chan struct{})
	n.mu.Unlock()
}

// Generation returns a counter that grows with every wake-up, and a channel closed at the next one.
func (n *Notifier) Generation() (uint64, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen, n.ch
}
