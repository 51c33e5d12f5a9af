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
