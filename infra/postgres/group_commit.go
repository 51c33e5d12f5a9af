package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
)

// groupCommitter commits the appends of concurrent commands together: each committer goroutine takes
// the appends waiting when it is free and sends them as one pipeline, which PostgreSQL runs as one
// implicit transaction (a single Sync). A busy log thus pays one commit and one WAL flush for many
// commands instead of one each. If one command's statement fails (a stale version, a taken claim), the
// whole transaction rolls back, that command gets its error, and the others are sent again without it.
type groupCommitter struct {
	pool     *pgxpool.Pool
	requests chan *appendRequest
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	closed   chan struct{}
}

const (
	// committers is how many groups may be in flight at once: while one waits for its WAL flush the
	// next gathers the commands that arrived meanwhile.
	committers = 4
	// maxGroup bounds one transaction's size, so one group's failure retries a bounded amount of work.
	maxGroup = 64
	// commitTimeout bounds one group's round trip; it does not follow any single caller's context,
	// since the others' appends must not be cancelled with it.
	commitTimeout = 30 * time.Second
)

type appendRequest struct {
	ctx   context.Context
	stmts []*pgx.QueuedQuery
	res   chan appendResult
}

type appendResult struct {
	pos events.Position
	err error
}

var errStoreClosed = errors.New("event store is closed")

func newGroupCommitter(pool *pgxpool.Pool) *groupCommitter {
	g := &groupCommitter{
		pool:     pool,
		requests: make(chan *appendRequest),
		stop:     make(chan struct{}),
		closed:   make(chan struct{}),
	}
	for range committers {
		g.wg.Add(1)
		go g.run()
	}
	return g
}

func (g *groupCommitter) close() {
	g.once.Do(func() {
		close(g.stop)
		g.wg.Wait()
		close(g.closed)
	})
}

// commit submits one command's statements and waits for its group's outcome.
func (g *groupCommitter) commit(ctx context.Context, stmts []*pgx.QueuedQuery) (events.Position, error) {
	req := &appendRequest{ctx: ctx, stmts: stmts, res: make(chan appendResult, 1)}
	select {
	case g.requests <- req:
	case <-ctx.Done():
		return events.Position{}, ctx.Err()
	case <-g.stop:
		return events.Position{}, errStoreClosed
	}
	// Once taken, the append's outcome must be awaited: it may commit even if ctx ends meanwhile.
	r := <-req.res
	return r.pos, r.err
}

func (g *groupCommitter) run() {
	defer g.wg.Done()
	for {
		var first *appendRequest
		select {
		case first = <-g.requests:
		case <-g.stop:
			return
		}
		group := []*appendRequest{first}
	gather:
		for len(group) < maxGroup {
			select {
			case r := <-g.requests:
				group = append(group, r)
			default:
				break gather
			}
		}
		g.commitGroup(group)
	}
}

func (g *groupCommitter) commitGroup(group []*appendRequest) {
	retries := 0
	for len(group) > 0 {
		live := group[:0]
		for _, r := range group {
			if err := r.ctx.Err(); err != nil {
				r.res <- appendResult{err: err}
				continue
			}
			live = append(live, r)
		}
		if len(live) == 0 {
			return
		}
		failed, err := g.send(live)
		switch {
		case err == nil:
			return
		case isTransient(err) && retries < 5:
			// A deadlock between two groups touching the same keys, or the like: nobody's fault.
			retries++
			group = live
			continue
		case failed < 0:
			for _, r := range live {
				r.res <- appendResult{err: err}
			}
			return
		}
		// Only that command's statement failed; the rest rolled back with it and go again.
		live[failed].res <- appendResult{err: err}
		group = append(live[:failed:failed], live[failed+1:]...)
	}
}

// isTransient reports failures that are nobody's fault and pass when the group is sent again: a
// deadlock or serialization failure between two groups.
func isTransient(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// readStatement reads one statement's outcome; an events insert returns its offsets, of which the
// last is the append's position.
func readStatement(br pgx.BatchResults, sql string, last *int64) error {
	if !strings.HasPrefix(sql, "INSERT INTO events ") {
		_, err := br.Exec()
		return err
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	for rows.Next() {
		if err := rows.Scan(last); err != nil {
			rows.Close()
			return err
		}
	}
	rows.Close()
	return rows.Err()
}

// send runs the group as one implicit transaction. On success it answers every request. On failure it
// returns the index of the request whose statement failed (or -1 when the failure is not one
// request's, e.g. a lost connection) and the error.
func (g *groupCommitter) send(group []*appendRequest) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	b := &pgx.Batch{}
	for _, r := range group {
		// Queued afresh on every send: pgx keeps the prepared statement it used on a QueuedQuery, and a
		// failed pipeline may have deallocated it.
		for _, q := range r.stmts {
			b.Queue(q.SQL, q.Arguments...)
		}
	}
	b.Queue(`SELECT pg_current_xact_id()::text`)
	br := g.pool.SendBatch(ctx, b)
	offsets := make([]int64, len(group))
	failed, sendErr := -1, error(nil)
	for i, r := range group {
		for _, q := range r.stmts {
			if err := readStatement(br, q.SQL, &offsets[i]); err != nil {
				// Only the server's refusal of a statement is that command's fault. Anything else (a
				// lost connection, a timeout) leaves the group's outcome unknown: it may have committed,
				// so nothing may be sent again.
				failed, sendErr = -1, err
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) {
					failed = i
				}
				break
			}
		}
		if sendErr != nil {
			break
		}
	}
	var xid string
	if sendErr == nil {
		if err := br.QueryRow().Scan(&xid); err != nil {
			sendErr = err
		}
	}
	if err := br.Close(); err != nil && sendErr == nil {
		sendErr = err
	}
	if sendErr != nil {
		return failed, sendErr
	}
	tx, err := strconv.ParseUint(xid, 10, 64)
	if err != nil {
		return -1, fmt.Errorf("parse transaction id %q: %w", xid, err)
	}
	for i, r := range group {
		r.res <- appendResult{pos: events.Position{TxID: tx, Offset: offsets[i]}}
	}
	return -1, nil
}
