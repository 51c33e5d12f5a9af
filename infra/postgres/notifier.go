package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notifier turns the event log's NOTIFY (sent at every commit that appends events) into an in-process
// broadcast, so consumers wake within milliseconds instead of sleeping out a poll interval. A lost
// connection is retried; while it is down consumers fall back to their poll interval.
type Notifier struct {
	databaseURL string
	logger      *slog.Logger

	mu  sync.Mutex
	gen uint64
	ch  chan struct{} // closed and replaced at every notification
}

// NewNotifier returns a notifier that listens on databaseURL once Run is called.
func NewNotifier(databaseURL string, logger *slog.Logger) *Notifier {
	return &Notifier{databaseURL: databaseURL, logger: logger, ch: make(chan struct{})}
}

// channel is the NOTIFY channel the events table's trigger signals.
const channel = "taki_events"

// Run listens until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := n.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		n.logger.WarnContext(ctx, "event notifications lost; reconnecting", slog.String("err", err.Error()), slog.Duration("in", backoff))
		// Whatever was committed while we were away must still be picked up.
		n.broadcast()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (n *Notifier) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, n.databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	n.broadcast() // events committed before LISTEN took effect
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		n.broadcast()
	}
}

// Broadcast wakes every waiter as if the log had notified; in-process appenders call it too.
func (n *Notifier) broadcast() {
	n.mu.Lock()
	n.gen++
	close(n.ch)
	n.ch = make(chan struct{})
	n.mu.Unlock()
}

// Generation returns a counter that grows with every notification, and a channel closed at the next one.
func (n *Notifier) Generation() (uint64, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen, n.ch
}
