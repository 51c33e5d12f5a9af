package postgres

import (
	"context"
	stdsql "database/sql"
	"errors"
	"sync"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// guardedBeginner is the projections' watermill-sql Beginner. Its transactions serialise the
// subscriber's statements with the handler's (a pgx connection is not safe for concurrent use, and the
// subscriber may roll back while a handler still runs), and they refuse to commit a batch that holds
// writes of a message that was never acked.
type guardedBeginner struct {
	pool  *pgxpool.Pool
	state *projectionState
}

func (b guardedBeginner) BeginTx(ctx context.Context, opts *stdsql.TxOptions) (wmsql.Tx, error) {
	txOpts := pgx.TxOptions{}
	if opts != nil && opts.Isolation == stdsql.LevelRepeatableRead {
		txOpts.IsoLevel = pgx.RepeatableRead
	}
	tx, err := b.pool.BeginTx(ctx, txOpts)
	if err != nil {
		return nil, err
	}
	return &guardedTx{tx: tx, ctx: ctx, state: b.state}, nil
}

func (b guardedBeginner) ExecContext(ctx context.Context, query string, args ...any) (wmsql.Result, error) {
	tag, err := b.pool.Exec(ctx, query, args...)
	return wmsql.PgxResult{CommandTag: tag}, err
}

func (b guardedBeginner) QueryContext(ctx context.Context, query string, args ...any) (wmsql.Rows, error) {
	rows, err := b.pool.Query(ctx, query, args...)
	return wmsql.PgxRows{Rows: rows}, err
}

type guardedTx struct {
	mu       sync.Mutex
	tx       pgx.Tx
	ctx      context.Context
	state    *projectionState
	unacked  bool  // a handler wrote and its message is not acked yet
	poisoned error // a handler failed: the whole batch must roll back
}

var errUnackedWrites = errors.New("batch holds writes of an unacknowledged message; rolled back")

func (t *guardedTx) ExecContext(ctx context.Context, query string, args ...any) (wmsql.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.poisoned != nil {
		// Fails watermill-sql's ack query, so it rolls the batch back and retries after a backoff.
		return nil, t.poisoned
	}
	tag, err := t.tx.Exec(ctx, query, args...)
	return wmsql.PgxResult{CommandTag: tag}, err
}

func (t *guardedTx) QueryContext(ctx context.Context, query string, args ...any) (wmsql.Rows, error) {
	t.mu.Lock()
	rows, err := t.tx.Query(ctx, query, args...)
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	return &guardedRows{PgxRows: wmsql.PgxRows{Rows: rows}, unlock: t.mu.Unlock}, nil
}

// Commit commits unless a handler's writes are unacked or the subscriber's context ended (the
// subscriber abandons messages only when its context ends or it closes, and Run always cancels that
// context before closing).
func (t *guardedTx) Commit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unacked || t.poisoned != nil || t.ctx.Err() != nil {
		_ = t.tx.Rollback(context.WithoutCancel(t.ctx))
		t.state.batchDone(false)
		switch {
		case t.unacked:
			return errUnackedWrites
		case t.poisoned != nil:
			return t.poisoned
		}
		return t.ctx.Err()
	}
	err := t.tx.Commit(t.ctx)
	t.state.batchDone(err == nil)
	return err
}

func (t *guardedTx) Rollback() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state.batchDone(false)
	return t.tx.Rollback(context.WithoutCancel(t.ctx))
}

// poison makes the batch roll back: a failed message must not hold the transaction open (its
// transaction id would hold back every consumer's view of the log) and must not be skipped.
func (t *guardedTx) poison(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.poisoned == nil {
		t.poisoned = err
	}
}

func (t *guardedTx) isPoisoned() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.poisoned != nil
}

// write runs a handler's statements on the transaction, marking the batch unacked until ack runs.
func (t *guardedTx) write(fn func(pgx.Tx) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.poisoned != nil {
		return t.poisoned
	}
	t.unacked = true
	err := fn(t.tx)
	if err != nil {
		// The handler undid its writes (savepoint) or the transaction is dead; either way nothing of
		// this message remains to guard.
		t.unacked = false
	}
	return err
}

// ack clears the guard and acks, under the lock so no commit decision sees one without the other.
func (t *guardedTx) ack(ack func() bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unacked = false
	ack()
}

type guardedRows struct {
	wmsql.PgxRows
	once   sync.Once
	unlock func()
}

// Next releases the transaction once the rows are exhausted: watermill-sql closes them only when its
// whole batch is done, long after handlers need the connection.
func (r *guardedRows) Next() bool {
	if r.PgxRows.Next() {
		return true
	}
	r.PgxRows.Rows.Close()
	r.once.Do(r.unlock)
	return false
}

func (r *guardedRows) Close() error {
	err := r.PgxRows.Close()
	r.once.Do(r.unlock)
	return err
}
