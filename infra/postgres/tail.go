package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"taki/events"
)

// TailConfig configures a Tail. Zero values get the defaults.
type TailConfig struct {
	// BatchSize is how many events one read returns at most (default 1000). A full batch is followed
	// by the next read at once: the tail chases while it is behind.
	BatchSize int
	// PollInterval is the safety-net read while no wake-up arrives (default 1 s). Wake-ups (appends of
	// this process, NOTIFY of the others) are the normal path; the poll only covers a lost one.
	PollInterval time.Duration
	// Unreadable is told of each event this binary cannot read (events.ErrUndecodable), in log order
	// with the batches: the tail then reads on past it rather than retrying a read that cannot
	// succeed (required).
	Unreadable func(ctx context.Context, env events.Envelope, err error)
	Logger     *slog.Logger
}

func (c *TailConfig) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
}

// Tail reads the event log as it grows and hands every committed event, in log order, to a callback.
// It keeps its position in memory only: each instance runs its own, starting at the log's visible
// head when it starts, for its own WebSockets (DESIGN.md, "Real time": instances share nothing but
// PostgreSQL). It reads with ReadLog's visibility rule, so an event committed late by a slow writer is
// delivered when it becomes visible, never skipped.
type Tail struct {
	store    *EventStore
	notifier *Notifier
	cfg      TailConfig

	started   chan struct{}
	startOnce sync.Once

	mu  sync.Mutex
	pos events.Position // the last event delivered, or the start
}

// NewTail returns a tail on store, woken by notifier (both required).
func NewTail(store *EventStore, notifier *Notifier, cfg TailConfig) (*Tail, error) {
	cfg.setDefaults()
	if store == nil || notifier == nil || cfg.Logger == nil || cfg.Unreadable == nil {
		return nil, errors.New("new tail: store, notifier, logger and Unreadable are required")
	}
	if cfg.BatchSize < 1 || cfg.PollInterval < 0 {
		return nil, errors.New("new tail: batch size and poll interval must be positive")
	}
	return &Tail{store: store, notifier: notifier, cfg: cfg, started: make(chan struct{})}, nil
}

// Started is closed once Run has read its start position: every event after it will be delivered,
// and every event up to it was visible to any log read that begins afterwards.
func (t *Tail) Started() <-chan struct{} { return t.started }

// Position returns the position of the last event delivered (the start position before the first).
func (t *Tail) Position() events.Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

const (
	tailMinChase = 500 * time.Microsecond
	tailMaxChase = 100 * time.Millisecond
	tailMaxRetry = 5 * time.Second
)

