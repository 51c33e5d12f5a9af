package postgres

import (
	"context"
	"log/slog"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Notifier wakes the event log's consumers within milliseconds of an append instead of letting them
// sleep out a poll interval. Appends in this process wake local consumers at once (Appended); other
// instances learn of them by a NOTIFY that this process sends outside the append's transaction,
// coalesced to at most one in flight. (A NOTIFY inside the appending transaction would take a
// database-wide lock at commit and hold it through the WAL flush, serialising every append.) While the
// listening connection is down, consumers fall back to their poll interval.
type Notifier struct {
	databaseURL string
	pool        *pgxpool.Pool
	logger      *slog.Logger
	instance    string
	pending     chan struct{}

	mu  sync.Mutex
	gen uint64
	ch  chan struct{} // closed and replaced at every wake-up
}

// NewNotifier returns a notifier that listens on databaseURL and sends through pool once Run is called.
func NewNotifier(databaseURL string, pool *pgxpool.Pool, logger *slog.Logger) *Notifier {
	return &Notifier{
		databaseURL: databaseURL,
		pool:        pool,
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

func (n *Notifier) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.pending:
		}
		if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, n.instance); err != nil && ctx.Err() == nil {
			n.logger.WarnContext(ctx, "could not announce appended events", slog.String("err", err.Error()))
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
