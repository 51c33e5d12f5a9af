package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/pgxpool"

	"taki/events"
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
	if cp, gen, err := p.checkpointAt(ctx, proj.Name(), st); err == nil {
		st.advanceTo(cp, gen)
		defer st.setCatchingUp(false)
		if kept := p.catchUpFirst(ctx, proj, st, cp, lock, ready); !kept {
			return nil
		}
	}
	if ctx.Err() != nil {
		return nil
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
	stopWatch := p.watchLock(subCtx, lock, proj.Name(), cancel)
	select {
	case <-subCtx.Done(): // ctx ended, or the lock was lost
	case <-consumed:
	}
	// The subscriber's context ends before it closes: see guardedTx on why an unacked batch then
	// cannot commit.
	cancel()
	stopWatch()
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

// catchUpFirst brings proj to the log's head by the batched path, before its subscriber starts, when
// it is at least CatchUpLag events behind from: a server started on a long log (after downtime, or
// with a new projection) would otherwise apply it at the subscriber's pace of one savepoint and one
// round of statements per message. The catch-up locks the group's offsets row per batch as the
// subscriber does, so an instance that takes the lead meanwhile applies nothing twice. A failure
// leaves the rest to the subscriber, which retries and reports it. It returns false when the group's
// lock was lost meanwhile: another instance may lead by now.
func (p *Projector) catchUpFirst(ctx context.Context, proj Projection, st *projectionState, from events.Position, lock *pgxpool.Conn, ready func()) bool {
	if p.config.CatchUpLag < 0 {
		return true
	}
	name := proj.Name()
	far, err := lagAtLeast(ctx, p.pool, from, p.config.CatchUpLag)
	if err != nil {
		if ctx.Err() == nil {
			p.config.Logger.Warn("projection cannot read its lag; the subscriber catches up", slog.String("projection", name),
				slog.String("err", err.Error()))
		}
		return true
	}
	if !far {
		return true
	}
	// Until the subscriber takes over (setRole), so the status never reads stopped in between.
	st.setCatchingUp(true)
	// Queries wait for the read model with the consistency token as they do during a replay, so the
	// server need not wait for the catch-up to serve.
	ready()
	p.config.Logger.Info("projection catches up by the batched path", slog.String("projection", name),
		slog.String("from", from.String()), slog.Int("lag_at_least", p.config.CatchUpLag))
	start := time.Now()
	// The lock's connection is watched as during the subscriber's run; losing it ends the catch-up.
	catchCtx, cancel := context.WithCancel(ctx)
	stopWatch := p.watchLock(catchCtx, lock, name, cancel)
	n, err := CatchUp(catchCtx, p.pool, p.registry, []Projection{proj}, CatchUpOptions{BatchSize: serverCatchUpBatch})
	cancel()
	switch {
	case stopWatch():
		return false
	case err != nil && ctx.Err() == nil:
		p.config.Logger.Error("batched catch-up failed; the subscriber continues it", slog.String("projection", name),
			slog.Int64("events", n), slog.String("err", err.Error()))
	case err == nil:
		p.config.Logger.Info("projection caught up by the batched path", slog.String("projection", name),
			slog.Int64("events", n), slog.Duration("took", time.Since(start)))
	}
	if cp, gen, err := p.checkpointAt(ctx, name, st); err == nil {
		st.advanceTo(cp, gen)
	}
	return true
}

// watchLock pings lock, the connection holding a consumer group's advisory lock, every leaderCheck
// while ctx lasts. When a ping fails it says so and calls lost, which should end the work done under
// the lock. stop ends the watch, returns once the connection is no longer used, and reports whether
// the lock was lost.
func (p *Projector) watchLock(ctx context.Context, lock *pgxpool.Conn, name string, lost context.CancelFunc) (stop func() bool) {
	ctx, cancel := context.WithCancel(ctx)
	var gone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		check := time.NewTicker(leaderCheck)
		defer check.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-check.C:
				if err := lock.Ping(ctx); err != nil && ctx.Err() == nil {
					p.config.Logger.Warn("projection lost its consumer group's lock", slog.String("projection", name),
						slog.String("err", err.Error()))
					gone.Store(true)
					lost()
					return
				}
			}
		}
	}()
	return func() bool {
		cancel()
		<-done
		return gone.Load()
	}
}

// lagAtLeast reports whether the log holds at least n events after from, reading at most n of them.
func lagAtLeast(ctx context.Context, pool *pgxpool.Pool, from events.Position, n int) (bool, error) {
	var got int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT 1 FROM events WHERE (transaction_id, "offset") > ($1::text::xid8, $2) LIMIT $3) s`,
		strconv.FormatUint(from.TxID, 10), from.Offset, n).Scan(&got)
	if err != nil {
		return false, fmt.Errorf("lag of the log after %s: %w", from, err)
	}
	return got >= n, nil
}
