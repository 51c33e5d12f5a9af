package postgres_test

import (
	"context"
	"testing"
	"time"

	"taki/infra/logging"
	. "taki/infra/postgres"
	"taki/infra/postgres/pgtest"
)

// An announcement made without a running notifier (as the CLI does) wakes a listening instance.
func TestAnnounceNowWakesListeners(t *testing.T) {
	url := pgtest.NewDatabase(t)
	pool := pgtest.NewPool(t, url)
	n := NewNotifier(url, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// The listener broadcasts once when LISTEN takes effect.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if gen, _ := n.Generation(); gen > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the notifier never connected")
		}
		time.Sleep(time.Millisecond) // waiting for the connection, bounded above
	}
	_, woke := n.Generation()
	if err := AnnounceNow(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatal("the announcement never reached the listener")
	}
}
