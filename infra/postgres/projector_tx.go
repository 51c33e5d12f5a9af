package postgres

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
)

// A projection batch runs in one watermill-sql subscriber transaction. Handlers do not write as each
// message arrives: they queue their statements, each message wrapped in its own savepoint, and the
// queue is sent as one pipeline when watermill-sql acks the batch (its ack query is the first statement
// it runs after the messages). That makes a batch cost a handful of round trips instead of one per
// event. If a message's statements fail, the pipeline stops there, ROLLBACK TO SAVEPOINT undoes that
// message's writes, and the ack is rewritten to the message before it: the good prefix commits, the
// failing message is retried in the next batch (alone, after a backoff) and nothing is ever skipped.

// ackMarker tags watermill-sql's ack query so the transaction can recognise it.
const ackMarker = "/* taki:ack */ "

// offsetsAdapter is watermill-sql's default PostgreSQL offsets adapter with a tagged ack query.
type offsetsAdapter struct {
	wmsql.DefaultPostgreSQLOffsetsAdapter
}

func (a offsetsAdapter) AckMessageQuery(params wmsql.AckMessageQueryParams) (wmsql.Query, error) {
	q, err := a.DefaultPostgreSQLOffsetsAdapter.AckMessageQuery(params)
	q.Query = ackMarker + q.Query
	return q, err
}

// guardedBeginner is the projections' watermill-sql Beginner.
type guardedBeginner struct {
	pool  *pgxpool.Pool
	state *projectionState
	// afterFlush, when set (tests), runs after a message's writes were sent and before the batch commits.
	afterFlush func(ctx context.Context, tx pgx.Tx, env events.Envelope)
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
	return &guardedTx{tx: tx, ctx: ctx, state: b.state, gen: b.state.generation(), afterFlush: b.afterFlush}, nil
}

func (b guardedBeginner) ExecContext(ctx context.Context, query string, args ...any) (wmsql.Result, error) {
	tag, err := b.pool.Exec(ctx, query, args...)
	return wmsql.PgxResult{CommandTag: tag}, err
}

func (b guardedBeginner) QueryContext(ctx context.Context, query string, args ...any) (wmsql.Rows, error) {
	rows, err := b.pool.Query(ctx, query, args...)
	return wmsql.PgxRows{Rows: rows}, err
}

// queued is one message's writes waiting in the batch's pipeline.
type queued struct {
	env   events.Envelope
	first int // index of its SAVEPOINT statement in the pipeline
	last  int // index of its RELEASE statement
}

// guardedTx serialises the subscriber's statements with the handlers' (a pgx connection is not safe
// for concurrent use) and holds the queued writes until the batch is acked.
type guardedTx struct {
	mu         sync.Mutex
	tx         pgx.Tx
	ctx        context.Context
	state      *projectionState
	gen        uint64 // the state's generation when the batch began
	afterFlush func(ctx context.Context, tx pgx.Tx, env events.Envelope)

	pipeline *pgx.Batch
	queue    []queued
	last     events.Position // the last message handed to this batch, written or not
	stopped  bool            // a message could not even be queued: the batch ends before it
	skipAck  bool            // the first message failed: commit nothing
}

// stop ends the batch before a message that cannot be decoded or applied: what came before it commits,
// the transaction ends (an open one would hide newer events from every reader of the log), and the
// message is tried again first in the next batch, after a backoff. It is never skipped.
func (t *guardedTx) stop(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		t.state.failed(err)
	}
}

func (t *guardedTx) isStopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopped
}

// enqueue adds a message's statements (already in b) to the pipeline, wrapped in a savepoint.
func (t *guardedTx) enqueue(env events.Envelope, b *pgx.Batch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pipeline == nil {
		t.pipeline = &pgx.Batch{}
	}
	q := queued{env: env, first: t.pipeline.Len()}
	t.pipeline.Queue("SAVEPOINT projection_message")
	t.pipeline.QueuedQueries = append(t.pipeline.QueuedQueries, b.QueuedQueries...)
	t.pipeline.Queue("RELEASE SAVEPOINT projection_message")
	q.last = t.pipeline.Len() - 1
	t.queue = append(t.queue, q)
}

// handed records the position of a message given to this batch (also one with nothing to write).
func (t *guardedTx) handed(p events.Position) {
	t.mu.Lock()
	t.last = p
	t.mu.Unlock()
}

