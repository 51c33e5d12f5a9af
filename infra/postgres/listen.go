package postgres

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener receives what a LISTEN connection sees. Connected runs each time LISTEN took effect (things
// may have happened while disconnected); Lost each time the connection broke (it is retried).
type Listener struct {
	Connected func()
	Notified  func(payload string)
	Lost      func(err error)
}

// Listen keeps a dedicated connection to databaseURL listening on channel until ctx ends, reconnecting
// with a growing pause when it breaks.
func Listen(ctx context.Context, databaseURL, channel string, l Listener, logger *slog.Logger) {
	const firstBackoff = 100 * time.Millisecond
	backoff := firstBackoff
	for ctx.Err() == nil {
		connected := false
		err := listenOnce(ctx, databaseURL, channel, l, &connected)
		if connected {
			backoff = firstBackoff // an outage long ago says nothing about this one
		}
		if ctx.Err() != nil {
			return
		}
		if l.Lost != nil {
			l.Lost(err)
		}
		logger.WarnContext(ctx, "notification connection lost; reconnecting",
			slog.String("channel", channel), slog.String("err", err.Error()), slog.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func listenOnce(ctx context.Context, databaseURL, channel string, l Listener, connected *bool) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	*connected = true
	if l.Connected != nil {
		l.Connected()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if l.Notified != nil {
			l.Notified(n.Payload)
		}
	}
}
