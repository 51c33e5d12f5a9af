package postgres

import (
	"context"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/pgxpool"
)

// How often a standby instance tries to take over a consumer group, and how often a leader checks
// that the connection holding its lock is alive.
const (
	standbyRetry = 500 * time.Millisecond
	leaderCheck  = time.Second
)

// lead runs proj's subscriber while this instance holds the consumer group's session advisory lock,
// and stands by while another instance holds it. Without it every instance's subscriber would take
// the offsets row FOR UPDATE in turn, and all but one would fail each batch with a serialization
// error and retry at once: a hot loop in every instance, and a lagging read model in all of them.
// The lock lives as long as the session holding it, so an instance that dies hands the group over
// within standbyRetry. Should the lock's connection break while the subscriber runs, the offsets
// row lock still keeps two subscribers from both committing a batch, until the next check stops it.
// ready is called once this instance either leads or stands by.
func (p *Projector) lead(ctx context.Context, proj Projection, st *projectionState, logger watermill.LoggerAdapter, ready func()) error {
	defer ready()
	key := groupLockKey(proj.Name())
	for {
		conn, ok, err := tryAdvisoryLock(ctx, p.pool, key)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			st.setErr(err)
			p.config.Logger.Error("projection cannot campaign for its consumer group", slog.String("projection", proj.Name()),
				slog.String("err", err.Error()))
		case ok:
			err := p.runLeading(ctx, proj, st, logger, conn, ready)
			releaseAdvisoryLock(conn, key)
			if err != nil {
				return err
			}
		default:
			st.setRole(false, true)
			ready()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(standbyRetry):
		}
	}
}

// runLeading runs the subscriber until ctx ends or the lock's connection fails.
func (p *Projector) runLeading(ctx context.Context, proj Projection, st *projectionState, logger watermill.LoggerAdapter, lock *pgxpool.Conn, ready func()) error {
	// Another instance may have moved the checkpoint while this one stood by.
	if cp, err := p.Checkpoint(ctx, proj.Name()); err == nil {
		st.advanceTo(cp)
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, msgs, err := p.subscribe(subCtx, proj, st, logger)
	if err != nil {
		return err
	}
	st.setRole(true, false)
	ready()
	p.config.Logger.Info("projection leads its consumer group", slog.String("projection", proj.Name()))
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		p.consume(proj, st, msgs)
	}()
	check := time.NewTicker(leaderCheck)
	defer check.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-consumed:
			break loop
		case <-check.C:
			if err := lock.Ping(ctx); err != nil {
				if ctx.Err() == nil {
					p.config.Logger.Warn("projection lost its consumer group's lock", slog.String("projection", proj.Name()),
						slog.String("err", err.Error()))
				}
				break loop
			}
		}
	}
	// The subscriber's context ends before it closes: see guardedTx on why an unacked batch then
	// cannot commit.
	cancel()
	_ = sub.Close()
	<-consumed
	st.setRole(false, false)
	return nil
}

// groupLockKey is the advisory lock key of a consumer group.
func groupLockKey(group string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("taki.projection." + group))
	return int64(h.Sum64())
}

// tryAdvisoryLock takes a pooled connection and the session advisory lock key on it; the connection
// is returned only when the lock was taken, and holds it until releaseAdvisoryLock.
func tryAdvisoryLock(ctx context.Context, pool *pgxpool.Pool, key int64) (*pgxpool.Conn, bool, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, err
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return conn, true, nil
}

// releaseAdvisoryLock unlocks key and gives the connection back. A connection that cannot unlock is
// closed instead, which ends its session and so its locks.
func releaseAdvisoryLock(conn *pgxpool.Conn, key int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil || !ok {
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}