func (t *guardedTx) ExecContext(ctx context.Context, query string, args ...any) (wmsql.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if strings.HasPrefix(query, ackMarker) {
		if err := t.flush(ctx, args); err != nil {
			return nil, err
		}
		if t.skipAck {
			return wmsql.PgxResult{}, nil
		}
	}
	tag, err := t.tx.Exec(ctx, query, args...)
	return wmsql.PgxResult{CommandTag: tag}, err
}

// flush sends the queued writes of every acked message. ackArgs are the ack query's arguments
// (offset, transaction id, consumer group) and name the last acked message; writes of messages after it
// (never acked, e.g. at shutdown) are dropped. On a failing message it rewrites ackArgs to the message
// before it.
func (t *guardedTx) flush(ctx context.Context, ackArgs []any) error {
	acked, err := ackedPosition(ackArgs)
	if err != nil {
		return err
	}
	if t.stopped {
		if t.last.IsZero() {
			t.skipAck = true // the very first message failed: nothing to commit
			return nil
		}
		acked = t.last
		ackArgs[0] = t.last.Offset
		ackArgs[1] = wmsql.XID8(t.last.TxID)
	}
	if acked.Less(t.last) {
		t.last = acked
	}
	n := 0
	for n < len(t.queue) && !acked.Less(t.queue[n].env.Position) {
		n++
	}
	if n == 0 {
		t.state.markPending(t.last)
		return nil
	}
	b := &pgx.Batch{QueuedQueries: t.pipeline.QueuedQueries[:t.queue[n-1].last+1]}
	br := t.tx.SendBatch(ctx, b)
	failedAt, execErr := -1, error(nil)
	for i := 0; i < b.Len(); i++ {
		if _, err := br.Exec(); err != nil {
			failedAt, execErr = i, err
			break
		}
	}
	closeErr := br.Close()
	if execErr == nil && closeErr != nil {
		return closeErr // the connection broke: watermill-sql rolls back and retries
	}
	if execErr == nil {
		t.state.markPending(t.last)
		t.state.setErr(nil)
		t.runAfterFlush(ctx, t.queue[:n])
		return nil
	}
	k := 0
	for k < n && t.queue[k].last < failedAt {
		k++
	}
	failed := t.queue[k].env
	// Undo the failing message's writes; the ones before it stay.
	if _, err := t.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT projection_message"); err != nil {
		return errors.Join(fmt.Errorf("apply %s %s: %w", failed.Type, failed.ID, execErr), err)
	}
	t.state.failed(fmt.Errorf("apply %s %s (position %s): %w", failed.Type, failed.ID, failed.Position, execErr))
	t.runAfterFlush(ctx, t.queue[:k])
	if k == 0 {
		t.skipAck = true
		return nil
	}
	prev := t.queue[k-1].env.Position
	ackArgs[0] = prev.Offset
	ackArgs[1] = wmsql.XID8(prev.TxID)
	t.state.markPending(prev)
	return nil
}

func (t *guardedTx) runAfterFlush(ctx context.Context, done []queued) {
	if t.afterFlush == nil {
		return
	}
	for _, q := range done {
		t.afterFlush(ctx, t.tx, q.env)
	}
}

func ackedPosition(args []any) (events.Position, error) {
	if len(args) < 2 {
		return events.Position{}, errors.New("unexpected ack query arguments")
	}
	off, ok := args[0].(int64)
	if !ok {
		return events.Position{}, fmt.Errorf("ack offset is %T", args[0])
	}
	var tx uint64
	switch v := args[1].(type) {
	case wmsql.XID8:
		tx = uint64(v)
	case uint64:
		tx = v
	default:
		return events.Position{}, fmt.Errorf("ack transaction id is %T", args[1])
	}
	return events.Position{TxID: tx, Offset: off}, nil
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

// Commit commits unless the subscriber's context ended: watermill-sql abandons messages only when its
// context ends or it closes, and Run always cancels that context before closing, so a batch cut short
// at shutdown never commits.
func (t *guardedTx) Commit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.skipAck || t.ctx.Err() != nil {
		_ = t.tx.Rollback(context.WithoutCancel(t.ctx))
		t.state.batchDone(false, t.gen)
		// Both are deliberate roll-backs (a failed first message; a shutdown), not errors to log.
		return nil
	}
	err := t.tx.Commit(t.ctx)
	t.state.batchDone(err == nil, t.gen)
	return err
}

func (t *guardedTx) Rollback() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state.batchDone(false, t.gen)
	return t.tx.Rollback(context.WithoutCancel(t.ctx))
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