// Run delivers every event committed after the log's visible head at its start to deliver, in log
// order and in batches, until ctx ends. A batch whose delivery fails is offered again after a pause
// (deliver must tolerate seeing events again). An event this binary cannot read goes to the
// configured Unreadable in its place in the order, after the batch before it was delivered. It returns ctx's error, or a start-up failure once ctx
// ends.
func (t *Tail) Run(ctx context.Context, deliver func(ctx context.Context, batch []events.Envelope) error) error {
	start, err := t.startPosition(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.pos = start
	t.mu.Unlock()
	t.startOnce.Do(func() { close(t.started) })
	t.cfg.Logger.DebugContext(ctx, "log tail started", slog.String("position", start.String()))

	pos := start
	var chase time.Duration
	failures := 0
	for ctx.Err() == nil {
		// Taken before the read, so that an append committed after it wakes the wait below.
		_, woke := t.notifier.Generation()
		batch, err := t.store.ReadLog(ctx, pos, "", t.cfg.BatchSize)
		var unreadable *events.UnreadableError
		if errors.As(err, &unreadable) {
			err = nil
			if len(batch) > 0 {
				err = deliver(ctx, batch)
			}
			if err == nil {
				t.cfg.Unreadable(ctx, unreadable.Event, unreadable.Err)
				batch = append(batch, unreadable.Event)
			}
		} else if err == nil && len(batch) > 0 {
			err = deliver(ctx, batch)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			wait := min(time.Duration(failures)*100*time.Millisecond, tailMaxRetry)
			t.cfg.Logger.ErrorContext(ctx, "log tail failed; retrying", slog.String("position", pos.String()),
				slog.String("err", err.Error()), slog.Duration("retry_in", wait))
			if !sleepCtx(ctx, wait) {
				break
			}
			continue
		}
		failures = 0
		if len(batch) > 0 {
			pos = batch[len(batch)-1].Position
			t.mu.Lock()
			t.pos = pos
			t.mu.Unlock()
		}
		if len(batch) == t.cfg.BatchSize || unreadable != nil {
			chase = tailMinChase
			continue // behind: read on at once
		}
		// A short read is not proof of being caught up: a committed event stays invisible while an
		// older transaction of the cluster still runs, and that transaction's end wakes nobody when
		// it appended nothing. While the log holds events past our position, poll tightly.
		if behind, err := t.store.hasEventsAfter(ctx, pos); err == nil && behind {
			if chase == 0 {
				chase = tailMinChase
			}
			if !sleepCtx(ctx, chase) {
				break
			}
			chase = min(chase*2, tailMaxChase)
			continue
		}
		chase = 0
		select {
		case <-woke:
		case <-time.After(t.cfg.PollInterval):
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// startPosition reads the visible head, retrying while the database is unreachable.
func (t *Tail) startPosition(ctx context.Context) (events.Position, error) {
	failures := 0
	for {
		head, err := t.store.VisibleHead(ctx)
		if err == nil {
			return head, nil
		}
		if ctx.Err() != nil {
			return events.Position{}, fmt.Errorf("log tail: %w", err)
		}
		failures++
		wait := min(time.Duration(failures)*100*time.Millisecond, tailMaxRetry)
		t.cfg.Logger.ErrorContext(ctx, "log tail cannot read the log head; retrying", slog.String("err", err.Error()),
			slog.Duration("retry_in", wait))
		if !sleepCtx(ctx, wait) {
			return events.Position{}, fmt.Errorf("log tail: %w", err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// VisibleHead returns the position of the last event a log reader may see now (ReadLog's rule: no
// event of a transaction at or after the oldest one still running), zero for an empty log. Every
// event committed later comes after it, so reading on from it skips nothing.
func (s *EventStore) VisibleHead(ctx context.Context) (events.Position, error) {
	return scanPosition(s.pool.QueryRow(ctx, headSQL(`e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())`)), "read the visible log head")
}

// LogHead returns the position of the last committed event, visible to log readers yet or not (zero
// for an empty log). A position past it was not issued by this log.
func (s *EventStore) LogHead(ctx context.Context) (events.Position, error) {
	return logHead(ctx, s.pool)
}

// CountAfter counts the committed events after position, but stops counting at limit: it costs at
// most limit index entries however long the log is.
func (s *EventStore) CountAfter(ctx context.Context, after events.Position, limit int) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM events
		WHERE (transaction_id, "offset") > ($1::text::xid8, $2)
		ORDER BY transaction_id, "offset" LIMIT $3) AS later`,
		strconv.FormatUint(after.TxID, 10), after.Offset, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events after %s: %w", after, err)
	}
	return n, nil
}

// hasEventsAfter reports whether the log holds committed events after pos, visible to readers or not.
func (s *EventStore) hasEventsAfter(ctx context.Context, pos events.Position) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM events WHERE (transaction_id, "offset") > ($1::text::xid8, $2)
		ORDER BY transaction_id, "offset" LIMIT 1`, strconv.FormatUint(pos.TxID, 10), pos.Offset).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func scanPosition(row pgx.Row, what string) (events.Position, error) {
	var tx string
	var off int64
	err := row.Scan(&tx, &off)
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Position{}, nil
	}
	if err != nil {
		return events.Position{}, fmt.Errorf("%s: %w", what, err)
	}
	t, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return events.Position{}, fmt.Errorf("%s: %w", what, err)
	}
	return events.Position{TxID: t, Offset: off}, nil
}
