package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"taki/events"
)

// SetAfterWrite lets tests act between a message's read-model writes and its ack (a crash there).
func SetAfterWrite(p *Projector, f func(ctx context.Context, tx pgx.Tx, env events.Envelope)) {
	p.afterFlush = f
}

// SetMaxWaiting lowers how many events r holds behind an unfinished one, and calls full whenever it
// does not read because that many wait.
func SetMaxWaiting(r *ProcessRunner, n int, full func()) {
	r.maxWaiting, r.full = n, full
}

// GroupLockKey is a consumer group's leader lock, for tests that keep an instance standing by.
func GroupLockKey(group string) int64 { return groupLockKey(group) }

// SetVerifyAttempts changes how many snapshots verify tries before it locks, until the test ends.
func SetVerifyAttempts(t interface{ Cleanup(func()) }, n int) {
	old := verifyAttempts
	verifyAttempts = n
	t.Cleanup(func() { verifyAttempts = old })
}

// OnEmptyRead calls f after each read of the log by r that returned nothing.
func OnEmptyRead(r *ProcessRunner, f func()) { r.readEmpty = f }
